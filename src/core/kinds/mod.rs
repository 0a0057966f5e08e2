//! The pure half of each target kind: what AWS said about one target, reduced to a small
//! snapshot, and the rules over it — is it healthy (one function, used by detection's
//! probes *and* by a mutating step's read just before it acts), did a step's effect
//! already happen, may the step act now. No I/O: `aws::probe` and `aws::act` build the
//! snapshots from SDK answers and carry out what these functions decide.

pub mod ecs;
pub mod rds;
pub mod route53;

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::steps::ActionOutcome;

/// Evidence map from pairs; empty values are left out.
pub fn evidence<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The outcome of a step whose target was read healthy just before acting: no call, with
/// what was read and when as evidence.
pub fn not_needed(what: String, mut evidence: BTreeMap<String, String>, read_at: Timestamp) -> ActionOutcome {
    evidence.insert("readAt".to_owned(), read_at.to_string());
    ActionOutcome::NotNeeded {
        message: format!(
            "not needed: the target recovered before the action ({what} at {read_at}); no AWS call was made"
        ),
        evidence,
    }
}
