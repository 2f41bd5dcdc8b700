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

impl<I> Store<I> {
    /// Applies one watch event. `extract` returns the object's name and what is kept of it, or
    /// `None` for an object that cannot be used (no name, no node, ...): such an object is
    /// dropped, and an earlier version of it too.
    pub fn apply<K>(&mut self, event: Event<K>, extract: impl Fn(&K) -> Option<(String, I)>)
    where
        K: kube::Resource,
    {
        match event {
            Event::Apply(object) => match extract(&object) {
                Some((name, info)) => {
                    self.items.insert(name, info);
                }
                None => self.remove(&object),
            },
            Event::Delete(object) => self.remove(&object),
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply(object) => {
                if let (Some(buffer), Some((name, info))) = (&mut self.relist, extract(&object)) {
                    buffer.insert(name, info);
                }
            }
            Event::InitDone => {
                if let Some(buffer) = self.relist.take() {
                    self.items = buffer;
                }
                self.synced = true;
            }
        }
    }

    fn remove<K: kube::Resource>(&mut self, object: &K) {
        if let Some(name) = &object.meta().name {
            self.items.remove(name);
        }
    }

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
