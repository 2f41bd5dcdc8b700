//! Probers, one module per kind. A prober takes a target and a deadline and returns an
//! observation; its target type records that observation into the metrics.

pub mod apiserver;
pub mod dns;
pub mod http;
pub mod peer;
pub mod storage;

use std::sync::Mutex;

/// Remembers whether a target is failing, so the log gets one line when that changes rather
/// than one line per probe.
#[derive(Debug, Default)]
pub struct Health {
    failing: Mutex<Option<bool>>,
}

/// What changed with the latest result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The first result, or the same as before.
    Unchanged,
    /// It was fine (or unknown) and now fails.
    StartedFailing,
    /// It failed and now works.
    Recovered,
}

impl Health {
    /// Records a result and says whether it is news.
    pub fn update(&self, ok: bool) -> Transition {
        let mut failing = self.failing.lock().expect("health lock");
        let before = failing.replace(!ok);
        match (before, ok) {
            (Some(true), true) => Transition::Recovered,
            (Some(false) | None, false) => Transition::StartedFailing,
            _ => Transition::Unchanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_news() {
        let h = Health::default();
        assert_eq!(h.update(true), Transition::Unchanged);
        assert_eq!(h.update(false), Transition::StartedFailing);
        assert_eq!(h.update(false), Transition::Unchanged);
        assert_eq!(h.update(true), Transition::Recovered);
        let fresh = Health::default();
        assert_eq!(fresh.update(false), Transition::StartedFailing);
    }
}
