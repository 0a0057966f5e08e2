//! History retention: which finished incidents (each with its plan) may be deleted, and the
//! bounded summary of the newest ones that the policy's status keeps after they are gone.
//!
//! The limits follow CronJobs' `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`
//! (newest first, per class) and Jobs' `ttlSecondsAfterFinished`. What is still needed is
//! never deleted, whatever they say: the plan whose end starts its target's cooldown (the
//! cooldown rail reads it), an incident with an alert still being delivered (the ledger is
//! what stops a resend), and an incident the persisted summary does not yet cover.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{incident as incident_conditions, reason};
use crate::api::incident::{Incident, IncidentPhase};
use crate::api::plan::{PlanPhase, RecoveryPlan};
use crate::api::policy::{AlertsSpec, HistoryEntry, IncidentOutcome, RetentionSpec};

use super::alerts::{Facts, channels, settled, threaded};
use super::time::{add, since};

/// Deletions one pass makes at most; a backlog (a lowered limit, a long outage) drains over
/// the next passes instead of one burst of API calls.
pub const MAX_PRUNED_PER_PASS: usize = 25;

/// How long after its resolution an incident whose status names a plan the cache does not
/// show is waited for (the cache may lag a plan just made); after that the plan is taken
/// as deleted by a person.
pub const UNSEEN_PLAN_GRACE: Duration = Duration::from_secs(120);

/// A finished incident: resolved, and its plan (if any) ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// What the policy's history says about it.
    pub entry: HistoryEntry,
    /// The incident's uid, the precondition of its deletion.
    pub uid: Option<String>,
    /// When its plan ended, if that end starts the target's cooldown (every end but
    /// `NotNeeded`, as the cooldown rail counts them).
    pub cooldown_from: Option<Timestamp>,
    /// Whether every alert its story calls for was delivered or given up.
    pub alerts_settled: bool,
}

/// The incident as finished, or `None` while it is not: open, its plan still running, or a
/// plan it names not yet seen. `plan` is its plan as cached; `alerts` the policy's.
pub fn finished(
    incident: &Incident,
    plan: Option<&RecoveryPlan>,
    alerts: Option<&AlertsSpec>,
    now: Timestamp,
) -> Option<Finished> {
    let status = incident.status.as_ref()?;
    if status.phase != Some(IncidentPhase::Resolved) {
        return None;
    }
    let plan_phase = match plan {
        Some(p) => Some(p.status.as_ref()?.phase.filter(|phase| phase.is_terminal())?),
        None if status.plan.is_some() => {
            let resolved = status.resolved_at.as_ref().map(|t| t.0)?;
            (since(now, resolved) >= UNSEEN_PLAN_GRACE).then_some(())?;
            None
        }
        None => None,
    };
    let dry_run = plan.is_some_and(|p| p.spec.dry_run);
    let removed = crate::api::common::condition(&status.conditions, incident_conditions::RESOLVED)
        .is_some_and(|c| c.reason == reason::TARGET_REMOVED);
    let outcome = match plan_phase {
        _ if removed => IncidentOutcome::TargetRemoved,
        Some(PlanPhase::Failed) => IncidentOutcome::PlanFailed,
        Some(PlanPhase::Cancelled) => IncidentOutcome::PlanCancelled,
        Some(PlanPhase::Completed) if !dry_run => IncidentOutcome::Recovered,
        Some(PlanPhase::Completed | PlanPhase::NotNeeded) | None => IncidentOutcome::RecoveredOnItsOwn,
        Some(PlanPhase::Created | PlanPhase::AwaitingApproval | PlanPhase::Executing) => {
            unreachable!("only terminal plans get here")
        }
    };
    let cooldown_from = plan
        .and_then(|p| p.status.as_ref())
        .filter(|s| s.phase != Some(PlanPhase::NotNeeded))
        .and_then(|s| s.completed_at.as_ref().map(|t| t.0));
    let alerts_settled = alerts.is_none_or(|spec| {
        settled(&Facts {
            status,
            severity: incident.spec.severity,
            min_severity: spec.min_severity,
            plan: plan_phase.map(|phase| (phase, dry_run)),
            channels: &channels(spec),
            threaded: threaded(spec),
            now,
        })
    });
    let name = incident.metadata.name.clone().unwrap_or_default();
    Some(Finished {
        entry: HistoryEntry {
            incident: name,
            target: incident.spec.target.clone(),
            severity: incident.spec.severity,
            detected_at: status.detected_at.clone(),
            resolved_at: status.resolved_at.clone(),
            outcome,
            plan: plan.and_then(|p| p.metadata.name.clone()).or_else(|| status.plan.clone()),
        },
        uid: incident.metadata.uid.clone(),
        cooldown_from,
        alerts_settled,
    })
}

/// Newest first: by resolution time, then by name (names carry the incident's number).
fn newest_first(a: &HistoryEntry, b: &HistoryEntry) -> std::cmp::Ordering {
    let at = |e: &HistoryEntry| e.resolved_at.as_ref().map(|t| t.0);
    at(b).cmp(&at(a)).then_with(|| b.incident.cmp(&a.incident))
}

/// The policy's history: what it recorded before (incidents since deleted among them) and
/// the finished incidents now, newest first, at most `limit`.
pub fn summary(previous: &[HistoryEntry], finished: &[Finished], limit: u32) -> Vec<HistoryEntry> {
    let mut all: Vec<HistoryEntry> = finished.iter().map(|f| f.entry.clone()).collect();
    all.extend(previous.iter().filter(|p| !finished.iter().any(|f| f.entry.incident == p.incident)).cloned());
    all.sort_by(newest_first);
    all.truncate(limit as usize);
    all
}

/// Why a finished incident beyond the limits is kept for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kept {
    /// Its plan's end starts the target's cooldown, which runs until then.
    Cooldown(Timestamp),
    /// An alert of it is still being delivered.
    AlertsPending,
    /// The persisted history does not cover it yet.
    NotInHistory,
}

/// What one pass decides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pass {
    /// Incidents to delete (with their plans), oldest first, at most [`MAX_PRUNED_PER_PASS`]:
    /// (name, uid, plan).
    pub delete: Vec<(String, Option<String>, Option<String>)>,
    /// Incidents past the limits kept for now, and why.
    pub kept: Vec<(String, Kept)>,
}

/// Which finished incidents to delete now. `history` is the summary as persisted in the
/// policy's status; `cooldown` the policy's.
pub fn prune(
    finished: &[Finished],
    history: &[HistoryEntry],
    spec: &RetentionSpec,
    cooldown: Duration,
    now: Timestamp,
) -> Pass {
    let ttl = spec.ttl_after_resolved.as_deref().and_then(|t| crate::api::common::parse_duration(t).ok());
    let mut sorted: Vec<&Finished> = finished.iter().collect();
    sorted.sort_by(|a, b| newest_first(&a.entry, &b.entry));
    let (mut successful, mut failed) = (0u32, 0u32);
    let mut pass = Pass::default();
    for f in sorted {
        let (rank, limit) = match f.entry.outcome.needed_people() {
            true => (&mut failed, spec.failed_history_limit),
            false => (&mut successful, spec.successful_history_limit),
        };
        *rank += 1;
        let resolved = f.entry.resolved_at.as_ref().map(|t| t.0);
        let expired = ttl.zip(resolved).is_some_and(|(ttl, at)| add(at, ttl) <= now);
        if *rank <= limit && !expired {
            continue;
        }
        let cooling = f.cooldown_from.map(|ended| add(ended, cooldown)).filter(|until| *until > now);
        let kept = match cooling {
            Some(until) => Some(Kept::Cooldown(until)),
            None if !f.alerts_settled => Some(Kept::AlertsPending),
            None if !recorded(&f.entry, history, spec.summary_limit) => Some(Kept::NotInHistory),
            None => None,
        };
        match kept {
            Some(why) => pass.kept.push((f.entry.incident.clone(), why)),
            None => pass.delete.push((f.entry.incident.clone(), f.uid.clone(), f.entry.plan.clone())),
        }
    }
    pass.delete.reverse();
    pass.delete.truncate(MAX_PRUNED_PER_PASS);
    pass
}

/// Whether the persisted history covers an entry: it lists it, or it is full of newer ones.
fn recorded(entry: &HistoryEntry, history: &[HistoryEntry], limit: u32) -> bool {
    if limit == 0 || history.iter().any(|h| h.incident == entry.incident) {
        return true;
    }
    history.len() >= limit as usize && history.last().is_some_and(|oldest| newest_first(oldest, entry).is_lt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Severity;
    use crate::core::testing::at;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn done(n: u32, resolved: i64, outcome: IncidentOutcome) -> Finished {
        Finished {
            entry: HistoryEntry {
                incident: format!("shop-ecs-00000001-{n:02}"),
                target: "ecs/prod/web".into(),
                severity: Severity::High,
                detected_at: Some(Time(at(resolved - 30))),
                resolved_at: Some(Time(at(resolved))),
                outcome,
                plan: Some(format!("inc-{n}-plan")),
            },
            uid: Some(format!("uid-{n}")),
            cooldown_from: Some(at(resolved - 10)),
            alerts_settled: true,
        }
    }

    fn limits(successful: u32, failed: u32) -> RetentionSpec {
        RetentionSpec { successful_history_limit: successful, failed_history_limit: failed, ..Default::default() }
    }

    fn names(pass: &Pass) -> Vec<String> {
        pass.delete.iter().map(|d| d.0.clone()).collect()
    }

    #[test]
    fn keeps_the_newest_of_each_class_and_deletes_the_oldest_first() {
        use IncidentOutcome::*;
        let all: Vec<Finished> =
            (1..=6).map(|n| done(n, i64::from(n) * 100, if n % 3 == 0 { PlanFailed } else { Recovered })).collect();
        let history = summary(&[], &all, 20);
        let pass = prune(&all, &history, &limits(2, 1), Duration::ZERO, at(10_000));
        // Recovered: 1 2 4 5 → keep 5 4; failed: 3 6 → keep 6.
        assert_eq!(
            names(&pass),
            vec![all[0].entry.incident.clone(), all[1].entry.incident.clone(), all[2].entry.incident.clone()]
        );
        assert!(pass.kept.is_empty());
        assert_eq!(pass.delete[0].1.as_deref(), Some("uid-1"));
        assert_eq!(pass.delete[0].2.as_deref(), Some("inc-1-plan"), "its plan goes with it");
    }

    #[test]
    fn what_is_still_needed_stays() {
        use IncidentOutcome::Recovered;
        let cooling = done(1, 9_990, Recovered); // plan ended at 9_980; cooldown 60 s → 10_040
        let mut unsent = done(2, 100, Recovered);
        unsent.alerts_settled = false;
        let newest = done(3, 9_995, Recovered);
        let all = vec![cooling.clone(), unsent.clone(), newest.clone()];
        let history = summary(&[], &all, 20);
        let pass = prune(&all, &history, &limits(0, 0), Duration::from_secs(60), at(10_000));
        assert!(names(&pass).is_empty());
        let kept: Vec<_> = pass.kept.iter().map(|k| k.1.clone()).collect();
        assert_eq!(kept, vec![Kept::Cooldown(at(10_045)), Kept::Cooldown(at(10_040)), Kept::AlertsPending]);
        let later = prune(&all, &history, &limits(0, 0), Duration::from_secs(60), at(10_050));
        assert_eq!(names(&later), vec![cooling.entry.incident, newest.entry.incident], "cooldowns over, oldest first");
    }

    #[test]
    fn not_before_the_persisted_history_covers_it() {
        let all = vec![done(1, 100, IncidentOutcome::Recovered)];
        let pass = prune(&all, &[], &limits(0, 0), Duration::ZERO, at(10_000));
        assert_eq!(pass.kept, vec![(all[0].entry.incident.clone(), Kept::NotInHistory)]);
        let history = summary(&[], &all, 20);
        assert_eq!(names(&prune(&all, &history, &limits(0, 0), Duration::ZERO, at(10_000))).len(), 1);
        let none = RetentionSpec { summary_limit: 0, ..limits(0, 0) };
        assert_eq!(names(&prune(&all, &[], &none, Duration::ZERO, at(10_000))).len(), 1, "no summary wanted");
        // A full history of newer incidents covers an older one.
        let newer: Vec<Finished> = (2..=3).map(|n| done(n, 200 * i64::from(n), IncidentOutcome::Recovered)).collect();
        let full = summary(&[], &newer, 2);
        let two = RetentionSpec { summary_limit: 2, ..limits(0, 0) };
        assert_eq!(names(&prune(&all, &full, &two, Duration::ZERO, at(10_000))).len(), 1);
    }

    #[test]
    fn a_ttl_deletes_within_the_limits_too() {
        let all = vec![done(1, 100, IncidentOutcome::Recovered), done(2, 9_000, IncidentOutcome::Recovered)];
        let history = summary(&[], &all, 20);
        let spec = RetentionSpec { ttl_after_resolved: Some("1h".into()), ..limits(10, 10) };
        assert_eq!(
            names(&prune(&all, &history, &spec, Duration::ZERO, at(10_000))),
            vec![all[0].entry.incident.clone()]
        );
    }

    #[test]
    fn a_pass_is_bounded() {
        let all: Vec<Finished> =
            (1..=60).map(|n| done(n, i64::from(n) * 10, IncidentOutcome::RecoveredOnItsOwn)).collect();
        let history = summary(&[], &all, 100);
        let pass = prune(&all, &history, &limits(0, 0), Duration::ZERO, at(10_000));
        assert_eq!(pass.delete.len(), MAX_PRUNED_PER_PASS);
        assert_eq!(pass.delete[0].0, all[0].entry.incident, "oldest first");
    }

    #[test]
    fn the_summary_outlives_deletion_and_stays_bounded() {
        let old: Vec<Finished> = (1..=3).map(|n| done(n, i64::from(n) * 10, IncidentOutcome::Recovered)).collect();
        let first = summary(&[], &old, 3);
        // The three are deleted; two newer ones finish.
        let new: Vec<Finished> = (4..=5).map(|n| done(n, i64::from(n) * 10, IncidentOutcome::PlanFailed)).collect();
        let next = summary(&first, &new, 3);
        let listed: Vec<&str> = next.iter().map(|e| e.incident.as_str()).collect();
        assert_eq!(listed, vec![&new[1].entry.incident, &new[0].entry.incident, &old[2].entry.incident]);
        assert_eq!(summary(&next, &new, 3), next, "the same facts give the same summary");
    }
}
