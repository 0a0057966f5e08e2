//! Property tests of the pure core, through its public API only.
//!
//! - Detection: random probe sequences per target, with status writes that are lost and
//!   controller restarts that re-read the last *persisted* state, against a model of the
//!   API server's incidents.
//! - The step state machine: a controller loop against a fake AWS, with random plans, AWS
//!   answers, lost writes (a crash between computing a status and persisting it), time,
//!   gates and modes.
//!
//! The properties found an incident orphaned by a lost status write (now adopted by
//! `adopt_orphans`), and two stop-handling gaps in the step machine; plain tests spell those
//! cases out.
//!
//! No part is needed: `cargo test --test properties`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use aws_recovery_controller::api::incident::IncidentMetrics;
use aws_recovery_controller::api::plan::{
    PlanPhase, PlanStep, RecoveryPlanSpec, RecoveryPlanStatus, StepAction, StepParameters, StepPhase,
};
use aws_recovery_controller::api::policy::{RecoveryPolicySpec, TargetState};
use aws_recovery_controller::core::detection::{Decision, Probe, adopt_orphans, detect};
use aws_recovery_controller::core::rails::{Held, Rail};
use aws_recovery_controller::core::steps::{
    ActionOutcome, Gate, Inputs, Next, Settings, Started, VerifyOutcome, decide, record_action, record_verify,
};
use aws_recovery_controller::core::targets::{incident_name, targets};
use aws_recovery_controller::core::time::add;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// `cases` cases; failures are reported with their minimal case, not saved to a file (the
/// explicit tests below keep the interesting ones).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(cases) }
}

fn at(secs: u64) -> Timestamp {
    add(Timestamp::from_second(1_800_000_000).expect("in range"), Duration::from_secs(secs))
}

// ---------------------------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------------------------

const POLICY: &str = "payments";

/// What one probe of one target found; `Missing` is a target left out of the probe map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum P {
    Healthy,
    Unhealthy,
    Unknown,
    Missing,
}

/// What happens to the status write at the end of a probe cycle.
#[derive(Clone, Copy, Debug)]
enum Write {
    /// It lands.
    Lands,
    /// It is lost (a conflict, a timeout) but the process goes on with what it computed.
    Lost,
    /// The process dies after carrying out the first `applied` decisions, before the write;
    /// the new process starts from the persisted state.
    Crash { applied: usize },
}

#[derive(Clone, Debug)]
struct DetectionCase {
    failure_threshold: u32,
    success_threshold: u32,
    targets: usize,
    /// Per cycle: one probe per target, and the fate of the write.
    cycles: Vec<(Vec<P>, Write)>,
}

fn probe_kind() -> impl Strategy<Value = P> {
    prop_oneof![4 => Just(P::Healthy), 4 => Just(P::Unhealthy), 1 => Just(P::Unknown), 1 => Just(P::Missing)]
}

fn write_fate() -> impl Strategy<Value = Write> {
    prop_oneof![
        6 => Just(Write::Lands),
        1 => Just(Write::Lost),
        1 => (0usize..4).prop_map(|applied| Write::Crash { applied }),
    ]
}

fn detection_case() -> impl Strategy<Value = DetectionCase> {
    (1u32..=4, 1u32..=4, 1usize..=3).prop_flat_map(|(f, s, n)| {
        proptest::collection::vec((proptest::collection::vec(probe_kind(), n), write_fate()), 1..60)
            .prop_map(move |cycles| DetectionCase { failure_threshold: f, success_threshold: s, targets: n, cycles })
    })
}

/// A policy with `n` targets of different kinds.
fn detection_spec(case: &DetectionCase) -> RecoveryPolicySpec {
    let mut t = serde_json::Map::new();
    t.insert("ecsServices".into(), serde_json::json!([{ "cluster": "prod", "services": ["checkout"] }]));
    if case.targets >= 2 {
        t.insert("rdsInstances".into(), serde_json::json!([{ "identifier": "prod-db" }]));
    }
    if case.targets >= 3 {
        t.insert(
            "route53HealthChecks".into(),
            serde_json::json!([{ "healthCheckId": "0b7e2c5e-8b6f-4f43-9d1a-0a6c2d3e4f51" }]),
        );
    }
    serde_json::from_value(serde_json::json!({
        "aws": { "region": "us-east-1" },
        "targets": t,
        "detection": { "failureThreshold": case.failure_threshold, "successThreshold": case.success_threshold },
    }))
    .expect("a valid spec")
}

/// A state and the probes that made it: the lineage of what the controller remembers.
#[derive(Clone, Debug, Default)]
struct Lineage {
    states: Vec<TargetState>,
    history: BTreeMap<String, Vec<P>>,
}

impl Lineage {
    fn state(&self, key: &str) -> TargetState {
        self.states
            .iter()
            .find(|s| s.target == key)
            .cloned()
            .unwrap_or_else(|| TargetState { target: key.into(), ..TargetState::default() })
    }
}

/// Probes of `want` at the end of `history`, skipping the ones that could not tell.
fn trailing(history: &[P], want: P) -> u32 {
    history.iter().rev().filter(|p| matches!(p, P::Healthy | P::Unhealthy)).take_while(|p| **p == want).count() as u32
}

/// The API server's incidents: name → (target, open).
#[derive(Debug, Default)]
struct Incidents {
    by_name: BTreeMap<String, (String, bool)>,
    created: BTreeMap<String, Vec<String>>,
}

impl Incidents {
    fn open_for(&self, key: &str) -> Vec<&str> {
        self.by_name.iter().filter(|(_, (t, open))| t == key && *open).map(|(n, _)| n.as_str()).collect()
    }
}

/// How closely the API server's incidents must agree with the persisted states after a
/// write lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agree {
    /// No requirement beyond the flap guard's.
    Loosely,
    /// Every open incident is the one its target's persisted state names (no orphans).
    NoOrphans,
    /// That, and the incident a persisted state names is open.
    Exactly,
}

/// Runs a detection case, checking the flap guard, and agreement as asked.
fn run_detection(case: &DetectionCase, agree: Agree) -> Result<Incidents, TestCaseError> {
    let spec = detection_spec(case);
    let keys: Vec<String> = targets(&spec).into_iter().map(|t| t.key).collect();
    prop_assert_eq!(keys.len(), case.targets);
    let (f, s) = (case.failure_threshold, case.success_threshold);
    let metrics = IncidentMetrics::default;

    let mut persisted = Lineage::default();
    let mut mem = Lineage::default();
    let mut world = Incidents::default();

    for (cycle_no, (kinds, fate)) in case.cycles.iter().enumerate() {
        let now = at(30 * cycle_no as u64);
        let mut probes = BTreeMap::new();
        for (key, kind) in keys.iter().zip(kinds) {
            let probe = match kind {
                P::Healthy => Probe::Healthy(metrics()),
                P::Unhealthy => Probe::Unhealthy(metrics()),
                P::Unknown => Probe::Unknown("ThrottlingException".into()),
                P::Missing => continue,
            };
            probes.insert(key.clone(), probe);
        }
        // As the controller does: adopt incidents whose record a lost write dropped.
        let open: std::collections::BTreeSet<String> =
            world.by_name.iter().filter(|(_, (_, open))| *open).map(|(n, _)| n.clone()).collect();
        adopt_orphans(POLICY, &spec, &mut mem.states, &open);
        let none = std::collections::BTreeSet::new();
        let cycle = detect(POLICY, &spec, &mem.states, &probes, now, &none, &Default::default());
        prop_assert_eq!(
            &cycle,
            &detect(POLICY, &spec, &mem.states, &probes, now, &none, &Default::default()),
            "detect is deterministic"
        );

        let mut next = Lineage { states: cycle.states.clone(), history: mem.history.clone() };
        for (key, kind) in keys.iter().zip(kinds) {
            next.history.entry(key.clone()).or_default().push(*kind);
        }

        // Each target's decision is exactly what its remembered probes call for.
        for (key, kind) in keys.iter().zip(kinds) {
            let before = mem.state(key);
            let old = mem.history.get(key).cloned().unwrap_or_default();
            let new = &next.history[key];
            // Streaks are counted up to their threshold (no status write for a steady target).
            prop_assert_eq!(before.consecutive_failures, trailing(&old, P::Unhealthy).min(f), "failures of {}", key);
            prop_assert_eq!(before.consecutive_successes, trailing(&old, P::Healthy).min(s), "successes of {}", key);
            let decision = cycle
                .decisions
                .iter()
                .find(|(t, _)| t.as_ref().is_some_and(|t| &t.key == key))
                .map(|(_, d)| d.clone())
                .unwrap_or(Decision::Nothing);
            let expected = match (kind, &before.open_incident) {
                (P::Unhealthy, Some(open)) => Decision::StillUnhealthy { incident: open.clone(), metrics: metrics() },
                (P::Unhealthy, None) if trailing(new, P::Unhealthy) >= f => {
                    Decision::Open { name: incident_name(POLICY, key, before.opened), metrics: metrics() }
                }
                (P::Healthy, Some(open)) if trailing(new, P::Healthy) >= s => {
                    Decision::Resolve { incident: open.clone(), metrics: metrics() }
                }
                _ => Decision::Nothing,
            };
            prop_assert_eq!(
                &decision,
                &expected,
                "cycle {}, target {}: state {:?}, remembered probes {:?}",
                cycle_no,
                key,
                before,
                new
            );
            // The new state records what was decided: an open counts toward the next name.
            let after = next.state(key);
            let (opened, open_incident) = match &decision {
                Decision::Open { name, .. } => (before.opened + 1, Some(name.clone())),
                Decision::Resolve { .. } => (before.opened, None),
                _ => (before.opened, before.open_incident.clone()),
            };
            prop_assert_eq!((after.opened, &after.open_incident), (opened, &open_incident), "{}", key);
        }

        // Carry the decisions out as the controller does, maybe dying part-way.
        let applied = match fate {
            Write::Crash { applied } => *applied,
            _ => usize::MAX,
        };
        for (target, decision) in cycle.decisions.into_iter().take(applied) {
            let key = target.map(|t| t.key).expect("no target leaves the policy here");
            match decision {
                Decision::Open { name, .. } => {
                    if !world.by_name.contains_key(&name) {
                        // Opens only after failureThreshold remembered unhealthy probes in a row.
                        prop_assert!(trailing(&next.history[&key], P::Unhealthy) >= f);
                        // Names are deterministic: the nth incident of a target is always the
                        // same name, so a lost write finds what it made instead of a second one.
                        let created = world.created.entry(key.clone()).or_default();
                        prop_assert_eq!(&name, &incident_name(POLICY, &key, created.len() as u32));
                        created.push(name.clone());
                        world.by_name.insert(name, (key.clone(), true));
                    }
                }
                Decision::StillUnhealthy { incident, .. } => {
                    // The incident is gone or resolved: forget it, so a new one can open.
                    if !world.by_name.get(&incident).is_some_and(|(_, open)| *open)
                        && let Some(st) = next.states.iter_mut().find(|s| s.open_incident.as_ref() == Some(&incident))
                    {
                        st.open_incident = None;
                    }
                }
                Decision::Resolve { incident, .. } => {
                    if let Some((_, open)) = world.by_name.get_mut(&incident)
                        && *open
                    {
                        prop_assert!(trailing(&next.history[&key], P::Healthy) >= s);
                        *open = false;
                    }
                }
                Decision::Relapsed { .. } => {
                    prop_assert!(false, "no plan ends NotNeeded here, so no incident relapses");
                }
                Decision::Nothing | Decision::Abandon { .. } => {}
            }
            // At most one open incident per target, at every moment.
            let open = world.open_for(&key);
            prop_assert!(open.len() <= 1, "cycle {}: {} has open incidents {:?}", cycle_no, key, open);
        }

        match fate {
            Write::Lands => {
                persisted = next.clone();
                mem = next;
                if agree != Agree::Loosely {
                    for key in &keys {
                        let named = persisted.state(key).open_incident;
                        if let Some(name) = named.as_ref().filter(|_| agree == Agree::Exactly) {
                            prop_assert!(
                                world.by_name.get(name).is_some_and(|(_, open)| *open),
                                "cycle {}: the persisted state names {} for {}, which is not open",
                                cycle_no,
                                name,
                                key
                            );
                        }
                        for open in world.open_for(key) {
                            prop_assert_eq!(
                                Some(open),
                                named.as_deref(),
                                "cycle {}: incident {} of {} is open but the persisted state does not know it",
                                cycle_no,
                                open,
                                key
                            );
                        }
                    }
                }
            }
            Write::Lost => mem = next,
            Write::Crash { .. } => mem = persisted.clone(),
        }
    }
    Ok(world)
}

proptest! {
    #![proptest_config(config(256))]

    /// Thresholds, one incident per target, deterministic names: under lost writes and restarts.
    #[test]
    fn detection_flap_guard_holds_across_lost_writes_and_restarts(case in detection_case()) {
        run_detection(&case, Agree::Loosely).map(drop)?;
    }

    /// The same with no lost write: then the API server's open incidents are always exactly
    /// the ones the persisted states name.
    #[test]
    fn detection_without_lost_writes_keeps_incidents_and_states_in_step(
        mut case in detection_case()
    ) {
        for (_, fate) in &mut case.cycles {
            *fate = Write::Lands;
        }
        run_detection(&case, Agree::Exactly).map(drop)?;
    }
}

/// An incident created in a cycle whose status write is lost is adopted by the next cycle
/// (`adopt_orphans`), so no incident is ever open without its target's state naming it.
#[test]
fn detection_never_orphans_an_incident() {
    let mut runner = proptest::test_runner::TestRunner::new(config(512));
    let result = runner.run(&detection_case(), |case| run_detection(&case, Agree::NoOrphans).map(drop));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The minimal orphan case, spelled out: an incident created in a cycle whose status write is
/// lost is adopted on the next cycle (its name is the target's next one) and resolved when
/// the target is healthy, instead of staying open forever.
#[test]
fn a_lost_write_after_opening_is_adopted_and_resolved() {
    let case = DetectionCase {
        failure_threshold: 1,
        success_threshold: 1,
        targets: 1,
        cycles: vec![(vec![P::Unhealthy], Write::Crash { applied: 1 }), (vec![P::Healthy], Write::Lands)],
    };
    let world = run_detection(&case, Agree::Exactly).expect("no orphan");
    let name = incident_name(POLICY, "ecs/prod/checkout", 0);
    assert_eq!(world.created["ecs/prod/checkout"], vec![name.clone()], "one incident");
    assert_eq!(world.by_name[&name], ("ecs/prod/checkout".to_owned(), false), "adopted and resolved");
}

// ---------------------------------------------------------------------------------------------
// The step state machine
// ---------------------------------------------------------------------------------------------

/// One answer of the fake AWS to a mutating call (after the check-first read found nothing).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Ok,
    /// Throttling, 5xx: nothing happened.
    Retryable,
    /// Access denied, not found: nothing happened.
    NonRetryable,
    /// A pre-check says not now; no call is made.
    Deferred(u8),
    /// The call took effect but the answer was lost (a timeout): looks retryable.
    TimeoutAfterEffect,
    /// The target is healthy again when read before the call: no call is made.
    Healed,
}

/// A rail's verdict for one iteration of the loop.
#[derive(Clone, Copy, Debug)]
enum G {
    Open,
    Hold,
    HoldFor(u16),
    /// The policy was deleted: from here on every iteration is Stop.
    Stop,
}

#[derive(Clone, Debug)]
struct PlanCase {
    actions: Vec<StepAction>,
    dry_run: bool,
    manual: bool,
    /// The iteration at which a person approves a Manual plan.
    approve_at: usize,
    step_timeout: u64,
    max_attempts: u32,
    retry_base: u64,
    retry_max: u64,
    verify_interval: u64,
    /// AWS answers to mutating calls, in order; then `then`.
    answers: Vec<Answer>,
    /// Verify answers: satisfied or not yet; then `verify_then`.
    verifies: Vec<bool>,
    gates: Vec<G>,
    /// Per write: whether the process dies before it lands. No more crashes once exhausted.
    crashes: Vec<bool>,
    /// Per iteration: seconds that pass (0: until the requeue the machine asked for).
    clock: Vec<u16>,
    /// What AWS answers once `answers` ran out: Ok, or an AWS that never agrees.
    then: Answer,
    /// What verifications find once `verifies` ran out.
    verify_then: bool,
}

fn action() -> impl Strategy<Value = StepAction> {
    prop_oneof![
        Just(StepAction::RestartService),
        Just(StepAction::VerifyService),
        Just(StepAction::FailoverDatabase),
        Just(StepAction::VerifyDatabase),
        Just(StepAction::UpdateDns),
        Just(StepAction::VerifyDns),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        3 => Just(Answer::Ok),
        2 => Just(Answer::Retryable),
        1 => Just(Answer::NonRetryable),
        1 => (1u8..=60).prop_map(Answer::Deferred),
        2 => Just(Answer::TimeoutAfterEffect),
        1 => Just(Answer::Healed),
    ]
}

fn gate() -> impl Strategy<Value = G> {
    prop_oneof![6 => Just(G::Open), 2 => Just(G::Hold), 2 => (1u16..=600).prop_map(G::HoldFor), 1 => Just(G::Stop)]
}

fn plan_case() -> impl Strategy<Value = PlanCase> {
    let plan = (
        prop_oneof![
            // The shapes the planner makes: act then verify; plus lone steps and two actions.
            3 => Just(vec![StepAction::RestartService, StepAction::VerifyService]),
            1 => proptest::collection::vec(action(), 1..=2),
        ],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.3),
        0usize..20,
    );
    let settings = (30u64..=600, 1u32..=4, 1u64..=30, 1u64..=8, 1u64..=10);
    let script = (
        proptest::collection::vec(answer(), 0..10),
        proptest::collection::vec(prop::bool::weighted(0.6), 0..12),
        proptest::collection::vec(gate(), 0..12),
        proptest::collection::vec(prop::bool::weighted(0.25), 0..30),
        proptest::collection::vec(prop_oneof![2 => Just(0u16), 1 => 1u16..=120], 0..40),
    );
    (plan, settings, script).prop_map(
        |(
            (actions, dry_run, manual, approve_at),
            (step_timeout, max_attempts, retry_base, retry_factor, verify_interval),
            (answers, verifies, gates, crashes, clock),
        )| PlanCase {
            actions,
            dry_run,
            manual,
            approve_at,
            step_timeout,
            max_attempts,
            retry_base,
            retry_max: retry_base * retry_factor,
            verify_interval,
            answers,
            verifies,
            gates,
            crashes,
            clock,
            then: Answer::Ok,
            verify_then: true,
        },
    )
}

fn plan_spec(case: &PlanCase) -> RecoveryPlanSpec {
    let parameters = StepParameters {
        region: "us-east-1".into(),
        cluster: Some("prod".into()),
        service: Some("checkout".into()),
        identifier: Some("prod-db".into()),
        ..StepParameters::default()
    };
    RecoveryPlanSpec {
        incident: "payments-ecs-0badf00d-0".into(),
        incident_id: "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f".into(),
        policy: "payments".into(),
        dry_run: case.dry_run,
        steps: case
            .actions
            .iter()
            .enumerate()
            .map(|(i, action)| PlanStep {
                order: i as u32 + 1,
                action: *action,
                target: "ecs/prod/checkout".into(),
                parameters: parameters.clone(),
            })
            .collect(),
    }
}

/// The fake AWS: one effect per mutating step, found by the check-first read.
#[derive(Debug)]
struct FakeAws {
    answers: VecDeque<Answer>,
    verifies: VecDeque<bool>,
    then: Answer,
    verify_then: bool,
    /// When each step's effect happened.
    effect_at: BTreeMap<u32, Timestamp>,
    /// Mutating calls that reached AWS, per step.
    calls: BTreeMap<u32, u32>,
    /// Mutating calls made although the step's effect was already there.
    calls_after_effect: u32,
    verify_calls: u32,
}

fn evidence(order: u32) -> BTreeMap<String, String> {
    BTreeMap::from([(format!("step{order}"), format!("effect-of-step-{order}"))])
}

impl FakeAws {
    fn act(&mut self, started: &Started, now: Timestamp) -> ActionOutcome {
        let order = started.order();
        // Check first: has the effect happened since the step first started?
        if self.effect_at.get(&order).is_some_and(|t| *t >= started.since()) {
            return ActionOutcome::AlreadyDone { evidence: evidence(order), message: "found the effect".into() };
        }
        let answer = self.answers.pop_front().unwrap_or(self.then);
        if answer == Answer::Healed {
            let evidence = BTreeMap::from([("readAt".to_owned(), now.to_string())]);
            return ActionOutcome::NotNeeded { evidence, message: "not needed: the target recovered".into() };
        }
        if let Answer::Deferred(secs) = answer {
            return ActionOutcome::Deferred {
                message: "an earlier rollout is still running".into(),
                retry_after: Duration::from_secs(secs.into()),
            };
        }
        *self.calls.entry(order).or_default() += 1;
        if self.effect_at.contains_key(&order) {
            self.calls_after_effect += 1;
        }
        match answer {
            Answer::Ok => {
                self.effect_at.insert(order, now);
                ActionOutcome::Done { evidence: evidence(order), message: "accepted".into() }
            }
            Answer::Retryable => ActionOutcome::Failed { message: "ThrottlingException".into(), retryable: true },
            Answer::NonRetryable => ActionOutcome::Failed { message: "AccessDeniedException".into(), retryable: false },
            Answer::TimeoutAfterEffect => {
                self.effect_at.insert(order, now);
                ActionOutcome::Failed { message: "operation timed out".into(), retryable: true }
            }
            Answer::Deferred(_) | Answer::Healed => unreachable!("handled above"),
        }
    }

    fn verify(&mut self) -> VerifyOutcome {
        self.verify_calls += 1;
        if self.verifies.pop_front().unwrap_or(self.verify_then) {
            VerifyOutcome::Satisfied { evidence: BTreeMap::new(), message: "healthy".into() }
        } else {
            VerifyOutcome::NotYet { message: "runningCount 1 < desiredCount 3".into() }
        }
    }

    fn total_calls(&self) -> u32 {
        self.calls.values().sum()
    }
}

/// What a run of one plan did.
#[derive(Debug)]
struct PlanRun {
    status: RecoveryPlanStatus,
    aws: FakeAws,
    /// Writes lost right after a mutating call reached AWS.
    lost_after_call: u32,
    /// Total AWS calls when the first Stop came, if no mutating step was in flight then, and
    /// whether every step had already finished.
    calls_at_clean_stop: Option<(u32, bool)>,
    /// Time from the moment every script ran out until the plan ended.
    tail: Duration,
}

const MAX_ITERATIONS: usize = 5_000;

fn step_of(status: &RecoveryPlanStatus, order: u32) -> Option<&aws_recovery_controller::api::plan::StepStatus> {
    status.steps.iter().find(|s| s.order == order)
}

fn run_plan(case: &PlanCase) -> Result<PlanRun, TestCaseError> {
    let spec = plan_spec(case);
    let settings = Settings {
        step_timeout: Duration::from_secs(case.step_timeout),
        max_attempts: case.max_attempts,
        retry_base: Duration::from_secs(case.retry_base),
        retry_max: Duration::from_secs(case.retry_max),
        verify_interval: Duration::from_secs(case.verify_interval),
        ..Settings::default()
    };
    let mut aws = FakeAws {
        answers: case.answers.iter().copied().collect(),
        verifies: case.verifies.iter().copied().collect(),
        then: case.then,
        verify_then: case.verify_then,
        effect_at: BTreeMap::new(),
        calls: BTreeMap::new(),
        calls_after_effect: 0,
        verify_calls: 0,
    };
    let mut crashes: VecDeque<bool> = case.crashes.iter().copied().collect();
    let mut persisted = RecoveryPlanStatus::default();
    let mut now_secs: u64 = 0;
    let mut stopped = false;
    let mut calls_at_clean_stop = None;
    let mut lost_after_call = 0;
    let mut free_at: Option<u64> = None;

    for i in 0..MAX_ITERATIONS {
        let now = at(now_secs);
        let gate = match case.gates.get(i).copied().unwrap_or(G::Open) {
            _ if stopped => Gate::Stop("policy payments was deleted".into()),
            G::Open => Gate::Open,
            G::Hold => Gate::Hold(Held {
                rail: Rail::TooManyUnhealthy,
                message: "6 of 10 targets are unhealthy".into(),
                until: None,
                record_after: None,
            }),
            G::HoldFor(secs) => Gate::Hold(Held {
                rail: Rail::Cooldown,
                message: "cooldown".into(),
                until: Some(add(now, Duration::from_secs(secs.into()))),
                record_after: None,
            }),
            G::Stop => {
                stopped = true;
                let in_flight = spec.steps.iter().any(|step| {
                    step.action.is_mutating()
                        && step_of(&persisted, step.order).is_some_and(|s| s.phase == StepPhase::InProgress)
                });
                if !in_flight && !persisted.phase.is_some_and(PlanPhase::is_terminal) {
                    let finished = spec.steps.iter().all(|step| {
                        step_of(&persisted, step.order)
                            .is_some_and(|s| matches!(s.phase, StepPhase::Completed | StepPhase::Skipped))
                    });
                    calls_at_clean_stop = Some((aws.total_calls(), finished));
                }
                Gate::Stop("policy payments was deleted".into())
            }
        };
        let scripts_done = i >= case.gates.len()
            && (!case.manual || i >= case.approve_at)
            && crashes.is_empty()
            && i >= case.clock.len();
        if scripts_done && free_at.is_none() {
            free_at = Some(now_secs);
        }
        let approved_by = (case.manual && i >= case.approve_at).then_some("alice");
        let status = persisted.clone();
        let inputs = Inputs {
            spec: &spec,
            status: &status,
            manual: case.manual,
            approved_by,
            gate: &gate,
            settings: &settings,
            resumed: false,
            request: None,
            now,
        };
        let next = decide(&inputs);
        let in_flight = spec.steps.iter().any(|step| {
            step.action.is_mutating() && step_of(&status, step.order).is_some_and(|s| s.phase == StepPhase::InProgress)
        });
        if matches!(gate, Gate::Stop(_)) && in_flight && status.phase == Some(PlanPhase::Executing) {
            prop_assert!(matches!(next, Next::Act(_)), "an action in flight finishes before a Stop: {:?}", next);
        }
        if status.phase.is_some_and(PlanPhase::is_terminal) {
            prop_assert_eq!(&next, &Next::Done, "a finished plan stays finished");
        }
        let (new_status, wait) = match next {
            Next::Done => {
                prop_assert!(status.phase.is_some_and(PlanPhase::is_terminal), "Done only when finished");
                let tail = Duration::from_secs(now_secs - free_at.unwrap_or(now_secs));
                return Ok(PlanRun { status, aws, lost_after_call, calls_at_clean_stop, tail });
            }
            Next::Wait(after) => (None, after),
            Next::Recheck(after) => (None, Some(after)),
            Next::Persist(update) => {
                prop_assert_ne!(&update.status, &status, "a Persist changes the status: {:?}", update.transitions);
                (Some(update.status), update.requeue)
            }
            Next::Act(started) => {
                prop_assert!(!case.dry_run, "a dry run never acts");
                prop_assert!(!matches!(gate, Gate::Hold(_)), "no mutating action while a rail holds");
                prop_assert!(!case.manual || approved_by.is_some(), "a Manual plan acts only once approved");
                let order = started.order();
                let step = step_of(&status, order);
                prop_assert!(started.action().is_mutating());
                prop_assert!(
                    step.is_some_and(|s| s.phase == StepPhase::InProgress && s.attempts == started.attempt()),
                    "Act only for a step persisted InProgress with this attempt: {:?}",
                    step
                );
                prop_assert_eq!(status.phase, Some(PlanPhase::Executing));
                let calls_before = aws.total_calls();
                let outcome = aws.act(&started, now);
                let called = aws.total_calls() > calls_before;
                let update = record_action(&inputs, started, outcome);
                if called && crashes.front() == Some(&true) {
                    lost_after_call += 1;
                }
                (Some(update.status), update.requeue)
            }
            Next::Verify(started) => {
                prop_assert!(!case.dry_run, "a dry run never verifies");
                prop_assert!(!case.manual || approved_by.is_some(), "a Manual plan runs only once approved");
                prop_assert!(!started.action().is_mutating());
                // A verify step sees the evidence of every completed step before it.
                for earlier in status.steps.iter().filter(|s| s.order < started.order()) {
                    for (k, v) in &earlier.evidence {
                        prop_assert_eq!(started.earlier_evidence().get(k), Some(v));
                    }
                }
                let outcome = aws.verify();
                let update = record_verify(&inputs, started, outcome);
                (Some(update.status), update.requeue)
            }
        };
        if let Some(new_status) = new_status {
            // A finished step never goes back; a Completed mutating step has its effect in AWS.
            for old in &status.steps {
                let new = step_of(&new_status, old.order);
                if matches!(old.phase, StepPhase::Completed | StepPhase::Skipped | StepPhase::Failed) {
                    prop_assert_eq!(new.map(|s| s.phase), Some(old.phase), "step {} went back", old.order);
                }
            }
            let crash = crashes.pop_front().unwrap_or(false);
            if !crash {
                persisted = new_status;
            }
        }
        let requeue = wait.map_or(0, |d| d.as_secs());
        now_secs += match case.clock.get(i).copied().unwrap_or(0) {
            0 => requeue.max(1),
            secs => u64::from(secs),
        };
    }
    Err(TestCaseError::fail(format!("no end after {MAX_ITERATIONS} iterations ({now_secs}s): {persisted:#?}")))
}

fn check_plan(case: &PlanCase) -> Result<(), TestCaseError> {
    let run = run_plan(case)?;
    let spec = plan_spec(case);
    let phase = run.status.phase;
    prop_assert!(matches!(phase, Some(PlanPhase::Completed | PlanPhase::Failed | PlanPhase::NotNeeded)), "{:?}", phase);
    if phase == Some(PlanPhase::NotNeeded) {
        // Ended at a read that found the target healthy: that step made no call then, and
        // nothing after it ran.
        let skipped = run.status.steps.iter().find(|s| s.evidence.contains_key("readAt"));
        prop_assert!(skipped.is_some_and(|s| s.phase == StepPhase::Skipped), "{:?}", run.status.steps);
        let order = skipped.map_or(0, |s| s.order);
        prop_assert!(run.aws.calls.keys().all(|o| *o <= order), "calls after the step: {:?}", run.aws.calls);
    }

    // At most once: after a step's effect exists, its action never reaches AWS again.
    prop_assert_eq!(run.aws.calls_after_effect, 0, "calls per step: {:?}", run.aws.calls);
    // Failed calls are retried at most maxAttempts times, plus once per lost record of a call.
    for (order, calls) in &run.aws.calls {
        prop_assert!(
            *calls <= case.max_attempts + run.lost_after_call,
            "step {} was called {} times (maxAttempts {}, lost writes {})",
            order,
            calls,
            case.max_attempts,
            run.lost_after_call
        );
    }
    if phase == Some(PlanPhase::Completed) {
        for step in &spec.steps {
            let st = step_of(&run.status, step.order);
            prop_assert!(
                st.is_some_and(|s| matches!(s.phase, StepPhase::Completed | StepPhase::Skipped)),
                "Completed, yet step {} is {:?}",
                step.order,
                st
            );
            if step.action.is_mutating() && !case.dry_run {
                prop_assert!(
                    run.aws.effect_at.contains_key(&step.order),
                    "step {} completed without effect",
                    step.order
                );
            }
        }
    }
    for st in &run.status.steps {
        prop_assert!(st.phase != StepPhase::InProgress && st.phase != StepPhase::Pending, "{:?} left open", st);
    }
    if case.manual && !case.dry_run && run.status.started_at.is_some() {
        prop_assert_eq!(run.status.approved_by.as_deref(), Some("alice"), "who approved is recorded");
    }
    if case.dry_run {
        prop_assert_eq!(run.aws.total_calls() + run.aws.verify_calls, 0, "a dry run makes no AWS call");
        prop_assert!(run.status.steps.iter().all(|s| s.phase == StepPhase::Skipped && s.attempts == 0));
    }
    if let Some((calls, finished)) = run.calls_at_clean_stop {
        prop_assert_eq!(run.aws.total_calls(), calls, "no mutating call after a Stop at a step boundary");
        // A plan with nothing left to do completes; any other stopped plan fails.
        let expected = if finished { PlanPhase::Completed } else { PlanPhase::Failed };
        prop_assert_eq!(phase, Some(expected), "a stopped plan");
    }
    // The audit trail: a mutating step that was attempted (and may have reached AWS) is never
    // recorded as Skipped, "not run" — unless its last read found the effect absent and the
    // target healthy (NotNeeded), which its evidence shows.
    for step in spec.steps.iter().filter(|s| s.action.is_mutating()) {
        let st = step_of(&run.status, step.order);
        prop_assert!(
            !st.is_some_and(|st| st.phase == StepPhase::Skipped
                && st.attempts > 0
                && !st.evidence.contains_key("readAt")),
            "step {} was attempted (AWS calls {:?}, effect {}) but is recorded {:?}",
            step.order,
            run.aws.calls.get(&step.order),
            run.aws.effect_at.contains_key(&step.order),
            st
        );
    }
    // Bounded: once the scripts ran out, each step ends within stepTimeout plus its retries.
    let per_step = case.step_timeout + u64::from(case.max_attempts) * (case.retry_max + 60) + 120;
    let bound = Duration::from_secs(spec.steps.len() as u64 * per_step + 120);
    prop_assert!(run.tail <= bound, "ended {:?} after the scripts ran out (bound {:?})", run.tail, bound);
    Ok(())
}

fn stubborn_answer() -> impl Strategy<Value = Answer> {
    prop_oneof![Just(Answer::Retryable), Just(Answer::NonRetryable), (1u8..=60).prop_map(Answer::Deferred)]
}

proptest! {
    #![proptest_config(config(512))]

    /// The whole protocol under random plans, answers, crashes, time, gates and modes.
    #[test]
    fn steps_act_at_most_once_and_always_end(case in plan_case()) {
        check_plan(&case)?;
    }

    /// An AWS that never agrees (always throttled, denied or deferred; never verified) still
    /// ends every plan, as Failed, within stepTimeout and maxAttempts.
    #[test]
    fn steps_end_even_if_aws_never_agrees(mut case in plan_case(), then in stubborn_answer()) {
        case.then = then;
        case.verify_then = false;
        check_plan(&case)?;
    }

    /// A Stop before anything started makes no AWS call at all.
    #[test]
    fn steps_stop_before_any_action_makes_no_call(mut case in plan_case(), stop_at in 0usize..3) {
        case.dry_run = false;
        case.gates.truncate(stop_at);
        case.gates.resize(stop_at, G::Open);
        case.gates.push(G::Stop);
        let run = run_plan(&case)?;
        let started = run.status.steps.iter().any(|s| s.attempts > 0);
        if !started {
            prop_assert_eq!(run.aws.total_calls(), 0);
        }
        prop_assert_eq!(run.status.phase, Some(PlanPhase::Failed));
    }

    /// A dry run completes with every step Skipped and no AWS call, whatever else happens.
    #[test]
    fn steps_dry_run_makes_no_call(mut case in plan_case()) {
        case.dry_run = true;
        let run = run_plan(&case)?;
        prop_assert_eq!(run.aws.total_calls() + run.aws.verify_calls, 0);
        prop_assert!(run.status.steps.iter().all(|s| s.phase == StepPhase::Skipped));
    }
}

fn one_restart(answers: Vec<Answer>, gates: Vec<G>) -> PlanCase {
    PlanCase {
        actions: vec![StepAction::RestartService],
        dry_run: false,
        manual: false,
        approve_at: 0,
        step_timeout: 300,
        max_attempts: 3,
        retry_base: 10,
        retry_max: 80,
        verify_interval: 5,
        answers,
        verifies: vec![],
        gates,
        crashes: vec![],
        clock: vec![],
        then: Answer::Ok,
        verify_then: true,
    }
}

/// A plan stopped after its last step completed, before the plan's Completed was persisted,
/// completes: nothing is left to stop.
#[test]
fn a_stop_after_the_last_step_still_completes_the_plan() {
    // Created, Executing, step 1 InProgress, act (Completed), then Stop.
    let case = one_restart(vec![], vec![G::Open, G::Open, G::Open, G::Open, G::Stop]);
    let run = run_plan(&case).expect("the plan ends");
    assert_eq!(run.aws.total_calls(), 1);
    assert!(run.status.steps.iter().all(|s| s.phase == StepPhase::Completed), "{:#?}", run.status.steps);
    assert_eq!(run.status.phase, Some(PlanPhase::Completed), "{:?}", run.status.message);
    check_plan(&case).expect("every property holds");
}

/// A Stop after a call whose answer was lost to a timeout (it did restart the service; the
/// step went back to Pending for a retry) records the step as Failed with its attempt, not
/// as Skipped, "not run".
#[test]
fn a_stop_after_a_timed_out_call_records_the_attempt() {
    // Created, Executing, step 1 InProgress, act (timeout: retry), then the policy is deleted.
    let case = one_restart(vec![Answer::TimeoutAfterEffect], vec![G::Open, G::Open, G::Open, G::Open, G::Stop]);
    let run = run_plan(&case).expect("the plan ends");
    assert_eq!(run.aws.total_calls(), 1);
    assert!(run.aws.effect_at.contains_key(&1), "the service was restarted");
    let step = &run.status.steps[0];
    assert_eq!((step.phase, step.attempts), (StepPhase::Failed, 1), "{:?}", step.message);
    assert_eq!(run.status.phase, Some(PlanPhase::Failed));
    check_plan(&case).expect("every property holds");
}
