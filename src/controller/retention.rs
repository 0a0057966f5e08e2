//! Retention's shell: gathers a policy's finished incidents from the watch caches for the
//! pure rules (`core::retention`), and deletes what they let go, each incident after its
//! plan.
//!
//! Network: deletes plans and incidents; reads nothing but the caches.

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use crate::api::RecoveryPolicy;
use crate::api::common::parse_duration;
use crate::api::conditions::{action, reason};
use crate::api::incident::Incident;
use crate::api::plan::RecoveryPlan;
use crate::api::policy::HistoryEntry;
use crate::core::retention::{self, Finished};
use crate::core::targets::plan_name;
use crate::metrics::KindLabel;

use super::{Context, now};

/// The policy's finished incidents, from the caches; `None` while they are not filled (the
/// history and retention then wait for the next cycle).
pub async fn finished(ctx: &Context, policy: &RecoveryPolicy) -> Option<Vec<Finished>> {
    let ns = policy.namespace().unwrap_or_default();
    let incidents = ctx.cache(&ns, |c| &c.incidents).await?;
    let plans = ctx.cache(&ns, |c| &c.plans).await?;
    let (name, at) = (policy.name_any(), now());
    let found = incidents
        .state()
        .iter()
        .filter(|i| i.metadata.namespace.as_deref() == Some(ns.as_str()) && i.spec.policy == name)
        .filter_map(|i| {
            // By the name its status records, or the deterministic one (its writers race).
            let named = i.status.as_ref().and_then(|s| s.plan.clone()).unwrap_or_else(|| plan_name(&i.name_any()));
            let plan = plans.get(&ObjectRef::new(&named).within(&ns));
            retention::finished(i, plan.as_deref(), policy.spec.alerts.as_ref(), at)
        })
        .collect();
    Some(found)
}

/// Deletes the finished incidents (and their plans) that retention lets go, given the
/// history as just persisted. A failed delete is logged and tried again next cycle: it
/// never fails the policy's reconcile.
pub async fn prune(ctx: &Context, policy: &RecoveryPolicy, finished: &[Finished], history: &[HistoryEntry]) {
    let cooldown = parse_duration(&policy.spec.remediation.cooldown).unwrap_or_default();
    let pass = retention::prune(finished, history, &policy.spec.retention, cooldown, now());
    if !pass.kept.is_empty() {
        tracing::debug!(kept = ?pass.kept, "finished incidents past the limits kept for now");
    }
    if pass.delete.is_empty() {
        return;
    }
    let ns = policy.namespace().unwrap_or_default();
    let incidents: Api<Incident> = Api::namespaced(ctx.client.clone(), &ns);
    let plans: Api<RecoveryPlan> = Api::namespaced(ctx.client.clone(), &ns);
    let mut gone = vec![];
    for (name, uid, plan) in pass.delete {
        // The plan first: the incident owns it, so the garbage collector would remove it
        // after the incident, but where it lags (or does not run) the plan would outlive
        // its incident; an incident briefly without its plan is still finished.
        if let Some(plan) = plan {
            let deleted = plans.delete(&plan, &background(None)).await;
            match deleted {
                Ok(_) => {
                    ctx.metrics.pruned.get_or_create(&KindLabel { kind: "RecoveryPlan".into() }).inc();
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {} // gone already (the GC, or an earlier pass)
                Err(e) => {
                    warn!(%plan, error = %e, "could not delete a finished plan; trying again next cycle");
                    continue;
                }
            }
        }
        match incidents.delete(&name, &background(uid)).await {
            Ok(_) => {
                ctx.metrics.pruned.get_or_create(&KindLabel { kind: "Incident".into() }).inc();
                gone.push(name);
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                warn!(incident = %name, error = %e, "could not delete a finished incident; trying again next cycle")
            }
        }
    }
    if gone.is_empty() {
        return;
    }
    let r = &policy.spec.retention;
    info!(deleted = gone.len(), "retention deleted finished incidents");
    let note = format!(
        "deleted {} finished incident(s) and their plans (retention keeps {} that recovered and {} that needed \
         people; status.history keeps the newest {}): {}",
        gone.len(),
        r.successful_history_limit,
        r.failed_history_limit,
        r.summary_limit,
        gone.join(", ")
    );
    ctx.event(policy, EventType::Normal, reason::HISTORY_PRUNED, action::RETAIN, note);
}

/// A deletion that leaves dependents to the garbage collector, guarded by the uid when known
/// (a same-named object made since is not this one).
fn background(uid: Option<String>) -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: uid.map(|uid| Preconditions { uid: Some(uid), resource_version: None }),
        ..DeleteParams::default()
    }
}
