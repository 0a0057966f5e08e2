//! Safety rails: whether a plan may start acting now, and if not, which rail holds it.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::common::parse_duration;
use crate::api::conditions::reason;
use crate::api::labels::TARGET_LABEL;
use crate::api::plan::{PlanPhase, RecoveryPlan};
use crate::api::policy::{RecoveryPolicyStatus, RemediationMode, RemediationSpec, TargetCounts};

use super::time::add;

/// The rails, each with a stable reason string used in conditions, Events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rail {
    /// The policy's mode is Disabled.
    ModeDisabled,
    /// More than maxUnhealthyPercent of the policy's targets are unhealthy.
    TooManyUnhealthy,
    /// maxConcurrentPlans of the policy are already executing.
    MaxConcurrentPlans,
    /// The target's cooldown since its last plan has not passed.
    Cooldown,
    /// Too many AWS errors across the process: new remediation pauses.
    AwsCircuitOpen,
    /// The policy that allowed the plan no longer exists.
    PolicyMissing,
    /// The policy's target counts predate the incident: the storm guard cannot judge yet.
    CountsPending,
    /// A pause window holds the target's remediation.
    Paused,
}

impl Rail {
    /// The condition/Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ModeDisabled => reason::REMEDIATION_DISABLED,
            Self::TooManyUnhealthy => reason::TOO_MANY_UNHEALTHY,
            Self::MaxConcurrentPlans => reason::MAX_CONCURRENT_PLANS,
            Self::Cooldown => reason::COOLDOWN,
            Self::AwsCircuitOpen => reason::AWS_CIRCUIT_OPEN,
            Self::PolicyMissing => reason::POLICY_MISSING,
            Self::CountsPending => reason::COUNTS_PENDING,
            Self::Paused => reason::PAUSED,
        }
    }
}

/// A rail holding remediation back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Which rail.
    pub rail: Rail,
    /// For people: what holds, with the numbers.
    pub message: String,
    /// When it may let go by itself (cooldown); `None` when only a change elsewhere frees it.
    pub until: Option<Timestamp>,
    /// A hold expected to lift within moments by itself is recorded in status only once it
    /// lasts past this; `None` records it at once. A plan that waits a few milliseconds for
    /// its policy's counts to arrive then costs no write, no Event and no metric.
    pub record_after: Option<Timestamp>,
}

/// How long a plan waits, after its incident's detection, for the policy's counts before
/// the wait is recorded as a hold. The counts are the incident reconciler's next write after
/// the incident's own, so they arrive within a second or two even in a storm.
pub const COUNTS_GRACE: Duration = Duration::from_secs(5);

/// Everything the rails look at, gathered by the controller.
#[derive(Clone, Debug)]
pub struct RailInputs {
    /// The policy's mode.
    pub mode: RemediationMode,
    /// Targets the policy names.
    pub total_targets: u32,
    /// Targets unhealthy at the last probe.
    pub unhealthy_targets: u32,
    /// The policy's maxUnhealthyPercent.
    pub max_unhealthy_percent: u32,
    /// Other plans of the policy currently executing.
    pub executing_plans: u32,
    /// The policy's maxConcurrentPlans.
    pub max_concurrent_plans: u32,
    /// When the target's last plan ended.
    pub last_plan_ended_at: Option<Timestamp>,
    /// The policy's cooldown.
    pub cooldown: Duration,
    /// Whether the process-wide AWS circuit breaker is open.
    pub aws_circuit_open: bool,
    /// Whether the target counts include the incident (see [`counts_include`]).
    pub counts_current: bool,
    /// When the incident was detected; the counts' grace ([`COUNTS_GRACE`]) runs from it.
    pub detected_at: Option<Timestamp>,
    /// The pause in force for the target (or, policy-wide, for every target), as its end
    /// and a sentence.
    pub paused: Option<(Timestamp, String)>,
    /// Now.
    pub now: Timestamp,
}

impl RailInputs {
    /// The policy-wide inputs; the per-plan ones (other plans executing, the target's last
    /// plan, the circuit breaker) start empty for the caller to fill in.
    pub fn for_policy(r: &RemediationSpec, counts: &TargetCounts, now: Timestamp) -> Self {
        Self {
            mode: r.mode,
            total_targets: counts.total,
            unhealthy_targets: counts.unhealthy,
            max_unhealthy_percent: r.max_unhealthy_percent,
            executing_plans: 0,
            max_concurrent_plans: r.max_concurrent_plans,
            last_plan_ended_at: None,
            // The schema admits only valid durations; an unparsable one means no cooldown.
            cooldown: parse_duration(&r.cooldown).unwrap_or_default(),
            aws_circuit_open: false,
            counts_current: true,
            detected_at: None,
            paused: super::pause::whole_policy(r, now).map(|p| (p.until.0, super::pause::describe(p))),
            now,
        }
    }
}

/// The rails' inputs for one plan: the policy-wide ones, a pause of its target, the policy's
/// other plans executing, and when the target's last plan that acted ended (a plan that ended
/// without acting left nothing to settle, so it starts no cooldown). `target_label` is the
/// plan's [`TARGET_LABEL`](crate::api::labels::TARGET_LABEL); siblings may include the plan.
pub fn for_plan(
    r: &RemediationSpec,
    counts: &TargetCounts,
    plan_name: &str,
    target_key: &str,
    target_label: Option<&str>,
    siblings: &[RecoveryPlan],
    now: Timestamp,
) -> RailInputs {
    let others = siblings.iter().filter(|p| p.metadata.name.as_deref() != Some(plan_name));
    let phase = |p: &RecoveryPlan| p.status.as_ref().and_then(|s| s.phase);
    let executing = others.clone().filter(|p| phase(p) == Some(PlanPhase::Executing)).count();
    let same_target = |p: &&RecoveryPlan| {
        target_label.is_some()
            && p.metadata.labels.as_ref().and_then(|l| l.get(TARGET_LABEL)).map(String::as_str) == target_label
    };
    let last_end = others
        .filter(same_target)
        .filter_map(|p| p.status.as_ref())
        .filter(|s| s.phase != Some(PlanPhase::NotNeeded))
        .filter_map(|s| s.completed_at.as_ref().map(|t| t.0))
        .max();
    let mut inputs = RailInputs::for_policy(r, counts, now);
    // A pause of this target (a whole-policy one `for_policy` took already).
    inputs.paused = super::pause::for_target(r, target_key, now).map(|p| (p.until.0, super::pause::describe(p)));
    inputs.executing_plans = executing as u32;
    inputs.last_plan_ended_at = last_end;
    inputs
}

/// Whether the policy's status counts the incident: it records the incident as its target's
/// open one, or its last probe ran at or after the incident's detection. Until then the storm
/// guard would judge from counts that do not include this incident.
pub fn counts_include(policy: Option<&RecoveryPolicyStatus>, incident: &str, detected: Option<Timestamp>) -> bool {
    let Some(status) = policy else { return false };
    let recorded = status.target_states.iter().any(|t| t.open_incident.as_deref() == Some(incident));
    let probed = status.last_probe_time.as_ref().map(|t| t.0);
    recorded || (probed.is_some() && probed >= detected)
}

/// Whether a plan may start a mutating step now. Rails are checked in order of how much they
/// tell a person: a disabled policy first, a transient cooldown last.
pub fn may_act(i: &RailInputs) -> Result<(), Held> {
    let held = |rail, message: String, until| Err(Held { rail, message, until, record_after: None });
    if i.mode == RemediationMode::Disabled {
        return held(Rail::ModeDisabled, "the policy's remediation mode is Disabled".into(), None);
    }
    if let Some((until, pause)) = &i.paused
        && i.now < *until
    {
        return held(Rail::Paused, format!("remediation is paused {pause}"), Some(*until));
    }
    if !i.counts_current {
        return Err(Held {
            rail: Rail::CountsPending,
            message: "waiting for the policy's next probe counts, so the storm guard sees this incident".into(),
            until: None,
            record_after: i.detected_at.map(|d| add(d, COUNTS_GRACE)),
        });
    }
    // A single unhealthy target is never a storm: without this, every one-target policy
    // would be held by any percentage below 100.
    if i.unhealthy_targets >= 2
        && u64::from(i.unhealthy_targets) * 100 > u64::from(i.total_targets) * u64::from(i.max_unhealthy_percent)
    {
        return held(
            Rail::TooManyUnhealthy,
            format!(
                "{} of {} targets are unhealthy, above maxUnhealthyPercent {}%: incidents stay open but nothing acts",
                i.unhealthy_targets, i.total_targets, i.max_unhealthy_percent
            ),
            None,
        );
    }
    if i.aws_circuit_open {
        return held(
            Rail::AwsCircuitOpen,
            "AWS is failing too many calls: new remediation pauses until it recovers".into(),
            None,
        );
    }
    if i.executing_plans >= i.max_concurrent_plans {
        return held(
            Rail::MaxConcurrentPlans,
            format!(
                "{} plans of this policy are executing (maxConcurrentPlans {})",
                i.executing_plans, i.max_concurrent_plans
            ),
            None,
        );
    }
    if let Some(ended) = i.last_plan_ended_at {
        let until = add(ended, i.cooldown);
        if i.now < until {
            return held(
                Rail::Cooldown,
                format!("the target's cooldown after its last plan runs until {until}"),
                Some(until),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::at;

    fn ok() -> RailInputs {
        RailInputs {
            mode: RemediationMode::Automatic,
            total_targets: 10,
            unhealthy_targets: 1,
            max_unhealthy_percent: 50,
            executing_plans: 0,
            max_concurrent_plans: 1,
            last_plan_ended_at: None,
            cooldown: Duration::from_secs(900),
            aws_circuit_open: false,
            counts_current: true,
            detected_at: None,
            paused: None,
            now: at(10_000),
        }
    }

    #[test]
    fn rails_table() {
        type Tweak = Box<dyn Fn(&mut RailInputs)>;
        let cases: Vec<(&str, Tweak, Option<Rail>)> = vec![
            ("all clear", Box::new(|_| {}), None),
            ("disabled", Box::new(|i| i.mode = RemediationMode::Disabled), Some(Rail::ModeDisabled)),
            ("manual is not a rail", Box::new(|i| i.mode = RemediationMode::Manual), None),
            ("storm: 6 of 10 above 50%", Box::new(|i| i.unhealthy_targets = 6), Some(Rail::TooManyUnhealthy)),
            ("exactly 50% is allowed", Box::new(|i| i.unhealthy_targets = 5), None),
            (
                "one of one is not a storm",
                Box::new(|i| {
                    i.total_targets = 1;
                    i.unhealthy_targets = 1
                }),
                None,
            ),
            (
                "two of two is",
                Box::new(|i| {
                    i.total_targets = 2;
                    i.unhealthy_targets = 2
                }),
                Some(Rail::TooManyUnhealthy),
            ),
            (
                "0% holds any two",
                Box::new(|i| {
                    i.max_unhealthy_percent = 0;
                    i.unhealthy_targets = 2
                }),
                Some(Rail::TooManyUnhealthy),
            ),
            ("circuit open", Box::new(|i| i.aws_circuit_open = true), Some(Rail::AwsCircuitOpen)),
            ("counts older than the incident", Box::new(|i| i.counts_current = false), Some(Rail::CountsPending)),
            ("paused", Box::new(|i| i.paused = Some((at(10_001), "until then".into()))), Some(Rail::Paused)),
            ("a pause that ended", Box::new(|i| i.paused = Some((at(10_000), "until then".into()))), None),
            (
                "a pause beats the storm guard",
                Box::new(|i| {
                    i.paused = Some((at(10_001), "until then".into()));
                    i.unhealthy_targets = 9
                }),
                Some(Rail::Paused),
            ),
            ("concurrency full", Box::new(|i| i.executing_plans = 1), Some(Rail::MaxConcurrentPlans)),
            ("cooldown running", Box::new(|i| i.last_plan_ended_at = Some(at(9_500))), Some(Rail::Cooldown)),
            ("cooldown over", Box::new(|i| i.last_plan_ended_at = Some(at(9_000))), None),
            (
                "storm beats cooldown",
                Box::new(|i| {
                    i.unhealthy_targets = 9;
                    i.last_plan_ended_at = Some(at(9_999))
                }),
                Some(Rail::TooManyUnhealthy),
            ),
        ];
        for (name, tweak, want) in cases {
            let mut i = ok();
            tweak(&mut i);
            assert_eq!(may_act(&i).err().map(|h| h.rail), want, "{name}");
        }
    }

    #[test]
    fn the_counts_include_the_incident_once_recorded_or_probed_after_it() {
        use crate::api::policy::TargetState;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let status = |open: Option<&str>, probed: Option<i64>| RecoveryPolicyStatus {
            target_states: vec![TargetState {
                target: "ecs:prod/web".into(),
                open_incident: open.map(str::to_owned),
                ..TargetState::default()
            }],
            last_probe_time: probed.map(|s| Time(at(s))),
            ..RecoveryPolicyStatus::default()
        };
        let detected = Some(at(100));
        let cases: Vec<(&str, Option<RecoveryPolicyStatus>, Option<Timestamp>, bool)> = vec![
            ("no status yet", None, detected, false),
            ("recorded as the target's open incident", Some(status(Some("inc-1"), None)), detected, true),
            ("another incident recorded, probed before", Some(status(Some("inc-0"), Some(99))), detected, false),
            ("probed at the detection", Some(status(None, Some(100))), detected, true),
            ("probed after the detection", Some(status(None, Some(101))), detected, true),
            ("probed before the detection", Some(status(None, Some(99))), detected, false),
            ("never probed", Some(status(None, None)), detected, false),
            ("probed, incident not yet detected", Some(status(None, Some(99))), None, true),
        ];
        for (name, status, detected, want) in cases {
            assert_eq!(counts_include(status.as_ref(), "inc-1", detected), want, "{name}");
        }
    }

    #[test]
    fn waiting_for_the_counts_is_recorded_only_after_its_grace() {
        let mut i = ok();
        i.counts_current = false;
        i.detected_at = Some(at(9_998));
        let held = may_act(&i).unwrap_err();
        assert_eq!(held.rail, Rail::CountsPending);
        assert_eq!(held.record_after, Some(add(at(9_998), COUNTS_GRACE)));
        i.detected_at = None;
        assert_eq!(may_act(&i).unwrap_err().record_after, None, "no detection time: recorded at once");
        i.counts_current = true;
        i.unhealthy_targets = 9;
        assert_eq!(may_act(&i).unwrap_err().record_after, None, "the storm guard's hold is recorded at once");
    }

    #[test]
    fn cooldown_says_until_when() {
        let mut i = ok();
        i.last_plan_ended_at = Some(at(9_500));
        let held = may_act(&i).unwrap_err();
        assert_eq!(held.until, Some(at(10_400)));
        assert!(held.message.contains("cooldown"));
    }
}
