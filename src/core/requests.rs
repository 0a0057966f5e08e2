//! On-demand requests: a person's retry, re-verify or cancel, asked through an annotation on
//! the plan and handled by the step machine like any other transition, so the at-most-once
//! protocol and the rails apply to what they start. A request is its annotation's value: a
//! value the plan's status records as handled is not handled again, and a new value (the
//! documented commands add a time) is a new request.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::plan::{
    PlanPhase, RecoveryPlanSpec, RecoveryPlanStatus, RequestAction, RequestOutcome, RequestRecord, StepPhase,
};

use super::steps::{HELD, Transition, current_step, finish, in_action, ordered, progress, step_mut, stop_unfinished};

/// Longest token kept (the schema's bound): a longer value is compared by its first part.
const TOKEN_MAX: usize = 253;

/// The request's token: the annotation value, trimmed and bounded as the status keeps it.
fn token(value: &str) -> String {
    value.trim().chars().take(TOKEN_MAX).collect()
}

/// The first request the annotations ask for that the status has not handled, in
/// [`RequestAction::ALL`] order.
pub fn pending(annotations: &BTreeMap<String, String>, status: &RecoveryPlanStatus) -> Option<(RequestAction, String)> {
    RequestAction::ALL.into_iter().find_map(|action| {
        let token = token(annotations.get(action.annotation())?);
        let handled = status.requests.iter().any(|r| r.action == action && r.token == token);
        (!token.is_empty() && !handled).then_some((action, token))
    })
}

/// Handles a request: the status with it applied (or, refused, unchanged) and recorded, and
/// the transitions, the request's own first.
pub fn handle(
    spec: &RecoveryPlanSpec,
    status: &RecoveryPlanStatus,
    action: RequestAction,
    token: &str,
    now: Timestamp,
) -> (RecoveryPlanStatus, Vec<Transition>) {
    let by = token.split_whitespace().next().unwrap_or(token).to_owned();
    let mut s = status.clone();
    let result = match action {
        RequestAction::Retry => retry(spec, &mut s, &by),
        RequestAction::Reverify => reverify(spec, &mut s, &by),
        RequestAction::Cancel => cancel(spec, &mut s, &by, now),
    };
    let (outcome, message, rest) = match result {
        Ok((message, rest)) => (RequestOutcome::Accepted, message, rest),
        Err(why) => {
            s = status.clone();
            (RequestOutcome::Refused, why, vec![])
        }
    };
    s.requests.retain(|r| r.action != action);
    s.requests.push(RequestRecord {
        action,
        token: token.to_owned(),
        by: by.clone(),
        at: Time(now),
        outcome,
        message: message.clone(),
    });
    s.requests.sort_by_key(|r| RequestAction::ALL.iter().position(|a| *a == r.action));
    let accepted = outcome == RequestOutcome::Accepted;
    let mut transitions = vec![Transition::Request { action, by, accepted, message }];
    transitions.extend(rest);
    (s, transitions)
}

type Handled = Result<(String, Vec<Transition>), String>;

fn phase_name(s: &RecoveryPlanStatus) -> String {
    s.phase.map_or_else(|| "not started".to_owned(), |p| format!("{p:?}"))
}

/// A new attempt of the failed plan's first failed step; the steps after it run again too.
/// A mutating step keeps its first start, so its check-first read still looks back to it.
fn retry(spec: &RecoveryPlanSpec, s: &mut RecoveryPlanStatus, by: &str) -> Handled {
    if s.phase != Some(PlanPhase::Failed) {
        return Err(format!("retry refused: only a Failed plan is retried, and this one is {}", phase_name(s)));
    }
    let failed = first_failed(spec, s).ok_or("retry refused: no step of this plan failed")?;
    let attempt = s.steps.iter().find(|st| st.order == failed.order).map_or(1, |st| st.attempts + 1);
    let message = format!(
        "retry requested by {by}: step {} {:?} gets attempt {attempt}, through the rails and, for an action, \
         its check-first read",
        failed.order, failed.action
    );
    // Through `Created`, so the plan starts again under its policy's lock and rails.
    reopen(spec, s, failed.order, PlanPhase::Created, &message);
    Ok((message, vec![]))
}

/// The first step, in order, that failed.
fn first_failed<'a>(spec: &'a RecoveryPlanSpec, s: &RecoveryPlanStatus) -> Option<&'a crate::api::plan::PlanStep> {
    ordered(spec)
        .into_iter()
        .find(|step| s.steps.iter().any(|st| st.order == step.order && st.phase == StepPhase::Failed))
}

/// Puts the plan back in `phase`: steps from `from` on that did not complete go back to
/// Pending, and a verification gets a fresh stepTimeout.
fn reopen(spec: &RecoveryPlanSpec, s: &mut RecoveryPlanStatus, from: u32, phase: PlanPhase, message: &str) {
    s.phase = Some(phase);
    s.completed_at = None;
    s.message = Some(message.to_owned());
    for step in ordered(spec).into_iter().filter(|step| step.order >= from) {
        let st = step_mut(s, step.order);
        if st.phase == StepPhase::Completed {
            continue;
        }
        st.phase = StepPhase::Pending;
        st.completed_at = None;
        st.next_attempt_at = None;
        st.message = (step.order == from).then(|| message.to_owned());
        if !step.action.is_mutating() {
            st.started_at = None;
            st.attempt_started_at = None;
        }
    }
    s.progress = Some(progress(s, spec));
}

/// The verification again, now: on a plan verifying (it reads at once), or failed at a
/// verify step (it verifies again with a fresh stepTimeout). Never an action.
fn reverify(spec: &RecoveryPlanSpec, s: &mut RecoveryPlanStatus, by: &str) -> Handled {
    let refused = |why: String| Err(format!("re-verify refused: {why}"));
    match s.phase {
        Some(PlanPhase::Executing) => match current_step(spec, s) {
            Some((step, st)) if !step.action.is_mutating() && st.phase == StepPhase::InProgress => Ok((
                format!("re-verify requested by {by}: step {} {:?} reads AWS now", step.order, step.action),
                vec![],
            )),
            _ => refused("the plan is not verifying now; its verification runs when its action is done".into()),
        },
        Some(PlanPhase::Failed) => match first_failed(spec, s) {
            Some(step) if !step.action.is_mutating() => {
                let message = format!(
                    "re-verify requested by {by}: step {} {:?} verifies again, with a fresh stepTimeout",
                    step.order, step.action
                );
                reopen(spec, s, step.order, PlanPhase::Executing, &message);
                Ok((message, vec![]))
            }
            Some(step) => refused(format!(
                "step {} {:?} failed, which is an action, not a verification: retry the plan instead",
                step.order, step.action
            )),
            None => refused("no step of this plan failed".into()),
        },
        _ => refused(format!(
            "only a plan verifying or failed at its verification is re-verified; this one is {}",
            phase_name(s)
        )),
    }
}

/// Ends a waiting plan `Cancelled`. An action in progress may have a call in flight, so a
/// plan in one is not cancelled.
fn cancel(spec: &RecoveryPlanSpec, s: &mut RecoveryPlanStatus, by: &str, now: Timestamp) -> Handled {
    let refused = |why: String| Err(format!("cancel refused: {why}"));
    if let Some(phase) = s.phase.filter(|p| p.is_terminal()) {
        return refused(format!("the plan already ended {phase:?}"));
    }
    if in_action(spec, s) {
        return refused("a step is acting (its AWS call may be in flight); cancel once it has finished".into());
    }
    let message = format!("cancelled by {by}");
    let mut transitions = stop_unfinished(s, spec, &message, &format!("not run: {message}"), now);
    finish(s, spec, PlanPhase::Cancelled, &message, now);
    s.conditions.retain(|c| c.type_ != HELD);
    transitions.push(Transition::Cancelled { message: message.clone() });
    Ok((message, transitions))
}
