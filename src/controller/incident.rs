//! The Incident reconciler: for an open incident whose policy allows remediation, make its
//! RecoveryPlan (owned by the incident) and follow the plan's phase:
//! Detected → Investigating (plan made / awaiting approval) → Mitigating (executing) →
//! Resolved (by detection, once healthy). A failed plan leaves the incident open with
//! `RemediationFailed` and its severity raised one level.
//!
//! Network: creates the plan, writes the incident (it reads the watch caches).

use std::sync::Arc;

use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument};

use crate::api::common::set_condition;
use crate::api::conditions::incident as conditions;
use crate::api::conditions::{action, reason};
use crate::api::incident::{Incident, IncidentPhase};
use crate::api::labels::{ESCALATED_ANNOTATION, POLICY_LABEL, TARGET_LABEL};
use crate::api::plan::{PlanPhase, RecoveryPlan, RecoveryPlanSpec};
use crate::api::policy::RemediationMode;
use crate::core::planning::plan_steps;
use crate::core::targets::{plan_name, target_label};

use super::{Context, Error, now, replace_status};

/// Reconciles one incident.
#[instrument(skip_all, fields(incident = %incident.name_any(), namespace = incident.namespace().unwrap_or_default()))]
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(phase) = incident.status.as_ref().and_then(|s| s.phase) else {
        return Ok(Action::await_change()); // detection writes the first status
    };
    if phase == IncidentPhase::Resolved {
        return Ok(Action::await_change());
    }
    let ns = incident.namespace().unwrap_or_default();
    let incidents: Api<Incident> = Api::namespaced(ctx.client.clone(), &ns);
    let plans: Api<RecoveryPlan> = Api::namespaced(ctx.client.clone(), &ns);
    // Read from the watch caches. Every write below is guarded by the resourceVersion read
    // here (the incident's status is shared with detection and the alert ledger), so a cache
    // that lags only costs a conflict and a re-read; a plan the cache has not seen yet is
    // found by its create (409).
    let own = incident.name_any();
    let name = plan_name(&own);
    let (fresh, policy, plan) = tokio::try_join!(
        ctx.get(&ns, |c| &c.incidents, &own),
        ctx.get(&ns, |c| &c.policies, &incident.spec.policy),
        ctx.get(&ns, |c| &c.plans, &name),
    )?;
    let Some(incident) = fresh.as_deref().cloned() else { return Ok(Action::await_change()) };
    // The cache may lag: never move a resolved incident back to an earlier phase.
    if incident.status.as_ref().and_then(|s| s.phase) == Some(IncidentPhase::Resolved) {
        return Ok(Action::await_change());
    }
    let mut next = incident.clone();
    let status = next.status.get_or_insert_with(Default::default);
    let generation = incident.metadata.generation;
    let t = now();

    let allowed = |status: &mut crate::api::incident::IncidentStatus, ok: bool, reason: &str, msg: String| {
        set_condition(&mut status.conditions, conditions::REMEDIATION_ALLOWED, ok, reason, msg, generation, t)
    };

    match (&policy, plan) {
        (None, None) => {
            allowed(status, false, reason::POLICY_MISSING, format!("policy {} does not exist", incident.spec.policy));
        }
        (Some(p), None) if p.spec.remediation.mode == RemediationMode::Disabled => {
            allowed(
                status,
                false,
                reason::REMEDIATION_DISABLED,
                "the policy's remediation mode is Disabled: no plan is made".into(),
            );
        }
        (Some(_), None) if status.plan.is_some() => {
            // A person deleted the plan. Making it again could repeat what it already did.
            allowed(
                status,
                false,
                reason::PLAN_DELETED,
                format!("plan {name} was deleted; no new plan is made for this incident"),
            );
        }
        (Some(p), None) => match plan_steps(&incident.spec, status.metrics.as_ref(), &p.spec) {
            Err(e) => {
                if allowed(status, false, reason::CANNOT_PLAN, e.to_string()) {
                    ctx.event(&incident, EventType::Warning, reason::CANNOT_PLAN, action::PLAN, e.to_string());
                }
            }
            Ok(steps) => {
                let dry_run = p.spec.remediation.mode == RemediationMode::DryRun;
                let spec = RecoveryPlanSpec {
                    incident: incident.name_any(),
                    incident_id: incident.spec.id.clone(),
                    policy: incident.spec.policy.clone(),
                    dry_run,
                    steps,
                };
                create_plan(&ctx, &plans, &incident, &name, spec).await?;
                info!(plan = %name, "plan created");
                ctx.event(
                    &incident,
                    EventType::Normal,
                    reason::PLAN_CREATED,
                    action::PLAN,
                    format!("created plan {name}"),
                );
                status.plan = Some(name.clone());
                status.phase = Some(IncidentPhase::Investigating);
                allowed(status, true, reason::PLAN_CREATED, format!("plan {name} was made"));
            }
        },
        (_, Some(plan)) => {
            status.plan = Some(name.clone());
            let plan_phase = plan.status.as_ref().and_then(|s| s.phase).unwrap_or(PlanPhase::Created);
            status.phase = Some(match plan_phase {
                PlanPhase::Created | PlanPhase::AwaitingApproval => IncidentPhase::Investigating,
                PlanPhase::Completed if plan.spec.dry_run => IncidentPhase::Investigating,
                PlanPhase::Executing | PlanPhase::Completed | PlanPhase::Failed => IncidentPhase::Mitigating,
                // Nothing was done: the incident waits for detection to see the target healthy.
                PlanPhase::NotNeeded => IncidentPhase::Investigating,
                // A person stopped the plan: the incident is theirs until the target is healthy.
                PlanPhase::Cancelled => IncidentPhase::Investigating,
            });
            let failed_before = crate::api::common::condition(&status.conditions, conditions::REMEDIATION_FAILED)
                .is_some_and(|c| c.status == crate::api::common::TRUE);
            if plan_phase != PlanPhase::Failed && failed_before {
                // A person asked for the failed plan to be retried.
                let msg = format!(
                    "plan {name} is being retried: {}",
                    plan.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default()
                );
                set_condition(
                    &mut status.conditions,
                    conditions::REMEDIATION_FAILED,
                    false,
                    reason::RETRYING,
                    msg,
                    generation,
                    t,
                );
            }
            if plan_phase == PlanPhase::Failed {
                let why =
                    plan.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_else(|| "the plan failed".into());
                let msg = format!("plan {name} failed: {why}; people take over");
                if set_condition(
                    &mut status.conditions,
                    conditions::REMEDIATION_FAILED,
                    true,
                    reason::PLAN_FAILED,
                    &msg,
                    generation,
                    t,
                ) {
                    ctx.event(&incident, EventType::Warning, reason::REMEDIATION_FAILED, action::REMEDIATE, msg);
                }
                if let Some(patched) = escalate(&ctx, &incidents, &incident, &name).await? {
                    // The patch was guarded by the same resourceVersion and touched no
                    // status, so the status computed here is still current.
                    next.metadata.resource_version = patched.metadata.resource_version;
                    next.spec.severity = patched.spec.severity;
                }
            }
        }
    }
    if next.status != incident.status {
        replace_status(&ctx, &incidents, &next).await?;
    }
    Ok(Action::await_change())
}

async fn create_plan(
    ctx: &Context,
    api: &Api<RecoveryPlan>,
    incident: &Incident,
    name: &str,
    spec: RecoveryPlanSpec,
) -> Result<(), Error> {
    let plan = RecoveryPlan {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: incident.namespace(),
            labels: Some({
                let mut labels = incident.labels().clone();
                labels.insert(POLICY_LABEL.to_owned(), incident.spec.policy.clone());
                labels.insert(TARGET_LABEL.to_owned(), target_label(&incident.spec.target));
                labels
            }),
            owner_references: incident.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    match super::create(ctx, api, &plan).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()), // made by an earlier attempt
        Err(e) => Err(e.into()),
    }
}

/// Raises the severity one level, once per failed plan: the annotation and the new severity
/// are written in one patch, guarded by the resourceVersion.
async fn escalate(
    ctx: &Context,
    api: &Api<Incident>,
    incident: &Incident,
    plan: &str,
) -> Result<Option<Incident>, Error> {
    if incident.annotations().get(ESCALATED_ANNOTATION).map(String::as_str) == Some(plan) {
        return Ok(None);
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": incident.resource_version(),
            "annotations": { ESCALATED_ANNOTATION: plan },
        },
        "spec": { "severity": incident.spec.severity.raised() },
    });
    let _writing = ctx.state_write();
    let patched = api.patch(&incident.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    ctx.wrote(&patched);
    Ok(Some(patched))
}
