//! A scenario: T targets (70 % ECS services in clusters of 100, 1 % Route 53 health checks,
//! the rest RDS instances) spread evenly over P policies, created in moto and as
//! RecoveryPolicies.
//!
//! Route 53 gets 1 %: its 5 requests/s account limit makes 100 checks cost 20 s of every
//! probe cycle in any controller, so more would measure the limit, not the controller.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_ecs::types::ContainerDefinition;
use aws_sdk_route53::types::{HealthCheckConfig, HealthCheckType};
use futures::{StreamExt, stream};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use aws_recovery_controller::api::RecoveryPolicy;

/// Services per ECS cluster.
const CLUSTER_SIZE: usize = 100;
/// Creations in flight against moto (it serialises them behind one lock anyway; a few in
/// flight hide the HTTP round trips).
const CREATE_IN_FLIGHT: usize = 6;
/// Tasks each service wants.
pub const DESIRED: i32 = 2;

/// Targets of one policy.
#[derive(Clone, Debug, Default)]
pub struct PolicyTargets {
    /// Policy name.
    pub name: String,
    /// Services by cluster.
    pub ecs: BTreeMap<String, Vec<String>>,
    /// RDS identifiers.
    pub rds: Vec<String>,
    /// Indexes into the created health checks.
    pub route53: Vec<usize>,
}

/// The whole scenario.
#[derive(Clone, Debug)]
pub struct Layout {
    /// ECS services as (cluster, service).
    pub services: Vec<(String, String)>,
    /// RDS identifiers.
    pub rds: Vec<String>,
    /// Number of Route 53 health checks.
    pub route53: usize,
    /// The policies.
    pub policies: Vec<PolicyTargets>,
}

impl Layout {
    /// `targets` targets over `policies` policies (each gets at least one target).
    pub fn new(prefix: &str, targets: usize, policies: usize) -> Self {
        let route53 = (targets / 100).max(1);
        let ecs = targets * 70 / 100;
        let rds = targets - ecs - route53;
        let services: Vec<(String, String)> =
            (0..ecs).map(|i| (format!("{prefix}-c{:03}", i / CLUSTER_SIZE), format!("svc-{i:05}"))).collect();
        let rds: Vec<String> = (0..rds).map(|i| format!("{prefix}-db-{i:05}")).collect();
        let share = |n: usize, p: usize| (p * n / policies)..((p + 1) * n / policies);
        let policies = (0..policies)
            .map(|p| {
                let mut t = PolicyTargets { name: format!("p-{p:04}"), ..Default::default() };
                for (cluster, service) in &services[share(services.len(), p)] {
                    t.ecs.entry(cluster.clone()).or_default().push(service.clone());
                }
                t.rds = rds[share(rds.len(), p)].to_vec();
                t.route53 = share(route53, p).collect();
                t
            })
            .collect();
        Self { services, rds, route53, policies }
    }

    /// Number of targets.
    pub fn targets(&self) -> usize {
        self.services.len() + self.rds.len() + self.route53
    }

    /// Clusters and their service counts.
    pub fn clusters(&self) -> BTreeMap<&str, usize> {
        let mut m = BTreeMap::new();
        for (c, _) in &self.services {
            *m.entry(c.as_str()).or_insert(0) += 1;
        }
        m
    }
}

/// Creates every resource of the layout in moto; returns the health check ids.
pub async fn populate(cfg: &SdkConfig, layout: &Layout) -> Vec<String> {
    let ecs = aws_sdk_ecs::Client::new(cfg);
    let rds = aws_sdk_rds::Client::new(cfg);
    let r53 = aws_sdk_route53::Client::new(cfg);
    ecs.register_task_definition()
        .family("bench-task")
        .container_definitions(ContainerDefinition::builder().name("app").image("nginx").memory(128).build())
        .send()
        .await
        .expect("register task definition");
    for cluster in layout.clusters().keys() {
        ecs.create_cluster().cluster_name(*cluster).send().await.expect("create cluster");
    }
    stream::iter(&layout.services)
        .for_each_concurrent(CREATE_IN_FLIGHT, |(cluster, service)| {
            let ecs = ecs.clone();
            async move {
                ecs.create_service()
                    .cluster(cluster)
                    .service_name(service)
                    .task_definition("bench-task")
                    .desired_count(DESIRED)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("create service {cluster}/{service}: {e:?}"));
            }
        })
        .await;
    stream::iter(&layout.rds)
        .for_each_concurrent(CREATE_IN_FLIGHT, |id| {
            let rds = rds.clone();
            async move {
                rds.create_db_instance()
                    .db_instance_identifier(id)
                    .engine("postgres")
                    .db_instance_class("db.t3.micro")
                    .allocated_storage(20)
                    .master_username("bench")
                    .master_user_password("password123")
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("create db instance {id}: {e:?}"));
            }
        })
        .await;
    let mut ids = Vec::with_capacity(layout.route53);
    for i in 0..layout.route53 {
        let config = HealthCheckConfig::builder()
            .r#type(HealthCheckType::Https)
            .fully_qualified_domain_name(format!("hc-{i}.bench.example.com"))
            .port(443)
            .resource_path("/health")
            .build()
            .expect("health check config");
        let out = r53
            .create_health_check()
            .caller_reference(uuid::Uuid::new_v4().to_string())
            .health_check_config(config)
            .send()
            .await
            .expect("create health check");
        ids.push(out.health_check().map(|h| h.id().to_owned()).expect("a health check id"));
    }
    ids
}

/// The policy's spec: Automatic, probed every `interval`, flap guard `threshold` unhealthy
/// probes, no cooldown (the recovery scenario restarts at once).
pub fn spec(t: &PolicyTargets, health_checks: &[String], interval: &str, threshold: u32) -> Value {
    let ecs: Vec<Value> = t.ecs.iter().map(|(c, s)| json!({"cluster": c, "services": s})).collect();
    let rds: Vec<Value> = t.rds.iter().map(|id| json!({"identifier": id})).collect();
    let r53: Vec<Value> = t.route53.iter().map(|i| json!({"healthCheckId": health_checks[*i]})).collect();
    let mut targets = serde_json::Map::new();
    for (k, v) in [("ecsServices", ecs), ("rdsInstances", rds), ("route53HealthChecks", r53)] {
        if !v.is_empty() {
            targets.insert(k.into(), Value::Array(v));
        }
    }
    json!({
        "aws": {"region": "us-east-1"},
        "probeInterval": interval,
        "targets": targets,
        "detection": {"failureThreshold": threshold, "successThreshold": 1},
        "remediation": {"mode": "Automatic", "cooldown": "0s", "stepTimeout": "120s"}
    })
}

/// Creates the namespace and one RecoveryPolicy per entry of the layout.
pub async fn apply(
    client: &kube::Client,
    ns: &str,
    layout: &Layout,
    health_checks: &[String],
    interval: &str,
    threshold: u32,
) {
    apply_with(client, ns, layout, |t| spec(t, health_checks, interval, threshold)).await;
}

/// Creates the namespace and one RecoveryPolicy per entry of the layout, with the spec
/// `spec_of` makes for it.
pub async fn apply_with(client: &kube::Client, ns: &str, layout: &Layout, spec_of: impl Fn(&PolicyTargets) -> Value) {
    let spec_of = &spec_of;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let body = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("a namespace");
    namespaces.create(&PostParams::default(), &body).await.unwrap_or_else(|e| panic!("create namespace {ns}: {e}"));
    let api: Api<RecoveryPolicy> = Api::namespaced(client.clone(), ns);
    stream::iter(&layout.policies)
        .for_each_concurrent(8, |t| {
            let api = api.clone();
            async move {
                let obj = json!({
                    "apiVersion": "recovery.dev/v1alpha1", "kind": "RecoveryPolicy",
                    "metadata": {"name": t.name},
                    "spec": spec_of(t),
                });
                let policy: RecoveryPolicy = serde_json::from_value(obj).expect("a policy");
                api.create(&PostParams::default(), &policy)
                    .await
                    .unwrap_or_else(|e| panic!("create policy {}: {e}", t.name));
            }
        })
        .await;
}
