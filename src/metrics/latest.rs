//! The last result of every target, kept by the same recorder calls that write its series and
//! removed with them: what the daemon's status page shows. The page therefore cannot list a
//! target `/metrics` has dropped, nor show a result `/metrics` has not counted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How a target's last probe ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Last {
    /// The `result` label value the probe counted (for DNS, the `rcode`).
    pub result: &'static str,
    /// Whether the success gauge was set to 1.
    pub ok: bool,
    /// The whole probe in seconds (peers: the last phase recorded; DNS: to the final response),
    /// when it has one.
    pub seconds: Option<f64>,
    pub at: Instant,
}

impl Last {
    /// A result just counted.
    pub fn now(result: &'static str, ok: bool, seconds: Option<f64>) -> Self {
        Self {
            result,
            ok,
            seconds,
            at: Instant::now(),
        }
    }
}

/// How a volume's last probe ended, its throughput, and whether a probe is stuck on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastStorage {
    /// `None` until the first probe ends (a first probe may hang: see `stuck_seconds`).
    pub last: Option<Last>,
    /// Bytes per second of the write and read phases of the last run that completed them.
    pub throughput: Vec<(&'static str, f64)>,
    /// How long the operation in flight has run; 0 when none is.
    pub stuck_seconds: f64,
}

/// Targets by key: `None` until the first result.
#[derive(Debug)]
pub struct Table<K, V>(Arc<Mutex<BTreeMap<K, Option<V>>>>);

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(BTreeMap::new())))
    }
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<K, Option<V>>> {
        // Every update is one call on the map: it is whole whatever a panicking holder did.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn add(&self, key: &K) {
        self.lock().entry(key.clone()).or_insert(None);
    }

    pub(super) fn set(&self, key: &K, value: V) {
        self.lock().insert(key.clone(), Some(value));
    }

    pub(super) fn update(&self, key: &K, f: impl FnOnce(&mut V)) {
        if let Some(Some(v)) = self.lock().get_mut(key) {
            f(v);
        }
    }

    pub(super) fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Every target, in key order.
    pub fn snapshot(&self) -> Vec<(K, Option<V>)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
