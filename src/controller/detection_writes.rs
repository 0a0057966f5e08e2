//! Detection's writes to Incidents: open (create-or-find by deterministic name), refresh,
//! resolve. Each is idempotent, so a crash between any two of them is repaired by the next
//! probe cycle.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta};
use kube::{Resource, ResourceExt};

use crate::api::conditions::incident as conditions;
use crate::api::incident::{Incident, IncidentMetrics, IncidentPhase, IncidentSpec, IncidentStatus};
use crate::api::{RecoveryPolicy, common};
use crate::core::targets::Target;
use crate::core::time::since;

use super::{Context, POLICY_LABEL, create, replace_status};

/// Without a change of metrics, lastSeenAt is refreshed at most this often, so a long
/// incident costs one write per interval instead of one per probe.
const LAST_SEEN_REFRESH: Duration = Duration::from_secs(300);

/// Creates the incident, or finds it if an earlier attempt already did; then makes sure its
/// status says Detected. Returns the incident and whether this call created it.
pub async fn open(
    ctx: &Context,
    api: &Api<Incident>,
    policy: &RecoveryPolicy,
    target: &Target,
    name: &str,
    metrics: &IncidentMetrics,
    now: Timestamp,
) -> Result<(Incident, bool), kube::Error> {
    let kind = crate::core::kinds::of(target.resource.kind);
    let spec = IncidentSpec {
        id: uuid::Uuid::new_v4().to_string(),
        type_: target.incident_type(),
        severity: target.severity,
        policy: policy.name_any(),
        target: target.key.clone(),
        resource: target.resource.clone(),
        description: kind.describe_incident(&target.resource, metrics),
        affected_components: kind.affected(&target.resource, &policy.spec),
    };
    let obj = Incident {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: policy.namespace(),
            // The policy's labels are copied so a `--policy-selector` shard also selects the
            // incidents and plans of its policies.
            labels: Some({
                let mut labels = policy.labels().clone();
                labels.insert(POLICY_LABEL.to_owned(), policy.name_any());
                labels
            }),
            owner_references: policy.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    let (mut inc, created) = match create(ctx, api, &obj).await {
        Ok(inc) => (inc, true),
        Err(kube::Error::Api(e)) if e.code == 409 => (api.get(name).await?, false),
        Err(e) => return Err(e),
    };
    if inc.status.as_ref().and_then(|s| s.phase).is_none() {
        inc.status = Some(IncidentStatus {
            phase: Some(IncidentPhase::Detected),
            detected_at: Some(Time(now)),
            last_seen_at: Some(Time(now)),
            metrics: Some(metrics.clone()),
            ..IncidentStatus::default()
        });
        inc = replace_status(ctx, api, &inc).await?;
    }
    Ok((inc, created))
}

/// Whether an open incident (as cached) already shows these metrics and was seen recently
/// enough: then a still-unhealthy probe needs neither a read nor a write.
pub fn up_to_date(inc: &Incident, metrics: &IncidentMetrics, now: Timestamp) -> bool {
    inc.status.as_ref().is_some_and(|s| {
        s.phase.is_some_and(|p| p != IncidentPhase::Resolved)
            && s.metrics.as_ref() == Some(metrics)
            && s.last_seen_at.as_ref().is_some_and(|t| since(now, t.0) < LAST_SEEN_REFRESH)
    })
}

/// Refreshes metrics and lastSeenAt of an open incident, writing only when the metrics
/// changed or lastSeenAt is stale. Returns false when the incident no longer exists (a
/// person deleted it), so detection can open a new one.
pub async fn still_unhealthy(
    ctx: &Context,
    api: &Api<Incident>,
    name: &str,
    metrics: &IncidentMetrics,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let Some(mut inc) = api.get_opt(name).await? else { return Ok(false) };
    if up_to_date(&inc, metrics, now) {
        return Ok(true);
    }
    let status = inc.status.get_or_insert_with(IncidentStatus::default);
    if status.phase == Some(IncidentPhase::Resolved) {
        return Ok(false);
    }
    status.metrics = Some(metrics.clone());
    status.last_seen_at = Some(Time(now));
    replace_status(ctx, api, &inc).await?;
    Ok(true)
}

/// Marks an incident Resolved. Returns the incident if this call resolved it.
pub async fn resolve(
    ctx: &Context,
    api: &Api<Incident>,
    name: &str,
    metrics: Option<&IncidentMetrics>,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Result<Option<Incident>, kube::Error> {
    let Some(mut inc) = api.get_opt(name).await? else { return Ok(None) };
    let generation = inc.metadata.generation;
    let status = inc.status.get_or_insert_with(IncidentStatus::default);
    if status.phase == Some(IncidentPhase::Resolved) {
        return Ok(None);
    }
    status.phase = Some(IncidentPhase::Resolved);
    status.resolved_at = Some(Time(now));
    if let Some(m) = metrics {
        status.metrics = Some(m.clone());
    }
    common::set_condition(&mut status.conditions, conditions::RESOLVED, true, reason, message, generation, now);
    Ok(Some(replace_status(ctx, api, &inc).await?))
}
