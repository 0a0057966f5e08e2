//! Simulation: what a policy would do now, given what AWS answered a read-only probe and the
//! cluster's state (the live policy's per-target streaks, its plans). The same detection,
//! planning and rails the controller runs, and nothing else: `kubectl recovery simulate`
//! prints this, and nothing it computes is written anywhere.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::incident::{IncidentMetrics, IncidentSpec};
use crate::api::plan::RecoveryPlan;
use crate::api::policy::{RecoveryPolicySpec, RemediationMode, TargetCounts, TargetState};

pub use super::detection::Health;
use super::detection::{Decision, Probe, Woken, detect};
use super::rails::{self, may_act};
use super::targets::{Target, plan_name, target_label};
use super::{kinds, planning, steps};

/// What the simulation reads.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The policy's name (incident names derive from it).
    pub name: &'a str,
    /// The policy as written in the file.
    pub spec: &'a RecoveryPolicySpec,
    /// Per-target streaks of the policy of that name in the cluster, if it exists: detection
    /// continues from them, as the controller would.
    pub live_states: &'a [TargetState],
    /// What the probe found, by target key.
    pub probes: &'a BTreeMap<String, Probe>,
    /// Targets AWS says do not exist.
    pub missing: &'a [String],
    /// Targets listed under the wrong kind, with what to do about it.
    pub misplaced: &'a BTreeMap<String, String>,
    /// The policy's plans in the cluster (for cooldown and concurrency).
    pub plans: &'a [RecoveryPlan],
    /// Now.
    pub now: Timestamp,
}

/// The whole answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Simulation {
    /// The counts the storm guard would see.
    pub counts: TargetCounts,
    /// The policy's mode.
    pub mode: RemediationMode,
    /// One verdict a target, in the policy's order.
    pub targets: Vec<Verdict>,
}

impl Simulation {
    /// Whether any target is unhealthy (the exit status of `simulate` says so).
    pub fn any_unhealthy(&self) -> bool {
        self.targets.iter().any(|t| t.health == Health::Unhealthy)
    }
}

/// What detection would do about a target.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Detection {
    /// Nothing: healthy, or could not tell.
    Nothing,
    /// Unhealthy, but the flap guard wants more failing answers first.
    Counting {
        /// Failing answers counted so far (with this one).
        failing: u32,
        /// `failureThreshold`.
        threshold: u32,
    },
    /// An incident would be opened now.
    Open {
        /// Its name.
        incident: String,
    },
    /// An incident is open already (the controller is on it).
    AlreadyOpen {
        /// Its name.
        incident: String,
    },
    /// The open incident would be resolved.
    Resolve {
        /// Its name.
        incident: String,
    },
}

/// One target's verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// The target's key.
    pub target: String,
    /// Its health.
    pub health: Health,
    /// What was seen, in a sentence (the incident's description when unhealthy).
    pub seen: String,
    /// What detection would do.
    pub detection: Detection,
    /// The plan it would get, a sentence a step, when an incident would open now.
    pub plan: Vec<String>,
    /// Why no plan could be made, if so.
    pub plan_error: Option<String>,
    /// What would happen to the plan: `acts`, `waits for approval`, `dry run`, `no plan`
    /// (Disabled), or held by a rail.
    pub outcome: String,
    /// The rail that would hold the plan, by its reason, and its message.
    pub held: Option<(String, String)>,
}

/// Runs detection, planning and the rails over the probe, as one cycle of the controller would.
pub fn simulate(i: &Inputs) -> Simulation {
    let mut probes = i.probes.clone();
    for key in i.missing {
        probes.insert(key.clone(), Probe::Unknown("AWS says it does not exist".into()));
    }
    for (key, why) in i.misplaced {
        probes.insert(key.clone(), Probe::Unknown(format!("listed under the wrong kind: {why}")));
    }
    let cycle = detect(i.name, i.spec, i.live_states, &probes, i.now, &BTreeSet::new(), &Woken::default());
    let decisions: BTreeMap<&str, &Decision> =
        cycle.decisions.iter().filter_map(|(t, d)| Some((t.as_ref()?.key.as_str(), d))).collect();
    let mode = i.spec.remediation.mode;
    let targets = super::targets::targets(i.spec)
        .into_iter()
        .zip(&cycle.states)
        .map(|(target, state)| {
            let probe = probes.get(&target.key);
            verdict(i, &cycle.counts, &target, state, probe, decisions.get(target.key.as_str()).copied())
        })
        .collect();
    Simulation { counts: cycle.counts, mode, targets }
}

fn verdict(
    i: &Inputs,
    counts: &TargetCounts,
    target: &Target,
    state: &TargetState,
    probe: Option<&Probe>,
    decision: Option<&Decision>,
) -> Verdict {
    let kind = kinds::of(target.resource.kind);
    let (health, seen, metrics) = match probe {
        Some(Probe::Healthy(m)) => (Health::Healthy, "healthy".to_owned(), Some(m)),
        Some(Probe::Unhealthy(m)) => (Health::Unhealthy, kind.describe_incident(&target.resource, m), Some(m)),
        Some(Probe::Unknown(why)) => (Health::Unknown, format!("unknown: {why}"), None),
        None => (Health::Unknown, "unknown: not probed".to_owned(), None),
    };
    let detection = match decision {
        Some(Decision::Open { name, .. }) => Detection::Open { incident: name.clone() },
        Some(Decision::StillUnhealthy { incident, .. }) => Detection::AlreadyOpen { incident: incident.clone() },
        Some(Decision::Resolve { incident, .. }) => Detection::Resolve { incident: incident.clone() },
        Some(Decision::Relapsed { .. } | Decision::Abandon { .. } | Decision::Nothing) | None => {
            match (health, &state.open_incident) {
                (_, Some(incident)) => Detection::AlreadyOpen { incident: incident.clone() },
                (Health::Unhealthy, None) => Detection::Counting {
                    failing: state.consecutive_failures,
                    threshold: i.spec.detection.failure_threshold,
                },
                _ => Detection::Nothing,
            }
        }
    };
    let mut v = Verdict {
        target: target.key.clone(),
        health,
        seen,
        detection: detection.clone(),
        plan: vec![],
        plan_error: None,
        outcome: "nothing to do".into(),
        held: None,
    };
    let Detection::Open { incident } = &detection else {
        if let Detection::Counting { failing, threshold } = detection {
            let more = threshold.saturating_sub(failing);
            v.outcome = format!("an incident opens after {more} more failing probe(s)");
        } else if let Detection::AlreadyOpen { incident } = &detection {
            v.outcome = format!("incident {incident} is open; the controller is on it");
        } else if let Detection::Resolve { incident } = &detection {
            v.outcome = format!("incident {incident} would be resolved");
        }
        return v;
    };
    let spec = IncidentSpec {
        id: String::new(),
        type_: target.incident_type(),
        severity: target.severity,
        policy: i.name.to_owned(),
        target: target.key.clone(),
        resource: target.resource.clone(),
        description: v.seen.clone(),
        affected_components: kind.affected(&target.resource, i.spec),
    };
    let empty = IncidentMetrics::default();
    match planning::plan_steps(&spec, metrics.or(Some(&empty)), i.spec) {
        Ok(steps) => v.plan = steps.iter().map(|s| format!("{}. {}", s.order, steps::describe(s))).collect(),
        Err(e) => {
            v.plan_error = Some(e.to_string());
            v.outcome = "no plan can be made".into();
            return v;
        }
    }
    if i.spec.remediation.mode == RemediationMode::Disabled {
        v.outcome = "incident only: the mode is Disabled, so no plan is made".into();
        return v;
    }
    let label = target_label(&target.key);
    let inputs =
        rails::for_plan(&i.spec.remediation, counts, &plan_name(incident), &target.key, Some(&label), i.plans, i.now);
    match may_act(&inputs) {
        Err(held) => {
            v.outcome = format!("held: {}", held.message);
            v.held = Some((held.rail.reason().to_owned(), held.message));
        }
        Ok(()) => {
            v.outcome = match i.spec.remediation.mode {
                RemediationMode::Automatic => "the plan would act now".into(),
                RemediationMode::Manual => "the plan would wait for approval".into(),
                RemediationMode::DryRun => "a dry-run plan would record each call it would make".into(),
                RemediationMode::Disabled => unreachable!("returned above"),
            };
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::labels::TARGET_LABEL;
    use crate::api::plan::{PlanPhase, RecoveryPlanSpec, RecoveryPlanStatus};
    use crate::core::testing::{at, policy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const ECS: &str = "ecs/prod/checkout";

    fn unhealthy() -> Probe {
        Probe::Unhealthy(IncidentMetrics { running_count: Some(1), desired_count: Some(3), ..Default::default() })
    }

    fn healthy() -> Probe {
        Probe::Healthy(IncidentMetrics::default())
    }

    /// Every target healthy but `sick`, which answers `probe`.
    fn probes(spec: &RecoveryPolicySpec, sick: &[(&str, Probe)]) -> BTreeMap<String, Probe> {
        let mut all: BTreeMap<String, Probe> =
            super::super::targets::targets(spec).into_iter().map(|t| (t.key, healthy())).collect();
        for (key, p) in sick {
            all.insert((*key).to_owned(), p.clone());
        }
        all
    }

    fn run(spec: &RecoveryPolicySpec, probes: &BTreeMap<String, Probe>, plans: &[RecoveryPlan]) -> Simulation {
        simulate(&Inputs {
            name: "shop",
            spec,
            live_states: &[],
            probes,
            missing: &[],
            misplaced: &BTreeMap::new(),
            plans,
            now: at(10_000),
        })
    }

    fn of<'a>(s: &'a Simulation, key: &str) -> &'a Verdict {
        s.targets.iter().find(|t| t.target == key).expect("the target")
    }

    fn ended_plan(key: &str, ended: i64) -> RecoveryPlan {
        let mut p = RecoveryPlan::new(
            "shop-old-plan",
            RecoveryPlanSpec {
                incident: "old".into(),
                incident_id: "x".into(),
                policy: "shop".into(),
                dry_run: false,
                steps: vec![],
            },
        );
        p.metadata.labels = Some([(TARGET_LABEL.to_owned(), target_label(key))].into());
        p.status = Some(RecoveryPlanStatus {
            phase: Some(PlanPhase::Completed),
            completed_at: Some(Time(at(ended))),
            ..Default::default()
        });
        p
    }

    #[test]
    fn an_unhealthy_target_would_open_an_incident_and_get_its_kinds_plan() {
        let mut spec = policy();
        spec.detection.failure_threshold = 1;
        spec.remediation.max_unhealthy_percent = 100;
        let s = run(&spec, &probes(&spec, &[(ECS, unhealthy())]), &[]);
        let v = of(&s, ECS);
        assert_eq!(v.health, Health::Unhealthy);
        assert!(matches!(&v.detection, Detection::Open { incident } if incident.starts_with("shop-ecs-")));
        assert_eq!(v.plan.len(), 2, "{:?}", v.plan);
        assert!(v.plan[0].starts_with("1. "), "{:?}", v.plan);
        assert_eq!(v.outcome, "the plan would act now");
        assert_eq!(s.counts.unhealthy, 1);
        assert!(s.any_unhealthy());
        assert!(s.targets.iter().filter(|t| t.target != ECS).all(|t| t.detection == Detection::Nothing));
    }

    #[test]
    fn the_flap_guard_counts_before_it_opens() {
        let mut spec = policy();
        spec.detection.failure_threshold = 3;
        let s = run(&spec, &probes(&spec, &[(ECS, unhealthy())]), &[]);
        let v = of(&s, ECS);
        assert_eq!(v.detection, Detection::Counting { failing: 1, threshold: 3 });
        assert_eq!(v.outcome, "an incident opens after 2 more failing probe(s)");
        assert!(v.plan.is_empty());
    }

    #[test]
    fn each_rail_and_mode_says_what_would_happen() {
        let mut spec = policy();
        spec.detection.failure_threshold = 1;
        spec.remediation.max_unhealthy_percent = 100;
        spec.remediation.cooldown = "1h".into();
        let sick = probes(&spec, &[(ECS, unhealthy())]);
        let cases: Vec<(RemediationMode, Vec<RecoveryPlan>, &str)> = vec![
            (RemediationMode::Manual, vec![], "the plan would wait for approval"),
            (RemediationMode::DryRun, vec![], "a dry-run plan would record each call it would make"),
            (RemediationMode::Disabled, vec![], "incident only: the mode is Disabled, so no plan is made"),
            (RemediationMode::Automatic, vec![ended_plan(ECS, 10_000 - 600)], "held: "),
            (RemediationMode::Automatic, vec![ended_plan(ECS, 10_000 - 7200)], "the plan would act now"),
        ];
        for (mode, plans, want) in cases {
            spec.remediation.mode = mode;
            let s = run(&spec, &sick, &plans);
            let v = of(&s, ECS);
            assert!(v.outcome.starts_with(want), "{mode:?}: {}", v.outcome);
        }
        spec.remediation.mode = RemediationMode::Automatic;
        let s = run(&spec, &sick, &[ended_plan(ECS, 10_000 - 600)]);
        assert_eq!(of(&s, ECS).held.as_ref().map(|h| h.0.as_str()), Some(crate::api::conditions::reason::COOLDOWN));
    }

    #[test]
    fn the_storm_guard_holds_when_too_many_are_unhealthy() {
        let mut spec = policy();
        spec.detection.failure_threshold = 1;
        spec.remediation.max_unhealthy_percent = 10;
        let all: Vec<(String, Probe)> =
            super::super::targets::targets(&spec).into_iter().map(|t| (t.key, unhealthy())).collect();
        let sick: Vec<(&str, Probe)> = all.iter().map(|(k, p)| (k.as_str(), p.clone())).collect();
        let s = run(&spec, &probes(&spec, &sick), &[]);
        for v in &s.targets {
            if matches!(v.detection, Detection::Open { .. }) && v.plan_error.is_none() {
                let held = v.held.as_ref().expect("held");
                assert_eq!(held.0, crate::api::conditions::reason::TOO_MANY_UNHEALTHY, "{v:?}");
            }
        }
    }

    #[test]
    fn missing_and_unknown_targets_open_nothing() {
        let mut spec = policy();
        spec.detection.failure_threshold = 1;
        let p = probes(&spec, &[(ECS, Probe::Unknown("throttled".into()))]);
        let s = run(&spec, &p, &[]);
        assert_eq!(of(&s, ECS).health, Health::Unknown);
        assert_eq!(of(&s, ECS).detection, Detection::Nothing);
        assert_eq!(of(&s, ECS).seen, "unknown: throttled");
        let missing = vec![ECS.to_owned()];
        let p = probes(&spec, &[]);
        let s = simulate(&Inputs {
            name: "shop",
            spec: &spec,
            live_states: &[],
            probes: &p,
            missing: &missing,
            misplaced: &BTreeMap::new(),
            plans: &[],
            now: at(0),
        });
        assert_eq!(of(&s, ECS).seen, "unknown: AWS says it does not exist");
        assert!(!s.any_unhealthy());
    }

    #[test]
    fn detection_continues_from_the_live_policys_streaks() {
        let mut spec = policy();
        spec.detection.failure_threshold = 1;
        let live = vec![TargetState {
            target: ECS.into(),
            consecutive_failures: 1,
            open_incident: Some("shop-ecs-1234-0".into()),
            ..Default::default()
        }];
        let p = probes(&spec, &[(ECS, unhealthy())]);
        let s = simulate(&Inputs {
            name: "shop",
            spec: &spec,
            live_states: &live,
            probes: &p,
            missing: &[],
            misplaced: &BTreeMap::new(),
            plans: &[],
            now: at(0),
        });
        assert_eq!(of(&s, ECS).detection, Detection::AlreadyOpen { incident: "shop-ecs-1234-0".into() });
        assert!(of(&s, ECS).plan.is_empty(), "its plan exists already");
    }
}
