//! The SDK half of each target kind: its probe (batched), its action (which takes the
//! `Started` token, so nothing reaches AWS before `InProgress` is persisted) and its
//! verification. Each reads AWS into the snapshot its pure half (`core::kinds`) judges, and
//! does what that decides. `aws::probe` and `aws::act` dispatch to them, one arm per kind;
//! actions and verifications are visible to `aws` only, so the one way to reach them is
//! `aws::act`, which takes the `Started` token.

pub mod ecs;
pub mod rds;
pub mod rds_cluster;
pub mod route53;

use aws_config::retry::RetryConfig;
use aws_sdk_ecs::primitives::DateTime;
use k8s_openapi::jiff::Timestamp;

use crate::core::steps::ActionOutcome;

use super::AwsFault;

/// What an action needs to know beyond its step.
#[derive(Clone, Debug, Default)]
pub struct ActContext {
    /// ECS deployment ids made by this controller's earlier plans for the same target:
    /// a restart is not stacked on a rollout one of them still runs.
    pub own_deployments: Vec<String>,
}

pub(super) fn failed(f: AwsFault) -> ActionOutcome {
    ActionOutcome::Failed { retryable: f.retryable, message: f.to_string() }
}

/// What a mutating call's failure means for its step. Throttling is AWS refusing the call
/// before doing anything, so the step waits and sends it again without spending an attempt;
/// anything else (5xx, a timeout, a lost connection) may have taken effect and costs an
/// attempt, whose successor starts with the check-first read.
pub(super) fn mutation_failed(f: AwsFault) -> ActionOutcome {
    if f.is_throttling() {
        // 2–6 s with jitter, so that plans throttled together do not come back together.
        let retry_after = std::time::Duration::from_millis(2_000 + fastrand::u64(0..4_000));
        return ActionOutcome::Deferred { message: format!("throttled, nothing was changed: {f}"), retry_after };
    }
    failed(f)
}

/// Per-call override for mutating calls: one HTTP request, never an SDK retry (see
/// [`mutation_failed`]). Each SDK has its own config type, hence two; the Route 53 client
/// never retries (see `Clients::route53_read`).
pub(super) fn once_ecs() -> aws_sdk_ecs::config::Builder {
    aws_sdk_ecs::config::Builder::default().retry_config(RetryConfig::disabled())
}

pub(super) fn once_rds() -> aws_sdk_rds::config::Builder {
    aws_sdk_rds::config::Builder::default().retry_config(RetryConfig::disabled())
}

pub(super) fn param<'a>(p: &'a Option<String>, name: &str) -> Result<&'a str, ActionOutcome> {
    p.as_deref().ok_or_else(|| ActionOutcome::Failed { message: format!("step has no {name}"), retryable: false })
}

/// Allowance for the controller's clock running ahead of AWS's when the check-first read
/// compares AWS timestamps with the step's start. An effect a few seconds older than the
/// step is still a fresh restart, so counting it as done errs on the side of acting once.
pub(crate) const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) fn now() -> Timestamp {
    Timestamp::now()
}

/// An SDK time as a timestamp.
pub(super) fn ts(dt: &DateTime) -> Option<Timestamp> {
    Timestamp::new(dt.secs(), dt.subsec_nanos() as i32).ok()
}
