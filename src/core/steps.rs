//! The step state machine: a plan's spec and status, the policy's mode and rails, and what
//! AWS says now → the next transition.
//!
//! The at-most-once protocol of a mutating step:
//! 1. [`decide`] persists the step `InProgress` with `startedAt` and the attempt number;
//! 2. only a status read back from the API server with the step `InProgress` yields
//!    [`Next::Act`] carrying a [`Started`] token — the one way to reach AWS — so a step
//!    that was not persisted as started cannot act;
//! 3. the controller first asks AWS whether the effect already happened since `startedAt`
//!    (a crash may have come after the call), then whether the target is still unhealthy
//!    (read with the kind's health rule, the one detection uses: see `core::kinds`), and
//!    only otherwise calls AWS;
//! 4. [`record_action`] turns the answer into `Completed` with evidence, a retry, a failure,
//!    or — when the target was healthy at that last read — the step `Skipped` and the plan
//!    `NotNeeded`, with what was read as evidence. A read that failed is never "healthy":
//!    it is a failed attempt, retried like any other.
//!
//! Verify steps only read; they poll by requeue until satisfied or `stepTimeout` passes.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::reason;
use crate::api::plan::{
    PlanPhase, PlanStep, RecoveryPlanSpec, RecoveryPlanStatus, RequestAction, StepAction, StepParameters, StepPhase,
    StepStatus,
};

pub use super::outcomes::{ActionOutcome, VerifyOutcome};
use super::rails::Held;
use super::time::{add, since};

/// Timing knobs of the machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// How long a verify step (or a deferred action) may take.
    pub step_timeout: Duration,
    /// Attempts of a mutating action before the plan fails.
    pub max_attempts: u32,
    /// Backoff after the first failed attempt; doubles per attempt.
    pub retry_base: Duration,
    /// Backoff ceiling.
    pub retry_max: Duration,
    /// How often a verify step asks AWS.
    pub verify_interval: Duration,
    /// How long after an attempt started a mutating call it sent may still take effect:
    /// the SDK's attempt timeout plus a margin for AWS finishing work the client stopped
    /// waiting for. The next attempt's check-first read waits this long, so it cannot miss
    /// an effect that lands after it.
    pub call_settle: Duration,
}

/// What [`Settings::call_settle`] adds to the attempt timeout.
pub const CALL_SETTLE_MARGIN: Duration = Duration::from_secs(10);

impl Default for Settings {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(600),
            max_attempts: 3,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(300),
            verify_interval: Duration::from_secs(5),
            call_settle: Duration::from_secs(10) + CALL_SETTLE_MARGIN,
        }
    }
}

/// Whether the rails let the plan act.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// Act.
    Open,
    /// Start no mutating action; verifications go on. Lifts by itself.
    Hold(Held),
    /// Stop the plan at the next step boundary (e.g. its policy was deleted).
    Stop(String),
    /// End the plan at the next step boundary without acting: remediation is no longer
    /// needed (its incident resolved before the plan started).
    NotNeeded(String),
}

/// What [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// The plan's spec.
    pub spec: &'a RecoveryPlanSpec,
    /// The plan's status as read from the API server.
    pub status: &'a RecoveryPlanStatus,
    /// Whether the policy's mode is Manual (the plan waits for approval).
    pub manual: bool,
    /// The approval annotation's value, if set.
    pub approved_by: Option<&'a str>,
    /// The rails.
    pub gate: &'a Gate,
    /// Timing knobs.
    pub settings: &'a Settings,
    /// Whether a mutating step in progress was started by another process (or by this one
    /// before a restart): a call sent then may still land, so acting waits until
    /// `call_settle` after the attempt started.
    pub resumed: bool,
    /// An on-demand request the plan's annotations ask for and its status has not handled
    /// (see `core::requests`): handled before anything else.
    pub request: Option<(RequestAction, &'a str)>,
    /// Now.
    pub now: Timestamp,
}

/// A step that is persisted `InProgress`: the only way to reach AWS.
///
/// Its fields are private and it is made only by [`decide`], from a status whose step is
/// `InProgress`, so holding one proves the start was written before anything is called.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    step: PlanStep,
    attempt: u32,
    since: Timestamp,
    earlier_evidence: BTreeMap<String, String>,
}

impl Started {
    /// The step's order.
    pub fn order(&self) -> u32 {
        self.step.order
    }
    /// The action.
    pub fn action(&self) -> StepAction {
        self.step.action
    }
    /// The action's parameters.
    pub fn parameters(&self) -> &StepParameters {
        &self.step.parameters
    }
    /// The target key.
    pub fn target(&self) -> &str {
        &self.step.target
    }
    /// The attempt number (from 1).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// When the step's first attempt started: the effect check looks for changes since then.
    pub fn since(&self) -> Timestamp {
        self.since
    }
    /// Evidence of the steps before this one, merged (a verify step reads its action's).
    pub fn earlier_evidence(&self) -> &BTreeMap<String, String> {
        &self.earlier_evidence
    }
}

/// What the controller should do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Write this status (it differs from the current one), then reconcile again.
    Persist(Update),
    /// Check whether the step's effect already happened; if not, perform it. Then
    /// [`record_action`].
    Act(Started),
    /// Ask AWS whether the step's condition holds. Then [`record_verify`].
    Verify(Started),
    /// Nothing to write. Come back after the duration, or on the next change if `None`.
    Wait(Option<Duration>),
    /// Write nothing, not even what this reconcile has derived so far, and look again after
    /// the duration: a hold expected to lift within moments holds a plan that has not
    /// started, so nothing has happened that needs recording, and the next reconcile
    /// derives the same again. Its `Created` then rides along with the first InProgress.
    Recheck(Duration),
    /// The plan is Completed or Failed.
    Done,
}

/// A new status and the transitions that led to it (one Event each).
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The status to write.
    pub status: RecoveryPlanStatus,
    /// What changed, in order.
    pub transitions: Vec<Transition>,
    /// When to look again, if not at once.
    pub requeue: Option<Duration>,
}

/// A visible change of a plan, for Events, alerts and metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// The status was initialised (phase Created, every step Pending).
    Created,
    /// A rail holds the plan.
    Held { reason: &'static str, message: String },
    /// A Manual plan waits for approval.
    AwaitingApproval,
    /// The plan started executing.
    Executing { approved_by: Option<String> },
    /// A step was persisted InProgress.
    StepStarted { order: u32, action: StepAction, attempt: u32 },
    /// A step completed.
    StepCompleted { order: u32, action: StepAction, message: String },
    /// A failed attempt will be retried.
    StepRetry { order: u32, action: StepAction, message: String },
    /// A step was not run.
    StepSkipped { order: u32, action: StepAction, message: String },
    /// A step failed.
    StepFailed { order: u32, action: StepAction, message: String },
    /// Every step finished.
    Completed,
    /// The plan failed.
    Failed { message: String },
    /// The plan ended without acting: the target had recovered.
    NotNeeded { message: String },
    /// An on-demand request (annotation) was handled: accepted, or refused with why.
    Request { action: RequestAction, by: String, accepted: bool, message: String },
    /// A person cancelled the plan.
    Cancelled { message: String },
}

impl Transition {
    /// Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Created => reason::PLAN_CREATED,
            Self::Held { reason, .. } => reason,
            Self::AwaitingApproval => reason::AWAITING_APPROVAL,
            Self::Executing { .. } => reason::PLAN_EXECUTING,
            Self::StepStarted { .. } => reason::STEP_STARTED,
            Self::StepCompleted { .. } => reason::STEP_COMPLETED,
            Self::StepRetry { .. } => reason::STEP_RETRY,
            Self::StepSkipped { .. } => reason::STEP_SKIPPED,
            Self::StepFailed { .. } => reason::STEP_FAILED,
            Self::Completed => reason::PLAN_COMPLETED,
            Self::Failed { .. } => reason::PLAN_FAILED,
            Self::NotNeeded { .. } => reason::PLAN_NOT_NEEDED,
            Self::Request { accepted: true, .. } => reason::REQUEST_ACCEPTED,
            Self::Request { accepted: false, .. } => reason::REQUEST_REFUSED,
            Self::Cancelled { .. } => reason::PLAN_CANCELLED,
        }
    }

    /// Whether the Event is a Warning.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Self::Held { .. }
                | Self::StepRetry { .. }
                | Self::StepFailed { .. }
                | Self::Failed { .. }
                | Self::Request { accepted: false, .. }
        )
    }

    /// Event message.
    pub fn message(&self) -> String {
        match self {
            Self::Created => "plan created".into(),
            Self::Held { message, .. } => message.clone(),
            Self::AwaitingApproval => format!(
                "waiting for approval: kubectl annotate recoveryplan <name> {}=<you>",
                crate::api::plan::APPROVED_BY_ANNOTATION
            ),
            Self::Executing { approved_by: Some(by) } => format!("executing, approved by {by}"),
            Self::Executing { approved_by: None } => "executing".into(),
            Self::StepStarted { order, action, attempt } => {
                format!("step {order} {action:?} started (attempt {attempt})")
            }
            Self::StepCompleted { order, action, message }
            | Self::StepRetry { order, action, message }
            | Self::StepSkipped { order, action, message }
            | Self::StepFailed { order, action, message } => format!("step {order} {action:?}: {message}"),
            Self::Completed => "every step completed".into(),
            Self::Failed { message } | Self::NotNeeded { message } | Self::Cancelled { message } => message.clone(),
            Self::Request { message, .. } => message.clone(),
        }
    }
}

/// The next step of the machine.
pub fn decide(i: &Inputs) -> Next {
    let Some(phase) = i.status.phase else {
        return persist(initial(i.spec), vec![Transition::Created], None);
    };
    if let Some((action, token)) = i.request {
        let (status, transitions) = super::requests::handle(i.spec, i.status, action, token, i.now);
        return persist(status, transitions, None);
    }
    if phase.is_terminal() {
        return Next::Done;
    }
    let current = current_step(i.spec, i.status);
    // A plan whose every step finished completes even when told to stop: nothing is left to stop.
    if let Gate::Stop(reason) = i.gate
        && !in_action(i.spec, i.status)
        && current.is_some()
    {
        // A mutating step in flight finishes first (its effect may already be in AWS);
        // everywhere else is a step boundary.
        let mut s = i.status.clone();
        let message = format!("stopped: {reason}");
        let transitions = fail_plan(&mut s, i.spec, None, &message, i.now);
        return persist(s, transitions, None);
    }
    if let Gate::NotNeeded(reason) = i.gate
        && !in_action(i.spec, i.status)
        && current.is_some()
    {
        let mut s = i.status.clone();
        let message = format!("not needed: {reason}");
        let transitions = end_not_needed(&mut s, i.spec, &message, i.now);
        return persist(s, transitions, None);
    }
    match phase {
        PlanPhase::Created | PlanPhase::AwaitingApproval => start_plan(i, phase),
        PlanPhase::Executing => advance(i),
        PlanPhase::Completed | PlanPhase::Failed | PlanPhase::NotNeeded | PlanPhase::Cancelled => Next::Done,
    }
}

fn start_plan(i: &Inputs, phase: PlanPhase) -> Next {
    let mut s = i.status.clone();
    if i.spec.dry_run {
        let mut transitions = vec![];
        for (step, st) in i.spec.steps.iter().zip(s.steps.iter_mut()) {
            let message = format!("dry run: would {}", describe(step));
            st.phase = StepPhase::Skipped;
            st.completed_at = Some(Time(i.now));
            st.message = Some(message.clone());
            transitions.push(Transition::StepSkipped { order: step.order, action: step.action, message });
        }
        s.phase = Some(PlanPhase::Completed);
        s.started_at = Some(Time(i.now));
        s.completed_at = Some(Time(i.now));
        s.message = Some("dry run: no AWS call was made".into());
        s.progress = Some(progress(&s, i.spec));
        transitions.push(Transition::Completed);
        return persist(s, transitions, None);
    }
    if i.manual && i.approved_by.is_none() {
        if phase == PlanPhase::AwaitingApproval {
            return Next::Wait(None);
        }
        s.phase = Some(PlanPhase::AwaitingApproval);
        s.message = Some(Transition::AwaitingApproval.message());
        return persist(s, vec![Transition::AwaitingApproval], None);
    }
    if let Gate::Hold(held) = i.gate {
        return hold(i, held);
    }
    s.phase = Some(PlanPhase::Executing);
    // A retried plan keeps when it first started.
    s.started_at.get_or_insert(Time(i.now));
    s.approved_by = i.approved_by.map(str::to_owned);
    s.message = None;
    s.conditions.retain(|c| c.type_ != HELD);
    persist(s, vec![Transition::Executing { approved_by: i.approved_by.map(str::to_owned) }], None)
}

/// Condition type set while a rail holds the plan.
pub use crate::api::conditions::plan::HELD;

fn hold(i: &Inputs, held: &Held) -> Next {
    if let Some(after) = held.record_after
        && after > i.now
    {
        // Expected to lift within moments (the change that frees it requeues the plan):
        // recorded only if it lasts.
        let wait = held.until.map_or(after, |u| u.min(after));
        let wait = since(wait, i.now).max(Duration::from_millis(100));
        return if i.status.phase == Some(PlanPhase::Executing) { Next::Wait(Some(wait)) } else { Next::Recheck(wait) };
    }
    let mut s = i.status.clone();
    s.message = Some(held.message.clone());
    let wait = held.until.map(|u| since(u, i.now).max(Duration::from_secs(1)));
    let changed = crate::api::common::set_condition(
        &mut s.conditions,
        HELD,
        true,
        held.rail.reason(),
        &held.message,
        None,
        i.now,
    );
    if changed || s.message != i.status.message {
        persist(s, vec![Transition::Held { reason: held.rail.reason(), message: held.message.clone() }], wait)
    } else {
        Next::Wait(wait)
    }
}

fn advance(i: &Inputs) -> Next {
    let Some((step, st)) = current_step(i.spec, i.status) else {
        let mut s = i.status.clone();
        s.phase = Some(PlanPhase::Completed);
        s.completed_at = Some(Time(i.now));
        s.message = Some("every step completed".into());
        s.progress = Some(progress(&s, i.spec));
        return persist(s, vec![Transition::Completed], None);
    };
    match st.phase {
        StepPhase::Pending => {
            if let Some(at) = &st.next_attempt_at
                && at.0 > i.now
            {
                return Next::Wait(Some(since(at.0, i.now)));
            }
            if step.action.is_mutating()
                && let Gate::Hold(held) = i.gate
            {
                return hold(i, held);
            }
            let mut s = i.status.clone();
            s.conditions.retain(|c| c.type_ != HELD);
            let st = step_mut(&mut s, step.order);
            st.phase = StepPhase::InProgress;
            st.attempts += 1;
            st.started_at.get_or_insert(Time(i.now));
            st.attempt_started_at = Some(Time(i.now));
            st.next_attempt_at = None;
            st.message = Some(format!("attempt {} started: {}", st.attempts, describe(step)));
            let attempt = st.attempts;
            persist(s, vec![Transition::StepStarted { order: step.order, action: step.action, attempt }], None)
        }
        StepPhase::InProgress => {
            let started = Started {
                step: step.clone(),
                attempt: st.attempts,
                since: st.started_at.as_ref().map_or(i.now, |t| t.0),
                earlier_evidence: earlier_evidence(i.status, step.order),
            };
            if !step.action.is_mutating() {
                if since(i.now, started.since) >= i.settings.step_timeout {
                    let mut s = i.status.clone();
                    let message = format!(
                        "not verified within stepTimeout {}s: {}",
                        i.settings.step_timeout.as_secs(),
                        st.message.as_deref().unwrap_or("no answer")
                    );
                    let transitions = fail_plan(&mut s, i.spec, Some(step), &message, i.now);
                    return persist(s, transitions, None);
                }
                return Next::Verify(started);
            }
            if let Gate::Hold(held) = i.gate {
                return hold(i, held);
            }
            if i.resumed
                && let Some(settled) = st.attempt_started_at.as_ref().map(|t| add(t.0, i.settings.call_settle))
                && settled > i.now
            {
                // Found in progress, perhaps with a call in flight when its process died:
                // the check-first read comes once that call can no longer land.
                let wait = since(settled, i.now);
                let message = format!(
                    "attempt {} was started by an earlier process: waiting {}s for a call it may have sent to land before the check-first read",
                    st.attempts,
                    wait.as_secs().max(1)
                );
                if st.message.as_deref().is_some_and(|m| m.contains("was started by an earlier process")) {
                    return Next::Wait(Some(wait));
                }
                let mut s = i.status.clone();
                step_mut(&mut s, step.order).message = Some(message);
                return persist(s, vec![], Some(wait));
            }
            Next::Act(started)
        }
        // A failed step always fails its plan in the same write; repair a status that says
        // otherwise (written by an older version or a person).
        StepPhase::Failed => {
            let mut s = i.status.clone();
            let message = st.message.clone().unwrap_or_else(|| format!("step {} failed", step.order));
            let transitions = fail_plan(&mut s, i.spec, None, &message, i.now);
            persist(s, transitions, None)
        }
        StepPhase::Completed | StepPhase::Skipped => unreachable!("current_step skips finished steps"),
    }
}

/// Applies the result of an action to the status.
pub fn record_action(i: &Inputs, started: Started, outcome: ActionOutcome) -> Update {
    let mut s = i.status.clone();
    let step = &started.step;
    let (order, action) = (step.order, step.action);
    match outcome {
        ActionOutcome::AlreadyDone { evidence, message } | ActionOutcome::Done { evidence, message } => {
            complete_step(&mut s, i.spec, order, evidence, &message, i.now);
            Update { status: s, transitions: vec![Transition::StepCompleted { order, action, message }], requeue: None }
        }
        ActionOutcome::NotNeeded { evidence, message } => {
            let st = step_mut(&mut s, order);
            st.phase = StepPhase::Skipped;
            st.completed_at = Some(Time(i.now));
            st.next_attempt_at = None;
            st.message = Some(message.clone());
            st.evidence.extend(evidence);
            let mut transitions = vec![Transition::StepSkipped { order, action, message: message.clone() }];
            transitions.extend(end_not_needed(&mut s, i.spec, &message, i.now));
            Update { status: s, transitions, requeue: None }
        }
        ActionOutcome::Deferred { message, retry_after } => {
            if since(i.now, started.since) >= i.settings.step_timeout {
                let message = format!("held back past stepTimeout: {message}");
                let transitions = fail_plan(&mut s, i.spec, Some(step), &message, i.now);
                return Update { status: s, transitions, requeue: None };
            }
            step_mut(&mut s, order).message = Some(format!("waiting: {message}"));
            Update { status: s, transitions: vec![], requeue: Some(retry_after) }
        }
        ActionOutcome::Failed { message, retryable } => {
            if retryable && started.attempt < i.settings.max_attempts {
                // A call that failed this way (a timeout, 5xx, a lost connection) may still
                // take effect: the next attempt, which starts with the check-first read, waits
                // until it no longer can.
                let st = step_mut(&mut s, order);
                let settled = st.attempt_started_at.as_ref().map_or(i.now, |t| add(t.0, i.settings.call_settle));
                let backoff = backoff(i.settings, started.attempt, &i.spec.incident).max(since(settled, i.now));
                st.phase = StepPhase::Pending;
                st.next_attempt_at = Some(Time(add(i.now, backoff)));
                let message = format!(
                    "attempt {} of {} failed, retrying in {}s: {message}",
                    started.attempt,
                    i.settings.max_attempts,
                    backoff.as_secs()
                );
                st.message = Some(message.clone());
                Update {
                    status: s,
                    transitions: vec![Transition::StepRetry { order, action, message }],
                    requeue: Some(backoff),
                }
            } else {
                let why = if retryable {
                    format!("gave up after {} attempts", started.attempt)
                } else {
                    "not retryable".into()
                };
                let message = format!("{why}: {message}");
                let transitions = fail_plan(&mut s, i.spec, Some(step), &message, i.now);
                Update { status: s, transitions, requeue: None }
            }
        }
    }
}

/// Applies the result of a verification to the status.
pub fn record_verify(i: &Inputs, started: Started, outcome: VerifyOutcome) -> Update {
    let mut s = i.status.clone();
    let (order, action) = (started.step.order, started.step.action);
    match outcome {
        VerifyOutcome::Satisfied { evidence, message } => {
            complete_step(&mut s, i.spec, order, evidence, &message, i.now);
            Update { status: s, transitions: vec![Transition::StepCompleted { order, action, message }], requeue: None }
        }
        VerifyOutcome::NotYet { message } => {
            let left = i.settings.step_timeout.saturating_sub(since(i.now, started.since));
            if left.is_zero() {
                let message =
                    format!("not verified within stepTimeout {}s: {message}", i.settings.step_timeout.as_secs());
                let transitions = fail_plan(&mut s, i.spec, Some(&started.step), &message, i.now);
                return Update { status: s, transitions, requeue: None };
            }
            step_mut(&mut s, order).message = Some(format!("waiting: {message}"));
            Update { status: s, transitions: vec![], requeue: Some(i.settings.verify_interval.min(left)) }
        }
    }
}

/// A sentence naming the AWS call a step makes, or what it waits for (for dry runs, Events
/// and alerts): its kind's wording.
pub fn describe(step: &PlanStep) -> String {
    let kind = super::kinds::of(step.action.kind());
    if step.action.is_mutating() { kind.describe_act(&step.parameters) } else { kind.describe_verify(&step.parameters) }
}

fn persist(status: RecoveryPlanStatus, transitions: Vec<Transition>, requeue: Option<Duration>) -> Next {
    Next::Persist(Update { status, transitions, requeue })
}

fn initial(spec: &RecoveryPlanSpec) -> RecoveryPlanStatus {
    let mut s = RecoveryPlanStatus {
        phase: Some(PlanPhase::Created),
        steps: ordered(spec).iter().map(|step| pending(step.order)).collect(),
        ..RecoveryPlanStatus::default()
    };
    s.progress = Some(progress(&s, spec));
    s
}

fn pending(order: u32) -> StepStatus {
    StepStatus {
        order,
        phase: StepPhase::Pending,
        started_at: None,
        attempt_started_at: None,
        completed_at: None,
        next_attempt_at: None,
        attempts: 0,
        message: None,
        evidence: BTreeMap::new(),
    }
}

pub(super) fn ordered(spec: &RecoveryPlanSpec) -> Vec<&PlanStep> {
    let mut steps: Vec<_> = spec.steps.iter().collect();
    steps.sort_by_key(|s| s.order);
    steps
}

/// The first step, in order, that is neither Completed nor Skipped.
/// Whether the plan's current step is a mutating one in progress: its action may already be
/// in AWS, and the next decision acts (after its check-first read) without a write before.
pub fn in_action(spec: &RecoveryPlanSpec, status: &RecoveryPlanStatus) -> bool {
    current_step(spec, status).is_some_and(|(step, st)| step.action.is_mutating() && st.phase == StepPhase::InProgress)
}

/// The (order, attempt) of the mutating step in progress, if [`in_action`].
pub fn in_action_attempt(spec: &RecoveryPlanSpec, status: &RecoveryPlanStatus) -> Option<(u32, u32)> {
    current_step(spec, status)
        .filter(|(step, st)| step.action.is_mutating() && st.phase == StepPhase::InProgress)
        .map(|(step, st)| (step.order, st.attempts))
}

pub(super) fn current_step<'a>(
    spec: &'a RecoveryPlanSpec,
    status: &'a RecoveryPlanStatus,
) -> Option<(&'a PlanStep, &'a StepStatus)> {
    ordered(spec).into_iter().find_map(|step| {
        let st = status.steps.iter().find(|s| s.order == step.order)?;
        (!matches!(st.phase, StepPhase::Completed | StepPhase::Skipped)).then_some((step, st))
    })
}

pub(super) fn step_mut(s: &mut RecoveryPlanStatus, order: u32) -> &mut StepStatus {
    if let Some(i) = s.steps.iter().position(|st| st.order == order) {
        return &mut s.steps[i];
    }
    s.steps.push(pending(order));
    s.steps.sort_by_key(|st| st.order);
    s.steps.iter_mut().find(|st| st.order == order).expect("just inserted")
}

fn earlier_evidence(status: &RecoveryPlanStatus, order: u32) -> BTreeMap<String, String> {
    status.steps.iter().filter(|s| s.order < order).flat_map(|s| s.evidence.clone()).collect()
}

fn complete_step(
    s: &mut RecoveryPlanStatus,
    spec: &RecoveryPlanSpec,
    order: u32,
    evidence: BTreeMap<String, String>,
    message: &str,
    now: Timestamp,
) {
    let st = step_mut(s, order);
    st.phase = StepPhase::Completed;
    st.completed_at = Some(Time(now));
    st.next_attempt_at = None;
    st.message = Some(message.to_owned());
    st.evidence.extend(evidence);
    s.progress = Some(progress(s, spec));
}

/// Fails `failed` (if given) and the plan; later steps are Skipped so the record is complete.
fn fail_plan(
    s: &mut RecoveryPlanStatus,
    spec: &RecoveryPlanSpec,
    failed: Option<&PlanStep>,
    message: &str,
    now: Timestamp,
) -> Vec<Transition> {
    let mut transitions = vec![];
    if let Some(step) = failed {
        let st = step_mut(s, step.order);
        st.phase = StepPhase::Failed;
        st.completed_at = Some(Time(now));
        st.message = Some(message.to_owned());
        transitions.push(Transition::StepFailed {
            order: step.order,
            action: step.action,
            message: message.to_owned(),
        });
    }
    transitions.extend(stop_unfinished(s, spec, "stopped", "not run: the plan failed before this step", now));
    finish(s, spec, PlanPhase::Failed, message, now);
    transitions.push(Transition::Failed { message: message.to_owned() });
    transitions
}

/// Closes every step not finished: an action that was attempted (and may have reached AWS,
/// e.g. a call that timed out) is `Failed` with "`stopped` after N attempt(s)", so the
/// record never claims it did not run; every other step is `Skipped` with `not_run`.
pub(super) fn stop_unfinished(
    s: &mut RecoveryPlanStatus,
    spec: &RecoveryPlanSpec,
    stopped: &str,
    not_run: &str,
    now: Timestamp,
) -> Vec<Transition> {
    let mut transitions = vec![];
    for step in ordered(spec) {
        let st = step_mut(s, step.order);
        if !matches!(st.phase, StepPhase::Pending | StepPhase::InProgress) {
            continue;
        }
        if step.action.is_mutating() && st.attempts > 0 {
            st.phase = StepPhase::Failed;
            st.completed_at = Some(Time(now));
            st.next_attempt_at = None;
            let last = st.message.clone().unwrap_or_default();
            let message = format!("{stopped} after {} attempt(s), the last one's effect unknown: {last}", st.attempts);
            st.message = Some(message.clone());
            transitions.push(Transition::StepFailed { order: step.order, action: step.action, message });
        } else {
            transitions.push(skip(st, step, not_run.to_owned()));
        }
    }
    transitions
}

/// Marks a step that will not run Skipped, saying why.
pub(super) fn skip(st: &mut StepStatus, step: &PlanStep, why: String) -> Transition {
    st.phase = StepPhase::Skipped;
    st.next_attempt_at = None;
    st.message = Some(why);
    Transition::StepSkipped { order: step.order, action: step.action, message: "not run".into() }
}

/// Puts the plan in a terminal phase.
pub(super) fn finish(
    s: &mut RecoveryPlanStatus,
    spec: &RecoveryPlanSpec,
    phase: PlanPhase,
    message: &str,
    now: Timestamp,
) {
    s.phase = Some(phase);
    s.completed_at = Some(Time(now));
    s.message = Some(message.to_owned());
    s.progress = Some(progress(s, spec));
}

/// Ends the plan `NotNeeded`: every step not yet finished is Skipped, saying why.
fn end_not_needed(
    s: &mut RecoveryPlanStatus,
    spec: &RecoveryPlanSpec,
    message: &str,
    now: Timestamp,
) -> Vec<Transition> {
    let mut transitions = vec![];
    for step in ordered(spec) {
        let st = step_mut(s, step.order);
        if matches!(st.phase, StepPhase::Pending | StepPhase::InProgress) {
            transitions.push(skip(st, step, format!("not run: {message}")));
        }
    }
    finish(s, spec, PlanPhase::NotNeeded, message, now);
    s.conditions.retain(|c| c.type_ != HELD);
    transitions.push(Transition::NotNeeded { message: message.to_owned() });
    transitions
}

pub(super) fn progress(s: &RecoveryPlanStatus, spec: &RecoveryPlanSpec) -> String {
    let done = s.steps.iter().filter(|st| st.phase == StepPhase::Completed).count();
    format!("{done}/{}", spec.steps.len())
}

/// Exponential backoff plus up to a quarter more, spread by `spread` (the incident's name):
/// plans that failed together in an AWS outage do not all come back in the same second.
/// Derived, not random, so the machine stays a pure function of its inputs.
fn backoff(settings: &Settings, attempt: u32, spread: &str) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    let base = settings.retry_base.saturating_mul(factor).min(settings.retry_max);
    let hash = spread.bytes().fold(attempt as u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    base + base.mul_f64((hash % 1000) as f64 / 4000.0)
}

#[cfg(test)]
#[path = "steps_tests.rs"]
mod tests;
