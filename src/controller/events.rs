//! Push detection's shell: reads AWS events from SQS queues (an EventBridge rule's target)
//! and leaves wakes for the probes of the targets they name (see `core::events`).
//!
//! Only the leader reads (the consumers run inside `controller::run`). A message is deleted
//! once the wakes it caused are recorded (in `probes`, in memory) and the policies' reconciles
//! are asked for; a process that dies between the two loses at most the wakes of its last
//! batch, which polling makes up for at the next `probeInterval`. Whatever a message is — a
//! match, an event nobody watches, a duplicate, garbage — it is deleted and counted, never
//! retried forever; the queue's redrive policy is the user's own dead-letter path for
//! messages that fail to be deleted (the controller is down or cannot reach SQS).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::RecoveryPolicy;
use crate::api::common;
use crate::api::conditions::{policy as conditions, reason};
use crate::api::policy::{EventsMode, RecoveryPolicyStatus};
use crate::aws::{AwsFault, SQS_LONG_POLL};
use crate::core::events::{self as core, Recent};
use crate::metrics::{EventLabels, QueueLabel};

use super::Context;

/// Messages asked for at once (SQS's most).
const BATCH: i32 = 10;
/// How long a received message stays hidden from other readers: long enough to record its
/// wakes and delete it, short enough that one left by a dying leader reaches its successor
/// soon.
const VISIBILITY: Duration = Duration::from_secs(30);
/// The longest wait between attempts to read a queue that fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The event queues this process reads (`--event-queue`) and how each is doing.
#[derive(Default)]
pub struct Queues {
    urls: OnceLock<Vec<String>>,
    health: Mutex<HashMap<String, Health>>,
    recent: Mutex<Recent>,
}

/// How a queue is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Health {
    /// Its last ReceiveMessage was answered.
    Receiving,
    /// Its last ReceiveMessage failed, with this AWS error.
    Failing(String),
}

impl Queues {
    /// Sets the queues to read; the first call decides.
    pub fn configure(&self, urls: Vec<String>) {
        let _ = self.urls.set(urls.into_iter().filter(|u| !u.trim().is_empty()).collect());
    }

    /// The queues to read.
    pub fn urls(&self) -> &[String] {
        self.urls.get().map_or(&[], Vec::as_slice)
    }

    fn set(&self, url: &str, health: Health) -> bool {
        self.health.lock().expect("not poisoned").insert(url.to_owned(), health.clone()) != Some(health)
    }

    /// The queues that fail, with their errors.
    fn failing(&self) -> Vec<(String, String)> {
        let health = self.health.lock().expect("not poisoned");
        self.urls()
            .iter()
            .filter_map(|u| match health.get(u) {
                Some(Health::Failing(e)) => Some((u.clone(), e.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Sets a policy's PushDetection condition from the queues' health and its `events` mode.
pub fn set_push_detection(ctx: &Context, policy: &RecoveryPolicy, status: &mut RecoveryPolicyStatus, now: Timestamp) {
    let queues = ctx.queues.urls();
    let mode = policy.spec.detection.events;
    let generation = policy.metadata.generation;
    let interval = &policy.spec.probe_interval;
    let cs = &mut status.conditions;
    let (ok, why, message) = match (queues.len(), mode) {
        (0, EventsMode::Corroborate) => (
            false,
            reason::NO_QUEUE,
            format!(
                "detection.events is Corroborate, but the controller reads no event queue (--event-queue); detection is by polling every {interval}"
            ),
        ),
        (0, _) => {
            cs.retain(|c| c.type_ != conditions::PUSH_DETECTION);
            return;
        }
        (_, EventsMode::Ignore) => (
            false,
            reason::EVENTS_IGNORED,
            format!("detection.events is Ignore: AWS events wake nothing; detection is by polling every {interval}"),
        ),
        (n, _) => match ctx.queues.failing().as_slice() {
            [] => {
                (true, reason::RECEIVING, format!("reading {n} event queue(s); AWS events wake this policy's probes"))
            }
            failing => {
                let errors: Vec<String> = failing.iter().map(|(url, e)| format!("{url}: {e}")).collect();
                (
                    false,
                    reason::QUEUE_UNREADABLE,
                    format!("{}; detection is by polling every {interval}", errors.join("; ")),
                )
            }
        },
    };
    common::set_condition(cs, conditions::PUSH_DETECTION, ok, why, message, generation, now);
}

/// Reads every configured queue until the process stops, then pends forever (as it does
/// when there is no queue): it sits beside the controllers in a `select!`, which the
/// controllers end once their in-flight reconciles are done.
pub async fn consume_all(ctx: Arc<Context>) {
    let urls = ctx.queues.urls().to_vec();
    if urls.is_empty() {
        return futures::future::pending().await;
    }
    // A message is matched against the policies in the caches: read none before they hold
    // their initial lists, or its wakes would be lost on a half-filled cache.
    let scopes = loop {
        let scopes = ctx.scopes();
        if !scopes.is_empty() {
            break scopes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for scope in &scopes {
        let _ = scope.policies.wait_until_ready().await;
    }
    futures::future::join_all(urls.into_iter().map(|url| consume(ctx.clone(), url))).await;
    futures::future::pending().await
}

/// Reads one queue until the process stops.
async fn consume(ctx: Arc<Context>, url: String) {
    let sqs = ctx.aws.sqs(core::queue_region(&url));
    let label = QueueLabel { queue: url.clone() };
    // The first read returns at once, so the condition says soon whether the queue answers.
    let mut wait = Duration::ZERO;
    let mut backoff = Duration::from_secs(1);
    while !super::stopping() {
        let answer = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(BATCH)
            .wait_time_seconds(secs(wait))
            .visibility_timeout(secs(VISIBILITY))
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| AwsFault::from_sdk("sqs:ReceiveMessage", &e));
        ctx.metrics.aws_call("sqs:ReceiveMessage", answer.as_ref().err());
        match answer {
            Ok(out) => {
                if ctx.queues.set(&url, Health::Receiving) {
                    tracing::info!(queue = %url, "reading AWS events");
                }
                ctx.metrics.event_queue_up.get_or_create(&label).set(1);
                let messages = out.messages.unwrap_or_default();
                ctx.metrics.event_queue_lag_seconds.get_or_create(&label).set(lag(&messages, Timestamp::now()));
                handle(&ctx, &messages);
                delete(&ctx, &sqs, &url, &messages).await;
                wait = SQS_LONG_POLL;
                backoff = Duration::from_secs(1);
            }
            Err(fault) => {
                if ctx.queues.set(&url, Health::Failing(fault.to_string())) {
                    tracing::warn!(queue = %url, error = %fault, "cannot read AWS events; detection is by polling");
                }
                ctx.metrics.event_queue_up.get_or_create(&label).set(0);
                tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait = Duration::ZERO;
            }
        }
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// Age of the oldest message of an answer, in seconds (0 when it has none).
fn lag(messages: &[Message], now: Timestamp) -> f64 {
    messages
        .iter()
        .filter_map(|m| m.attributes.as_ref()?.get(&MessageSystemAttributeName::SentTimestamp)?.parse::<i64>().ok())
        .filter_map(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|sent| crate::core::time::since(now, sent).as_secs_f64())
        .fold(0.0, f64::max)
}

/// Records the wakes of a batch of messages and asks for the woken policies' reconciles.
fn handle(ctx: &Context, messages: &[Message]) {
    let now = Timestamp::now();
    for message in messages {
        let body = message.body.as_deref().unwrap_or_default();
        let (source, detail_type, outcome) = match core::parse(body) {
            Err(e) => {
                tracing::warn!(message = message.message_id.as_deref().unwrap_or_default(), error = %e, "an event queue message is not an AWS event; deleting it");
                ("unreadable", "unreadable", "unreadable")
            }
            Ok(event) => {
                let (source, detail_type) = event.labels();
                let first = ctx.queues.recent.lock().expect("not poisoned").first(&event.envelope.id);
                let outcome = match first {
                    false => "duplicate",
                    true if wake(ctx, &event, now) => "matched",
                    true => "unwatched",
                };
                (source, detail_type, outcome)
            }
        };
        ctx.metrics.events.get_or_create(&EventLabels { source, detail_type, outcome }).inc();
    }
}

/// Leaves the event's wakes for every policy that watches what it names; whether any did.
fn wake(ctx: &Context, event: &core::Event, now: Timestamp) -> bool {
    if event.heard.is_empty() {
        return false;
    }
    let e = &event.envelope;
    let described = format!("{} {} ({})", e.source, e.detail_type, e.id);
    let mut matched = false;
    for scope in ctx.scopes() {
        for policy in scope.policies.state() {
            let wakes = core::wakes(event, &policy.spec, now);
            if wakes.is_empty() {
                continue;
            }
            matched = true;
            let key = format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any());
            tracing::debug!(policy = %key, event = %described, targets = wakes.len(), "an AWS event wakes a probe");
            if ctx.probes.wake(&key, &wakes, &described) {
                // The controller is gone only when the process is stopping.
                let _ = scope.wake_policy.send(ObjectRef::<RecoveryPolicy>::from_obj(&*policy));
            }
        }
    }
    matched
}

/// Deletes every message of a batch, whatever came of it. A failed delete is logged: the
/// message comes back after its visibility timeout and is then a duplicate (or, past the
/// queue's maxReceiveCount, goes to its dead-letter queue).
async fn delete(ctx: &Context, sqs: &aws_sdk_sqs::Client, url: &str, messages: &[Message]) {
    let entries: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle.clone()?)
                .build()
                .ok()
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    let result = sqs
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("sqs:DeleteMessageBatch", &e));
    ctx.metrics.aws_call("sqs:DeleteMessageBatch", result.as_ref().err());
    match result {
        Ok(out) if !out.failed.is_empty() => {
            let first = &out.failed[0];
            tracing::warn!(queue = %url, failed = out.failed.len(), code = %first.code, "some event messages were not deleted; they come back as duplicates");
        }
        Ok(_) => {}
        Err(fault) => {
            tracing::warn!(queue = %url, error = %fault, "event messages were not deleted; they come back as duplicates")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing;

    /// (what, queues, mode, the queue's health, the condition's status and reason)
    type Case = (&'static str, Vec<&'static str>, EventsMode, Option<Health>, Option<(&'static str, &'static str)>);

    /// The condition each combination of queues and `events` mode gets.
    #[tokio::test]
    async fn push_detection_says_what_wakes_probes() {
        let now = Timestamp::UNIX_EPOCH;
        let url = "https://sqs.us-east-1.amazonaws.com/123456789012/recovery-events";
        let cases: [Case; 5] = [
            ("no queue, Wake: nothing to say", vec![], EventsMode::Wake, None, None),
            ("no queue, Corroborate", vec![], EventsMode::Corroborate, None, Some(("False", reason::NO_QUEUE))),
            (
                "a queue, Ignore",
                vec![url],
                EventsMode::Ignore,
                Some(Health::Receiving),
                Some(("False", reason::EVENTS_IGNORED)),
            ),
            (
                "a queue that answers",
                vec![url],
                EventsMode::Wake,
                Some(Health::Receiving),
                Some(("True", reason::RECEIVING)),
            ),
            (
                "a queue that fails",
                vec![url],
                EventsMode::Corroborate,
                Some(Health::Failing("sqs:ReceiveMessage: QueueDoesNotExist: gone".into())),
                Some(("False", reason::QUEUE_UNREADABLE)),
            ),
        ];
        for (what, queues, mode, health, want) in cases {
            let ctx = testing::context();
            ctx.queues.configure(queues.iter().map(|q| q.to_string()).collect());
            if let Some(h) = health {
                ctx.queues.set(url, h);
            }
            let mut policy = testing::policy();
            policy.spec.detection.events = mode;
            // A condition left from an earlier configuration is replaced or removed.
            let mut status = RecoveryPolicyStatus::default();
            common::set_condition(&mut status.conditions, conditions::PUSH_DETECTION, true, "Old", "old", None, now);
            set_push_detection(&ctx, &policy, &mut status, now);
            let got = common::condition(&status.conditions, conditions::PUSH_DETECTION);
            assert_eq!(got.map(|c| (c.status.as_str(), c.reason.as_str())), want, "{what}");
            if let Some(c) = got.filter(|c| c.reason == reason::QUEUE_UNREADABLE) {
                assert!(c.message.contains(url) && c.message.contains("QueueDoesNotExist"), "{}", c.message);
                assert!(c.message.contains("polling every 30s"), "{}", c.message);
            }
        }
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_message() {
        let now = Timestamp::from_second(1_000).unwrap();
        let sent =
            |ms: &str| Message::builder().attributes(MessageSystemAttributeName::SentTimestamp, ms.to_string()).build();
        assert_eq!(lag(&[], now), 0.0);
        assert_eq!(lag(&[sent("990000"), sent("995500"), Message::builder().build()], now), 10.0);
        assert_eq!(lag(&[sent("not a time")], now), 0.0);
    }
}
