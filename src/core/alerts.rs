//! The alert ledger: which alert is due on which channel, and how each attempt is recorded.
//!
//! Delivery is "claim, send, record": an entry is persisted as `Sending` before the send
//! and as `Sent` after it. A crash between the send and the record leaves `Sending`, and
//! the alert is sent again: at most one duplicate in the worst case, none otherwise. (Exactly
//! once would need the channel to deduplicate; e-mail's stable Message-ID lets clients do so,
//! PagerDuty's dedup key does it at the receiver.)
//!
//! In Slack's Web API mode the ledger also keeps each message's `ts`: the incident's first
//! Slack message is the thread its follow-ups reply in, and it survives restarts with the
//! rest of the status.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::Severity;
use crate::api::incident::{
    AlertChannel, AlertKind, AlertRecord, AlertState, IncidentPhase, IncidentStatus, SlackMessage,
};
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
    /// Slack posts through the Web API, in threads: a Slack follow-up waits until the
    /// incident's earlier Slack alerts have ended, so that it has a thread to reply in and
    /// the thread reads in order.
    pub threaded: bool,
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
    let mut slack_pending = false;
    for kind in wanted(f) {
        for &channel in f.channels.iter().filter(|c| carries(**c, kind)) {
            let waits = f.threaded && channel == AlertChannel::Slack && slack_pending;
            let e = entry(f.status, kind, channel);
            if channel == AlertChannel::Slack && e.is_none_or(|e| e.state == AlertState::Sending) {
                slack_pending = true;
            }
            if waits {
                // Looked at again when the earlier one is recorded (that write changes the
                // incident, which reconciles it).
                continue;
            }
            match e {
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

/// Whether the policy's Slack posts through the Web API, in threads.
pub fn threaded(spec: &crate::api::policy::AlertsSpec) -> bool {
    spec.slack.as_ref().is_some_and(|s| s.bot_token_secret_ref.is_some())
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
        slack_message: None,
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

/// Records the outcome of an attempt: delivered (with the Slack message it became, in Web API
/// mode), or an error and whether a later attempt may succeed.
pub fn record(
    status: &mut IncidentStatus,
    kind: AlertKind,
    channel: AlertChannel,
    outcome: Result<Option<SlackMessage>, (String, bool)>,
    now: Timestamp,
) {
    let e = entry_mut(status, kind, channel);
    match outcome {
        Ok(message) => {
            e.state = AlertState::Sent;
            e.sent_at = Some(Time(now));
            e.error = None;
            e.slack_message = message;
        }
        Err((error, retryable)) => {
            e.state = if retryable && e.attempts < MAX_ATTEMPTS { AlertState::Sending } else { AlertState::Failed };
            e.error = Some(error);
        }
    }
}

/// The Slack thread of an incident: its first Slack message posted through the Web API (the
/// ledger keeps alerts in the order they were first claimed). None until one was posted; an
/// alert sent before then opens the thread itself.
pub fn slack_thread(status: &IncidentStatus) -> Option<&SlackMessage> {
    status
        .alerts
        .iter()
        .filter(|a| a.channel == AlertChannel::Slack && a.state == AlertState::Sent)
        .find_map(|a| a.slack_message.as_ref())
}

/// Whether a Slack follow-up in a thread is also shown in the channel: a failed plan (people
/// take over) and the resolution are news to everyone, the rest is detail for the thread.
pub fn broadcast_in_channel(kind: AlertKind) -> bool {
    match kind {
        AlertKind::PlanFailed | AlertKind::Resolved => true,
        AlertKind::Detected | AlertKind::AwaitingApproval | AlertKind::PlanCompleted => false,
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
        Facts {
            status,
            severity: Severity::High,
            min_severity: Severity::Medium,
            plan,
            channels: BOTH,
            threaded: false,
            now,
        }
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
        record(&mut s, AlertKind::Detected, AlertChannel::Slack, Ok(None), at(1));
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

    fn message(ts: &str) -> SlackMessage {
        SlackMessage { channel: "C0INCIDENTS".into(), ts: ts.into() }
    }

    #[test]
    fn threaded_slack_follow_ups_wait_for_the_thread_and_reply_in_it() {
        use AlertKind::*;
        let mut s = open(IncidentPhase::Resolved);
        fn f(s: &IncidentStatus, threaded: bool, now: Timestamp) -> Facts<'_> {
            let plan = Some((PlanPhase::Completed, false));
            Facts { channels: &[AlertChannel::Slack, AlertChannel::Email], threaded, ..facts(s, plan, now) }
        }
        // Webhook mode: every alert is due at once, on both channels.
        assert_eq!(due(&f(&s, false, at(0))).0.len(), 6);
        // Thread mode: Slack's follow-ups wait for the first; e-mail does not.
        let want = vec![
            (Detected, AlertChannel::Slack),
            (Detected, AlertChannel::Email),
            (PlanCompleted, AlertChannel::Email),
            (Resolved, AlertChannel::Email),
        ];
        assert_eq!(due(&f(&s, true, at(0))).0, want);
        assert_eq!(slack_thread(&s), None);

        claim(&mut s, Detected, AlertChannel::Slack, at(0));
        record(&mut s, Detected, AlertChannel::Slack, Err(("ratelimited".into(), true)), at(0));
        assert!(
            !due(&f(&s, true, at(60))).0.iter().any(|(k, c)| *k != Detected && *c == AlertChannel::Slack),
            "a retrying first message still holds the thread's follow-ups"
        );
        claim(&mut s, Detected, AlertChannel::Slack, at(60));
        record(&mut s, Detected, AlertChannel::Slack, Ok(Some(message("1.000100"))), at(61));
        assert_eq!(slack_thread(&s), Some(&message("1.000100")));
        let slack_due: Vec<AlertKind> = due(&f(&s, true, at(62)))
            .0
            .into_iter()
            .filter_map(|(k, c)| (c == AlertChannel::Slack).then_some(k))
            .collect();
        assert_eq!(slack_due, vec![PlanCompleted], "one follow-up at a time, in story order");
        claim(&mut s, PlanCompleted, AlertChannel::Slack, at(62));
        record(&mut s, PlanCompleted, AlertChannel::Slack, Ok(Some(message("2.000200"))), at(62));
        assert_eq!(slack_thread(&s), Some(&message("1.000100")), "the thread stays the first message");

        // A first message given up for good: the next one opens the thread.
        let mut s = open(IncidentPhase::Resolved);
        claim(&mut s, Detected, AlertChannel::Slack, at(0));
        record(&mut s, Detected, AlertChannel::Slack, Err(("channel_not_found".into(), false)), at(0));
        let slack_due: Vec<AlertKind> = due(&f(&s, true, at(1)))
            .0
            .into_iter()
            .filter_map(|(k, c)| (c == AlertChannel::Slack).then_some(k))
            .collect();
        assert_eq!(slack_due, vec![PlanCompleted]);
        assert_eq!(slack_thread(&s), None);
    }

    #[test]
    fn only_a_failed_plan_and_the_resolution_show_in_the_channel() {
        use AlertKind::*;
        let shown: Vec<AlertKind> = [Detected, AwaitingApproval, PlanCompleted, PlanFailed, Resolved]
            .into_iter()
            .filter(|k| broadcast_in_channel(*k))
            .collect();
        assert_eq!(shown, vec![PlanFailed, Resolved]);
    }
}
