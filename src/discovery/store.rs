//! What a watch has shown so far, kept slim: one small value per object name, with relists
//! (`Init` .. `InitDone`) replacing the whole set at once so that objects deleted while the watch
//! was away disappear.

use std::collections::BTreeMap;

use kube::runtime::watcher::Event;

/// The objects of one watch, by name, as `extract` saw them.
#[derive(Debug)]
pub struct Store<I> {
    items: BTreeMap<String, I>,
    relist: Option<BTreeMap<String, I>>,
    synced: bool,
}

impl<I> Default for Store<I> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<I: PartialEq> Store<I> {
    /// Applies one watch event. `extract` returns the object's name and what is kept of it, or
    /// `None` for an object that cannot be used (no name, no node, ...): such an object is
    /// dropped, and an earlier version of it too. Returns whether what [`Store::iter`] shows
    /// changed: not while a relist is under way, nor for an update that changes nothing kept.
    pub fn apply<K>(&mut self, event: Event<K>, extract: impl Fn(&K) -> Option<(String, I)>) -> bool
    where
        K: kube::Resource,
    {
        match event {
            Event::Apply(object) => match extract(&object) {
                Some((name, info)) => match self.items.get_mut(&name) {
                    Some(known) if *known == info => false,
                    Some(known) => {
                        *known = info;
                        true
                    }
                    None => {
                        self.items.insert(name, info);
                        true
                    }
                },
                None => self.remove(&object),
            },
            Event::Delete(object) => self.remove(&object),
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                if let (Some(buffer), Some((name, info))) = (&mut self.relist, extract(&object)) {
                    buffer.insert(name, info);
                }
                false
            }
            Event::InitDone => {
                let first = !self.synced;
                self.synced = true;
                match self.relist.take() {
                    Some(buffer) if buffer != self.items => {
                        self.items = buffer;
                        true
                    }
                    _ => first,
                }
            }
        }
    }

    fn remove<K: kube::Resource>(&mut self, object: &K) -> bool {
        object
            .meta()
            .name
            .as_ref()
            .is_some_and(|name| self.items.remove(name).is_some())
    }
}

impl<I> Store<I> {
    /// Whether one list has completed: before that, "nothing" means "don't know yet".
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn get(&self, name: &str) -> Option<&I> {
        self.items.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &I)> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::core::ObjectMeta;

    use super::*;

    fn object(name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some([("v".to_owned(), value.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    fn value(object: &ConfigMap) -> Option<(String, String)> {
        Some((
            object.metadata.name.clone()?,
            object.data.as_ref()?["v"].clone(),
        ))
    }

    fn shown(store: &Store<String>) -> Vec<String> {
        store.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn it_says_when_what_it_shows_changed() {
        let mut store = Store::default();
        assert!(!store.apply(Event::Init, value));
        assert!(!store.apply(Event::InitApply(object("a", "1")), value));
        assert!(
            shown(&store).is_empty(),
            "nothing shows before the list ends"
        );
        assert!(store.apply(Event::InitDone, value));
        assert_eq!(shown(&store), ["a=1"]);

        assert!(
            !store.apply(Event::Apply(object("a", "1")), value),
            "same value"
        );
        assert!(store.apply(Event::Apply(object("a", "2")), value));
        assert!(store.apply(Event::Apply(object("b", "1")), value));
        assert!(store.apply(Event::Delete(object("b", "1")), value));
        assert!(
            !store.apply(Event::Delete(object("b", "1")), value),
            "already gone"
        );
        assert_eq!(shown(&store), ["a=2"]);

        // A relist that finds what was known changes nothing; one that does not, replaces it.
        store.apply(Event::Init, value);
        store.apply(Event::InitApply(object("a", "2")), value);
        assert!(!store.apply(Event::InitDone, value));
        store.apply(Event::Init, value);
        assert!(!store.apply(Event::InitApply(object("c", "1")), value));
        assert_eq!(
            shown(&store),
            ["a=2"],
            "the old set stands until the relist ends"
        );
        assert!(store.apply(Event::InitDone, value));
        assert_eq!(shown(&store), ["c=1"]);
    }

    #[test]
    fn an_empty_first_list_still_syncs_and_counts_as_a_change() {
        let mut store: Store<String> = Store::default();
        assert!(!store.synced());
        store.apply(Event::<ConfigMap>::Init, value);
        assert!(store.apply(Event::<ConfigMap>::InitDone, value));
        assert!(store.synced() && shown(&store).is_empty());
    }
}
