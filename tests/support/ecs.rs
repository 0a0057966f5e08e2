//! ECS services of 2 desired tasks each under one policy `shop` in a fresh namespace,
//! probed every 2 s: the scene of most recovery tests.

use aws_recovery_controller::api::plan::RecoveryPlan;
use serde_json::{Value, json};

use super::{Faults, aws, namespace, plans, policy, unique};

/// The services, their cluster and the policy watching them.
pub struct Services {
    /// Kube client.
    pub client: kube::Client,
    /// The test namespace.
    pub ns: String,
    /// The ECS cluster.
    pub cluster: String,
    /// The fault layer.
    pub faults: Faults,
}

impl Services {
    /// `services`, each running `running` of 2 tasks (pinned), under an Automatic policy
    /// (no cooldown, up to 5 plans at once, stepTimeout 120s); `detection` is the flap guard
    /// and `remediation` is merged into the remediation defaults.
    pub async fn down(prefix: &str, services: &[&str], running: i32, detection: Value, remediation: Value) -> Self {
        let client = super::client().await;
        let ns = namespace(&client, prefix).await;
        let cfg = aws::config().await;
        let faults = Faults::from_env();
        let cluster = unique(prefix);
        let names: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        aws::ecs_services(&cfg, &cluster, &names, 2).await;
        for s in services {
            faults.ecs_service(json!({"cluster": cluster, "service": s, "runningCount": running})).await;
        }
        let mut r = json!({"mode": "Automatic", "stepTimeout": "120s", "cooldown": "0s", "maxConcurrentPlans": 5});
        r.as_object_mut().expect("an object").extend(remediation.as_object().cloned().unwrap_or_default());
        let spec = json!({
            "aws": {"region": "us-east-1"},
            "probeInterval": "2s",
            "targets": {"ecsServices": [{"cluster": cluster, "services": services}]},
            "detection": detection,
            "remediation": r,
        });
        policy::create(&client, &ns, "shop", spec).await;
        Self { client, ns, cluster, faults }
    }

    /// Every UpdateService request for the cluster.
    pub async fn restarts(&self) -> Vec<Value> {
        self.faults.calls_for("ecs", "UpdateService", "cluster", &self.cluster).await
    }

    /// UpdateService requests for one service.
    pub async fn restarts_of(&self, service: &str) -> usize {
        let named = |c: &Value| c["params"]["service"].as_str().is_some_and(|s| s.rsplit('/').next() == Some(service));
        self.restarts().await.iter().filter(|c| named(c)).count()
    }

    /// Lets the new deployment of `service` finish: running = desired.
    pub async fn heal_service(&self, service: &str) {
        let body = json!({"cluster": self.cluster, "service": service, "runningCount": 2, "completeRollout": true});
        self.faults.ecs_service(body).await;
    }

    /// Running = desired (pinned), no rollout touched: the service recovered by itself.
    pub async fn recover(&self, service: &str) {
        self.faults.ecs_service(json!({"cluster": self.cluster, "service": service, "runningCount": 2})).await;
    }

    /// The plan for one service, if made.
    pub async fn plan_of(&self, service: &str) -> Option<RecoveryPlan> {
        let suffix = format!("/{service}");
        plans::all(&self.client, &self.ns).await.into_iter().find(|p| p.spec.steps[0].target.ends_with(&suffix))
    }
}
