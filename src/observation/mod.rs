//! What the probers saw, in the terms the metrics record: an outcome, durations, bytes, and the
//! closed sets of label values. The probers (above) produce these and the metrics (below)
//! record them, so neither imports the other's types.

pub mod dns;
pub mod storage;
