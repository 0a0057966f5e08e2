//! Table tests of the step state machine, and a crash-at-every-boundary simulation.

use super::*;
use crate::api::plan::StepParameters;
use crate::core::rails::{Held, Rail};
use crate::core::testing::at;

fn spec(dry_run: bool) -> RecoveryPlanSpec {
    let params = StepParameters {
        region: "us-east-1".into(),
        cluster: Some("prod".into()),
        service: Some("checkout".into()),
        ..Default::default()
    };
    let step =
        |order, action| PlanStep { order, action, target: "ecs/prod/checkout".into(), parameters: params.clone() };
    RecoveryPlanSpec {
        incident: "inc".into(),
        incident_id: "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f".into(),
        policy: "pol".into(),
        dry_run,
        steps: vec![step(1, StepAction::RestartService), step(2, StepAction::VerifyService)],
    }
}

/// Backoff alone: the wait for a call to settle has its own tests.
fn settings() -> Settings {
    Settings { step_timeout: Duration::from_secs(300), call_settle: Duration::ZERO, ..Settings::default() }
}

fn ev(k: &str, v: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(k.to_owned(), v.to_owned())])
}

/// A test harness: the plan as stored, plus the knobs `decide` reads.
struct Plan {
    spec: RecoveryPlanSpec,
    status: RecoveryPlanStatus,
    manual: bool,
    approved_by: Option<String>,
    gate: Gate,
    settings: Settings,
    resumed: bool,
    request: Option<(RequestAction, String)>,
    now: Timestamp,
}

impl Plan {
    fn new() -> Self {
        Self {
            spec: spec(false),
            status: RecoveryPlanStatus::default(),
            manual: false,
            approved_by: None,
            gate: Gate::Open,
            settings: settings(),
            resumed: false,
            request: None,
            now: at(0),
        }
    }
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            spec: &self.spec,
            status: &self.status,
            manual: self.manual,
            approved_by: self.approved_by.as_deref(),
            gate: &self.gate,
            settings: &self.settings,
            resumed: self.resumed,
            request: self.request.as_ref().map(|(a, t)| (*a, t.as_str())),
            now: self.now,
        }
    }
    fn decide(&self) -> Next {
        decide(&self.inputs())
    }
    /// Decides and applies a Persist; panics on anything else.
    fn persist(&mut self) -> Vec<Transition> {
        match self.decide() {
            Next::Persist(u) => {
                assert_ne!(u.status, self.status, "a Persist must change the status");
                self.status = u.status;
                u.transitions
            }
            other => panic!("expected Persist, got {other:?}"),
        }
    }
    fn started(&self) -> Started {
        match self.decide() {
            Next::Act(s) | Next::Verify(s) => s,
            other => panic!("expected Act or Verify, got {other:?}"),
        }
    }
    fn act(&mut self, outcome: ActionOutcome) -> Update {
        let s = self.started();
        let u = record_action(&self.inputs(), s, outcome);
        self.status = u.status.clone();
        u
    }
    fn verify(&mut self, outcome: VerifyOutcome) -> Update {
        let s = self.started();
        let u = record_verify(&self.inputs(), s, outcome);
        self.status = u.status.clone();
        u
    }
    fn step(&self, order: u32) -> &StepStatus {
        self.status.steps.iter().find(|s| s.order == order).unwrap()
    }
    /// Runs to step 1 persisted InProgress.
    fn at_first_action(mut self) -> Self {
        self.persist(); // Created
        self.persist(); // Executing
        self.persist(); // step 1 InProgress
        self
    }
}

fn done(message: &str) -> ActionOutcome {
    ActionOutcome::Done { evidence: ev("deploymentId", "ecs-svc/2"), message: message.into() }
}

#[test]
fn happy_path_writes_the_minimum() {
    let mut p = Plan::new();
    assert_eq!(p.persist(), vec![Transition::Created]);
    assert_eq!(p.status.phase, Some(PlanPhase::Created));
    assert_eq!(p.status.progress.as_deref(), Some("0/2"));
    assert!(matches!(p.persist()[..], [Transition::Executing { approved_by: None }]));
    assert!(matches!(p.persist()[..], [Transition::StepStarted { order: 1, attempt: 1, .. }]));
    assert_eq!(p.step(1).phase, StepPhase::InProgress);
    assert_eq!(p.step(1).started_at, Some(Time(at(0))));
    let started = p.started();
    assert_eq!(
        (started.order(), started.action(), started.attempt(), started.since()),
        (1, StepAction::RestartService, 1, at(0))
    );
    p.act(done("UpdateService accepted"));
    assert_eq!(p.step(1).phase, StepPhase::Completed);
    assert_eq!(p.step(1).evidence, ev("deploymentId", "ecs-svc/2"));
    assert_eq!(p.status.progress.as_deref(), Some("1/2"));
    p.persist(); // step 2 InProgress
    let verify = p.started();
    assert_eq!(verify.earlier_evidence(), &ev("deploymentId", "ecs-svc/2"), "verify sees the restart's evidence");
    p.verify(VerifyOutcome::Satisfied { evidence: ev("runningCount", "3"), message: "ok".into() });
    assert_eq!(p.persist(), vec![Transition::Completed]);
    assert_eq!(p.status.phase, Some(PlanPhase::Completed));
    assert_eq!(p.status.progress.as_deref(), Some("2/2"));
    assert_eq!(p.decide(), Next::Done);
}

#[test]
fn found_in_progress_after_restart_acts_again_without_a_new_attempt() {
    let p = Plan::new().at_first_action();
    let before = p.status.clone();
    // The process died here; a new one reads the same status.
    let again = Plan { status: before, now: at(42), ..Plan::new() }.started();
    assert_eq!((again.attempt(), again.since()), (1, at(0)), "same attempt, check since the first start");
}

#[test]
fn already_done_completes_without_calling() {
    let mut p = Plan::new().at_first_action();
    let u = p.act(ActionOutcome::AlreadyDone {
        evidence: ev("deploymentId", "ecs-svc/2"),
        message: "found deployment newer than startedAt".into(),
    });
    assert!(matches!(u.transitions[..], [Transition::StepCompleted { order: 1, .. }]));
    assert_eq!(p.step(1).phase, StepPhase::Completed);
}

#[test]
fn retryable_failure_backs_off_then_retries_keeping_the_first_start() {
    let mut p = Plan::new().at_first_action();
    let u = p.act(ActionOutcome::Failed { message: "InternalFailure".into(), retryable: true });
    let first = u.requeue.expect("a backoff");
    assert!((Duration::from_secs(10)..=Duration::from_millis(12_500)).contains(&first), "{first:?}: 10 s + jitter");
    assert_eq!(p.step(1).phase, StepPhase::Pending);
    assert_eq!(p.step(1).next_attempt_at, Some(Time(add(at(0), first))));
    p.now = at(5);
    assert_eq!(p.decide(), Next::Wait(Some(first - Duration::from_secs(5))));
    p.now = at(13);
    assert!(matches!(p.persist()[..], [Transition::StepStarted { attempt: 2, .. }]));
    assert_eq!(p.step(1).started_at, Some(Time(at(0))), "the effect check still looks back to the first attempt");
    assert_eq!(p.step(1).attempt_started_at, Some(Time(at(13))));
    let u = p.act(ActionOutcome::Failed { message: "500".into(), retryable: true });
    let second = u.requeue.expect("a backoff");
    assert!((Duration::from_secs(20)..=Duration::from_secs(25)).contains(&second), "{second:?}: backoff doubles");
}

#[test]
fn backoff_jitter_spreads_plans_but_is_a_function_of_its_inputs() {
    let s = Settings::default();
    let spread: std::collections::BTreeSet<_> = (0..20).map(|n| backoff(&s, 1, &format!("shop-web-{n}"))).collect();
    assert!(spread.len() > 10, "twenty incidents retry at {} distinct times", spread.len());
    assert_eq!(backoff(&s, 2, "shop-web-1"), backoff(&s, 2, "shop-web-1"));
    assert!(spread.iter().all(|d| (s.retry_base..=s.retry_base.mul_f64(1.25)).contains(d)));
}

#[test]
fn retry_cap_fails_the_plan_and_skips_the_rest() {
    let mut p = Plan::new().at_first_action();
    p.settings.max_attempts = 1;
    let u = p.act(ActionOutcome::Failed { message: "ThrottlingException".into(), retryable: true });
    assert!(u.transitions.iter().any(|t| matches!(t, Transition::Failed { .. })));
    assert_eq!(p.status.phase, Some(PlanPhase::Failed));
    assert_eq!(p.step(1).phase, StepPhase::Failed);
    assert!(p.step(1).message.as_deref().unwrap().contains("gave up after 1 attempts"));
    assert_eq!(p.step(2).phase, StepPhase::Skipped);
    assert_eq!(p.decide(), Next::Done);
}

#[test]
fn non_retryable_failure_fails_at_once() {
    let mut p = Plan::new().at_first_action();
    p.act(ActionOutcome::Failed { message: "ServiceNotFoundException".into(), retryable: false });
    assert_eq!(p.status.phase, Some(PlanPhase::Failed));
    assert!(p.status.message.as_deref().unwrap().contains("not retryable"));
}

#[test]
fn deferred_action_waits_without_a_new_attempt_until_the_timeout() {
    let mut p = Plan::new().at_first_action();
    let u = p.act(ActionOutcome::Deferred {
        message: "an earlier rollout is still running".into(),
        retry_after: Duration::from_secs(15),
    });
    assert_eq!(u.requeue, Some(Duration::from_secs(15)));
    assert_eq!((p.step(1).phase, p.step(1).attempts), (StepPhase::InProgress, 1));
    p.now = at(300);
    p.act(ActionOutcome::Deferred { message: "still rolling out".into(), retry_after: Duration::from_secs(15) });
    assert_eq!(p.status.phase, Some(PlanPhase::Failed));
}

#[test]
fn verify_polls_until_timeout() {
    let mut p = Plan::new().at_first_action();
    p.act(done("ok"));
    p.now = at(100);
    p.persist(); // verify InProgress, started at 100
    let u = p.verify(VerifyOutcome::NotYet { message: "runningCount 1 < desiredCount 3".into() });
    assert_eq!(u.requeue, Some(Duration::from_secs(5)));
    assert_eq!(p.step(2).phase, StepPhase::InProgress);
    p.now = at(397);
    let u = p.verify(VerifyOutcome::NotYet { message: "runningCount 1 < desiredCount 3".into() });
    assert_eq!(u.requeue, Some(Duration::from_secs(3)), "never sleeps past the deadline");
    p.now = at(400);
    // At the deadline decide fails it without asking AWS again.
    assert!(matches!(p.persist().last(), Some(Transition::Failed { .. })));
    assert_eq!(p.step(2).phase, StepPhase::Failed);
    assert!(p.status.message.as_deref().unwrap().contains("stepTimeout 300s"));
}

#[test]
fn verify_timeout_is_also_caught_on_record() {
    let mut p = Plan::new().at_first_action();
    p.act(done("ok"));
    p.persist();
    let s = p.started();
    p.now = at(301);
    let u = record_verify(&p.inputs(), s, VerifyOutcome::NotYet { message: "status rebooting".into() });
    assert_eq!(u.status.phase, Some(PlanPhase::Failed));
}

#[test]
fn manual_waits_for_approval() {
    let mut p = Plan { manual: true, ..Plan::new() };
    p.persist();
    assert_eq!(p.persist(), vec![Transition::AwaitingApproval]);
    assert_eq!(p.status.phase, Some(PlanPhase::AwaitingApproval));
    assert_eq!(p.decide(), Next::Wait(None), "no write while waiting");
    p.approved_by = Some("alice".into());
    assert_eq!(p.persist(), vec![Transition::Executing { approved_by: Some("alice".into()) }]);
    assert_eq!(p.status.approved_by.as_deref(), Some("alice"));
}

#[test]
fn dry_run_skips_every_step_and_never_acts() {
    let mut p = Plan { spec: spec(true), ..Plan::new() };
    p.persist();
    let t = p.persist();
    assert_eq!(t.len(), 3);
    assert_eq!(p.status.phase, Some(PlanPhase::Completed));
    assert!(p.status.steps.iter().all(|s| s.phase == StepPhase::Skipped && s.attempts == 0));
    assert!(
        p.step(1)
            .message
            .as_deref()
            .unwrap()
            .contains("UpdateService(cluster=prod, service=checkout, forceNewDeployment=true)")
    );
}

fn storm() -> Gate {
    Gate::Hold(Held {
        rail: Rail::TooManyUnhealthy,
        message: "6 of 10 targets are unhealthy".into(),
        until: None,
        record_after: None,
    })
}

#[test]
fn a_hold_keeps_the_plan_from_starting_and_writes_once() {
    let mut p = Plan { gate: storm(), ..Plan::new() };
    p.persist();
    assert!(matches!(&p.persist()[..], [Transition::Held { reason: "TooManyUnhealthy", .. }]));
    assert_eq!(p.status.phase, Some(PlanPhase::Created));
    assert_eq!(crate::api::common::condition(&p.status.conditions, HELD).unwrap().reason, "TooManyUnhealthy");
    assert_eq!(p.decide(), Next::Wait(None), "an unchanged hold is not written again");
    p.gate = Gate::Open;
    p.persist();
    assert_eq!(p.status.phase, Some(PlanPhase::Executing));
    assert!(p.status.conditions.is_empty(), "the Held condition is cleared");
}

#[test]
fn a_hold_blocks_actions_but_not_verifications() {
    let mut p = Plan::new().at_first_action();
    p.gate = storm();
    assert!(
        matches!(p.decide(), Next::Persist(Update { ref transitions, .. }) if matches!(transitions[..], [Transition::Held { .. }]))
    );
    p.gate = Gate::Open;
    p.act(done("ok"));
    p.gate = storm();
    p.persist(); // verify starts despite the hold
    assert!(matches!(p.decide(), Next::Verify(_)));
}

#[test]
fn cooldown_hold_requeues_at_its_end() {
    let mut p = Plan {
        gate: Gate::Hold(Held {
            rail: Rail::Cooldown,
            message: "cooldown".into(),
            until: Some(at(60)),
            record_after: None,
        }),
        ..Plan::new()
    };
    p.persist();
    match p.decide() {
        Next::Persist(u) => assert_eq!(u.requeue, Some(Duration::from_secs(60))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_hold_expected_to_lift_is_recorded_only_once_it_lasts() {
    let counts = |record_after| {
        Gate::Hold(Held {
            rail: Rail::CountsPending,
            message: "waiting for the counts".into(),
            until: None,
            record_after: Some(record_after),
        })
    };
    let five = Duration::from_secs(5);
    // Not started: nothing derived is written (the shell drops its Created too).
    let mut p = Plan::new();
    p.persist(); // Created
    p.gate = counts(add(p.now, five));
    assert_eq!(p.decide(), Next::Recheck(five), "no write while it may lift");
    p.now = add(p.now, five);
    assert!(matches!(&p.persist()[..], [Transition::Held { reason: "CountsPending", .. }]), "recorded once it lasts");
    // Started (a second action waits): the wait is not recorded, what came before is.
    let mut p = Plan::new().at_first_action();
    p.gate = counts(add(p.now, five));
    assert_eq!(p.decide(), Next::Wait(Some(five)));
    p.now = add(p.now, five);
    assert!(matches!(&p.persist()[..], [Transition::Held { reason: "CountsPending", .. }]));
    // Lifted within the grace: nothing was recorded.
    let mut p = Plan::new();
    p.persist();
    p.gate = counts(add(p.now, five));
    assert_eq!(p.decide(), Next::Recheck(five));
    p.gate = Gate::Open;
    assert!(matches!(&p.persist()[..], [Transition::Executing { .. }]));
    assert!(p.status.conditions.is_empty());
}

#[test]
fn stop_waits_for_an_action_in_flight_then_fails_at_the_boundary() {
    let mut p = Plan::new().at_first_action();
    p.gate = Gate::Stop("policy pol was deleted".into());
    assert!(matches!(p.decide(), Next::Act(_)), "an action in flight finishes");
    p.act(done("ok"));
    let t = p.persist();
    assert!(matches!(t.last(), Some(Transition::Failed { message }) if message == "stopped: policy pol was deleted"));
    assert_eq!(p.step(1).phase, StepPhase::Completed, "what was done stays recorded");
    assert_eq!(p.step(2).phase, StepPhase::Skipped);
}

#[test]
fn stop_before_start_fails_without_acting() {
    let mut p = Plan::new();
    p.persist();
    p.gate = Gate::Stop("policy pol was deleted".into());
    p.persist();
    assert_eq!(p.status.phase, Some(PlanPhase::Failed));
    assert!(p.status.steps.iter().all(|s| s.phase == StepPhase::Skipped));
}

#[test]
fn a_failed_step_in_an_executing_plan_is_repaired() {
    let mut p = Plan::new().at_first_action();
    p.status.steps[0].phase = StepPhase::Failed;
    p.persist();
    assert_eq!(p.status.phase, Some(PlanPhase::Failed));
}

/// The at-most-once rule, simulated: the controller dies at every boundary of the protocol
/// (before or after each status write, after the AWS call returns), restarts from what was
/// persisted, and in every case the action reaches AWS exactly once and the plan completes.
#[test]
fn killed_at_every_boundary_acts_exactly_once() {
    for crash_at in 0..40 {
        let mut persisted = Plan::new();
        let mut applied = false; // the effect in AWS
        let mut calls = 0;
        let mut boundary = 0;
        let mut crashed = false;
        let crash = |b: &mut u32| {
            *b += 1;
            *b == crash_at + 1
        };
        for _ in 0..30 {
            if persisted.status.phase == Some(PlanPhase::Completed) {
                break;
            }
            let mut working = Plan { status: persisted.status.clone(), ..Plan::new() };
            let next = working.decide();
            let new_status = match next {
                Next::Persist(u) => Some(u.status),
                Next::Act(started) => {
                    // Check first: has the effect happened since startedAt?
                    let outcome = if applied {
                        ActionOutcome::AlreadyDone { evidence: ev("deploymentId", "d2"), message: "found".into() }
                    } else {
                        calls += 1;
                        applied = true;
                        if crash(&mut boundary) {
                            crashed = true;
                            continue; // died after the call returned, before recording
                        }
                        done("called")
                    };
                    Some(record_action(&working.inputs(), started, outcome).status)
                }
                Next::Verify(started) => Some(
                    record_verify(
                        &working.inputs(),
                        started,
                        VerifyOutcome::Satisfied { evidence: BTreeMap::new(), message: "ok".into() },
                    )
                    .status,
                ),
                other => panic!("unexpected {other:?}"),
            };
            if crash(&mut boundary) {
                crashed = true;
                continue; // died before the write landed
            }
            working.status = new_status.expect("a new status");
            persisted.status = working.status;
        }
        assert_eq!(persisted.status.phase, Some(PlanPhase::Completed), "crash at {crash_at}");
        assert_eq!(calls, 1, "crash at boundary {crash_at}: the action reached AWS {calls} times");
        if crash_at < 6 {
            assert!(crashed, "boundary {crash_at} should have been reached");
        }
    }
}

/// `in_action` is what the plan controller reads fresh for: true exactly while the next
/// decision would act without writing first.
#[test]
fn in_action_only_while_a_mutating_step_is_in_progress() {
    let mut p = Plan::new();
    assert!(!in_action(&p.spec, &p.status), "no status");
    p.persist(); // Created
    p.persist(); // Executing
    assert!(!in_action(&p.spec, &p.status), "step 1 pending: its start is written first");
    p.persist(); // step 1 InProgress
    assert!(in_action(&p.spec, &p.status), "step 1 (restart) in progress");
    assert!(matches!(p.decide(), Next::Act(_)), "and the next decision acts");
    p.act(done("restarted"));
    assert!(!in_action(&p.spec, &p.status), "step 1 completed, step 2 pending");
    p.persist(); // step 2 InProgress
    assert_eq!(p.step(2).phase, StepPhase::InProgress);
    assert!(!in_action(&p.spec, &p.status), "step 2 (verify) in progress only reads");
}

fn recovered() -> ActionOutcome {
    ActionOutcome::NotNeeded {
        evidence: ev("runningCount", "3"),
        message: "not needed: the target recovered before the action (3 of 3 desired tasks running)".into(),
    }
}

/// The read just before the call found the target healthy: the step is Skipped with what
/// was read, the rest is not run, and the plan ends NotNeeded without an AWS call.
#[test]
fn a_target_healthy_at_the_moment_of_acting_ends_the_plan_not_needed() {
    let mut p = Plan::new().at_first_action();
    let u = p.act(recovered());
    assert_eq!(p.step(1).phase, StepPhase::Skipped);
    assert_eq!(p.step(1).evidence.get("runningCount").map(String::as_str), Some("3"), "what was read");
    assert!(p.step(1).message.as_deref().is_some_and(|m| m.starts_with("not needed: the target recovered")));
    assert_eq!(p.step(2).phase, StepPhase::Skipped, "the verify is not run");
    assert_eq!(p.status.phase, Some(PlanPhase::NotNeeded));
    assert!(p.status.completed_at.is_some());
    assert_eq!(p.status.progress.as_deref(), Some("0/2"));
    let reasons: Vec<_> = u.transitions.iter().map(Transition::reason).collect();
    assert_eq!(reasons, ["StepSkipped", "StepSkipped", "PlanNotNeeded"]);
    assert!(!u.transitions.iter().any(Transition::is_warning), "recovering is not a warning");
    assert_eq!(p.decide(), Next::Done);
}

/// An incident that resolved before its plan started ends the plan NotNeeded; a plan whose
/// action is in flight finishes it first (the read before acting decides).
#[test]
fn not_needed_gate_ends_a_waiting_plan_but_not_an_action_in_flight() {
    let mut p = Plan::new();
    p.persist(); // Created
    p.gate = Gate::NotNeeded("the target recovered".into());
    let t = p.persist();
    assert_eq!(p.status.phase, Some(PlanPhase::NotNeeded));
    assert!(p.status.steps.iter().all(|s| s.phase == StepPhase::Skipped && s.attempts == 0));
    assert!(
        matches!(t.last(), Some(Transition::NotNeeded { message }) if message == "not needed: the target recovered")
    );

    let mut p = Plan::new().at_first_action();
    p.gate = Gate::NotNeeded("the target recovered".into());
    assert!(matches!(p.decide(), Next::Act(_)), "the action in flight goes on to its read");
}

/// The crash simulation with a target that heals while the plan waits: wherever the
/// controller dies, the plan ends NotNeeded and AWS is never called.
#[test]
fn killed_at_every_boundary_a_healed_target_is_never_touched() {
    for crash_at in 0..20 {
        let mut persisted = Plan::new();
        let mut boundary = 0;
        for _ in 0..20 {
            if persisted.status.phase.is_some_and(PlanPhase::is_terminal) {
                break;
            }
            let mut working = Plan { status: persisted.status.clone(), ..Plan::new() };
            let new_status = match working.decide() {
                Next::Persist(u) => u.status,
                Next::Act(started) => record_action(&working.inputs(), started, recovered()).status,
                other => panic!("unexpected {other:?}"),
            };
            boundary += 1;
            if boundary == crash_at + 1 {
                continue; // died before the write landed
            }
            working.status = new_status;
            persisted.status = working.status;
        }
        assert_eq!(persisted.status.phase, Some(PlanPhase::NotNeeded), "crash at {crash_at}");
    }
}

/// A call that failed in a way that may still take effect (a timeout, a lost connection)
/// is not followed by the next attempt's check-first read until it can no longer land.
#[test]
fn the_next_attempt_waits_until_the_failed_call_can_no_longer_land() {
    let mut p = Plan::new();
    p.settings.call_settle = Duration::from_secs(20);
    let mut p = p.at_first_action();
    p.now = at(2); // the call timed out 2 s after the attempt started
    let u = p.act(ActionOutcome::Failed { message: "Timeout".into(), retryable: true });
    assert_eq!(u.requeue, Some(Duration::from_secs(18)), "attempt start + call_settle, not the 10 s backoff");
    assert_eq!(p.step(1).next_attempt_at, Some(Time(at(20))));
}

/// A step found in progress that another process started (a crash, a new leader) waits
/// until a call it may have sent can no longer land, says so once, and then acts.
#[test]
fn a_resumed_attempt_waits_for_its_call_to_settle_then_acts() {
    let mut p = Plan::new();
    p.settings.call_settle = Duration::from_secs(20);
    let mut p = p.at_first_action();
    p.resumed = true;
    p.now = at(3);
    let t = p.persist();
    assert!(t.is_empty(), "no Event, only the step's message");
    assert!(p.step(1).message.as_deref().is_some_and(|m| m.contains("started by an earlier process")));
    assert_eq!(p.decide(), Next::Wait(Some(Duration::from_secs(17))), "said once, then waits");
    p.now = at(20);
    assert!(matches!(p.decide(), Next::Act(_)));
    p.resumed = false;
    p.now = at(3);
    assert!(matches!(p.decide(), Next::Act(_)), "this process's own attempt acts at once");
}

/// A person's request, as the plan's annotations and status make it pending.
fn ask(p: &mut Plan, action: RequestAction, value: &str) -> Vec<Transition> {
    let annotations = BTreeMap::from([(action.annotation().to_owned(), value.to_owned())]);
    p.request = crate::core::requests::pending(&annotations, &p.status);
    let transitions = p.persist();
    p.request = crate::core::requests::pending(&annotations, &p.status);
    assert_eq!(p.request, None, "a request is handled once");
    transitions
}

fn request_outcome(t: &[Transition]) -> (bool, String) {
    match &t[0] {
        Transition::Request { accepted, message, .. } => (*accepted, message.clone()),
        other => panic!("expected the request first, got {other:?}"),
    }
}

#[test]
fn a_retry_gives_the_failed_step_one_more_attempt_under_the_same_protocol() {
    let mut p = Plan::new().at_first_action();
    p.settings.max_attempts = 1;
    p.act(ActionOutcome::Failed { message: "AccessDeniedException".into(), retryable: false });
    assert_eq!(p.status.phase, Some(PlanPhase::Failed));
    p.now = at(600);
    let t = ask(&mut p, RequestAction::Retry, "alice 1764755000");
    let (accepted, message) = request_outcome(&t);
    assert!(
        accepted && message.contains("retry requested by alice: step 1 RestartService gets attempt 2"),
        "{message}"
    );
    assert_eq!(p.status.phase, Some(PlanPhase::Created), "through Created: the lock and the rails again");
    assert_eq!(p.status.completed_at, None);
    assert_eq!((p.step(1).phase, p.step(2).phase), (StepPhase::Pending, StepPhase::Pending));
    let record = &p.status.requests[0];
    assert_eq!((record.by.as_str(), record.token.as_str()), ("alice", "alice 1764755000"));
    p.persist(); // Executing
    assert_eq!(p.status.started_at, Some(Time(at(0))), "the plan keeps its first start");
    assert!(matches!(p.persist()[..], [Transition::StepStarted { order: 1, attempt: 2, .. }]));
    let started = p.started();
    assert_eq!((started.attempt(), started.since()), (2, at(0)), "the check-first read looks back to attempt 1");
    // Past maxAttempts, a failure of the retry fails the plan again: one more call, no more.
    p.act(ActionOutcome::Failed { message: "500".into(), retryable: true });
    assert_eq!(p.status.phase, Some(PlanPhase::Failed));
}

#[test]
fn a_retry_of_a_failed_verification_verifies_again_with_a_fresh_timeout() {
    let mut p = Plan::new().at_first_action();
    p.act(done("UpdateService accepted"));
    p.persist(); // step 2 InProgress
    p.now = at(400);
    p.persist(); // past stepTimeout: failed
    assert_eq!((p.status.phase, p.step(2).phase), (Some(PlanPhase::Failed), StepPhase::Failed));
    p.now = at(1000);
    let (accepted, _) = request_outcome(&ask(&mut p, RequestAction::Reverify, "bob"));
    assert!(accepted);
    assert_eq!((p.status.phase, p.step(1).phase), (Some(PlanPhase::Executing), StepPhase::Completed));
    p.persist(); // step 2 InProgress again
    assert_eq!(p.step(2).started_at, Some(Time(at(1000))), "a fresh stepTimeout");
    assert_eq!(p.started().action(), StepAction::VerifyService, "a verification, never an action");
    p.verify(VerifyOutcome::Satisfied { evidence: ev("runningCount", "2"), message: "ok".into() });
    p.persist();
    assert_eq!(p.status.phase, Some(PlanPhase::Completed));
}

#[test]
fn requests_that_do_not_apply_are_refused_and_change_nothing_else() {
    // Re-verify of a plan failed at its action.
    let mut p = Plan::new().at_first_action();
    p.act(ActionOutcome::Failed { message: "AccessDenied".into(), retryable: false });
    let before = p.status.clone();
    let t = ask(&mut p, RequestAction::Reverify, "bob");
    let (accepted, message) = request_outcome(&t);
    assert!(!accepted && message.contains("retry the plan instead"), "{message}");
    assert!(t[0].is_warning());
    assert_eq!(RecoveryPlanStatus { requests: vec![], ..p.status.clone() }, before);
    // Retry of a plan that has not failed; cancel of an action in flight.
    let mut p = Plan::new().at_first_action();
    let (accepted, message) = request_outcome(&ask(&mut p, RequestAction::Retry, "carol"));
    assert!(!accepted && message.contains("only a Failed plan"), "{message}");
    let (accepted, message) = request_outcome(&ask(&mut p, RequestAction::Cancel, "carol"));
    assert!(!accepted && message.contains("may be in flight"), "{message}");
    assert_eq!(p.step(1).phase, StepPhase::InProgress);
    assert!(matches!(p.decide(), Next::Act(_)), "the action goes on");
}

#[test]
fn a_cancelled_waiting_plan_never_acts_even_when_approved_after() {
    let mut p = Plan { manual: true, ..Plan::new() };
    p.persist(); // Created
    assert!(matches!(p.persist()[..], [Transition::AwaitingApproval]));
    let t = ask(&mut p, RequestAction::Cancel, "dave");
    assert!(request_outcome(&t).0);
    assert!(matches!(t.last(), Some(Transition::Cancelled { .. })));
    assert_eq!(p.status.phase, Some(PlanPhase::Cancelled));
    assert!(p.status.steps.iter().all(|s| s.phase == StepPhase::Skipped && s.attempts == 0));
    p.approved_by = Some("erin".into());
    assert_eq!(p.decide(), Next::Done);
    // The same value again is the same request; a new one is refused (the plan ended).
    let (accepted, message) = request_outcome(&ask(&mut p, RequestAction::Cancel, "dave again"));
    assert!(!accepted && message.contains("already ended Cancelled"), "{message}");
}

#[test]
fn a_cancel_between_attempts_records_that_an_attempt_was_made() {
    let mut p = Plan::new().at_first_action();
    p.act(ActionOutcome::Failed { message: "timeout".into(), retryable: true });
    assert_eq!(p.step(1).phase, StepPhase::Pending);
    ask(&mut p, RequestAction::Cancel, "frank");
    assert_eq!(p.status.phase, Some(PlanPhase::Cancelled));
    assert_eq!(p.step(1).phase, StepPhase::Failed, "not 'never ran': the attempt may have landed");
    assert!(p.step(1).message.as_deref().unwrap().contains("cancelled by frank after 1 attempt(s)"));
}
