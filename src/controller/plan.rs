//! The RecoveryPlan reconciler: read the plan fresh → gather the rails → run the step state
//! machine (pure) → act or verify through `aws::act` → persist with a resourceVersion
//! precondition → Events.
//!
//! Network: reads come from the watch caches (fresh where the at-most-once rule needs it, see
//! `reconcile`); `act`/`verify` call AWS; `persist` writes status.
//! One reconcile advances the plan through as many transitions as it can without waiting,
//! each on the object the API server returned from the previous write.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, instrument, warn};

use crate::api::RecoveryPolicy;
use crate::api::common::parse_duration;
use crate::api::conditions::action;
use crate::api::incident::{Incident, IncidentPhase};
use crate::api::labels::{POLICY_LABEL, TARGET_LABEL};
use crate::api::plan::{APPROVED_BY_ANNOTATION, PlanPhase, RecoveryPlan, RecoveryPlanStatus, StepAction};
use crate::api::policy::RemediationMode;
use crate::aws::act::{self, ActContext};
use crate::core::rails::{self, may_act};
use crate::core::steps::{
    ActionOutcome, CALL_SETTLE_MARGIN, Gate, Inputs, Next, Settings, Transition, decide, in_action, in_action_attempt,
    record_action, record_verify,
};

use super::{Context, Error, now, replace_status};

/// A rail that frees itself only through a change elsewhere is looked at again this often.
const RECHECK: Duration = Duration::from_secs(15);

/// Transitions one reconcile may make before yielding to other plans.
const MAX_TRANSITIONS: usize = 12;

/// Reconciles one plan.
#[instrument(skip_all, fields(plan = %plan.name_any(), namespace = plan.namespace().unwrap_or_default()))]
pub async fn reconcile(plan: Arc<RecoveryPlan>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = plan.namespace().unwrap_or_default();
    let plans: Api<RecoveryPlan> = Api::namespaced(ctx.client.clone(), &ns);
    // A plan starts under its policy's lock, so that two plans cannot both see room under
    // maxConcurrentPlans and both start. Once persisted as Executing it counts against the
    // others and lets go (leaving its name in the lock, see below): plans already running
    // act, verify and finish concurrently.
    let mut guard = Some(ctx.policy_lock(&ns, &plan.spec.policy).lock_owned().await);
    // The cached plan is good enough to decide on wherever the decision is written before
    // anything is done: the write carries the resourceVersion decided on, so a cache that
    // lags costs a conflict, never a second action. Acting on a step already in progress
    // is done without such a write, so that is decided on the plan as persisted.
    let in_action = plan.status.as_ref().is_some_and(|st| in_action(&plan.spec, st));
    let plan_uid = plan.metadata.uid.clone().unwrap_or_default();
    let plan = if in_action { plans.get_opt(&plan.name_any()).await?.map(Arc::new) } else { Some(plan) };
    let Some(plan) = plan else {
        ctx.plan_finished(&plan_uid); // deleted while a step was in progress
        return Ok(Action::await_change());
    };
    let mut plan = Arc::unwrap_or_clone(plan);
    release_once_started(&plan, &mut guard);
    // A plan about to start counts its policy's other plans as persisted (under the lock,
    // so that two cannot both see room under maxConcurrentPlans). Plans start only under
    // this lock (in this replica, the leader), so the cache holds every start but perhaps
    // the last one made under it; it is used once it shows that one, else the plans are
    // listed. Once started, the cache is enough. The policy and incident come from the
    // caches: a change to either that the cache has not shown yet is one that raced with
    // this reconcile anyway.
    let plan_cache = ctx.cache(&ns, |c| &c.plans).await.filter(|cache| match &guard {
        None => true,
        Some(last_start) => last_start.as_deref().is_none_or(|name| {
            let cached = cache.get(&kube::runtime::reflector::ObjectRef::new(name).within(&ns));
            cached.is_none_or(|p| p.status.as_ref().and_then(|s| s.phase).is_some_and(started_or_done))
        }),
    });
    let siblings = async {
        let policy = &plan.spec.policy;
        match &plan_cache {
            Some(cache) => Ok(cache
                .state()
                .into_iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()) && &p.spec.policy == policy)
                .map(Arc::unwrap_or_clone)
                .collect()),
            None => {
                let by_policy = ListParams::default().labels(&format!("{POLICY_LABEL}={policy}"));
                plans.list(&by_policy).await.map(|l| l.items)
            }
        }
    };
    let (policy, incident, siblings) = tokio::try_join!(
        ctx.get(&ns, |c| &c.policies, &plan.spec.policy),
        ctx.get(&ns, |c| &c.incidents, &plan.spec.incident),
        siblings,
    )?;
    let siblings: Vec<RecoveryPlan> = siblings;
    let (policy, incident) = (policy.as_deref(), incident.as_deref());
    let settings = settings(policy, ctx.aws.attempt_timeout);
    let uid = plan_uid;

    // Transitions are applied to `working` and written together: before a mutating call
    // (its InProgress must be on record first), and whenever the reconcile stops to wait.
    // Everything else (an action's outcome, the next verify step starting, the plan
    // completing) rides along, so a plan costs the fewest writes the protocol allows.
    let mut working = plan.status.clone().unwrap_or_default();
    let mut unwritten: Vec<Transition> = vec![];
    for _ in 0..MAX_TRANSITIONS {
        // Shutting down: what was started is recorded by now; the next replica goes on.
        if super::stopping() {
            persist(&ctx, &plans, plan, working, unwritten).await?;
            return Ok(Action::await_change());
        }
        let view = RecoveryPlan { status: Some(working.clone()), ..plan.clone() };
        let gate = gate(&view, policy, incident, &siblings, ctx.aws.circuit_open());
        let resumed = in_action_attempt(&plan.spec, &working)
            .is_some_and(|(order, attempt)| !ctx.started_here(&uid, order, attempt));
        let request = crate::core::requests::pending(plan.annotations(), &working);
        let inputs = Inputs {
            spec: &plan.spec,
            status: &working,
            manual: policy.is_some_and(|p| p.spec.remediation.mode == RemediationMode::Manual),
            approved_by: plan.annotations().get(APPROVED_BY_ANNOTATION).map(String::as_str).filter(|v| !v.is_empty()),
            gate: &gate,
            settings: &settings,
            resumed,
            request: request.as_ref().map(|(action, token)| (*action, token.as_str())),
            now: now(),
        };
        let update = match decide(&inputs) {
            Next::Done => {
                ctx.plan_finished(&uid);
                persist(&ctx, &plans, plan, working, unwritten).await?;
                return Ok(Action::await_change());
            }
            Next::Wait(after) => {
                persist(&ctx, &plans, plan, working, unwritten).await?;
                return Ok(Action::requeue(after.unwrap_or(RECHECK).min(RECHECK)));
            }
            // Dropping `working` loses nothing: the plan has not started (see `Next::Recheck`).
            Next::Recheck(after) => return Ok(Action::requeue(after.min(RECHECK))),
            Next::Persist(update) => update,
            Next::Act(started) => {
                let region = started.parameters().region.clone();
                let clients = ctx.aws.get(&region, policy.and_then(|p| p.spec.aws.role_arn.as_deref())).await;
                let act_ctx = ActContext { own_deployments: own_deployments(&siblings, &plan, started.target()) };
                info!(step = started.order(), action = ?started.action(), attempt = started.attempt(), "acting");
                let outcome = act::act(&clients, &started, &act_ctx).await;
                ctx.failpoint("after-aws-call");
                if matches!(outcome, ActionOutcome::Done { .. }) && started.order() == 1 {
                    let detected = incident.and_then(|i| i.status.as_ref()?.detected_at.as_ref().map(|t| t.0));
                    if let Some(d) = detected {
                        ctx.metrics.action_seconds.observe(crate::core::time::since(now(), d).as_secs_f64());
                    }
                }
                let update = record_action(&inputs, started, outcome);
                ctx.failpoint("before-completed");
                update
            }
            Next::Verify(started) => {
                let region = started.parameters().region.clone();
                let clients = ctx.aws.get(&region, policy.and_then(|p| p.spec.aws.role_arn.as_deref())).await;
                let outcome = act::verify(&clients, &started).await;
                record_verify(&inputs, started, outcome)
            }
        };
        let starts_action = update.transitions.iter().find_map(|t| match t {
            Transition::StepStarted { order, action, attempt } if action.is_mutating() => Some((*order, *attempt)),
            _ => None,
        });
        // A request is written at once, and a retry starts again from the top: through
        // `Created`, under the policy's lock.
        let requested = update.transitions.iter().any(|t| matches!(t, Transition::Request { .. }));
        working = update.status;
        unwritten.extend(update.transitions);
        if requested {
            persist(&ctx, &plans, plan, working, unwritten).await?;
            return Ok(Action::requeue(Duration::from_millis(10)));
        }
        if starts_action.is_some() || update.requeue.is_some() {
            plan = persist(&ctx, &plans, plan, working.clone(), std::mem::take(&mut unwritten)).await?;
            release_once_started(&plan, &mut guard);
            if let Some((order, attempt)) = starts_action {
                ctx.started_attempt(&uid, order, attempt);
                ctx.failpoint("after-in-progress");
            }
            if let Some(after) = update.requeue {
                return Ok(Action::requeue(after));
            }
        }
    }
    persist(&ctx, &plans, plan, working, unwritten).await?;
    Ok(Action::requeue(Duration::from_millis(100)))
}

/// Drops the policy lock once the plan is Executing or finished (see `reconcile`), leaving
/// in it the name of a plan it saw start.
fn release_once_started(plan: &RecoveryPlan, guard: &mut Option<tokio::sync::OwnedMutexGuard<Option<String>>>) {
    let phase = plan.status.as_ref().and_then(|s| s.phase);
    if phase.is_some_and(started_or_done)
        && let Some(mut last_start) = guard.take()
        && phase == Some(PlanPhase::Executing)
    {
        *last_start = Some(plan.name_any());
    }
}

fn started_or_done(phase: PlanPhase) -> bool {
    phase == PlanPhase::Executing || phase.is_terminal()
}

/// Writes `status` (if it differs) with the plan's resourceVersion as precondition, then
/// records one Event per transition.
async fn persist(
    ctx: &Context,
    api: &Api<RecoveryPlan>,
    mut plan: RecoveryPlan,
    status: RecoveryPlanStatus,
    transitions: Vec<Transition>,
) -> Result<RecoveryPlan, Error> {
    if plan.status.as_ref() != Some(&status) {
        plan.status = Some(status);
        plan = replace_status(ctx, api, &plan).await?;
    }
    for t in &transitions {
        record(ctx, &plan, t);
        let type_ = if t.is_warning() { EventType::Warning } else { EventType::Normal };
        if t.is_warning() {
            warn!(reason = t.reason(), "{}", t.message());
        } else {
            info!(reason = t.reason(), "{}", t.message());
        }
        ctx.event(&plan, type_, t.reason(), action::REMEDIATE, t.message());
    }
    Ok(plan)
}

/// Metrics of a transition: plans by outcome, step durations.
fn record(ctx: &Context, plan: &RecoveryPlan, t: &Transition) {
    use crate::metrics::{ActionLabel, KindLabel, OutcomeLabel, RequestLabels};
    match t {
        Transition::Completed => {
            ctx.metrics.plans.get_or_create(&OutcomeLabel { outcome: "completed" }).inc();
        }
        Transition::Failed { .. } => {
            ctx.metrics.plans.get_or_create(&OutcomeLabel { outcome: "failed" }).inc();
        }
        Transition::NotNeeded { .. } => {
            ctx.metrics.plans.get_or_create(&OutcomeLabel { outcome: "not_needed" }).inc();
            if let Some(step) = plan.spec.steps.first() {
                let kind = KindLabel { kind: step.action.kind().as_str().to_owned() };
                ctx.metrics.plans_not_needed.get_or_create(&kind).inc();
            }
        }
        Transition::Cancelled { .. } => {
            ctx.metrics.plans.get_or_create(&OutcomeLabel { outcome: "cancelled" }).inc();
        }
        Transition::Request { action, accepted, .. } => {
            let outcome = if *accepted { "accepted" } else { "refused" };
            ctx.metrics.requests.get_or_create(&RequestLabels { action: action.as_str(), outcome }).inc();
        }
        Transition::StepCompleted { order, action, .. } | Transition::StepFailed { order, action, .. } => {
            let st = plan.status.as_ref().and_then(|s| s.steps.iter().find(|s| s.order == *order));
            if let Some((start, end)) = st.and_then(|s| Some((s.started_at.as_ref()?.0, s.completed_at.as_ref()?.0))) {
                let seconds = crate::core::time::since(end, start).as_secs_f64();
                ctx.metrics.step_seconds.get_or_create(&ActionLabel { action: format!("{action:?}") }).observe(seconds);
            }
        }
        _ => {}
    }
}

fn settings(policy: Option<&RecoveryPolicy>, attempt_timeout: Duration) -> Settings {
    let mut s = Settings { call_settle: attempt_timeout + CALL_SETTLE_MARGIN, ..Settings::default() };
    if let Some(p) = policy {
        let r = &p.spec.remediation;
        s.step_timeout = parse_duration(&r.step_timeout).unwrap_or(s.step_timeout);
        s.max_attempts = r.max_attempts;
    }
    s
}

/// The rails, from the policy, the incident and the policy's other plans.
fn gate(
    plan: &RecoveryPlan,
    policy: Option<&RecoveryPolicy>,
    incident: Option<&Incident>,
    siblings: &[RecoveryPlan],
    aws_circuit_open: bool,
) -> Gate {
    let Some(policy) = policy else {
        return Gate::Stop(format!("policy {} no longer exists", plan.spec.policy));
    };
    let Some(incident) = incident else {
        return Gate::Stop(format!("incident {} no longer exists", plan.spec.incident));
    };
    let phase = plan.status.as_ref().and_then(|s| s.phase);
    let started = matches!(phase, Some(PlanPhase::Executing));
    if !started && incident.status.as_ref().and_then(|s| s.phase) == Some(IncidentPhase::Resolved) {
        return Gate::NotNeeded(format!(
            "the target recovered: incident {} resolved before the plan acted",
            incident.name_any()
        ));
    }
    let counts = policy.status.as_ref().and_then(|s| s.targets.clone()).unwrap_or_default();
    let now = now();
    let key = plan.spec.steps.first().map(|s| s.target.as_str()).unwrap_or_default();
    let label = plan.labels().get(TARGET_LABEL).map(String::as_str);
    let mut inputs = rails::for_plan(&policy.spec.remediation, &counts, &plan.name_any(), key, label, siblings, now);
    inputs.aws_circuit_open = aws_circuit_open;
    inputs.detected_at = incident.status.as_ref().and_then(|s| s.detected_at.as_ref()).map(|t| t.0);
    inputs.counts_current = rails::counts_include(policy.status.as_ref(), &plan.spec.incident, inputs.detected_at);
    match may_act(&inputs) {
        Ok(()) => Gate::Open,
        Err(held) => Gate::Hold(held),
    }
}

/// ECS deployments started by this controller's other plans for the same target.
fn own_deployments(siblings: &[RecoveryPlan], plan: &RecoveryPlan, target: &str) -> Vec<String> {
    siblings
        .iter()
        .filter(|p| p.name_any() != plan.name_any())
        .flat_map(|p| {
            let restart = p
                .spec
                .steps
                .iter()
                .find(|s| s.action == StepAction::RestartService && s.target == target)
                .map(|s| s.order);
            p.status
                .iter()
                .flat_map(|st| st.steps.iter())
                .filter(move |s| Some(s.order) == restart)
                .filter_map(|s| s.evidence.get("deploymentId").cloned())
        })
        .collect()
}
