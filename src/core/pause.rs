//! Pause windows: whether remediation of a target is paused now, and what the policy's
//! `Paused` condition says. A pause is a spec field that lifts by itself at its `until`:
//! nothing here (or anywhere) edits it, so Git or the person who wrote it stays its owner.

use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::reason;
use crate::api::policy::{PauseSpec, RecoveryPolicySpec, RemediationSpec};

/// The pause in force for `target` at `now`: the policy's, if it names no targets or names
/// this one, and `until` is still ahead.
pub fn for_target<'a>(r: &'a RemediationSpec, target: &str, now: Timestamp) -> Option<&'a PauseSpec> {
    r.pause.as_ref().filter(|p| now < p.until.0 && (p.targets.is_empty() || p.targets.iter().any(|t| t == target)))
}

/// The pause in force for every target of the policy at `now`.
pub fn whole_policy(r: &RemediationSpec, now: Timestamp) -> Option<&PauseSpec> {
    r.pause.as_ref().filter(|p| now < p.until.0 && p.targets.is_empty())
}

/// The longest pause a person may ask for: longer is not a maintenance window but
/// remediation turned off, which `mode: Disabled` says plainly.
pub const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Whether a pause written now may be admitted (the admission webhook's rule; the schema has
/// no clock). A pause whose `until` did not change is always admitted: re-applying a manifest
/// whose window has passed (GitOps syncs it again and again) is not a new pause.
pub fn admit(new: Option<&PauseSpec>, old: Option<&PauseSpec>, now: Timestamp) -> Result<(), String> {
    let Some(p) = new else { return Ok(()) };
    if old.is_some_and(|o| o.until == p.until) {
        return Ok(());
    }
    if p.until.0 <= now {
        return Err(format!(
            "spec.remediation.pause.until {} is not in the future (now {}): a pause must end ahead; remove the pause \
             to lift it",
            p.until.0,
            now.round(k8s_openapi::jiff::Unit::Second).unwrap_or(now)
        ));
    }
    if p.until.0 > super::time::add(now, MAX_PAUSE) {
        return Err(format!(
            "spec.remediation.pause.until {} is more than 30 days ahead: that is not a maintenance window; set \
             remediation.mode: Disabled to turn remediation off",
            p.until.0
        ));
    }
    Ok(())
}

/// A pause in a sentence: `until 2026-12-03T18:00:00Z (by alice): database maintenance`.
pub fn describe(p: &PauseSpec) -> String {
    let by = p.requested_by.as_deref().map(|b| format!(" (by {b})")).unwrap_or_default();
    format!("until {}{by}: {}", p.until.0, p.reason)
}

/// The policy's `Paused` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Whether a pause is in force.
    pub in_force: bool,
    /// The condition's reason.
    pub reason: &'static str,
    /// For people: what is paused, until when and why; or why nothing is.
    pub message: String,
    /// Targets of the policy paused now.
    pub paused_targets: usize,
    /// When the pause lifts, while it is in force.
    pub until: Option<Timestamp>,
}

/// What the policy's pause means at `now`.
pub fn state(spec: &RecoveryPolicySpec, now: Timestamp) -> State {
    let not_paused =
        |reason, message: String| State { in_force: false, reason, message, paused_targets: 0, until: None };
    let Some(p) = &spec.remediation.pause else {
        return not_paused(reason::NOT_PAUSED, "remediation is not paused".into());
    };
    if now >= p.until.0 {
        return not_paused(reason::PAUSE_EXPIRED, format!("the pause ended at {}: {}", p.until.0, p.reason));
    }
    let keys: Vec<String> = super::targets::targets(spec).into_iter().map(|t| t.key).collect();
    let (scope, paused) = match p.targets.is_empty() {
        true => ("every target".to_owned(), keys.len()),
        false => {
            let known = p.targets.iter().filter(|t| keys.contains(t)).count();
            let unknown: Vec<&str> = p.targets.iter().filter(|t| !keys.contains(t)).map(String::as_str).collect();
            let mut scope = format!("{known} target(s): {}", p.targets.join(", "));
            if !unknown.is_empty() {
                scope = format!(
                    "{scope} (not targets of this policy, so nothing is paused for them: {})",
                    unknown.join(", ")
                );
            }
            (scope, known)
        }
    };
    State {
        in_force: true,
        reason: reason::MAINTENANCE_WINDOW,
        message: format!("remediation of {scope} is paused {}; detection and alerts go on", describe(p)),
        paused_targets: paused,
        until: Some(p.until.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{at, policy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn paused(targets: &[&str], until: i64) -> RecoveryPolicySpec {
        let mut spec = policy();
        spec.remediation.pause = Some(PauseSpec {
            until: Time(at(until)),
            reason: "database maintenance".into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            requested_by: Some("alice".into()),
        });
        spec
    }

    #[test]
    fn which_targets_are_paused_when() {
        let whole = paused(&[], 100);
        let one = paused(&["rds/prod-db", "rds/elsewhere"], 100);
        let cases = [
            (&whole, "ecs/prod/checkout", 99, true),
            (&whole, "ecs/prod/checkout", 100, false),
            (&one, "rds/prod-db", 0, true),
            (&one, "ecs/prod/checkout", 0, false),
            (&one, "rds/prod-db", 101, false),
        ];
        for (spec, target, now, want) in cases {
            assert_eq!(for_target(&spec.remediation, target, at(now)).is_some(), want, "{target} at {now}");
        }
        assert!(whole_policy(&whole.remediation, at(0)).is_some());
        assert!(whole_policy(&one.remediation, at(0)).is_none(), "a pause of some targets is not the policy's");
        assert!(for_target(&policy().remediation, "rds/prod-db", at(0)).is_none());
    }

    #[test]
    fn a_new_pause_must_end_ahead_and_within_thirty_days() {
        let pause = |until| paused(&[], until).remediation.pause;
        let now = at(1_000);
        let cases = [
            ("no pause", None, None, Ok(())),
            ("ahead", pause(2_000), None, Ok(())),
            ("past", pause(999), None, Err("is not in the future")),
            ("now", pause(1_000), None, Err("is not in the future")),
            ("31 days", pause(1_000 + 31 * 86_400), None, Err("more than 30 days ahead")),
            ("30 days", pause(1_000 + 30 * 86_400), None, Ok(())),
            ("unchanged, long past (a GitOps re-sync)", pause(10), pause(10), Ok(())),
            ("moved into the past", pause(10), pause(20), Err("is not in the future")),
        ];
        for (name, new, old, want) in cases {
            let got = admit(new.as_ref(), old.as_ref(), now);
            match want {
                Ok(()) => assert_eq!(got, Ok(()), "{name}"),
                Err(text) => assert!(got.as_ref().is_err_and(|e| e.contains(text)), "{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn the_condition_says_what_until_when_and_why() {
        let s = state(&paused(&[], 100), at(0));
        assert_eq!((s.in_force, s.reason, s.paused_targets, s.until), (true, "MaintenanceWindow", 4, Some(at(100))));
        assert!(
            s.message.contains("every target") && s.message.contains("(by alice): database maintenance"),
            "{}",
            s.message
        );
        let s = state(&paused(&["rds/prod-db", "rds/elsewhere"], 100), at(0));
        assert_eq!(s.paused_targets, 1);
        assert!(
            s.message.contains("not targets of this policy, so nothing is paused for them: rds/elsewhere"),
            "{}",
            s.message
        );
        let s = state(&paused(&[], 100), at(100));
        assert_eq!((s.in_force, s.reason, s.paused_targets), (false, "PauseExpired", 0));
        assert_eq!(state(&policy(), at(0)).reason, "NotPaused");
    }
}
