//! `RecoveryPolicy`: what to watch in AWS and what the controller may do about it.
//!
//! Written by people or GitOps; the controller only ever writes its `/status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DURATION_PATTERN, SecretKeyRef, SecretRef, Severity};
use super::incident::ResourceKind;

/// What the controller watches in one AWS account and region, and how far it may go to repair it.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "recovery.dev",
    version = "v1alpha1",
    kind = "RecoveryPolicy",
    plural = "recoverypolicies",
    namespaced,
    status = "RecoveryPolicyStatus",
    shortname = "rpol",
    category = "recovery",
    doc = "A RecoveryPolicy names AWS resources to watch (ECS services, RDS instances, Route 53 health checks) and how far the controller may go to repair them.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Targets","type":"integer","jsonPath":".status.targets.total"}"#,
    printcolumn = r#"{"name":"Unhealthy","type":"integer","jsonPath":".status.targets.unhealthy"}"#,
    printcolumn = r#"{"name":"Open Incidents","type":"integer","jsonPath":".status.openIncidents"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.remediation.mode","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecoveryPolicySpec {
    /// The AWS account and region the targets live in.
    pub aws: AwsSpec,
    /// How often every target of this policy is probed, as a Go duration between 2s and 1h.
    #[serde(default = "default_probe_interval")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "duration(self) >= duration('2s') && duration(self) <= duration('1h')",
        "message": "probeInterval must be between 2s and 1h"
    }]))]
    pub probe_interval: String,
    /// The AWS resources to watch. At least one target is required.
    pub targets: Targets,
    /// Flap guard: how many probe answers, spread over how many intervals, decide a change
    /// of health.
    #[serde(default)]
    pub detection: DetectionSpec,
    /// What the controller may do about an incident, and the rails that hold it back.
    #[serde(default)]
    pub remediation: RemediationSpec,
    /// Who is told, and how. Kubernetes Events are always emitted whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsSpec>,
    /// How many finished incidents (each with its plan) are kept, and for how long. Unset
    /// keeps the newest 10 that recovered and the newest 20 that needed people: a controller
    /// that opens objects by itself must not fill etcd with them.
    #[serde(default)]
    pub retention: RetentionSpec,
}

fn default_probe_interval() -> String {
    "30s".into()
}

/// AWS account and region.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsSpec {
    /// AWS region of every target in this policy, e.g. `us-east-1`.
    #[schemars(length(min = 9, max = 32), pattern(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$"))]
    pub region: String,
    /// IAM role assumed through STS for this policy's calls. Without it the controller's own
    /// credentials (IRSA, environment, profile) are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 20, max = 2048),
        pattern(r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
    )]
    pub role_arn: Option<String>,
}

/// At least one target, of any kind (the rule lists every kind's list).
fn targets_rules(schema: &mut schemars::Schema) {
    let lists = ResourceKind::ALL.map(ResourceKind::policy_targets);
    let sizes: Vec<String> = lists.iter().map(|(l, _)| format!("(has(self.{l}) ? size(self.{l}) : 0)")).collect();
    let (last, rest) = lists.split_last().expect("kinds");
    let nouns: Vec<&str> = rest.iter().map(|(_, n)| *n).collect();
    let message = format!("targets must name at least one {} or {}", nouns.join(", "), last.1);
    super::common::push_rules(schema, [(format!("{} > 0", sizes.join(" + ")), message)]);
}

/// The AWS resources a policy watches.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = targets_rules)]
pub struct Targets {
    /// ECS services, grouped by cluster. They are probed with one DescribeServices call per
    /// ten services of a cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["cluster"]))]
    pub ecs_services: Vec<EcsServiceTarget>,
    /// RDS DB instances. Unhealthy when their status is not `available`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["identifier"]))]
    pub rds_instances: Vec<RdsInstanceTarget>,
    /// Aurora DB clusters and Multi-AZ DB clusters. Unhealthy when the cluster is not
    /// `available`, has no writer, or its writer instance is not `available`; repaired by
    /// FailoverDBCluster (a reader becomes the writer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["identifier"]))]
    pub rds_clusters: Vec<RdsClusterTarget>,
    /// Route 53 health checks. Unhealthy when any checker reports a failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["healthCheckId"]))]
    pub route53_health_checks: Vec<Route53HealthCheckTarget>,
}

/// Services of one ECS cluster. Unhealthy when `runningCount < desiredCount`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EcsServiceTarget {
    /// Name of the ECS cluster.
    #[schemars(length(min = 1, max = 255), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub cluster: String,
    /// Names of the services in that cluster. Each name at most once.
    #[schemars(length(min = 1, max = 100))]
    #[schemars(inner(length(min = 1, max = 255), pattern(r"^[A-Za-z0-9_-]+$")))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub services: Vec<String>,
    /// Severity of an incident on these services. Defaults to `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

/// One RDS DB instance. Unhealthy when its status is not `available`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RdsInstanceTarget {
    /// The DB instance identifier: a lowercase letter, then lowercase letters, digits and
    /// single hyphens (RDS stores identifiers in lower case).
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z](-?[a-z0-9])*$"))]
    pub identifier: String,
    /// Severity of an incident on this instance. Defaults to `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

/// One RDS DB cluster (Aurora, or a Multi-AZ DB cluster).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RdsClusterTarget {
    /// The DB cluster identifier: a lowercase letter, then lowercase letters, digits and
    /// single hyphens.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z](-?[a-z0-9])*$"))]
    pub identifier: String,
    /// The instance to promote when the cluster fails over, if it is an available reader
    /// then; otherwise RDS chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z](-?[a-z0-9])*$"))]
    pub failover_target: Option<String>,
    /// Severity of an incident on this cluster. Defaults to `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

/// One Route 53 health check, and the DNS record to fail over when it fails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route53HealthCheckTarget {
    /// The health check's id (a UUID).
    #[schemars(length(min = 36, max = 36), pattern(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"))]
    pub health_check_id: String,
    /// Severity of an incident on this check. Defaults to `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The record that UpdateDns points at the backup. Without it a network incident is
    /// opened and alerted, but no plan can be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Route53Failover>,
}

/// A DNS record and the alias target it is pointed at during failover.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.aliasTarget.dnsName.lowerAscii() + (self.aliasTarget.dnsName.endsWith('.') ? '' : '.') != self.recordName.lowerAscii() + (self.recordName.endsWith('.') ? '' : '.')",
    "message": "failover.aliasTarget must differ from the record itself: an alias to itself is a loop"
}]))]
pub struct Route53Failover {
    /// Hosted zone that holds the record, e.g. `Z1D633PJN98FT9`.
    #[schemars(length(min = 1, max = 32), pattern(r"^[A-Z0-9]+$"))]
    pub hosted_zone_id: String,
    /// Fully qualified name of the record, e.g. `api.example.com`.
    #[schemars(length(min = 1, max = 253), pattern(HOSTNAME))]
    pub record_name: String,
    /// Record type: A, AAAA or CNAME.
    pub record_type: RecordType,
    /// Where the record points during failover. Required: a failover without a target
    /// would have nothing to point at.
    pub alias_target: AliasTarget,
}

/// A DNS name, optionally with a trailing dot.
const HOSTNAME: &str =
    r"^([a-zA-Z0-9_]([-a-zA-Z0-9_]{0,61}[a-zA-Z0-9_])?\.)*[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?\.?$";

/// DNS record types that Route 53 can alias.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    /// IPv4 address record.
    A,
    /// IPv6 address record.
    #[serde(rename = "AAAA")]
    Aaaa,
    /// Canonical name record.
    #[serde(rename = "CNAME")]
    Cname,
}

impl RecordType {
    /// The wire name Route 53 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
            Self::Cname => "CNAME",
        }
    }
}

/// A Route 53 alias target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AliasTarget {
    /// DNS name of the backup, e.g. a load balancer or another record.
    #[schemars(length(min = 1, max = 253), pattern(HOSTNAME))]
    pub dns_name: String,
    /// The hosted zone of the alias target itself (not the record's zone): for a load
    /// balancer, its canonical hosted zone id.
    #[schemars(length(min = 1, max = 32), pattern(r"^[A-Z0-9]+$"))]
    pub hosted_zone_id: String,
    /// Whether Route 53 checks the target's health before answering with it.
    #[serde(default)]
    pub evaluate_target_health: bool,
}

/// Flap guard thresholds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DetectionSpec {
    /// Unhealthy probe answers in a row before an incident opens (1–10). Answers count only
    /// when at least half a probeInterval apart (a retried probe and the next one, arriving
    /// together, count once), and the answers must span (failureThreshold − 1) probe
    /// intervals, less a tenth: the default 2 at 30s means about 30 s of observed failure.
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 10))]
    pub failure_threshold: u32,
    /// Healthy probe answers in a row before an incident resolves (1–10), counted like
    /// failureThreshold: about (successThreshold − 1) probe intervals of observed health.
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 10))]
    pub success_threshold: u32,
    /// What AWS events (EventBridge → SQS, read when the controller runs with
    /// `--event-queue`) about this policy's targets do. `Wake` (the default): an event
    /// probes the targets it names at once, and that answer counts like any other, so the
    /// flap guard still needs its (failureThreshold − 1) intervals. `Corroborate`: as Wake,
    /// and an unhealthy answer from a probe woken by a fresh trouble event (an ECS WARN or
    /// ERROR, an RDS failure, failover or availability event, a Route 53 health check's
    /// alarm going to ALARM; sent within the last 5 minutes) reaches failureThreshold at
    /// once: AWS's event and the controller's own probe agree. `Ignore`: events wake
    /// nothing. An event never opens an incident or acts by itself; polling at
    /// probeInterval goes on whatever this says.
    #[serde(default)]
    pub events: EventsMode,
}

/// What AWS events about a policy's targets do (see `detection.events`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EventsMode {
    /// Events wake nothing: detection is by polling alone.
    Ignore,
    /// An event probes the targets it names at once; the flap guard counts the answer as usual.
    #[default]
    Wake,
    /// As Wake, and a fresh trouble event plus an unhealthy answer from the probe it woke
    /// reach failureThreshold at once.
    Corroborate,
}

fn two() -> u32 {
    2
}

impl Default for DetectionSpec {
    fn default() -> Self {
        Self { failure_threshold: 2, success_threshold: 2, events: EventsMode::Wake }
    }
}

/// How the controller may act.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RemediationMode {
    /// Plans run as soon as the rails allow.
    #[default]
    Automatic,
    /// Plans wait in `AwaitingApproval` until a person approves them.
    Manual,
    /// Plans are computed and every step is recorded as `Skipped` with the call it would
    /// have made. No mutating AWS call is made.
    DryRun,
    /// Incidents are opened and alerted; no plan is created.
    Disabled,
}

/// Remediation settings and safety rails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemediationSpec {
    /// Automatic, Manual, DryRun or Disabled.
    #[serde(default)]
    pub mode: RemediationMode,
    /// Plans of this policy that may execute at once (1–20).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 20))]
    pub max_concurrent_plans: u32,
    /// Quiet time per target after a plan ends before another plan may act on it
    /// (0s–24h, Go duration).
    #[serde(default = "default_cooldown")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "duration(self) <= duration('24h')",
        "message": "cooldown must be at most 24h"
    }]))]
    pub cooldown: String,
    /// Storm guard: when more than this percentage of the policy's targets are unhealthy,
    /// incidents are opened but no plan acts (0–100).
    #[serde(default = "fifty")]
    #[schemars(range(min = 0, max = 100))]
    pub max_unhealthy_percent: u32,
    /// How long one step, including its verification, may take (30s–2h, Go duration).
    #[serde(default = "default_step_timeout")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "duration(self) >= duration('30s') && duration(self) <= duration('2h')",
        "message": "stepTimeout must be between 30s and 2h"
    }]))]
    pub step_timeout: String,
    /// Attempts of one action before the plan fails and hands off to people (1–10).
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: u32,
    /// A maintenance window: until `until`, plans of the paused targets (or of the whole
    /// policy) wait, held with the pause's reason, and nothing mutates AWS. Detection,
    /// incidents and alerts go on (alerts say the pause). It lifts by itself at `until`;
    /// the controller never edits it, so it stays as Git or a person wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseSpec>,
}

/// A pause of remediation until a time.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "timestamp(self.until) > timestamp('2020-01-01T00:00:00Z') && timestamp(self.until) < timestamp('2100-01-01T00:00:00Z')",
    "message": "pause.until must be an RFC 3339 time between 2020 and 2100, e.g. 2026-12-03T18:00:00Z"
}]))]
pub struct PauseSpec {
    /// When the pause lifts by itself, as an RFC 3339 time with its zone
    /// (`2026-12-03T18:00:00Z`). A time already past pauses nothing (the policy's `Paused`
    /// condition says so).
    pub until: Time,
    /// Why, for people: shown on held plans, in the policy's `Paused` condition, its Events
    /// and in alerts.
    #[schemars(length(min = 1, max = 256))]
    pub reason: String,
    /// The target keys to pause (`ecs/<cluster>/<service>`, `rds/<identifier>`,
    /// `rdscluster/<identifier>`, `route53/<id>`), as on incidents. Unset or empty pauses
    /// every target of the policy. A key the policy does not name is reported in the
    /// `Paused` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 600), pattern(r"^[a-z0-9]+/.+$")))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub targets: Vec<String>,
    /// Who paused, for the record (e.g. a user name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub requested_by: Option<String>,
}

/// History retention, after the conventions of CronJobs (history limits) and Jobs (a TTL
/// after finishing). An incident is finished once it is resolved and its plan (if any)
/// ended. Whatever the limits say, an incident stays while its target's cooldown after its
/// plan still runs, while one of its alerts is still being delivered, and until it is
/// recorded in the policy's `status.history`. Its plan is deleted with it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionSpec {
    /// Finished incidents whose target recovered (by its plan or by itself) that are kept,
    /// newest first (0–1000).
    #[serde(default = "ten")]
    #[schemars(range(min = 0, max = 1000))]
    pub successful_history_limit: u32,
    /// Finished incidents that needed people (the plan failed or was cancelled) that are
    /// kept, newest first (0–1000). Kept longer by default: they are what a post-mortem reads.
    #[serde(default = "twenty")]
    #[schemars(range(min = 0, max = 1000))]
    pub failed_history_limit: u32,
    /// Finished incidents resolved longer ago than this are deleted whatever the limits
    /// (Go duration, 1m–8760h). Unset: only the limits apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "duration(self) >= duration('1m') && duration(self) <= duration('8760h')",
        "message": "ttlAfterResolved must be between 1m and 8760h"
    }]))]
    pub ttl_after_resolved: Option<String>,
    /// Entries of `status.history`, the summary of the newest finished incidents that
    /// outlives their deletion (0–100).
    #[serde(default = "twenty")]
    #[schemars(range(min = 0, max = 100))]
    pub summary_limit: u32,
}

fn ten() -> u32 {
    10
}
fn twenty() -> u32 {
    20
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self { successful_history_limit: 10, failed_history_limit: 20, ttl_after_resolved: None, summary_limit: 20 }
    }
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn fifty() -> u32 {
    50
}
fn default_cooldown() -> String {
    "15m".into()
}
fn default_step_timeout() -> String {
    "10m".into()
}

impl Default for RemediationSpec {
    fn default() -> Self {
        Self {
            mode: RemediationMode::Automatic,
            max_concurrent_plans: 1,
            cooldown: default_cooldown(),
            max_unhealthy_percent: 50,
            step_timeout: default_step_timeout(),
            max_attempts: 3,
            pause: None,
        }
    }
}

/// Alert routing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.slack) || has(self.email) || has(self.pagerduty)",
    "message": "alerts needs slack, email or pagerduty (or several); leave alerts out to rely on Kubernetes Events alone"
}]))]
pub struct AlertsSpec {
    /// Incidents below this severity are not sent (Events are still emitted).
    #[serde(default = "medium")]
    pub min_severity: Severity,
    /// Language of alert text.
    #[serde(default)]
    pub locale: Locale,
    /// Slack: an incoming webhook, or the Web API with threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackSpec>,
    /// E-mail over SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSpec>,
    /// PagerDuty Events API v2: a trigger when an incident opens (and when its plan waits for
    /// approval or fails), a resolve when it is resolved, deduplicated by the incident's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagerduty: Option<PagerDutySpec>,
}

/// PagerDuty Events API v2.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PagerDutySpec {
    /// The Secret key holding the integration (routing) key of an Events API v2 integration
    /// on a PagerDuty service. The key is a credential: it is never logged.
    pub routing_key_secret_ref: SecretKeyRef,
    /// Where events go. Default `https://events.pagerduty.com/v2/enqueue`; accounts in the
    /// EU service region use `https://events.eu.pagerduty.com/v2/enqueue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), pattern(r"^https?://[^\s]+$"))]
    pub events_url: Option<String>,
}

fn medium() -> Severity {
    Severity::Medium
}

/// Language of alert text.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    /// English.
    #[default]
    En,
    /// Korean.
    Ko,
}

/// Slack: an incoming webhook, or the Web API with a bot token (messages of one incident in
/// one thread).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.webhookSecretRef) != has(self.botTokenSecretRef)",
        "message": "slack needs exactly one of webhookSecretRef (an incoming webhook) and botTokenSecretRef (the Web API, with threads)"
    },
    {
        "rule": "!has(self.botTokenSecretRef) || has(self.channel)",
        "message": "slack.botTokenSecretRef needs slack.channel: the Web API posts to a channel it is told (e.g. #incidents or C0123456789)"
    },
    {
        "rule": "!has(self.apiUrl) || has(self.botTokenSecretRef)",
        "message": "slack.apiUrl is for the Web API: set it only with botTokenSecretRef"
    }
]))]
pub struct SlackSpec {
    /// Incoming-webhook mode: the Secret key holding the webhook URL. The URL is a credential:
    /// it is never logged. Each alert is a message of its own, tagged with the incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_ref: Option<SecretKeyRef>,
    /// Web API mode: the Secret key holding a bot token (`xoxb-…`, scope `chat:write`; invite
    /// the app to the channel). The incident's first message is posted with
    /// `chat.postMessage`, its `ts` kept in the incident's alert ledger, and every follow-up
    /// replies in its thread (a failed plan and the resolution also show in the channel), across
    /// controller restarts. The token is a credential: it is never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token_secret_ref: Option<SecretKeyRef>,
    /// The channel: with a webhook, named in the message (the webhook decides where it lands);
    /// with the Web API, where messages are posted: `#name` or a channel id (`C0123456789`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 80), pattern(r"^([#@][a-z0-9._-]+|[CG][A-Z0-9]{8,20})$"))]
    pub channel: Option<String>,
    /// Web API mode: the API's base URL. Default `https://slack.com/api/` (Enterprise Grid and
    /// GovSlack use their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), pattern(r"^https?://[^\s]+$"))]
    pub api_url: Option<String>,
}

/// E-mail delivery.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailSpec {
    /// Secret with keys `host`, `port`, optional `username` / `password`, and optional
    /// `tls` (`starttls` (default), `tls` or `none`).
    pub smtp_secret_ref: SecretRef,
    /// Sender address.
    #[schemars(length(min = 3, max = 254), pattern(EMAIL))]
    pub from: String,
    /// Recipients (1–20), each at most once.
    #[schemars(length(min = 1, max = 20))]
    #[schemars(inner(length(min = 3, max = 254), pattern(EMAIL)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub to: Vec<String>,
}

/// No whitespace, separators or control characters (NUL, NEL, U+2028, DEL) anywhere.
const EMAIL: &str = r"^[^@\s\p{Z}\p{C}]+@[^@\s\p{Z}\p{C}]+\.[^@\s\p{Z}\p{C}]+$";

/// Observed state of a policy, written by the controller.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPolicyStatus {
    /// The generation of the spec that the last successful reconcile acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `AwsReachable`, `TargetsFound`, `RemediationAllowed`, `AlertsConfigured`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the targets were last probed: written with every change of this status and at
    /// least every 5 minutes while nothing changes (so a steady policy costs no write per
    /// probe). The metric `recovery_probe_cycle_seconds` counts every cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// Target counts from the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetCounts>,
    /// Incidents of this policy that are not resolved.
    #[serde(default)]
    pub open_incidents: u32,
    /// Per-target flap-guard counters, kept here so a restart neither opens nor resolves
    /// an incident early.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["target"]))]
    pub target_states: Vec<TargetState>,
    /// The newest finished incidents, newest first (at most `retention.summaryLimit`): the
    /// policy's recent history at a glance, kept after retention deletes the incidents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub history: Vec<HistoryEntry>,
}

/// One finished incident, as the policy's history remembers it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Name of the Incident (it may since have been deleted by retention).
    pub incident: String,
    /// The target's key.
    pub target: String,
    /// The incident's severity when it finished (raised once if its plan failed).
    pub severity: Severity,
    /// When the incident was detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// When it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
    /// How it ended.
    pub outcome: IncidentOutcome,
    /// Name of its RecoveryPlan, if one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// How a finished incident ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IncidentOutcome {
    /// Its plan completed and the target is healthy again.
    Recovered,
    /// The target recovered without an action: no plan acted (not needed, a dry run,
    /// remediation disabled, or held until it healed).
    RecoveredOnItsOwn,
    /// Its plan failed and people took over; the target has since recovered.
    PlanFailed,
    /// Its plan was cancelled by a person; the target has since recovered.
    PlanCancelled,
    /// The target was removed from the policy.
    TargetRemoved,
}

impl IncidentOutcome {
    /// Whether the incident needed people: it counts under `failedHistoryLimit`.
    pub fn needed_people(self) -> bool {
        match self {
            Self::PlanFailed | Self::PlanCancelled => true,
            Self::Recovered | Self::RecoveredOnItsOwn | Self::TargetRemoved => false,
        }
    }
}

/// Target counts.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetCounts {
    /// All targets named by the policy.
    pub total: u32,
    /// Targets whose last probe was healthy.
    pub healthy: u32,
    /// Targets whose last probe was unhealthy.
    pub unhealthy: u32,
    /// Targets that could not be probed (AWS error, or not found).
    #[serde(default)]
    pub unknown: u32,
}

/// Flap-guard state of one target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetState {
    /// The target's key, e.g. `ecs/prod/checkout`, `rds/prod-db`, `route53/<id>`.
    pub target: String,
    /// Unhealthy answers in a row that counted (spaced at least half a probeInterval
    /// apart), up to `failureThreshold`.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Healthy answers in a row that counted, up to `successThreshold`.
    #[serde(default)]
    pub consecutive_successes: u32,
    /// The first answer of the current unhealthy streak: the threshold is reached only once
    /// the streak spans (failureThreshold − 1) probe intervals (less a tenth). The flap
    /// guard's times keep microseconds: answers a fraction of a second apart must not look
    /// a second apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_since: Option<MicroTime>,
    /// The first answer of a healthy streak still short of `successThreshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<MicroTime>,
    /// The last answer that counted, while the streak is short of its threshold: an answer
    /// less than half a probeInterval after it is not counted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_counted_at: Option<MicroTime>,
    /// Incidents opened for this target so far. The next incident's name carries this number,
    /// so a crash between creating an incident and recording it here re-creates the same name
    /// (and finds it) instead of opening a second one.
    #[serde(default)]
    pub opened: u32,
    /// Name of the open incident for this target, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_incident: Option<String>,
}
