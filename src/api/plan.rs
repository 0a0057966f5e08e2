//! `RecoveryPlan`: the ordered steps that repair one incident, and the audit trail of each.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::policy::{AliasTarget, RecordType};

pub use super::labels::{APPROVED_BY_ANNOTATION, CANCEL_ANNOTATION, RETRY_ANNOTATION, REVERIFY_ANNOTATION};

/// The steps that repair one incident. The spec is fixed at creation; the status records
/// what was done and what AWS answered.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "recovery.dev",
    version = "v1alpha1",
    kind = "RecoveryPlan",
    namespaced,
    status = "RecoveryPlanStatus",
    shortname = "rplan",
    category = "recovery",
    doc = "A RecoveryPlan is the ordered steps that repair one Incident, with a record of what each step did and what AWS answered.",
    printcolumn = r#"{"name":"Incident","type":"string","jsonPath":".spec.incident"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self == oldSelf",
     "message": "a plan's spec is immutable: it is the record of what was decided; delete the plan to have a new one made"},
    {"rule": "self.steps.all(s, s.order >= 1 && s.order <= size(self.steps))",
     "message": "step orders must be 1..n, each once"}
]))]
pub struct RecoveryPlanSpec {
    /// Name of the Incident (same namespace) this plan repairs.
    #[schemars(length(min = 1, max = 253))]
    pub incident: String,
    /// The incident's UUID, quoted in alerts.
    #[schemars(length(min = 36, max = 36))]
    pub incident_id: String,
    /// Name of the RecoveryPolicy that allowed this plan.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
    /// When true, every step is recorded as Skipped with the call it would have made.
    #[serde(default)]
    pub dry_run: bool,
    /// The steps, run in `order`.
    #[schemars(length(min = 1, max = 10))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["order"]))]
    pub steps: Vec<PlanStep>,
}

/// One step of a plan.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanStep {
    /// Position in the plan, from 1.
    #[schemars(range(min = 1, max = 10))]
    pub order: u32,
    /// What the step does.
    pub action: StepAction,
    /// The target's key, as on the incident.
    #[schemars(length(min = 1, max = 600))]
    pub target: String,
    /// Everything the action needs, fixed when the plan is made.
    pub parameters: StepParameters,
}

/// Step actions. Mutating actions run at most once per step; Verify actions only read.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepAction {
    /// ECS UpdateService with forceNewDeployment.
    RestartService,
    /// Wait for a deployment newer than the restart to be PRIMARY with runningCount ≥ desiredCount.
    VerifyService,
    /// RDS RebootDBInstance, with ForceFailover only for a Multi-AZ instance.
    FailoverDatabase,
    /// Wait for the instance to be `available`.
    VerifyDatabase,
    /// Route 53 ChangeResourceRecordSets UPSERT of the failover record to its alias target.
    UpdateDns,
    /// Wait for the change to be INSYNC and the record to alias the target.
    VerifyDns,
    /// RDS FailoverDBCluster: a reader (the policy's failover target, if available) becomes
    /// the writer.
    FailoverCluster,
    /// Wait for the cluster to be `available` with a different, `available` writer.
    VerifyCluster,
}

impl StepAction {
    /// Every action (a new one is listed here as well as in the matches below, which the
    /// compiler makes name it).
    pub const ALL: [Self; 8] = [
        Self::RestartService,
        Self::VerifyService,
        Self::FailoverDatabase,
        Self::VerifyDatabase,
        Self::UpdateDns,
        Self::VerifyDns,
        Self::FailoverCluster,
        Self::VerifyCluster,
    ];

    /// Whether the action changes AWS (and so falls under the at-most-once protocol).
    /// A `match` without a wildcard, so a new action must say which it is.
    pub fn is_mutating(self) -> bool {
        match self {
            Self::RestartService | Self::FailoverDatabase | Self::UpdateDns | Self::FailoverCluster => true,
            Self::VerifyService | Self::VerifyDatabase | Self::VerifyDns | Self::VerifyCluster => false,
        }
    }

    /// The kind of resource the action works on.
    pub fn kind(self) -> super::incident::ResourceKind {
        use super::incident::ResourceKind;
        match self {
            Self::RestartService | Self::VerifyService => ResourceKind::EcsService,
            Self::FailoverDatabase | Self::VerifyDatabase => ResourceKind::RdsInstance,
            Self::UpdateDns | Self::VerifyDns => ResourceKind::Route53HealthCheck,
            Self::FailoverCluster | Self::VerifyCluster => ResourceKind::RdsCluster,
        }
    }
}

/// Parameters of a step. Only the fields of the action's resource are set.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepParameters {
    /// AWS region.
    #[schemars(length(max = 32))]
    pub region: String,
    /// ECS cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub cluster: Option<String>,
    /// ECS service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub service: Option<String>,
    /// ECS: the PRIMARY deployment when the incident was detected. The restart's effect is a
    /// different, newer deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub deployment_before: Option<String>,
    /// RDS DB instance (or DB cluster) identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub identifier: Option<String>,
    /// DB cluster: the writer when the incident was detected; the failover's effect is
    /// another writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub writer_before: Option<String>,
    /// DB cluster: the instance to promote, if it is an available reader then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub failover_target: Option<String>,
    /// RDS: reboot with ForceFailover (only ever true for a Multi-AZ instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_failover: Option<bool>,
    /// Route 53: zone of the record to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub hosted_zone_id: Option<String>,
    /// Route 53: name of the record to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub record_name: Option<String>,
    /// Route 53: type of the record to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_type: Option<RecordType>,
    /// Route 53: where the record is pointed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_target: Option<AliasTarget>,
    /// Route 53: the health check whose failure the step answers. It is read again just
    /// before the record is changed; a check passing again means no failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub health_check_id: Option<String>,
    /// Why the planner chose these parameters (e.g. why no ForceFailover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub reason: Option<String>,
}

/// Observed state of a plan: a complete audit trail.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPlanStatus {
    /// Created → [AwaitingApproval] → Executing → Completed | Failed | NotNeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PlanPhase>,
    /// Steps finished out of all steps, e.g. `1/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// One entry per step, by order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["order"]))]
    pub steps: Vec<StepStatus>,
    /// Who approved a Manual plan (from the approval annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// When the first step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the plan reached Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Why the plan is where it is, in a sentence (which rail holds it, why it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last on-demand request of each kind (retry, re-verify, cancel annotations): who
    /// asked, when it was handled, and what it did or why not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["action"]))]
    pub requests: Vec<RequestRecord>,
    /// `Held` (a rail holds the next step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec that the last successful reconcile acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// An on-demand request, as handled.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// Which request.
    pub action: RequestAction,
    /// The annotation's value when it was handled: a different value is a new request.
    #[schemars(length(max = 253))]
    pub token: String,
    /// Who asked: the value's first word.
    #[schemars(length(max = 253))]
    pub by: String,
    /// When it was handled.
    pub at: Time,
    /// Accepted or Refused.
    pub outcome: RequestOutcome,
    /// What it did, or why it was refused.
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// On-demand requests, each an annotation on the plan.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestAction {
    /// `recovery.dev/retry`: a new attempt of a failed plan's failed step.
    Retry,
    /// `recovery.dev/reverify`: the verification again, now.
    Reverify,
    /// `recovery.dev/cancel`: end a waiting plan.
    Cancel,
}

impl RequestAction {
    /// Every request, in the order they are handled when several are asked at once: a
    /// cancel first (a person who cancels wants nothing else to start).
    pub const ALL: [Self; 3] = [Self::Cancel, Self::Retry, Self::Reverify];

    /// The annotation that asks for it.
    pub fn annotation(self) -> &'static str {
        match self {
            Self::Retry => RETRY_ANNOTATION,
            Self::Reverify => REVERIFY_ANNOTATION,
            Self::Cancel => CANCEL_ANNOTATION,
        }
    }

    /// The lowercase name (metrics, messages).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Reverify => "reverify",
            Self::Cancel => "cancel",
        }
    }
}

/// What became of a request.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Done as asked.
    Accepted,
    /// Not done: the plan was not in a state it applies to (the message says why).
    Refused,
}

/// Plan phases.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanPhase {
    /// Made, not yet started.
    Created,
    /// A Manual plan waits for the approval annotation.
    AwaitingApproval,
    /// Steps are running.
    Executing,
    /// Every step completed (or was skipped in a dry run).
    Completed,
    /// A step failed or timed out; people take over.
    Failed,
    /// Ended without acting: the target was healthy when the plan was about to act (read
    /// just before the AWS call), or its incident resolved before the plan started. The
    /// incident resolves through detection as usual.
    NotNeeded,
    /// A person cancelled the plan before it acted (the cancel annotation); the incident
    /// stays open for people until the target is healthy.
    Cancelled,
}

impl PlanPhase {
    /// Completed, Failed, NotNeeded or Cancelled.
    pub fn is_terminal(self) -> bool {
        match self {
            Self::Completed | Self::Failed | Self::NotNeeded | Self::Cancelled => true,
            Self::Created | Self::AwaitingApproval | Self::Executing => false,
        }
    }
}

/// What happened to one step.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// The step's order.
    pub order: u32,
    /// Pending, InProgress, Completed, Failed or Skipped.
    pub phase: StepPhase,
    /// When the first attempt started; the effect check looks for AWS changes since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started_at: Option<Time>,
    /// When the step finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Earliest time of the next attempt after a failed one (retry backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// What happened, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What AWS returned: deployment id, change id, request id, statuses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, String>,
}

/// Step phases.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPhase {
    /// Not started (or waiting for a retry).
    Pending,
    /// Started and persisted; the action may or may not have reached AWS.
    InProgress,
    /// Done, with evidence.
    Completed,
    /// Gave up; the plan failed.
    Failed,
    /// Not run: a dry run, an earlier step failed, or the target was healthy when the step
    /// was about to act (the message says which; the evidence holds what was read).
    Skipped,
}
