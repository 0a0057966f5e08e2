//! The pure core: detection, planning, the step state machine and the safety rails.
//!
//! Nothing here performs I/O or holds a kube or AWS client: functions take values (the API
//! types, observations, the time) and return decisions, so every rule is a table test.

pub mod alerts;
pub mod detection;
pub mod events;
pub mod kinds;
pub mod outcomes;
pub mod pause;
pub mod planning;
pub mod rails;
pub mod requests;
pub mod retention;
pub mod simulate;
pub mod steps;
pub mod targets;
pub mod time;
pub mod versions;

#[cfg(test)]
pub(crate) mod testing;
