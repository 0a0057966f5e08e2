//! The alert ledger: which alert is due on which channel, and how each attempt is recorded.
//!
//! Delivery is "claim, send, record": an entry is persisted as `Sending` before the send
//! and as `Sent` after it. A crash between the send and the record leaves `Sending`, and
//! the alert is sent again: at most one duplicate in the worst case, none otherwise. (Exactly
//! once would need the channel to deduplicate; e-mail's stable Message-ID lets clients do so.)

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::Severity;
use crate::api::incident::{AlertChannel, AlertKind, AlertRecord, AlertState, IncidentPhase, IncidentStatus};
use crate::api::plan::PlanPhase;

use super::time::{add, since};

/// Attempts per alert and channel before it is given up.
pub const MAX_ATTEMPTS: u32 = 8;

/// What decides which alerts are due.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The incident's status.
    pub status: &'a IncidentStatus,
    /// The incident's severity.
    pub severity: Severity,
    /// The policy's minSeverity.
    pub min_severity: Severity,
    /// The plan's phase and whether it is a dry run.
    pub plan: Option<(PlanPhase, bool)>,
    /// Channels configured on the policy.
    pub channels: &'a [AlertChannel],
    /// Now.
    pub now: Timestamp,
}

/// The alerts the incident's state calls for, in the order they should arrive.
pub fn wanted(f: &Facts) -> Vec<AlertKind> {
    if f.severity < f.min_severity || f.status.phase.is_none() {
        return vec![];
    }
    let mut kinds = vec![AlertKind::Detected];
    match f.plan {
        Some((PlanPhase::AwaitingApproval, _)) => kinds.push(AlertKind::AwaitingApproval),
        Some((PlanPhase::Completed, false)) => kinds.push(AlertKind::PlanCompleted),
        Some((PlanPhase::Failed, _)) => kinds.push(AlertKind::PlanFailed),
        _ => {}
    }
    // "Resolved" waits for the plan to end, so the story reads completed → resolved.
    let plan_done = f.plan.is_none_or(|(p, _)| p.is_terminal());
    if f.status.phase == Some(IncidentPhase::Resolved) && plan_done {
        kinds.push(AlertKind::Resolved);
    }
    kinds
}

/// (alert, channel) pairs to attempt now, and when to look again for ones backing off.
pub fn due(f: &Facts) -> (Vec<(AlertKind, AlertChannel)>, Option<Duration>) {
    let mut now_due = vec![];
    let mut next: Option<Duration> = None;
    for kind in wanted(f) {
        for &channel in f.channels.iter().filter(|c| carries(**c, kind)) {
            match entry(f.status, kind, channel) {
                None => now_due.push((kind, channel)),
                Some(e) if e.state == AlertState::Sending => {
                    let at = e.last_attempt_at.as_ref().map_or(f.now, |t| add(t.0, backoff(e.attempts)));
                    if at <= f.now || e.error.is_none() {
                        // No error recorded: a claim whose send may have been cut short.
                        now_due.push((kind, channel));
                    } else {
                        let wait = since(at, f.now);
                        next = Some(next.map_or(wait, |n| n.min(wait)));
                    }
                }
                Some(_) => {}
            }
        }
    }
    (now_due, next)
}

/// Whether every alert the incident's story calls for has reached its end on every channel:
/// delivered, or given up. Until then the ledger is still needed (it is what stops a resend).
pub fn settled(f: &Facts) -> bool {
    wanted(f).into_iter().all(|kind| {
        f.channels
            .iter()
            .filter(|c| carries(**c, kind))
            .all(|&channel| entry(f.status, kind, channel).is_some_and(|e| e.state != AlertState::Sending))
    })
}

/// Whether a channel carries an alert kind: PagerDuty has no message for a completed plan
/// (the resolve that follows closes its alert); Slack and e-mail carry every kind.
pub fn carries(channel: AlertChannel, kind: AlertKind) -> bool {
    match channel {
        AlertChannel::Slack | AlertChannel::Email => true,
        AlertChannel::PagerDuty => pagerduty_action(kind).is_some(),
    }
}

/// What an alert kind does in PagerDuty (Events API v2 `event_action`), if anything: the
/// incident opening, a plan waiting for approval and a failed plan trigger (under one
/// dedup key PagerDuty adds them to the same alert); resolved resolves. A completed plan says
/// nothing of its own: the resolve that follows closes the alert.
pub fn pagerduty_action(kind: AlertKind) -> Option<&'static str> {
    match kind {
        AlertKind::Detected | AlertKind::AwaitingApproval | AlertKind::PlanFailed => Some("trigger"),
        AlertKind::Resolved => Some("resolve"),
        AlertKind::PlanCompleted => None,
    }
}

/// The channels a policy's alerts name, in delivery order.
pub fn channels(spec: &crate::api::policy::AlertsSpec) -> Vec<AlertChannel> {
    [
        (spec.slack.is_some(), AlertChannel::Slack),
        (spec.email.is_some(), AlertChannel::Email),
        (spec.pagerduty.is_some(), AlertChannel::PagerDuty),
    ]
    .into_iter()
    .filter_map(|(on, c)| on.then_some(c))
    .collect()
}

/// Backoff after `attempts` failed attempts.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(10)))
        .min(Duration::from_secs(300))
}

fn entry(status: &IncidentStatus, kind: AlertKind, channel: AlertChannel) -> Option<&AlertRecord> {
    status.alerts.iter().find(|a| a.alert == kind && a.channel == channel)
}

fn entry_mut(status: &mut IncidentStatus, kind: AlertKind, channel: AlertChannel) -> &mut AlertRecord {
    if let Some(i) = status.alerts.iter().position(|a| a.alert == kind && a.channel == channel) {
        return &mut status.alerts[i];
    }
    status.alerts.push(AlertRecord {
        alert: kind,
        channel,
        state: AlertState::Sending,
        attempts: 0,
        last_attempt_at: None,
        sent_at: None,
        error: None,
    });
    status.alerts.last_mut().expect("just pushed")
}

/// Claims an attempt: persist this before sending.
pub fn claim(status: &mut IncidentStatus, kind: AlertKind, channel: AlertChannel, now: Timestamp) {
    let e = entry_mut(status, kind, channel);
    e.state = AlertState::Sending;
    e.attempts += 1;
    e.last_attempt_at = Some(Time(now));
    e.error = None;
}

/// Records the outcome of an attempt.
pub fn record(
    status: &mut IncidentStatus,
    kind: AlertKind,
    channel: AlertChannel,
    outcome: Result<(), (String, bool)>,
    now: Timestamp,
) {
    let e = entry_mut(status, kind, channel);
    match outcome {
        Ok(()) => {
            e.state = AlertState::Sent;
            e.sent_at = Some(Time(now));
            e.error = None;
        }
        Err((error, retryable)) => {
            e.state = if retryable && e.attempts < MAX_ATTEMPTS { AlertState::Sending } else { AlertState::Failed };
            e.error = Some(error);
        }
    }
}

/// The `AlertDeliveryFailed` condition: (failing?, message naming channels and errors).
pub fn delivery_failure(status: &IncidentStatus) -> (bool, String) {
    let failing: Vec<String> = status
        .alerts
        .iter()
        .filter(|a| a.state != AlertState::Sent)
        .filter_map(|a| Some(format!("{:?} via {:?}: {}", a.alert, a.channel, a.error.as_deref()?)))
        .collect();
    if failing.is_empty() { (false, "every alert was delivered".into()) } else { (true, failing.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::at;

    const BOTH: &[AlertChannel] = &[AlertChannel::Slack, AlertChannel::Email];

    fn facts<'a>(status: &'a IncidentStatus, plan: Option<(PlanPhase, bool)>, now: Timestamp) -> Facts<'a> {
        Facts { status, severity: Severity::High, min_severity: Severity::Medium, plan, channels: BOTH, now }
    }

    fn open(phase: IncidentPhase) -> IncidentStatus {
        IncidentStatus { phase: Some(phase), ..Default::default() }
    }

    #[test]
    fn wanted_follows_the_story() {
        use AlertKind::*;
        let cases = [
            (IncidentPhase::Detected, None, vec![Detected]),
            (
                IncidentPhase::Investigating,
                Some((PlanPhase::AwaitingApproval, false)),
                vec![Detected, AwaitingApproval],
            ),
            (IncidentPhase::Mitigating, Some((PlanPhase::Executing, false)), vec![Detected]),
            (IncidentPhase::Mitigating, Some((PlanPhase::Completed, false)), vec![Detected, PlanCompleted]),
            (IncidentPhase::Investigating, Some((PlanPhase::Completed, true)), vec![Detected]),
            (IncidentPhase::Mitigating, Some((PlanPhase::Failed, false)), vec![Detected, PlanFailed]),
            (IncidentPhase::Resolved, Some((PlanPhase::Executing, false)), vec![Detected]),
            (IncidentPhase::Resolved, Some((PlanPhase::Completed, false)), vec![Detected, PlanCompleted, Resolved]),
            (IncidentPhase::Resolved, None, vec![Detected, Resolved]),
        ];
        for (phase, plan, want) in cases {
            let s = open(phase);
            assert_eq!(wanted(&facts(&s, plan, at(0))), want, "{phase:?} {plan:?}");
        }
        let s = open(IncidentPhase::Detected);
        let low = Facts { severity: Severity::Low, ..facts(&s, None, at(0)) };
        assert!(wanted(&low).is_empty(), "below minSeverity nothing is sent");
    }

    #[test]
    fn claim_send_record_and_no_resend() {
        let mut s = open(IncidentPhase::Detected);
        let (d, _) = due(&facts(&s, None, at(0)));
        assert_eq!(d, vec![(AlertKind::Detected, AlertChannel::Slack), (AlertKind::Detected, AlertChannel::Email)]);
        claim(&mut s, AlertKind::Detected, AlertChannel::Slack, at(0));
        record(&mut s, AlertKind::Detected, AlertChannel::Slack, Ok(()), at(1));
        let (d, _) = due(&facts(&s, None, at(2)));
        assert_eq!(d, vec![(AlertKind::Detected, AlertChannel::Email)], "sent ones are never due again");
        assert!(!settled(&facts(&s, None, at(2))), "e-mail not sent yet");
        claim(&mut s, AlertKind::Detected, AlertChannel::Email, at(2));
        assert!(!settled(&facts(&s, None, at(2))), "claimed is not settled");
        record(&mut s, AlertKind::Detected, AlertChannel::Email, Err(("550".into(), false)), at(3));
        assert!(settled(&facts(&s, None, at(3))), "given up is settled");
    }

    #[test]
    fn a_claim_without_outcome_is_resent_once_after_a_crash() {
        let mut s = open(IncidentPhase::Detected);
        claim(&mut s, AlertKind::Detected, AlertChannel::Email, at(0));
        // The process died after the send, before the record.
        let (d, _) = due(&facts(&s, None, at(1)));
        assert!(d.contains(&(AlertKind::Detected, AlertChannel::Email)));
    }

    #[test]
    fn failures_back_off_then_give_up() {
        let mut s = open(IncidentPhase::Detected);
        claim(&mut s, AlertKind::Detected, AlertChannel::Slack, at(0));
        record(
            &mut s,
            AlertKind::Detected,
            AlertChannel::Slack,
            Err(("slack webhook answered 500".into(), true)),
            at(0),
        );
        let f = Facts { channels: &[AlertChannel::Slack], ..facts(&s, None, at(2)) };
        assert_eq!(due(&f), (vec![], Some(Duration::from_secs(3))));
        assert_eq!(delivery_failure(&s), (true, "Detected via Slack: slack webhook answered 500".into()));
        let f = Facts { channels: &[AlertChannel::Slack], ..facts(&s, None, at(5)) };
        assert_eq!(due(&f).0.len(), 1);
        for _ in 1..MAX_ATTEMPTS {
            claim(&mut s, AlertKind::Detected, AlertChannel::Slack, at(10));
            record(&mut s, AlertKind::Detected, AlertChannel::Slack, Err(("500".into(), true)), at(10));
        }
        assert_eq!(s.alerts[0].state, AlertState::Failed);
        claim(&mut s, AlertKind::Resolved, AlertChannel::Email, at(0));
        record(&mut s, AlertKind::Resolved, AlertChannel::Email, Err(("550 no such user".into(), false)), at(0));
        assert_eq!(s.alerts[1].state, AlertState::Failed, "a permanent error is not retried");
    }
}
