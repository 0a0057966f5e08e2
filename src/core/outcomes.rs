//! What AWS work produced, as the pure core takes it: a probe's finding for detection, an
//! action's or verification's result for the step machine (and the pure rules' verdict on
//! a read before acting, `core::kinds`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::incident::IncidentMetrics;

/// What the action produced.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionOutcome {
    /// The effect was already there (found by the check-first read): not called again.
    AlreadyDone { evidence: BTreeMap<String, String>, message: String },
    /// AWS accepted the call.
    Done { evidence: BTreeMap<String, String>, message: String },
    /// A pre-check says not now (e.g. an earlier rollout still running). No call was made.
    Deferred { message: String, retry_after: Duration },
    /// The target was healthy when read just before the call: no call was made, and the
    /// plan ends `NotNeeded`. The evidence is what was read, and when.
    NotNeeded { evidence: BTreeMap<String, String>, message: String },
    /// The call failed. `retryable` for throttling, 5xx and timeouts.
    Failed { message: String, retryable: bool },
}

/// What the verification found.
#[derive(Clone, Debug, PartialEq)]
pub enum VerifyOutcome {
    /// The condition holds.
    Satisfied { evidence: BTreeMap<String, String>, message: String },
    /// Not yet (or AWS could not be asked); poll again until the timeout.
    NotYet { message: String },
}

/// What one probe of one target found.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// Healthy, with the figures seen.
    Healthy(IncidentMetrics),
    /// Unhealthy, with the figures seen.
    Unhealthy(IncidentMetrics),
    /// Could not tell; the reason is for conditions and logs.
    Unknown(String),
}
