//! Reading RecoveryPlans in a test namespace.

use aws_recovery_controller::api::plan::{PlanPhase, RecoveryPlan};
use kube::Client;
use kube::api::{Api, ListParams};

/// Every plan in the namespace.
pub async fn all(client: &Client, ns: &str) -> Vec<RecoveryPlan> {
    Api::<RecoveryPlan>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list plans").items
}

/// The plan's phase.
pub fn phase(p: &RecoveryPlan) -> Option<PlanPhase> {
    p.status.as_ref().and_then(|s| s.phase)
}

/// Waits for a plan in the namespace to reach `phase`.
pub async fn wait_phase(client: &Client, ns: &str, phase: PlanPhase, timeout: std::time::Duration) -> RecoveryPlan {
    super::eventually(&format!("a plan in phase {phase:?}"), timeout, || async {
        all(client, ns).await.into_iter().find(|p| self::phase(p) == Some(phase))
    })
    .await
}

/// Waits for `n` plans in the namespace, all in `phase`.
pub async fn wait_all(client: &Client, ns: &str, phase: PlanPhase, n: usize, timeout: std::time::Duration) {
    super::eventually(&format!("{n} plans in phase {phase:?}"), timeout, || async {
        let all = all(client, ns).await;
        (all.len() == n && all.iter().all(|p| self::phase(p) == Some(phase))).then_some(())
    })
    .await
}

/// The plan's held reason, if a rail holds it.
pub fn held(p: &RecoveryPlan) -> Option<String> {
    p.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Held" && c.status == "True").map(|c| c.reason.clone())
}
