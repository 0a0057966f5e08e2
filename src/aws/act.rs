//! Actions and verifications of plan steps, dispatched to their kind (`aws::kinds`), one
//! arm per action and no wildcard. Every mutating action first reads AWS and lets the
//! kind's pure rules (`core::kinds`) decide: did the effect already happen since the step
//! started (the at-most-once protocol's check), is the target still unhealthy (the
//! act-time pre-check, with the health rule detection uses), may it act now. Only then does
//! it call AWS. A read that fails is a failed attempt, never "healthy".

use crate::api::plan::StepAction;
use crate::core::steps::{ActionOutcome, Started, VerifyOutcome};

use super::Clients;
pub use super::kinds::ActContext;
use super::kinds::{CLOCK_SKEW, ecs, rds, rds_cluster, route53};

/// Performs a mutating step: read, let the kind's rules decide, and only then act.
pub async fn act(clients: &Clients, step: &Started, ctx: &ActContext) -> ActionOutcome {
    let p = step.parameters();
    let since = step
        .since()
        .checked_sub(k8s_openapi::jiff::SignedDuration::try_from(CLOCK_SKEW).expect("small"))
        .unwrap_or(step.since());
    let result = match step.action() {
        StepAction::RestartService => ecs::restart(clients, p, since, ctx).await,
        StepAction::FailoverDatabase => rds::reboot(clients, p, since).await,
        StepAction::UpdateDns => route53::update_dns(clients, p).await,
        StepAction::FailoverCluster => rds_cluster::failover(clients, p, since).await,
        action @ (StepAction::VerifyService
        | StepAction::VerifyDatabase
        | StepAction::VerifyDns
        | StepAction::VerifyCluster) => {
            Err(ActionOutcome::Failed { message: format!("{action:?} is not an action"), retryable: false })
        }
    };
    result.unwrap_or_else(|outcome| outcome)
}

/// Checks a verify step's condition.
pub async fn verify(clients: &Clients, step: &Started) -> VerifyOutcome {
    let p = step.parameters();
    let result = match step.action() {
        StepAction::VerifyService => ecs::verify(clients, p, step.earlier_evidence()).await,
        StepAction::VerifyDatabase => rds::verify(clients, p).await,
        StepAction::VerifyDns => route53::verify(clients, p, step.earlier_evidence()).await,
        StepAction::VerifyCluster => rds_cluster::verify(clients, p).await,
        action @ (StepAction::RestartService
        | StepAction::FailoverDatabase
        | StepAction::UpdateDns
        | StepAction::FailoverCluster) => Err(format!("{action:?} is not a verification")),
    };
    result.unwrap_or_else(|message| VerifyOutcome::NotYet { message })
}
