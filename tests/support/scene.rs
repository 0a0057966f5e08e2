//! A shared scene for fault tests: a degraded ECS service whose plan is verifying.

use std::time::Duration;

use aws_recovery_controller::api::plan::{RecoveryPlan, StepPhase};
use serde_json::json;

use super::controller::ControllerProcess;
use super::{Faults, aws, eventually, namespace, plans, policy, unique};

const WAIT: Duration = Duration::from_secs(60);

/// Makes ECS service `web` (2 desired, 1 running) in a new cluster and the Automatic policy
/// `shop` watching it, probed every 2s; `extra` is merged into the policy's spec (alerts).
/// Returns the cluster and the fault layer.
pub async fn degraded_web(client: &kube::Client, ns: &str, prefix: &str, extra: serde_json::Value) -> (String, Faults) {
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique(prefix);
    aws::ecs_services(&cfg, &cluster, &["web".into()], 2).await;
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 1})).await;
    let mut spec = json!({
        "aws": {"region": "us-east-1"},
        "probeInterval": "2s",
        "targets": {"ecsServices": [{"cluster": cluster, "services": ["web"]}]},
        "detection": {"failureThreshold": 1, "successThreshold": 1},
        "remediation": {"mode": "Automatic", "stepTimeout": "120s", "cooldown": "0s"}
    });
    spec.as_object_mut().expect("an object").extend(extra.as_object().cloned().unwrap_or_default());
    policy::create(client, ns, "shop", spec).await;
    (cluster, faults)
}

/// A degraded ECS service under an Automatic policy, with its controller running.
pub struct Scene {
    /// Kube client.
    pub client: kube::Client,
    /// The test namespace.
    pub ns: String,
    /// The ECS cluster (service `web`).
    pub cluster: String,
    /// The fault layer.
    pub faults: Faults,
}

impl Scene {
    /// A degraded service whose plan is verifying (the restart made, the rollout held).
    pub async fn verifying(prefix: &str) -> (Self, ControllerProcess, RecoveryPlan) {
        let client = super::client().await;
        let ns = namespace(&client, prefix).await;
        let (cluster, faults) = degraded_web(&client, &ns, prefix, json!({})).await;
        let ctl = ControllerProcess::start(&ns);
        let plan = eventually("the verify step", WAIT, || async {
            plans::all(&client, &ns).await.into_iter().find(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.steps.iter().any(|st| st.order == 2 && st.phase == StepPhase::InProgress))
            })
        })
        .await;
        (Self { client, ns, cluster, faults }, ctl, plan)
    }

    /// UpdateService calls for the cluster.
    pub async fn restarts(&self) -> usize {
        self.faults.calls_for("ecs", "UpdateService", "cluster", &self.cluster).await.len()
    }

    /// Lets the new deployment finish.
    pub async fn heal(&self) {
        self.faults
            .ecs_service(json!({"cluster": self.cluster, "service": "web", "runningCount": 2, "completeRollout": true}))
            .await;
    }
}
