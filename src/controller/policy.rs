//! The RecoveryPolicy reconciler: validate → start a probe of AWS when one is due (it runs
//! as a task of its own, see `probes`, and wakes this reconcile with its report) → detect
//! (pure) → write incidents → write the policy's status → requeue at the next probe time.
//!
//! Network: the probe talks to AWS; `apply_decisions` and `write_status` to the API server.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::api::RecoveryPolicy;
use crate::api::common::{self, parse_duration};
use crate::api::conditions::policy as conditions;
use crate::api::conditions::{action, reason};
use crate::api::incident::Incident;
use crate::api::policy::{RecoveryPolicyStatus, TargetState};
use crate::aws::probe::ProbeReport;
use crate::core::detection::{Decision, adopt_orphans, answered_at, detect, next_probe, probe_wait};
use crate::core::pause;
use crate::core::rails::{Held, RailInputs, may_act};
use crate::core::retention;
use crate::core::time::since;
use crate::metrics::IncidentLabels;

use super::{Context, Error, MANAGER, detection_writes, now, probes};

/// Longest a policy's `lastProbeTime` may lag while nothing else in its status changes.
pub const HEARTBEAT: Duration = Duration::from_secs(300);

/// Reconciles one policy.
#[instrument(skip_all, fields(policy = %policy.name_any(), namespace = policy.namespace().unwrap_or_default()))]
pub async fn reconcile(policy: Arc<RecoveryPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let now = now();
    let interval = parse_duration(&policy.spec.probe_interval).map_err(Error::InvalidSpec)?;
    let status = policy.status.clone().unwrap_or_default();

    // Watch events (our own status writes among them) must not make probes more frequent
    // than probeInterval; a changed spec is probed at once.
    let spec_seen = status.observed_generation == policy.metadata.generation;
    let ns = policy.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", policy.name_any());
    // The probe runs as a task of its own (see `probes`) and wakes this reconcile when done;
    // the requeue is for a wake that never comes (a stopping process).
    let Some(probe) = ctx.probes.take(&key, policy.metadata.generation) else {
        if ctx.probes.running(&key) {
            return Ok(Action::requeue(interval));
        }
        if let Some(last) = ctx.probes.last(&key).or(status.last_probe_time.as_ref().map(|t| t.0)) {
            let due = next_probe(interval, last, aws_failing_since(&status));
            if spec_seen && now < due {
                // Targets an AWS event named are asked about now; polling keeps its time.
                if probes::start_woken(&ctx, policy.clone(), key.clone()) {
                    return Ok(Action::requeue(interval));
                }
                return Ok(Action::requeue(since(due, now).max(Duration::from_millis(100))));
            }
            if spec_seen {
                ctx.metrics.probe_lag_seconds.observe(since(now, due).as_secs_f64());
            }
        }
        probes::start(&ctx, policy.clone(), key);
        return Ok(Action::requeue(interval));
    };
    let (now, report, woken) = (probe.started, probe.report, probe.woken);
    let at = answered_at(interval, probe.started, probe.answered);
    // The polling schedule is that of the probes of every target.
    let last_full = match woken.only {
        Some(_) => ctx.probes.last(&key).unwrap_or(now),
        None => now,
    };
    let mut previous = status.target_states.clone();
    adopt_orphans(
        &policy.name_any(),
        &policy.spec,
        &mut previous,
        &Box::pin(open_incident_names(&ctx, &policy)).await?,
    );
    let recovered = match previous.iter().any(|s| s.open_incident.is_some()) {
        true => Box::pin(recovered_incidents(&ctx, &policy, &previous)).await,
        false => Default::default(),
    };
    let cycle = detect(&policy.name_any(), &policy.spec, &previous, &report.probes, at, &recovered, &woken);
    let opened_since: Vec<Timestamp> = cycle
        .decisions
        .iter()
        .filter(|(_, d)| matches!(d, Decision::Open { .. }))
        .filter_map(|(t, _)| t.as_ref())
        .filter_map(|t| cycle.states.iter().find(|s| s.target == t.key)?.unhealthy_since.as_ref().map(|s| s.0))
        .collect();
    for (target, _) in cycle.decisions.iter().filter(|(_, d)| matches!(d, Decision::Open { .. })) {
        if let Some(event) = target.as_ref().and_then(|t| woken.corroborated.get(&t.key).map(|e| (t, e))) {
            let (t, event) = event;
            let message = format!(
                "{}: AWS event {event} and the probe it woke agree it is unhealthy: the incident opens without waiting for failureThreshold (detection.events: Corroborate)",
                t.key
            );
            ctx.event(&*policy, EventType::Warning, reason::EVENT_CORROBORATED, action::DETECT, message);
        }
    }
    let states = Box::pin(apply_decisions(&policy, &ctx, cycle.decisions, cycle.states, now)).await?;
    for since in opened_since {
        ctx.metrics.detection_seconds.observe(crate::core::time::since(crate::controller::now(), since).as_secs_f64());
    }
    record_open_incidents(&ctx, &policy, &states);
    let finished = super::retention::finished(&ctx, &policy).await;

    let mut next = RecoveryPolicyStatus {
        observed_generation: policy.metadata.generation,
        conditions: status.conditions.clone(),
        last_probe_time: status.last_probe_time.clone(),
        open_incidents: states.iter().filter(|s| s.open_incident.is_some()).count() as u32,
        targets: Some(cycle.counts),
        target_states: states,
        history: match &finished {
            Some(f) => retention::summary(&status.history, f, policy.spec.retention.summary_limit),
            None => status.history.clone(),
        },
    };
    // The alert Secrets are checked only when the policy names alert channels.
    let alerts = match policy.spec.alerts {
        Some(_) => Some(Box::pin(super::alerts::check_secrets(&ctx, &policy)).await),
        None => None,
    };
    // A woken probe asked about some targets only: what it says of AWS's reachability and
    // of missing targets stands until the next probe of every target.
    if woken.only.is_none() {
        set_conditions(&mut next, &report, alerts, policy.metadata.generation, now);
    }
    super::events::set_push_detection(&ctx, &policy, &mut next, now);
    if let Some(held) = set_remediation_allowed(&policy, &mut next, ctx.aws.circuit_open(), now) {
        ctx.event(&*policy, EventType::Warning, held.rail.reason(), action::GUARD, held.message);
    }
    let paused = set_paused(&ctx, &policy, &mut next, crate::controller::now());
    let due = next_probe(interval, last_full, aws_failing_since(&next));
    // A pause that ends before the next probe is shown ended when it ends.
    let due = paused.filter(|until| *until < due).unwrap_or(due);
    if probe_wait(interval, now, aws_failing_since(&next)) > interval {
        // Say why the policy is probed less often than it asks.
        if let Some(c) = next.conditions.iter_mut().find(|c| c.type_ == conditions::AWS_REACHABLE) {
            c.message = format!("{}; backing off: next probe in {}s", c.message, since(due, now).as_secs());
        }
    }
    // A probe that changed nothing writes nothing, but lastProbeTime is kept within
    // HEARTBEAT of the truth so people can see the policy is being probed.
    let stale = next.last_probe_time.as_ref().is_none_or(|t| since(now, t.0) >= HEARTBEAT);
    if woken.only.is_none() && (stale || policy.status.as_ref() != Some(&next)) {
        next.last_probe_time = Some(Time(now));
    }
    Box::pin(write_status(&policy, &ctx, &next)).await?;
    // Only what the status just written covers may go.
    if let Some(finished) = finished {
        Box::pin(super::retention::prune(&ctx, &policy, &finished, &next.history)).await;
    }
    // Events that came while this probe ran are asked about next.
    if ctx.probes.woken(&key) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    Ok(Action::requeue(since(due, crate::controller::now()).max(Duration::from_millis(100))))
}

/// Since when the policy's AWS calls have been failing, if they are.
fn aws_failing_since(status: &RecoveryPolicyStatus) -> Option<Timestamp> {
    common::condition(&status.conditions, conditions::AWS_REACHABLE)
        .filter(|c| c.status == common::FALSE)
        .map(|c| c.last_transition_time.0)
}

/// Carries out detection's decisions. Returns the states to persist, corrected for what the
/// API server said (an incident deleted by a person is forgotten, so a new one can open).
async fn apply_decisions(
    policy: &RecoveryPolicy,
    ctx: &Context,
    decisions: Vec<(Option<crate::core::targets::Target>, Decision)>,
    mut states: Vec<TargetState>,
    now: Timestamp,
) -> Result<Vec<TargetState>, Error> {
    use futures::{StreamExt, TryStreamExt};
    let ns = policy.namespace().unwrap_or_default();
    let api: Api<Incident> = Api::namespaced(ctx.client.clone(), &ns);
    let cache = ctx.cache(&ns, |c| &c.incidents).await;
    let cache = cache.as_ref();
    // Decisions are about different targets and incidents, so they go to the API server
    // together (a few at a time): a burst of incidents opens in one round trip's time, and
    // their plans wait less for the policy's counts that follow.
    let gone: Vec<Option<String>> = futures::stream::iter(decisions)
        .map(|(target, decision)| {
            let (api, ns) = (&api, ns.as_str());
            async move {
                match decision {
                    Decision::Nothing => {}
                    Decision::Open { name, metrics } => {
                        let target = target.expect("open decisions name their target");
                        let (inc, created) = detection_writes::open(ctx, api, policy, &target, &name, &metrics, now).await?;
                        if created {
                            info!(incident = %name, target = %target.key, "incident opened");
                            let note = format!(
                                "opened incident {name} ({}): {}",
                                inc.spec.severity.as_str(),
                                inc.spec.description
                            );
                            ctx.event(policy, EventType::Warning, reason::INCIDENT_OPENED, action::DETECT, note);
                        }
                    }
                    Decision::StillUnhealthy { incident, metrics } => {
                        let cached = cache.and_then(|c| c.get(&ObjectRef::new(&incident).within(ns)));
                        if cached.is_some_and(|i| detection_writes::up_to_date(&i, &metrics, now)) {
                            return Ok(None);
                        }
                        if !detection_writes::still_unhealthy(ctx, api, &incident, &metrics, now).await? {
                            warn!(%incident, "open incident is gone or resolved; a new one opens if the target stays unhealthy");
                            return Ok(Some(incident));
                        }
                    }
                    Decision::Resolve { incident, metrics } => {
                        let why = (reason::HEALTHY, "the target is healthy again");
                        resolve(policy, ctx, api, &incident, Some(&metrics), why, now).await?;
                    }
                    Decision::Relapsed { incident, metrics } => {
                        let why = (
                            reason::RECOVERED_BEFORE_ACTION,
                            "the target recovered before its plan acted (the plan ended not needed) and is unhealthy \
                             again: a new incident opens if it stays so",
                        );
                        resolve(policy, ctx, api, &incident, Some(&metrics), why, now).await?;
                    }
                    Decision::Abandon { incident } => {
                        let why = (reason::TARGET_REMOVED, "the target was removed from the policy");
                        resolve(policy, ctx, api, &incident, None, why, now).await?;
                    }
                }
                Ok::<_, Error>(None)
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    for incident in gone.into_iter().flatten() {
        if let Some(s) = states.iter_mut().find(|s| s.open_incident.as_deref() == Some(incident.as_str())) {
            s.open_incident = None;
        }
    }
    Ok(states)
}

/// The open incidents of `states` whose plans ended without acting because the target was
/// healthy (`NotNeeded`), from the plan cache: an unhealthy answer for one of them is a
/// relapse (see `Decision::Relapsed`). Without the cache (not yet synced) there are none:
/// such an incident then resolves or stays open as any other.
async fn recovered_incidents(
    ctx: &Context,
    policy: &RecoveryPolicy,
    states: &[TargetState],
) -> std::collections::BTreeSet<String> {
    let ns = policy.namespace().unwrap_or_default();
    let Some(plans) = ctx.cache(&ns, |c| &c.plans).await else { return Default::default() };
    states
        .iter()
        .filter_map(|s| s.open_incident.as_ref())
        .filter(|incident| {
            let plan = ObjectRef::new(&crate::core::targets::plan_name(incident)).within(&ns);
            plans.get(&plan).is_some_and(|p| {
                p.status.as_ref().and_then(|s| s.phase) == Some(crate::api::plan::PlanPhase::NotNeeded)
            })
        })
        .cloned()
        .collect()
}

/// Names of the policy's open incidents, for [`adopt_orphans`]: from the incident cache, or
/// one list call by label while the cache is not there.
async fn open_incident_names(
    ctx: &Context,
    policy: &RecoveryPolicy,
) -> Result<std::collections::BTreeSet<String>, Error> {
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let open = |i: &Incident| {
        i.spec.policy == name
            && i.status.as_ref().and_then(|s| s.phase) != Some(crate::api::incident::IncidentPhase::Resolved)
    };
    if let Some(cache) = ctx.cache(&ns, |c| &c.incidents).await {
        return Ok(cache
            .state()
            .iter()
            .filter(|i| i.namespace().as_deref() == Some(ns.as_str()) && open(i))
            .map(|i| i.name_any())
            .collect());
    }
    let api: Api<Incident> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = kube::api::ListParams::default().labels(&format!("{}={name}", super::POLICY_LABEL));
    Ok(api.list(&lp).await?.items.iter().filter(|i| open(i)).map(|i| i.name_any()).collect())
}

/// Publishes the policy's open incidents by type and severity.
fn record_open_incidents(ctx: &Context, policy: &RecoveryPolicy, states: &[TargetState]) {
    let targets = crate::core::targets::targets(&policy.spec);
    let mut counts = std::collections::HashMap::new();
    for s in states.iter().filter(|s| s.open_incident.is_some()) {
        if let Some(t) = targets.iter().find(|t| t.key == s.target) {
            let labels = IncidentLabels { r#type: t.incident_type().as_str(), severity: t.severity.as_str() };
            *counts.entry(labels).or_insert(0) += 1;
        }
    }
    let key = format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any());
    ctx.metrics.set_open_incidents(&key, counts);
}

async fn resolve(
    policy: &RecoveryPolicy,
    ctx: &Context,
    api: &Api<Incident>,
    incident: &str,
    metrics: Option<&crate::api::incident::IncidentMetrics>,
    (reason, message): (&str, &str),
    now: Timestamp,
) -> Result<(), Error> {
    if detection_writes::resolve(ctx, api, incident, metrics, reason, message, now).await?.is_some() {
        info!(%incident, reason, "incident resolved");
        let note = format!("resolved incident {incident}: {message}");
        ctx.event(policy, EventType::Normal, reason::INCIDENT_RESOLVED, action::DETECT, note);
    }
    Ok(())
}

/// The policy-wide rails as a condition. Returns the hold when it newly engaged, for a
/// Warning Event.
fn set_remediation_allowed(
    policy: &RecoveryPolicy,
    status: &mut RecoveryPolicyStatus,
    aws_circuit_open: bool,
    now: Timestamp,
) -> Option<Held> {
    let mut inputs = RailInputs::for_policy(&policy.spec.remediation, &status.targets.clone().unwrap_or_default(), now);
    inputs.aws_circuit_open = aws_circuit_open;
    let generation = policy.metadata.generation;
    let was = common::condition(&status.conditions, conditions::REMEDIATION_ALLOWED)
        .map(|c| (c.status.clone(), c.reason.clone()));
    match may_act(&inputs) {
        Ok(()) => {
            common::set_condition(
                &mut status.conditions,
                conditions::REMEDIATION_ALLOWED,
                true,
                reason::ALLOWED,
                "plans may act",
                generation,
                now,
            );
            None
        }
        Err(held) => {
            common::set_condition(
                &mut status.conditions,
                conditions::REMEDIATION_ALLOWED,
                false,
                held.rail.reason(),
                &held.message,
                generation,
                now,
            );
            (was != Some((common::FALSE.to_owned(), held.rail.reason().to_owned()))).then_some(held)
        }
    }
}

/// The `Paused` condition, its Events and gauges. Returns when the pause in force lifts.
fn set_paused(
    ctx: &Context,
    policy: &RecoveryPolicy,
    status: &mut RecoveryPolicyStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    let state = pause::state(&policy.spec, now);
    let was = common::condition(&status.conditions, conditions::PAUSED)
        .map(|c| (c.status == common::TRUE, c.message.clone()))
        .unwrap_or_default();
    let key = format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any());
    ctx.metrics.set_paused(&key, state.paused_targets as i64);
    common::set_condition(
        &mut status.conditions,
        conditions::PAUSED,
        state.in_force,
        state.reason,
        &state.message,
        policy.metadata.generation,
        now,
    );
    // One Event as a pause comes into force (or changes), one as it lifts.
    match (was.0, state.in_force) {
        (_, true) if was.1 != state.message => {
            ctx.event(policy, EventType::Normal, reason::PAUSE_STARTED, action::GUARD, state.message)
        }
        (true, false) => ctx.event(policy, EventType::Normal, reason::PAUSE_ENDED, action::GUARD, state.message),
        _ => {}
    }
    state.until
}

/// AwsReachable, TargetsFound, AlertsConfigured (when `alerts` is checked) and Ready, which
/// sums them up.
fn set_conditions(
    status: &mut RecoveryPolicyStatus,
    report: &ProbeReport,
    alerts: Option<Result<(), String>>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let cs = &mut status.conditions;
    let was_reachable = common::condition(cs, conditions::AWS_REACHABLE).is_none_or(|c| c.status == common::TRUE);
    if let (true, Some(first)) = (was_reachable, report.faults.first()) {
        warn!(fault = %first, failed_calls = report.faults.len(), "AWS calls failing: no target is judged on them");
    }
    let aws_ok = report.faults.is_empty();
    match report.faults.first() {
        None => common::set_condition(
            cs,
            conditions::AWS_REACHABLE,
            true,
            reason::REACHABLE,
            "every AWS call succeeded",
            generation,
            now,
        ),
        Some(first) => {
            let more = report.faults.len() - 1;
            let message = if more > 0 { format!("{first} (and {more} more failed calls)") } else { first.to_string() };
            common::set_condition(cs, conditions::AWS_REACHABLE, false, &first.code, message, generation, now)
        }
    };
    let found = report.missing.is_empty();
    if found {
        common::set_condition(
            cs,
            conditions::TARGETS_FOUND,
            true,
            reason::FOUND,
            "every target exists",
            generation,
            now,
        );
    } else {
        let mut names = report.missing.clone();
        names.sort();
        common::set_condition(
            cs,
            conditions::TARGETS_FOUND,
            false,
            reason::TARGETS_MISSING,
            format!("not found in AWS: {}", names.join(", ")),
            generation,
            now,
        );
    }
    let placed = report.misplaced.is_empty();
    let (why, message) = match placed {
        true => (reason::PLACED, "every target is listed under its kind".to_owned()),
        false => (reason::TARGETS_MISPLACED, report.misplaced.values().cloned().collect::<Vec<_>>().join("; ")),
    };
    common::set_condition(cs, conditions::TARGETS_PLACED, placed, why, message, generation, now);
    let alerts_ok = match alerts {
        None => true,
        Some(Ok(())) => {
            let message = "the alert Secrets exist";
            common::set_condition(
                cs,
                conditions::ALERTS_CONFIGURED,
                true,
                reason::SECRETS_FOUND,
                message,
                generation,
                now,
            );
            true
        }
        Some(Err(message)) => {
            common::set_condition(
                cs,
                conditions::ALERTS_CONFIGURED,
                false,
                reason::SECRET_MISSING,
                message,
                generation,
                now,
            );
            false
        }
    };
    // A policy whose people cannot be told is not ready either, whatever AWS says.
    let (ready, reason, message) = match (aws_ok, found, placed, alerts_ok) {
        (true, true, true, true) => (true, reason::PROBING, "probing every target"),
        (false, _, _, _) => (false, reason::AWS_UNREACHABLE, "some targets could not be probed; see AwsReachable"),
        (true, false, _, _) => (false, reason::TARGETS_MISSING, "some targets do not exist; see TargetsFound"),
        (true, true, false, _) => {
            (false, reason::TARGETS_MISPLACED, "some targets are listed under the wrong kind; see TargetsPlaced")
        }
        (true, true, true, false) => {
            (false, reason::ALERTS_NOT_CONFIGURED, "alerts cannot be delivered; see AlertsConfigured")
        }
    };
    common::set_condition(cs, conditions::READY, ready, reason, message, generation, now);
}

async fn write_status(policy: &RecoveryPolicy, ctx: &Context, status: &RecoveryPolicyStatus) -> Result<(), Error> {
    if policy.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<RecoveryPolicy> = Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    // The body is built once a permit is held, so waiting writes hold no request.
    let _permit = ctx.policy_writes.acquire().await.expect("the semaphore is never closed");
    // A merge patch replaces the lists whole, which is what a fresh computation wants; only
    // this controller writes a policy's status, and kube-runtime never reconciles one object
    // twice at once.
    let _writing = ctx.state_write();
    let written = api
        .patch_status(&policy.name_any(), &PatchParams::apply(MANAGER), &Patch::Merge(json!({ "status": status })))
        .await?;
    ctx.wrote(&written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    /// A cycle's first status writes (and a burst of incidents) keep many reconciles waiting
    /// on the API server at once, and a future is as large as its largest await: the awaits
    /// that make requests are boxed (a kube request inline made the future 14 KB).
    #[tokio::test]
    async fn a_waiting_reconcile_is_small() {
        let ctx = crate::controller::testing::context();
        let reconcile = super::reconcile(Arc::new(crate::controller::testing::policy()), ctx);
        let size = std::mem::size_of_val(&reconcile);
        assert!(size <= 2048, "a policy reconcile future is {size} bytes");
        eprintln!("a waiting reconcile: {size} bytes");
    }
}
