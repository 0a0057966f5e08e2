//! AWS events through the real path: an EventBridge bus whose rules (the shipped patterns
//! of `examples/events/`) send to an SQS queue, in moto.

use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

use super::unique;

/// The shipped patterns, by rule-name suffix.
const PATTERNS: [(&str, &str); 3] = [
    ("ecs-rds", include_str!("../../examples/events/pattern-ecs-rds.json")),
    ("ecs-tasks", include_str!("../../examples/events/pattern-ecs-tasks.json")),
    ("route53-alarms", include_str!("../../examples/events/pattern-route53-alarms.json")),
];

/// An event bus of its own (tests run side by side on one moto, and every rule of a bus
/// sees every event put on it), its rules and their queue.
pub struct EventPath {
    /// The bus.
    pub bus: String,
    /// The queue the rules send to: the controller's `--event-queue`.
    pub queue_url: String,
    /// EventBridge.
    pub eventbridge: aws_sdk_eventbridge::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    queue_arn: String,
}

impl EventPath {
    /// A bus, a queue, and one rule per shipped pattern sending to the queue.
    pub async fn new(cfg: &SdkConfig, prefix: &str) -> Self {
        let eventbridge = aws_sdk_eventbridge::Client::new(cfg);
        let sqs = aws_sdk_sqs::Client::new(cfg);
        let bus = unique(prefix);
        eventbridge.create_event_bus().name(&bus).send().await.expect("create the event bus");
        let queue_url =
            sqs.create_queue().queue_name(&bus).send().await.expect("create the queue").queue_url.expect("its URL");
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("the queue's ARN");
        let queue_arn = attributes.attributes.and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned()).expect("ARN");
        let path = Self { bus, queue_url, eventbridge, sqs, queue_arn };
        for (suffix, pattern) in PATTERNS {
            path.rule(&format!("{}-{suffix}", path.bus), pattern).await;
        }
        path
    }

    /// One more rule on the bus with `pattern`, sending to the queue (a second rule that
    /// matches an event delivers it twice, with one id).
    pub async fn rule(&self, name: &str, pattern: &str) {
        self.eventbridge
            .put_rule()
            .name(name)
            .event_bus_name(&self.bus)
            .event_pattern(pattern)
            .send()
            .await
            .expect("put the rule");
        let target =
            aws_sdk_eventbridge::types::Target::builder().id("queue").arn(&self.queue_arn).build().expect("a target");
        self.eventbridge
            .put_targets()
            .rule(name)
            .event_bus_name(&self.bus)
            .targets(target)
            .send()
            .await
            .expect("put the target");
    }

    /// The ECS/RDS pattern as shipped (for a second rule).
    pub fn ecs_rds_pattern() -> &'static str {
        PATTERNS[0].1
    }

    /// Puts an AWS-shaped event on the bus, as the service would; its id.
    pub async fn put(&self, source: &str, detail_type: &str, resources: &[String], detail: Value) -> String {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(source)
            .detail_type(detail_type)
            .set_resources(Some(resources.to_vec()))
            .detail(detail.to_string())
            .build();
        let out = self.eventbridge.put_events().entries(entry).send().await.expect("put the event");
        assert_eq!(out.failed_entry_count, 0, "{out:?}");
        out.entries.unwrap_or_default().remove(0).event_id.expect("an event id")
    }

    /// Writes a message straight to the queue (what no rule would send: garbage).
    pub async fn send_raw(&self, body: &str) {
        self.sqs.send_message().queue_url(&self.queue_url).message_body(body).send().await.expect("send");
    }

    /// Messages in the queue, visible or in flight.
    pub async fn depth(&self) -> u64 {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes");
        let attributes = out.attributes.unwrap_or_default();
        attributes.values().map(|v| v.parse::<u64>().expect("a count")).sum()
    }

    /// Deletes the queue.
    pub async fn delete_queue(&self) {
        self.sqs.delete_queue().queue_url(&self.queue_url).send().await.expect("delete the queue");
    }
}

/// The value of one sample of the controller's `/metrics` text whose labels include all of
/// `labels` (0 when none does), summed over the samples that match.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .filter(|(series, _)| labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))))
        .map(|(_, value)| value.parse::<f64>().expect("a number"))
        .sum()
}
