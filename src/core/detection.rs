//! Detection: probes + the previous per-target state → the next state and what to do.
//!
//! The flap guard opens an incident only after `failureThreshold` unhealthy answers in a
//! row and resolves it only after `successThreshold` healthy ones, and it counts time, not
//! answers: a confirming answer counts only when it comes at least half a `probeInterval`
//! after the last one that counted, and a threshold N is reached only once the counted
//! answers span (N − 1) intervals (less a tenth, for the jitter of answer times). Answers
//! that arrive bunched together — a probe that retried through throttling and the next one
//! right behind it — are one piece of evidence, so N means about (N − 1) × probeInterval of
//! observed state, as people read it. An answer's time is when its probe started, or, for a
//! probe that took longer than half an interval, when it answered ([`answered_at`]).
//!
//! A probe that could not be made (AWS error, target missing) is `Unknown`: it changes no
//! counter, so an AWS outage is never mistaken for an unhealthy target, nor a throttled probe
//! for a recovery.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

use crate::api::common::parse_duration;
use crate::api::incident::IncidentMetrics;
use crate::api::policy::{DetectionSpec, RecoveryPolicySpec, TargetCounts, TargetState};

pub use super::outcomes::Probe;
use super::targets::{Target, incident_name, targets};
use super::time::since;

/// What the controller should do for one target.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing to write.
    Nothing,
    /// Create the incident `name` (find it if it already exists).
    Open { name: String, metrics: IncidentMetrics },
    /// The incident is still open and the target still unhealthy: refresh lastSeenAt and
    /// metrics (the controller writes only when they changed).
    StillUnhealthy { incident: String, metrics: IncidentMetrics },
    /// The target is healthy again: resolve the incident.
    Resolve { incident: String, metrics: IncidentMetrics },
    /// The incident's plan found the target healthy just before acting and ended without
    /// acting, and the target is unhealthy again: resolve that incident (it did recover) and
    /// count this answer as the start of a new episode, which opens an incident (and a plan)
    /// of its own once the flap guard says so.
    Relapsed { incident: String, metrics: IncidentMetrics },
    /// The target left the policy while its incident was open: resolve it as no longer watched.
    Abandon { incident: String },
}

/// The flap guard's settings: the thresholds and the probe interval they are measured in.
#[derive(Clone, Debug, PartialEq)]
pub struct Guard {
    /// `failureThreshold` and `successThreshold`.
    pub thresholds: DetectionSpec,
    /// `probeInterval`.
    pub interval: Duration,
}

impl Guard {
    /// From a policy's spec (an unparsable interval, which the schema refuses, counts as 30 s).
    pub fn of(spec: &RecoveryPolicySpec) -> Self {
        let interval = parse_duration(&spec.probe_interval).unwrap_or(Duration::from_secs(30));
        Self { thresholds: spec.detection.clone(), interval }
    }

    /// Whether an answer at `at` is far enough from the last one that counted to count too.
    fn spaced(&self, last_counted: Option<&MicroTime>, at: Timestamp) -> bool {
        last_counted.is_none_or(|t| since(at, t.0) >= self.interval / 2)
    }

    /// Whether a streak of `count` counted answers that began at `since` has, at `at`,
    /// reached `threshold`: enough answers, over (threshold − 1) intervals less a tenth.
    fn reached(&self, threshold: u32, count: u32, streak_start: Option<&MicroTime>, at: Timestamp) -> bool {
        let span = self.interval.saturating_mul(threshold.saturating_sub(1)).saturating_sub(self.interval / 10);
        count >= threshold && streak_start.is_none_or(|t| since(at, t.0) >= span)
    }
}

/// The time an answer stands for: when its probe started, unless the probe took longer
/// than half an interval (retries through throttling, a held answer): then what it says is
/// as of its answer, and the next probe's answer, right behind it, is not separate evidence.
pub fn answered_at(interval: Duration, started: Timestamp, answered: Timestamp) -> Timestamp {
    if since(answered, started) > interval / 2 { answered } else { started }
}

/// Which way a streak points.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    Failing,
    Passing,
}

/// Moves one streak along: starts it (an answer against the current streak always counts,
/// as the first of a new one), counts a spaced confirming answer, ignores a bunched one,
/// and freezes a streak that reached its threshold (so a steady target writes nothing).
/// Returns whether the threshold is reached.
fn advance(guard: &Guard, prev: &TargetState, next: &mut TargetState, way: Way, at: Timestamp) -> bool {
    let t = &guard.thresholds;
    let (threshold, count, other) = match way {
        Way::Failing => (t.failure_threshold, prev.consecutive_failures, prev.consecutive_successes),
        Way::Passing => (t.success_threshold, prev.consecutive_successes, prev.consecutive_failures),
    };
    let streak_start = |s: &TargetState| match way {
        Way::Failing => s.unhealthy_since.clone(),
        Way::Passing => s.healthy_since.clone(),
    };
    let (count, start, counted) = if count == 0 || other > 0 {
        (1, Some(MicroTime(at)), Some(MicroTime(at)))
    } else if prev.last_counted_at.is_none() && count >= threshold {
        (count, streak_start(prev), None) // reached earlier and frozen
    } else if guard.spaced(prev.last_counted_at.as_ref(), at) {
        (count.saturating_add(1).min(threshold), streak_start(prev), Some(MicroTime(at)))
    } else {
        (count, streak_start(prev), prev.last_counted_at.clone()) // bunched: not counted
    };
    let reached = guard.reached(threshold, count, start.as_ref(), at);
    next.last_counted_at = if reached { None } else { counted };
    match way {
        Way::Failing => {
            next.consecutive_failures = count;
            next.consecutive_successes = 0;
            next.unhealthy_since = start;
            next.healthy_since = None;
        }
        Way::Passing => {
            next.consecutive_successes = count;
            next.consecutive_failures = 0;
            next.unhealthy_since = None;
            // Only the open streak's start is kept: a steady healthy target carries none.
            next.healthy_since = if reached { None } else { start };
        }
    }
    reached
}

/// One answer's effect on one target's state. `recovered` says whether the open incident's
/// plan ended without acting because the target was healthy then; `corroborated`, whether a
/// fresh AWS trouble event about the target woke this answer's probe and the policy takes
/// that as a second witness (`detection.events: Corroborate`): an unhealthy answer then
/// reaches failureThreshold at once.
pub fn step(
    guard: &Guard,
    policy: &str,
    prev: &TargetState,
    probe: &Probe,
    at: Timestamp,
    recovered: bool,
    corroborated: bool,
) -> (TargetState, Decision) {
    let mut next = prev.clone();
    let decision = match probe {
        Probe::Unknown(_) => Decision::Nothing,
        Probe::Unhealthy(metrics) => match &prev.open_incident {
            Some(incident) if recovered => {
                // This answer is the first of a new episode.
                let fresh = TargetState { open_incident: None, ..TargetState::default() };
                advance(guard, &fresh, &mut next, Way::Failing, at);
                next.open_incident = None;
                Decision::Relapsed { incident: incident.clone(), metrics: metrics.clone() }
            }
            Some(incident) => {
                advance(guard, prev, &mut next, Way::Failing, at);
                Decision::StillUnhealthy { incident: incident.clone(), metrics: metrics.clone() }
            }
            None => {
                let mut reached = advance(guard, prev, &mut next, Way::Failing, at);
                if corroborated && !reached {
                    // The event and this answer stand for the whole streak.
                    next.consecutive_failures = guard.thresholds.failure_threshold;
                    next.last_counted_at = None;
                    reached = true;
                }
                if reached {
                    let name = incident_name(policy, &prev.target, prev.opened);
                    next.opened = prev.opened.saturating_add(1);
                    next.open_incident = Some(name.clone());
                    Decision::Open { name, metrics: metrics.clone() }
                } else {
                    Decision::Nothing
                }
            }
        },
        Probe::Healthy(metrics) => {
            let reached = advance(guard, prev, &mut next, Way::Passing, at);
            match &prev.open_incident {
                Some(incident) if reached => {
                    next.open_incident = None;
                    Decision::Resolve { incident: incident.clone(), metrics: metrics.clone() }
                }
                _ => Decision::Nothing,
            }
        }
    };
    (next, decision)
}

/// Adopts incidents that exist (open) under the name a target's state would give its next
/// incident. That happens when an incident was created and the status write recording it
/// was lost (a crash): without adoption, a target that recovers before its next probe would
/// leave that incident open forever. Call before [`detect`] with the open incidents' names.
pub fn adopt_orphans(
    policy: &str,
    spec: &RecoveryPolicySpec,
    states: &mut Vec<TargetState>,
    open_incidents: &std::collections::BTreeSet<String>,
) {
    if open_incidents.is_empty() {
        return;
    }
    // A target may have no state yet: the lost write may have been its first.
    for target in targets(spec) {
        if !states.iter().any(|s| s.target == target.key) {
            states.push(TargetState { target: target.key.clone(), ..TargetState::default() });
        }
    }
    // An open incident of this target numbered at or past the state's count was created but
    // not recorded (several lost writes can skip numbers), whatever the state names now
    // (nothing, or an older incident since resolved). Names end in `-<n>`.
    for s in states.iter_mut() {
        let newest = open_incidents
            .iter()
            .filter_map(|name| {
                let n: u32 = name.rsplit('-').next()?.parse().ok()?;
                (n >= s.opened && *name == incident_name(policy, &s.target, n)).then_some((n, name))
            })
            .max();
        if let Some((n, name)) = newest {
            s.open_incident = Some(name.clone());
            s.opened = n.saturating_add(1);
        }
    }
}

/// The outcome of one probe cycle of a policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Cycle {
    /// The new per-target states, in target order (store them in the policy's status).
    pub states: Vec<TargetState>,
    /// One decision per target that needs one, plus abandoned incidents of removed targets.
    pub decisions: Vec<(Option<Target>, Decision)>,
    /// Counts for the policy's status.
    pub counts: TargetCounts,
}

/// What AWS events had to do with a probe (see `core::events`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Woken {
    /// A probe woken by events asks about these targets only; `None`: a probe of every target.
    pub only: Option<BTreeSet<String>>,
    /// Targets whose unhealthy answer a fresh trouble event corroborates (see [`step`]),
    /// with the event that does.
    pub corroborated: BTreeMap<String, String>,
}

/// A target's health as a probe last told it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Health {
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
    /// Could not tell (AWS error, missing, misplaced), or never probed.
    Unknown,
}

impl Health {
    /// The health a target's state records: its open streak's way (the last answers that
    /// counted), Unknown before any.
    pub fn of_streak(s: &TargetState) -> Self {
        match (s.consecutive_failures, s.consecutive_successes) {
            (f, _) if f > 0 => Self::Unhealthy,
            (_, ok) if ok > 0 => Self::Healthy,
            _ => Self::Unknown,
        }
    }
}

/// How a target not asked about in a cycle counts: by its streak.
fn counted_by_state(s: &TargetState) -> Probe {
    let none = IncidentMetrics::default();
    match Health::of_streak(s) {
        Health::Unhealthy => Probe::Unhealthy(none),
        Health::Healthy => Probe::Healthy(none),
        Health::Unknown => Probe::Unknown(String::new()),
    }
}

/// A whole probe cycle: every target of the policy, its previous state and its answer at
/// `at` (see [`answered_at`]). `recovered` names the open incidents whose plans ended
/// without acting because the target was healthy then (see [`Decision::Relapsed`]).
///
/// A target without a probe result is treated as `Unknown`. The findings may be owned or
/// shared (`Arc<Probe>`: a batch's finding serves every policy that asked). States of targets that left the
/// policy are dropped; if one had an open incident, it is abandoned. In a cycle of a probe
/// woken by events (`woken.only`), the targets not asked about keep their state, make no
/// decision, and are counted by their streaks (failing: unhealthy; passing: healthy).
pub fn detect<P: std::borrow::Borrow<Probe>>(
    policy_name: &str,
    spec: &RecoveryPolicySpec,
    previous: &[TargetState],
    probes: &BTreeMap<String, P>,
    at: Timestamp,
    recovered: &BTreeSet<String>,
    woken: &Woken,
) -> Cycle {
    let guard = Guard::of(spec);
    let prev: BTreeMap<&str, &TargetState> = previous.iter().map(|s| (s.target.as_str(), s)).collect();
    let all = targets(spec);
    let mut counts = TargetCounts { total: all.len() as u32, ..TargetCounts::default() };
    let mut states = Vec::with_capacity(all.len());
    let mut decisions = Vec::new();
    let unknown = Probe::Unknown("not probed".into());
    for target in all {
        let fresh = TargetState { target: target.key.clone(), ..TargetState::default() };
        let before = prev.get(target.key.as_str()).copied().unwrap_or(&fresh);
        let asked = woken.only.as_ref().is_none_or(|only| only.contains(&target.key));
        let by_state;
        let probe = match asked {
            true => probes.get(&target.key).map(P::borrow).unwrap_or(&unknown),
            false => {
                by_state = counted_by_state(before);
                &by_state
            }
        };
        match probe {
            Probe::Healthy(_) => counts.healthy += 1,
            Probe::Unhealthy(_) => counts.unhealthy += 1,
            Probe::Unknown(_) => counts.unknown += 1,
        }
        if !asked {
            states.push(before.clone());
            continue;
        }
        let was_recovered = before.open_incident.as_ref().is_some_and(|i| recovered.contains(i));
        let corroborated = woken.corroborated.contains_key(&target.key);
        let (after, decision) = step(&guard, policy_name, before, probe, at, was_recovered, corroborated);
        states.push(after);
        if decision != Decision::Nothing {
            decisions.push((Some(target), decision));
        }
    }
    for gone in previous.iter().filter(|s| !states.iter().any(|n| n.target == s.target)) {
        if let Some(incident) = &gone.open_incident {
            decisions.push((None, Decision::Abandon { incident: incident.clone() }));
        }
    }
    Cycle { states, decisions, counts }
}

/// Longest wait between probes while AWS keeps failing for a policy.
pub const MAX_PROBE_BACKOFF: std::time::Duration = std::time::Duration::from_secs(300);

/// How long after its last probe a policy is probed again: `probeInterval`, or, while its
/// AWS calls fail (`failing_since`, the time AwsReachable turned False), as long as they
/// have been failing, so the wait doubles from one probe to the next, up to five minutes.
/// An unreachable endpoint or a throttled account is not hammered; a recovered one is
/// probed at the usual pace from the first success on.
pub fn probe_wait(
    interval: std::time::Duration,
    last_probe: Timestamp,
    failing_since: Option<Timestamp>,
) -> std::time::Duration {
    match failing_since {
        Some(t0) => super::time::since(last_probe, t0).clamp(interval, MAX_PROBE_BACKOFF.max(interval)),
        None => interval,
    }
}

/// When a policy last probed at `last_probe` is probed next: `probe_wait` later, moved to
/// the grid of `probeInterval` multiples since the Unix epoch (the first grid point at least
/// half an interval before `last_probe + wait`).
///
/// Policies with the same interval thus probe at the same moments, so their calls to one
/// cluster or region batch together (see `aws::batch`), and a probe that started late on a
/// busy process keeps its place instead of drifting. A policy joining the grid (new, or
/// after a backoff) may probe once as early as half an interval after its last probe;
/// after that, exactly every interval.
pub fn next_probe(interval: std::time::Duration, last_probe: Timestamp, failing_since: Option<Timestamp>) -> Timestamp {
    let wait = probe_wait(interval, last_probe, failing_since);
    let step = interval.as_nanos().max(1) as i128;
    let earliest = last_probe.as_nanosecond() + wait.as_nanos() as i128 - step / 2;
    let grid = earliest.div_euclid(step) * step + if earliest.rem_euclid(step) == 0 { 0 } else { step };
    Timestamp::from_nanosecond(grid).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::policy;

    fn th(f: u32, s: u32) -> Guard {
        Guard {
            thresholds: DetectionSpec { failure_threshold: f, success_threshold: s, ..Default::default() },
            interval: INTERVAL,
        }
    }
    const INTERVAL: Duration = Duration::from_secs(30);
    fn sick() -> Probe {
        Probe::Unhealthy(IncidentMetrics { running_count: Some(1), desired_count: Some(3), ..Default::default() })
    }
    fn well() -> Probe {
        Probe::Healthy(IncidentMetrics { running_count: Some(3), desired_count: Some(3), ..Default::default() })
    }
    fn err() -> Probe {
        Probe::Unknown("ThrottlingException".into())
    }

    #[test]
    fn probes_keep_to_the_interval_grid() {
        use crate::core::testing::at;
        use std::time::Duration;
        let i = Duration::from_secs(30);
        let ms = |t: Timestamp, ms: i64| t + k8s_openapi::jiff::SignedDuration::from_millis(ms);
        let cases = [
            // (last probe, failing since, next probe)
            (at(0), None, at(30)),             // on the grid: exactly one interval
            (ms(at(0), 2_500), None, at(30)),  // started 2.5 s late: back on the grid
            (ms(at(0), 14_999), None, at(30)), // late by less than half an interval
            (at(15), None, at(30)),            // half an interval late: still the next point
            (ms(at(15), 1), None, at(60)),     // later than that: the point after
            (at(7), None, at(30)),             // joining: at least half an interval later
            (at(20), None, at(60)),
            (at(60), Some(at(0)), at(120)), // failing 60 s: wait 60 s, on the grid
            (at(61), Some(at(0)), at(120)),
            (at(10_000), Some(at(0)), at(10_290)), // the five-minute cap, on the grid
        ];
        for (last, failing, want) in cases {
            assert_eq!(next_probe(i, last, failing), want, "last {last}, failing since {failing:?}");
        }
        // Two policies with one interval, probed at different moments, meet on the grid.
        let five = Duration::from_secs(5);
        assert_eq!(next_probe(five, ms(at(1), 100), None), next_probe(five, ms(at(2), 400), None));
    }

    #[test]
    fn probe_wait_doubles_while_aws_fails_and_resets_on_success() {
        use crate::core::testing::at;
        use std::time::Duration;
        let i = Duration::from_secs(10);
        let cases = [
            // (last probe, failing since, wait)
            (at(0), None, i),
            (at(0), Some(at(0)), i),  // the first failed probe: the usual pace
            (at(10), Some(at(0)), i), // failing 10 s: wait 10 s
            (at(20), Some(at(0)), Duration::from_secs(20)),
            (at(40), Some(at(0)), Duration::from_secs(40)),
            (at(10_000), Some(at(0)), MAX_PROBE_BACKOFF),
            (at(10_000), None, i), // AWS answered again
        ];
        for (last, since, want) in cases {
            assert_eq!(probe_wait(i, last, since), want, "last {last}, failing since {since:?}");
        }
        let hour = Duration::from_secs(3600);
        assert_eq!(probe_wait(hour, at(0), Some(at(0))), hour, "never faster than probeInterval");
        assert_eq!(probe_wait(hour, at(90_000), Some(at(0))), hour);
    }

    fn kind(d: &Decision) -> &'static str {
        match d {
            Decision::Nothing => ".",
            Decision::Open { .. } => "open",
            Decision::StillUnhealthy { .. } => "still",
            Decision::Resolve { .. } => "resolve",
            Decision::Relapsed { .. } => "relapsed",
            Decision::Abandon { .. } => "abandon",
        }
    }

    /// Feeds answers at the given milliseconds to one target; returns the decisions by kind.
    fn run_at(guard: Guard, answers: &[(i64, Probe)]) -> Vec<&'static str> {
        let mut state = TargetState { target: "ecs/prod/checkout".into(), ..Default::default() };
        answers
            .iter()
            .map(|(ms, p)| {
                let at = crate::core::testing::at(0) + k8s_openapi::jiff::SignedDuration::from_millis(*ms);
                let (next, d) = step(&guard, "pol", &state, p, at, false, false);
                state = next;
                kind(&d)
            })
            .collect()
    }

    /// Feeds a sequence of probes one interval apart.
    fn run(guard: Guard, probes: &[Probe]) -> Vec<&'static str> {
        let step = INTERVAL.as_millis() as i64;
        let answers: Vec<(i64, Probe)> = probes.iter().enumerate().map(|(i, p)| (i as i64 * step, p.clone())).collect();
        run_at(guard, &answers)
    }

    #[test]
    fn flap_guard_table() {
        let cases: Vec<(&str, Guard, Vec<Probe>, Vec<&str>)> = vec![
            ("opens at the threshold", th(2, 2), vec![sick(), sick()], vec![".", "open"]),
            ("threshold one opens at once", th(1, 1), vec![sick(), well()], vec!["open", "resolve"]),
            (
                "flap below threshold opens nothing",
                th(2, 2),
                vec![sick(), well(), sick(), well()],
                vec![".", ".", ".", "."],
            ),
            (
                "keeps one incident while unhealthy",
                th(2, 2),
                vec![sick(), sick(), sick(), sick()],
                vec![".", "open", "still", "still"],
            ),
            (
                "resolves after success threshold",
                th(2, 2),
                vec![sick(), sick(), well(), well()],
                vec![".", "open", ".", "resolve"],
            ),
            (
                "a relapse mid-recovery keeps the incident",
                th(2, 2),
                vec![sick(), sick(), well(), sick(), well(), well()],
                vec![".", "open", ".", "still", ".", "resolve"],
            ),
            ("AWS errors are not unhealthy", th(2, 2), vec![err(), err(), err()], vec![".", ".", "."]),
            ("AWS errors neither count nor reset", th(2, 2), vec![sick(), err(), sick()], vec![".", ".", "open"]),
            (
                "AWS errors do not resolve",
                th(2, 2),
                vec![sick(), sick(), err(), err(), well()],
                vec![".", "open", ".", ".", "."],
            ),
            (
                "relapse after resolution opens anew",
                th(1, 1),
                vec![sick(), well(), sick()],
                vec!["open", "resolve", "open"],
            ),
        ];
        for (name, t, probes, want) in cases {
            assert_eq!(run(t, &probes), want, "{name}");
        }
    }

    /// Answers bunched together count once; thresholds mean time.
    #[test]
    fn flap_guard_counts_time_not_answers() {
        let s = 1000; // ms
        type Case = (&'static str, Guard, Vec<(i64, Probe)>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                "a retried probe and the next one, 70 ms apart, are one answer",
                th(2, 2),
                vec![(0, sick()), (70, sick()), (15 * s, sick()), (30 * s, sick())],
                vec![".", ".", ".", "open"],
            ),
            (
                "half an interval apart counts, but the span must be an interval (less a tenth)",
                th(2, 2),
                vec![(0, sick()), (15 * s, sick()), (27 * s, sick())],
                vec![".", ".", "open"],
            ),
            (
                "answers a little early on the grid still open on time",
                th(2, 2),
                vec![(500, sick()), (30 * s + 10, sick())],
                vec![".", "open"],
            ),
            (
                "three answers need two intervals",
                th(3, 2),
                vec![(0, sick()), (20 * s, sick()), (40 * s, sick()), (55 * s, sick()), (58 * s, sick())],
                vec![".", ".", ".", ".", "open"],
            ),
            (
                "a contrary answer, however close, starts a new streak",
                th(2, 2),
                vec![(0, sick()), (100, well()), (30 * s, sick()), (60 * s, sick())],
                vec![".", ".", ".", "open"],
            ),
            (
                "bunched healthy answers do not resolve early",
                th(2, 2),
                vec![(0, sick()), (30 * s, sick()), (60 * s, well()), (60 * s + 70, well()), (90 * s, well())],
                vec![".", "open", ".", ".", "resolve"],
            ),
            ("threshold one opens on the first answer", th(1, 1), vec![(0, sick())], vec!["open"]),
        ];
        for (name, g, answers, want) in cases {
            assert_eq!(run_at(g, &answers), want, "{name}");
        }
    }

    /// A steady target's state stops changing once its streak reached the threshold, so the
    /// policy's status is not rewritten every probe.
    #[test]
    fn a_steady_target_settles() {
        let g = th(2, 2);
        let mut s = TargetState { target: "ecs/prod/checkout".into(), ..Default::default() };
        let mut seen = vec![];
        for i in 0..5 {
            let (next, _) = step(&g, "pol", &s, &well(), crate::core::testing::at(i * 30), false, false);
            seen.push(next != s);
            s = next;
        }
        assert_eq!(seen, [true, true, false, false, false], "{s:?}");
        assert_eq!((s.healthy_since.as_ref(), s.last_counted_at.as_ref()), (None, None));
    }

    /// An incident whose plan found the target healthy and ended without acting is resolved
    /// when the target fails again, and the new failure starts a streak of its own.
    #[test]
    fn a_relapse_after_a_plan_not_needed_is_a_new_episode() {
        let g = th(2, 2);
        let at = crate::core::testing::at;
        let s0 = TargetState { target: "ecs/prod/checkout".into(), ..Default::default() };
        let (s1, _) = step(&g, "pol", &s0, &sick(), at(0), false, false);
        let (s2, d2) = step(&g, "pol", &s1, &sick(), at(30), false, false);
        assert_eq!(kind(&d2), "open");
        // The plan ended NotNeeded; the next answer is unhealthy.
        let (s3, d3) = step(&g, "pol", &s2, &sick(), at(60), true, false);
        assert_eq!(kind(&d3), "relapsed");
        assert_eq!((s3.open_incident.as_ref(), s3.consecutive_failures), (None, 1));
        let (s4, d4) = step(&g, "pol", &s3, &sick(), at(90), false, false);
        let (Decision::Open { name, .. }, Decision::Open { name: first, .. }) = (d4, d2) else { panic!("reopens") };
        assert_ne!(name, first, "a new incident");
        assert_eq!(s4.opened, 2);
        // Without the plan having ended so, the incident just stays open.
        let (_, d) = step(&g, "pol", &s2, &sick(), at(60), false, false);
        assert_eq!(kind(&d), "still");
    }

    #[test]
    fn answer_time_of_a_slow_probe_is_its_answer() {
        let at = crate::core::testing::at;
        assert_eq!(answered_at(INTERVAL, at(0), at(2)), at(0), "a prompt answer: when asked");
        assert_eq!(answered_at(INTERVAL, at(0), at(15)), at(0));
        assert_eq!(answered_at(INTERVAL, at(0), at(16)), at(16), "a slow one: when it answered");
    }

    #[test]
    fn relapse_gets_a_new_deterministic_name() {
        let t = th(1, 1);
        let at = crate::core::testing::at;
        let s0 = TargetState { target: "rds/db".into(), ..Default::default() };
        let (s1, d1) = step(&t, "pol", &s0, &sick(), at(0), false, false);
        let (s2, _) = step(&t, "pol", &s1, &well(), at(30), false, false);
        let (_, d3) = step(&t, "pol", &s2, &sick(), at(60), false, false);
        let (Decision::Open { name: a, .. }, Decision::Open { name: b, .. }) = (d1, d3) else { panic!("two opens") };
        assert_ne!(a, b);
        // A restart that lost the write of s1 recomputes the same first name.
        let (_, again) = step(&t, "pol", &s0, &sick(), at(0), false, false);
        assert!(matches!(again, Decision::Open { name, .. } if name == a));
    }

    #[test]
    fn an_incident_whose_record_was_lost_is_adopted_then_resolved() {
        let t = th(1, 1);
        let s0 = TargetState { target: "rds/db".into(), ..Default::default() };
        let (_, opened) = step(&t, "pol", &s0, &sick(), crate::core::testing::at(0), false, false);
        let Decision::Open { name, .. } = opened else { panic!("opens") };
        // The write of the new state was lost; the incident exists.
        let spec: RecoveryPolicySpec =
            serde_norway::from_str("aws: {region: us-east-1}\ntargets: {rdsInstances: [{identifier: db}]}").unwrap();
        let mut states = vec![];
        adopt_orphans("pol", &spec, &mut states, &[name.clone()].into_iter().collect());
        assert_eq!((states[0].open_incident.as_deref(), states[0].opened), (Some(name.as_str()), 1));
        let (_, d) = step(&t, "pol", &states[0], &well(), crate::core::testing::at(30), false, false);
        assert!(matches!(d, Decision::Resolve { incident, .. } if incident == name));
        // Unrelated names are left alone.
        let mut states = vec![s0];
        adopt_orphans("pol", &spec, &mut states, &["pol-rds-00000000-0".to_string()].into_iter().collect());
        assert_eq!(states[0].open_incident, None);
    }

    #[test]
    fn cycle_counts_and_abandons_removed_targets() {
        let spec = policy();
        let mut probes = BTreeMap::new();
        probes.insert("ecs/prod/checkout".to_string(), sick());
        probes.insert("ecs/prod/cart".to_string(), well());
        probes.insert("rds/prod-db".to_string(), err());
        let previous = vec![
            TargetState { target: "ecs/prod/checkout".into(), consecutive_failures: 1, ..Default::default() },
            TargetState {
                target: "ecs/prod/gone".into(),
                open_incident: Some("inc-gone".into()),
                ..Default::default()
            },
        ];
        let cycle =
            detect("pol", &spec, &previous, &probes, crate::core::testing::at(60), &BTreeSet::new(), &Woken::default());
        assert_eq!(cycle.counts, TargetCounts { total: 4, healthy: 1, unhealthy: 1, unknown: 2 });
        assert_eq!(cycle.states.len(), 4);
        // A streak that started before this cycle keeps its start; a new one starts now.
        assert_eq!(cycle.states[0].unhealthy_since, None, "the previous state had no start recorded");
        assert_eq!(cycle.states[1].unhealthy_since, None, "healthy");
        assert_eq!(cycle.decisions.len(), 2, "{:?}", cycle.decisions);
        assert!(matches!(&cycle.decisions[0], (Some(t), Decision::Open { .. }) if t.key == "ecs/prod/checkout"));
        assert_eq!(cycle.decisions[1], (None, Decision::Abandon { incident: "inc-gone".into() }));
    }

    /// An event-woken unhealthy answer, corroborated, reaches the threshold at once; without
    /// corroboration it counts as one answer like any other; a healthy answer and an open
    /// incident are unchanged by it.
    #[test]
    fn corroboration_reaches_the_failure_threshold_at_once() {
        let at = crate::core::testing::at;
        let g = th(3, 2);
        let s0 = TargetState { target: "ecs/prod/checkout".into(), ..Default::default() };
        let (s1, d1) = step(&g, "pol", &s0, &sick(), at(0), false, true);
        assert_eq!(kind(&d1), "open", "event + confirming probe: open now");
        assert_eq!((s1.consecutive_failures, s1.last_counted_at.clone()), (3, None), "frozen at the threshold");
        let (_, d) = step(&g, "pol", &s0, &sick(), at(0), false, false);
        assert_eq!(kind(&d), ".", "the same answer without the event: one of three");
        let (s, d) = step(&g, "pol", &s0, &well(), at(0), false, true);
        assert_eq!((kind(&d), s.consecutive_successes), (".", 1), "a healthy answer: as usual");
        let (_, d) = step(&g, "pol", &s1, &sick(), at(1), false, true);
        assert_eq!(kind(&d), "still", "an open incident is not opened twice");
        // Resolution is not hurried by events.
        let (s2, d2) = step(&g, "pol", &s1, &well(), at(2), false, true);
        let (_, d3) = step(&g, "pol", &s2, &well(), at(5), false, true);
        assert_eq!((kind(&d2), kind(&d3)), (".", "."), "two healthy answers 3 s apart do not resolve");
    }

    /// A cycle of a woken probe touches only the targets it asked about; the others keep
    /// their state and are counted by their streaks.
    #[test]
    fn a_woken_cycle_leaves_the_others_alone() {
        let spec = policy();
        let previous = vec![
            TargetState { target: "ecs/prod/checkout".into(), consecutive_successes: 2, ..Default::default() },
            TargetState { target: "ecs/prod/cart".into(), consecutive_failures: 1, ..Default::default() },
            TargetState { target: "rds/prod-db".into(), consecutive_successes: 2, ..Default::default() },
        ];
        let probes: BTreeMap<String, Probe> = [("ecs/prod/checkout".to_string(), sick())].into();
        let only: BTreeSet<String> = ["ecs/prod/checkout".to_string()].into();
        let corroborated = [("ecs/prod/checkout".to_string(), "aws.ecs e-1".to_string())].into();
        let woken = Woken { only: Some(only), corroborated };
        let cycle = detect("pol", &spec, &previous, &probes, crate::core::testing::at(60), &BTreeSet::new(), &woken);
        assert_eq!(cycle.counts, TargetCounts { total: 4, healthy: 1, unhealthy: 2, unknown: 1 });
        assert_eq!(cycle.states[1..3], previous[1..3], "not asked about: unchanged");
        assert_eq!(cycle.states[3].target, "route53/0b7e2c5e-8b6f-4f43-9d1a-0a6c2d3e4f51");
        assert_eq!(cycle.decisions.len(), 1, "{:?}", cycle.decisions);
        assert!(matches!(&cycle.decisions[0], (Some(t), Decision::Open { .. }) if t.key == "ecs/prod/checkout"));
    }
}
