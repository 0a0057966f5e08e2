//! Target kinds, each in one place. A kind's pure half lives in its module here: its
//! targets and their keys (the only place a key is made), its health rule (used by
//! detection's probes *and* by a mutating step's read just before it acts), its plan
//! template, the wording of its incidents and steps, and its "already happened" and
//! pre-check rules over a small snapshot of what AWS said. Its SDK half is in `aws`.
//!
//! [`of`] is the registry: one arm per kind and no wildcard, so the compiler names what a
//! new kind must provide; [`ALL`] lists them in the order a policy's targets are listed.

pub mod ecs;
pub mod rds;
pub mod rds_cluster;
pub mod route53;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;

use crate::api::Severity;
use crate::api::incident::{AwsResource, IncidentMetrics, IncidentSpec, IncidentType, ResourceKind};
use crate::api::plan::{StepAction, StepParameters};
use crate::api::policy::{Locale, RecoveryPolicySpec};

use super::events::{Envelope, Heard};
use super::outcomes::ActionOutcome;

/// One AWS resource a policy watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Stable key, made by the target's kind: `ecs/<cluster>/<service>`, `rds/<identifier>`,
    /// `route53/<id>`.
    pub key: String,
    /// The resource, as an incident names it.
    pub resource: AwsResource,
    /// Severity of an incident on it (the policy's override or the kind's default).
    pub severity: Severity,
}

impl Target {
    /// The incident type this target's failures are.
    pub fn incident_type(&self) -> IncidentType {
        self.resource.kind.incident_type()
    }
}

/// Why no plan can be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The incident's resource lacks a field its kind needs.
    #[error("incident resource is missing {0}")]
    MissingField(&'static str),
    /// A network incident whose health check has no failover record in the policy.
    #[error("health check {0} has no failover record in the policy, so there is nothing to point DNS at")]
    NoFailover(String),
}

/// A kind's plan: its mutating action, the verification that follows, and their parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    /// Step 1, under the at-most-once protocol.
    pub act: StepAction,
    /// Step 2, read-only.
    pub verify: StepAction,
    /// Everything both need, fixed when the plan is made.
    pub parameters: StepParameters,
}

/// The pure half of one kind of target.
pub trait TargetKind: Sync {
    /// The kind, as the API names it.
    fn resource_kind(&self) -> ResourceKind;
    /// The policy's targets of this kind, in spec order.
    fn targets(&self, spec: &RecoveryPolicySpec) -> Vec<Target>;
    /// The plan for an incident of this kind; `base` carries the region.
    fn plan(
        &self,
        incident: &IncidentSpec,
        metrics: Option<&IncidentMetrics>,
        policy: &RecoveryPolicySpec,
        base: StepParameters,
    ) -> Result<Template, PlanError>;
    /// One sentence for people about an incident, with the figures seen.
    fn describe_incident(&self, r: &AwsResource, m: &IncidentMetrics) -> String;
    /// The components an incident affects (the resource, and what depends on it).
    fn affected(&self, r: &AwsResource, policy: &RecoveryPolicySpec) -> Vec<String>;
    /// A sentence naming the AWS call the kind's mutating step makes.
    fn describe_act(&self, p: &StepParameters) -> String;
    /// A sentence saying what the kind's verification waits for.
    fn describe_verify(&self, p: &StepParameters) -> String;
    /// What alerts call a resource of this kind, per locale (`ECS service`, `ECS 서비스`).
    fn noun(&self, locale: Locale) -> &'static str;
    /// How an alert names a resource: its name, then what places it (cluster, region).
    fn alert_resource(&self, r: &AwsResource) -> (String, Vec<Place>);
    /// The EventBridge (source, detail-type) pairs this kind hears (see `core::events`).
    fn hears(&self) -> &'static [(&'static str, &'static str)];
    /// What an event says about resources of this kind: their target keys, and whether it
    /// reports trouble. Nothing for an event of another kind.
    fn hear(&self, event: &Envelope) -> Vec<Heard>;
    /// Narrows `spec` to the targets of this kind whose keys are in `keep` (a probe woken by
    /// an event reads only the targets it names).
    fn keep(&self, spec: &mut RecoveryPolicySpec, keep: &BTreeSet<String>);
}

/// What places a resource in an alert's resource line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The ECS cluster (the alert writes its word for "cluster" before it).
    Cluster(String),
    /// The region.
    Region(String),
}

/// Every kind, in the order a policy's targets are listed: the API's list (whose CRD rules
/// are made from it).
pub const ALL: [ResourceKind; 4] = ResourceKind::ALL;

/// The pure half of a kind.
pub fn of(kind: ResourceKind) -> &'static dyn TargetKind {
    match kind {
        ResourceKind::EcsService => &ecs::Ecs,
        ResourceKind::RdsInstance => &rds::Rds,
        ResourceKind::Route53HealthCheck => &route53::Route53,
        ResourceKind::RdsCluster => &rds_cluster::RdsCluster,
    }
}

/// Whether `event` is one of `hears`.
fn is_one_of(hears: &[(&str, &str)], event: &Envelope) -> bool {
    hears.iter().any(|(s, d)| *s == event.source && *d == event.detail_type)
}

/// A string field of an event's detail.
fn detail<'a>(event: &'a Envelope, field: &str) -> &'a str {
    event.detail.get(field).and_then(|v| v.as_str()).unwrap_or_default()
}

/// A resource of `kind` in `region` with no identifying field set yet.
fn resource(kind: ResourceKind, region: &str) -> AwsResource {
    AwsResource {
        kind,
        region: region.to_owned(),
        cluster: None,
        service: None,
        identifier: None,
        health_check_id: None,
    }
}

/// A field of an incident's resource that the kind needs.
fn field(value: &Option<String>, name: &'static str) -> Result<String, PlanError> {
    value.clone().ok_or(PlanError::MissingField(name))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry names every kind the API knows, each once, and each kind says it is
    /// the one it is registered as.
    #[test]
    fn the_registry_covers_the_api_kinds() {
        let schema = serde_json::to_value(schemars::schema_for!(ResourceKind)).unwrap();
        // Documented variants are a `oneOf` of constants; undocumented ones an `enum`.
        let api: Vec<String> = match schema["enum"].as_array() {
            Some(values) => values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            None => schema["oneOf"]
                .as_array()
                .expect("an enum or a oneOf")
                .iter()
                .filter_map(|v| v["const"].as_str().or(v["enum"][0].as_str()).map(str::to_owned))
                .collect(),
        };
        let registered: Vec<String> = ALL.iter().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(registered, api);
        for k in ALL {
            assert_eq!(of(k).resource_kind(), k);
        }
    }

    /// Narrowing a policy to some keys keeps exactly those targets, kind by kind.
    #[test]
    fn keep_narrows_to_the_named_targets() {
        let spec = crate::core::testing::policy();
        let all: Vec<String> = crate::core::targets::targets(&spec).into_iter().map(|t| t.key).collect();
        for chosen in [vec![], vec![0], vec![1, 2], vec![0, 3], (0..all.len()).collect()] {
            let keep: BTreeSet<String> = chosen.iter().map(|i| all[*i].clone()).collect();
            let narrowed = crate::core::targets::narrow(&spec, &keep);
            let got: BTreeSet<String> = crate::core::targets::targets(&narrowed).into_iter().map(|t| t.key).collect();
            assert_eq!(got, keep, "{chosen:?}");
            assert!(narrowed.targets.ecs_services.iter().all(|g| !g.services.is_empty()), "no empty cluster groups");
        }
    }
}
