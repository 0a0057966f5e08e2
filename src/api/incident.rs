//! `Incident`: one episode of one unhealthy target, opened and closed by the controller.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Severity;

/// An unhealthy AWS target. At most one is open per target; a relapse after resolution is a
/// new Incident.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "recovery.dev",
    version = "v1alpha1",
    kind = "Incident",
    namespaced,
    status = "IncidentStatus",
    shortname = "inc",
    category = "recovery",
    doc = "An Incident is one episode of one unhealthy AWS target, opened and resolved by the controller.",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Severity","type":"string","jsonPath":".spec.severity"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".status.plan","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = incident_spec_rules)]
pub struct IncidentSpec {
    /// A UUID that names this incident in alerts and logs.
    #[schemars(
        length(min = 36, max = 36),
        pattern(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    )]
    pub id: String,
    /// `service` (ECS), `database` (RDS) or `network` (Route 53).
    #[serde(rename = "type")]
    pub type_: IncidentType,
    /// How bad it is. Raised one level when a recovery plan fails.
    pub severity: Severity,
    /// Name of the RecoveryPolicy (same namespace) that watches the target.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
    /// The target's key, e.g. `ecs/prod/checkout`, `rds/prod-db`, `route53/<id>`.
    #[schemars(length(min = 1, max = 600))]
    pub target: String,
    /// The AWS resource that is unhealthy.
    pub resource: AwsResource,
    /// What was seen, in a sentence.
    #[schemars(length(max = 1024))]
    pub description: String,
    /// What depends on the resource, as people name it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(max = 253)))]
    pub affected_components: Vec<String>,
}

/// Incident types.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum IncidentType {
    /// An ECS service runs fewer tasks than desired.
    Service,
    /// An RDS instance is not available.
    Database,
    /// A Route 53 health check is failing.
    Network,
}

impl IncidentType {
    /// The lowercase name used in the API and alert titles.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Database => "database",
            Self::Network => "network",
        }
    }
}

/// Kinds of AWS resource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// An ECS service.
    EcsService,
    /// An RDS DB instance.
    RdsInstance,
    /// An RDS DB cluster (Aurora or Multi-AZ DB cluster).
    RdsCluster,
    /// A Route 53 health check.
    Route53HealthCheck,
}

/// What the API says about each kind; the CRD's rules that list kinds are made from it, so
/// a new kind is accepted by the API server as soon as it is added here (and `core::kinds`
/// registers its behaviour).
impl ResourceKind {
    /// Every kind, in the order a policy lists its targets.
    pub const ALL: [Self; 4] = [Self::EcsService, Self::RdsInstance, Self::RdsCluster, Self::Route53HealthCheck];

    /// The name used in the API (and as a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcsService => "EcsService",
            Self::RdsInstance => "RdsInstance",
            Self::Route53HealthCheck => "Route53HealthCheck",
            Self::RdsCluster => "RdsCluster",
        }
    }

    /// The type of the incidents of this kind.
    pub fn incident_type(self) -> IncidentType {
        match self {
            Self::EcsService => IncidentType::Service,
            Self::RdsInstance => IncidentType::Database,
            Self::Route53HealthCheck => IncidentType::Network,
            Self::RdsCluster => IncidentType::Database,
        }
    }

    /// The fields of an [`AwsResource`] of this kind that must be set (JSON names).
    pub fn required_fields(self) -> &'static [&'static str] {
        match self {
            Self::EcsService => &["cluster", "service"],
            Self::RdsInstance => &["identifier"],
            Self::Route53HealthCheck => &["healthCheckId"],
            Self::RdsCluster => &["identifier"],
        }
    }

    /// The list of a policy's `targets` that names resources of this kind, and what one
    /// entry of it is called.
    pub fn policy_targets(self) -> (&'static str, &'static str) {
        match self {
            Self::EcsService => ("ecsServices", "ECS service group"),
            Self::RdsInstance => ("rdsInstances", "RDS instance"),
            Self::Route53HealthCheck => ("route53HealthChecks", "Route 53 health check"),
            Self::RdsCluster => ("rdsClusters", "DB cluster"),
        }
    }
}

/// The incident spec's rules: immutable identity, and a type that matches the kind.
fn incident_spec_rules(schema: &mut schemars::Schema) {
    let immutable = (
        "self.id == oldSelf.id && self.target == oldSelf.target && self.policy == oldSelf.policy".to_owned(),
        "id, target and policy of an incident never change".to_owned(),
    );
    // `kind == 'A' ? 'a' : (kind == 'B' ? 'b' : 'c')`, the last kind's type as the default.
    let (last, rest) = ResourceKind::ALL.split_last().expect("kinds");
    let mut choice = format!("'{}'", last.incident_type().as_str());
    for k in rest.iter().rev() {
        let inner = if choice.starts_with('\'') { choice } else { format!("({choice})") };
        choice = format!("self.resource.kind == '{}' ? '{}' : {inner}", k.as_str(), k.incident_type().as_str());
    }
    let pairs: Vec<String> =
        ResourceKind::ALL.iter().map(|k| format!("{} is {}", k.as_str(), k.incident_type().as_str())).collect();
    let typed = (format!("self.type == ({choice})"), format!("type must match resource.kind: {}", pairs.join(", ")));
    super::common::push_rules(schema, [immutable, typed]);
}

/// A resource names what its kind needs.
fn aws_resource_rules(schema: &mut schemars::Schema) {
    let rules = ResourceKind::ALL.iter().map(|k| {
        let fields = k.required_fields();
        let has: Vec<String> = fields.iter().map(|f| format!("has(self.{f})")).collect();
        let has = if has.len() == 1 { has[0].clone() } else { format!("({})", has.join(" && ")) };
        (
            format!("self.kind != '{}' || {has}", k.as_str()),
            format!("a resource of kind {} needs {}", k.as_str(), fields.join(" and ")),
        )
    });
    super::common::push_rules(schema, rules);
}

/// Identifies one AWS resource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = aws_resource_rules)]
pub struct AwsResource {
    /// What kind of resource this is.
    pub kind: ResourceKind,
    /// AWS region.
    #[schemars(length(max = 32))]
    pub region: String,
    /// ECS cluster name (EcsService).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub cluster: Option<String>,
    /// ECS service name (EcsService).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub service: Option<String>,
    /// DB instance identifier (RdsInstance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub identifier: Option<String>,
    /// Health check id (Route53HealthCheck).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub health_check_id: Option<String>,
}

/// Observed state of an incident.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IncidentStatus {
    /// Detected → Investigating → Mitigating → Resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<IncidentPhase>,
    /// When the flap guard confirmed the target unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// The last probe that still saw the target unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<Time>,
    /// When the target was confirmed healthy again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
    /// The latest figures AWS reported for the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<IncidentMetrics>,
    /// Name of the RecoveryPlan for this incident, once one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// `RemediationAllowed`, `RemediationFailed`, `AlertDeliveryFailed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Which alert went to which channel, so that none is sent twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertRecord>,
    /// The generation of the spec that the last successful reconcile acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Incident phases.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncidentPhase {
    /// Opened; no plan yet (or remediation is not allowed).
    Detected,
    /// A plan exists and has not started acting (created, or awaiting approval).
    Investigating,
    /// The plan is executing.
    Mitigating,
    /// The target is healthy again.
    Resolved,
}

/// The latest figures AWS reported. Only the fields of the resource's kind are set.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IncidentMetrics {
    /// ECS: tasks running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_count: Option<i32>,
    /// ECS: tasks desired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_count: Option<i32>,
    /// ECS: tasks pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_count: Option<i32>,
    /// ECS: id of the PRIMARY deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_deployment: Option<String>,
    /// ECS: the newest service events, newest first (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), inner(length(max = 1024)))]
    pub recent_events: Vec<String>,
    /// RDS: DBInstanceStatus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_status: Option<String>,
    /// RDS: endpoint address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// RDS: whether the instance is Multi-AZ (decides ForceFailover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_az: Option<bool>,
    /// RDS: primary and secondary availability zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub availability_zones: Vec<String>,
    /// DB cluster: the writer instance, if the cluster has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub writer: Option<String>,
    /// DB cluster: each member as `instance (writer|reader): status`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub members: Vec<String>,
    /// Route 53: the health check the figures are for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_id: Option<String>,
    /// Route 53: checkers reporting failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_observations: Option<u32>,
    /// Route 53: checkers reporting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_observations: Option<u32>,
    /// Anything else worth showing, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// One alert to one channel.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    /// Which alert.
    pub alert: AlertKind,
    /// Which channel.
    pub channel: AlertChannel,
    /// Sending (claimed, not yet confirmed), Sent or Failed.
    pub state: AlertState,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the last attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,
    /// When delivery was confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Time>,
    /// The last error, without secret values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Slack Web API: the message this alert was posted as. The incident's first one is the
    /// thread every later Slack alert replies in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_message: Option<SlackMessage>,
}

/// A message posted with Slack's `chat.postMessage`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SlackMessage {
    /// The channel's id, as Slack answered (e.g. `C0123456789`).
    pub channel: String,
    /// The message's `ts`: its id within the channel, and a thread's id.
    pub ts: String,
}

/// Alerts the controller sends.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// The incident opened.
    Detected,
    /// A Manual plan waits for a person.
    AwaitingApproval,
    /// The plan completed.
    PlanCompleted,
    /// The plan failed; people take over.
    PlanFailed,
    /// The target is healthy again.
    Resolved,
}

/// Alert channels.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AlertChannel {
    /// Slack (incoming webhook or Web API).
    Slack,
    /// SMTP e-mail.
    Email,
    /// PagerDuty Events API v2.
    PagerDuty,
}

/// Delivery state of one alert on one channel.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// Claimed for delivery; not yet confirmed.
    Sending,
    /// Delivered.
    Sent,
    /// Gave up after retries.
    Failed,
}
