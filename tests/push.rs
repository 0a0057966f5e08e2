//! Push detection against the real parts: AWS-shaped events put on an EventBridge bus (in
//! moto) reach the controller through the shipped rules and an SQS queue, and wake the
//! probes of the targets they name. Every policy here polls once an hour with a flap guard
//! of three, so an incident that opens within the test's wait was opened by an event and
//! the probe it woke, never by polling alone (except where the test says polling).

mod support;

use std::time::Duration;

use serde_json::{Value, json};

use support::controller::ControllerProcess;
use support::events::{EventPath, sample};
use support::{Faults, aws, eventually, namespace, policy, unique};

const WAIT: Duration = Duration::from_secs(40);
const ACCOUNT: &str = "123456789012";

fn spec(targets: Value, events: &str, interval: &str) -> Value {
    json!({
        "aws": {"region": "us-east-1"},
        "probeInterval": interval,
        "targets": targets,
        "detection": {"failureThreshold": 3, "successThreshold": 2, "events": events},
        "remediation": {"mode": "Disabled"}
    })
}

/// Starts the controller on `ns` reading the path's queue, and waits until the policy is
/// Ready and says it receives events.
async fn start(client: &kube::Client, ns: &str, path: &EventPath) -> ControllerProcess {
    let ctl = ControllerProcess::start_args(&["--namespace", ns, "--event-queue", &path.queue_url], &[]);
    eventually("the policy ready and receiving events", WAIT, || async {
        let p = policy::get(client, ns, "p").await;
        let ready = policy::condition(&p, "Ready").map(|c| c.0) == Some("True".into());
        let push = policy::condition(&p, "PushDetection");
        (ready && push.as_ref().map(|c| (c.0.as_str(), c.1.as_str())) == Some(("True", "Receiving"))).then_some(())
    })
    .await;
    ctl
}

/// The seq of the last fault-layer log entry of an operation so far (0 when none).
async fn last_seq(faults: &Faults, service: &str, operation: &str) -> u64 {
    faults.log(service, operation).await.iter().filter_map(|e| e["seq"].as_u64()).max().unwrap_or(0)
}

/// The fault layer's log entry of the last PutEvents onto the path's bus (other tests put
/// theirs on their own buses at the same time).
async fn last_put(faults: &Faults, path: &EventPath) -> (u64, f64) {
    let puts = faults.log("events", "PutEvents").await;
    let ours = puts.iter().rfind(|e| e["params"]["entries"][0]["EventBusName"] == json!(path.bus)).expect("our put");
    (ours["seq"].as_u64().unwrap(), ours["time"].as_f64().unwrap())
}

fn ecs_service_action(cluster: &str, service: &str, event_type: &str) -> (Vec<String>, Value) {
    let arn = format!("arn:aws:ecs:us-east-1:{ACCOUNT}:service/{cluster}/{service}");
    (
        vec![arn],
        json!({"eventType": event_type, "eventName": "SERVICE_TASK_START_IMPAIRED",
                       "clusterArn": format!("arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/{cluster}")}),
    )
}

/// The opt-in path end to end: a degraded service, then AWS's WARN event about it. The
/// event wakes one probe of that service; its unhealthy answer and the event together open
/// the incident at once. The order is read from the fault layer's log: the event is put,
/// the queue answers it and the message is deleted, the service is read, the incident opens.
#[tokio::test]
async fn an_ecs_event_wakes_the_probe_and_corroborates_the_incident() {
    let client = support::client().await;
    let ns = namespace(&client, "push-ecs").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("push");
    aws::ecs_services(&cfg, &cluster, &["checkout".into(), "cart".into()], 3).await;
    let path = EventPath::new(&cfg, "push-ecs").await;
    let targets = json!({"ecsServices": [{"cluster": cluster, "services": ["checkout", "cart"]}]});
    policy::create(&client, &ns, "p", spec(targets, "Corroborate", "1h")).await;
    let ctl = start(&client, &ns, &path).await;
    let target = format!("ecs/{cluster}/checkout");

    faults.ecs_service(json!({"cluster": cluster, "service": "checkout", "runningCount": 1})).await;
    let before = last_seq(&faults, "ecs", "DescribeServices").await;
    let (resources, detail) = ecs_service_action(&cluster, "checkout", "WARN");
    path.put("aws.ecs", "ECS Service Action", &resources, detail).await;
    let (put, put_time) = last_put(&faults, &path).await;
    assert!(put > before);

    let incident = eventually("the incident, opened by the event and its probe", WAIT, || async {
        policy::open_for(&client, &ns, &target).await.pop()
    })
    .await;
    let reads: Vec<Value> = faults
        .calls_for("ecs", "DescribeServices", "cluster", &cluster)
        .await
        .into_iter()
        .filter(|e| e["seq"].as_u64() > Some(put))
        .collect();
    assert_eq!(reads.len(), 1, "one woken probe, of the named service only: {reads:?}");
    assert_eq!(reads[0]["params"]["services"], json!(["checkout"]), "only the service the event names is read");
    // The message came in a long poll that was waiting when the event was put, and was
    // deleted after.
    let deleted = faults.calls_for("sqs", "DeleteMessageBatch", "QueueUrl", &path.queue_url).await;
    let deleted_at = deleted.iter().filter_map(|e| e["seq"].as_u64()).find(|s| *s > put).expect("the message deleted");
    let received = faults.calls_for("sqs", "ReceiveMessage", "QueueUrl", &path.queue_url).await;
    let carried = received.iter().filter(|e| e["seq"].as_u64() < Some(deleted_at)).any(|e| {
        let (arrived, took) = (e["time"].as_f64().unwrap(), e["durationMs"].as_f64().unwrap_or(0.0) / 1000.0);
        arrived + took >= put_time
    });
    assert!(carried, "a ReceiveMessage answered after the put, before the delete: {received:?}");
    assert!(incident.spec.description.contains("1 of 3"), "{}", incident.spec.description);

    let events = support::events(&client, &ns, "p").await;
    let corroborated = events.iter().find(|e| e.1 == "EventCorroborated").expect("an EventCorroborated Event");
    assert!(
        corroborated.2.contains("aws.ecs ECS Service Action") && corroborated.2.contains(&target),
        "{corroborated:?}"
    );
    let (_, metrics) = ctl.get("/metrics").await;
    let matched = [("source", "aws.ecs"), ("detail_type", "ECS Service Action"), ("outcome", "matched")];
    assert_eq!(sample(&metrics, "recovery_events_total", &matched), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "recovery_probes_woken_total", &[]), 1.0);
    assert_eq!(sample(&metrics, "recovery_targets_woken_total", &[]), 1.0);
    assert_eq!(sample(&metrics, "recovery_event_queue_up", &[("queue", &path.queue_url)]), 1.0);

    // The healthy service was never woken, and polling has not run since the first probe.
    let p = policy::get(&client, &ns, "p").await;
    let states = p.status.unwrap().target_states;
    let cart = states.iter().find(|s| s.target.ends_with("/cart")).expect("cart's state");
    assert_eq!(cart.consecutive_failures, 0);
}

/// Without the opt-in (`Wake`, the default), an event probes at once but the answer counts
/// like any other: one unhealthy answer of three needed opens nothing. One event delivered
/// twice (two rules match it; EventBridge gives both deliveries one id) wakes one probe.
#[tokio::test]
async fn an_event_delivered_twice_wakes_once_and_alone_opens_nothing() {
    let client = support::client().await;
    let ns = namespace(&client, "push-dup").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("pdup");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 2).await;
    let path = EventPath::new(&cfg, "push-dup").await;
    path.rule(&format!("{}-again", path.bus), EventPath::ecs_rds_pattern()).await;
    let targets = json!({"ecsServices": [{"cluster": cluster, "services": ["web"]}]});
    policy::create(&client, &ns, "p", spec(targets, "Wake", "1h")).await;
    let ctl = start(&client, &ns, &path).await;

    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 0})).await;
    let (resources, detail) = ecs_service_action(&cluster, "web", "ERROR");
    path.put("aws.ecs", "ECS Service Action", &resources, detail).await;
    let (put, _) = last_put(&faults, &path).await;
    let outcome = |o: &'static str| [("source", "aws.ecs"), ("detail_type", "ECS Service Action"), ("outcome", o)];
    eventually("both deliveries read: one matched, one duplicate", WAIT, || async {
        let (_, m) = ctl.get("/metrics").await;
        let counts = (
            sample(&m, "recovery_events_total", &outcome("matched")),
            sample(&m, "recovery_events_total", &outcome("duplicate")),
        );
        (counts == (1.0, 1.0)).then_some(())
    })
    .await;
    eventually("the woken probe's answer recorded", WAIT, || async {
        let p = policy::get(&client, &ns, "p").await;
        let states = p.status.unwrap_or_default().target_states;
        states.iter().any(|s| s.consecutive_failures == 1).then_some(())
    })
    .await;
    // Give a second (wrong) wake every chance to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reads = faults.calls_for("ecs", "DescribeServices", "cluster", &cluster).await;
    let woken = reads.iter().filter(|e| e["seq"].as_u64() > Some(put)).count();
    assert_eq!(woken, 1, "one probe for two deliveries of one event");
    assert!(policy::open_for(&client, &ns, &format!("ecs/{cluster}/web")).await.is_empty(), "one answer of three");
    assert_eq!(path.depth().await, 0, "both deliveries deleted");
}

/// What wakes nothing is still deleted and counted, never retried: messages that are not
/// events, and events about resources no policy watches.
#[tokio::test]
async fn garbage_and_unwatched_events_are_deleted_and_counted() {
    let client = support::client().await;
    let ns = namespace(&client, "push-junk").await;
    let cfg = aws::config().await;
    let cluster = unique("pjunk");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 1).await;
    let path = EventPath::new(&cfg, "push-junk").await;
    let targets = json!({"ecsServices": [{"cluster": cluster, "services": ["web"]}]});
    policy::create(&client, &ns, "p", spec(targets, "Wake", "1h")).await;
    let ctl = start(&client, &ns, &path).await;

    path.send_raw("this is not an event").await;
    path.send_raw(r#"{"Type": "Notification", "Message": "an SNS envelope"}"#).await;
    let (resources, detail) = ecs_service_action(&cluster, "not-watched", "ERROR");
    path.put("aws.ecs", "ECS Service Action", &resources, detail).await;
    let rds =
        json!({"EventCategories": ["failure"], "SourceType": "DB_INSTANCE", "SourceIdentifier": "nobody-watches-this"});
    path.put(
        "aws.rds",
        "RDS DB Instance Event",
        &[format!("arn:aws:rds:us-east-1:{ACCOUNT}:db:nobody-watches-this")],
        rds,
    )
    .await;
    eventually("every message counted", WAIT, || async {
        let (_, m) = ctl.get("/metrics").await;
        let unreadable = sample(&m, "recovery_events_total", &[("outcome", "unreadable")]);
        let unwatched = sample(&m, "recovery_events_total", &[("outcome", "unwatched")]);
        (unreadable == 2.0 && unwatched == 2.0).then_some(())
    })
    .await;
    let (_, m) = ctl.get("/metrics").await;
    assert_eq!(sample(&m, "recovery_events_total", &[("source", "aws.rds"), ("outcome", "unwatched")]), 1.0, "{m}");
    assert_eq!(sample(&m, "recovery_events_total", &[("outcome", "matched")]), 0.0);
    assert_eq!(sample(&m, "recovery_probes_woken_total", &[]), 0.0);
    eventually("the queue empty", WAIT, || async { (path.depth().await == 0).then_some(()) }).await;
    assert!(ctl.log_text().contains("not an AWS event"), "the garbage is logged");
}

/// A queue that goes away is a condition naming AWS's error, and detection goes on by
/// polling.
#[tokio::test]
async fn a_deleted_queue_is_a_condition_and_polling_still_detects() {
    let client = support::client().await;
    let ns = namespace(&client, "push-gone").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("pgone");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 2).await;
    let path = EventPath::new(&cfg, "push-gone").await;
    let targets = json!({"ecsServices": [{"cluster": cluster, "services": ["web"]}]});
    let mut s = spec(targets, "Corroborate", "2s");
    s["detection"]["failureThreshold"] = json!(2);
    policy::create(&client, &ns, "p", s).await;
    let ctl = start(&client, &ns, &path).await;

    path.delete_queue().await;
    let message = eventually("PushDetection False, naming the error", WAIT, || async {
        let p = policy::get(&client, &ns, "p").await;
        policy::condition(&p, "PushDetection").filter(|c| c.0 == "False" && c.1 == "QueueUnreadable").map(|c| c.2)
    })
    .await;
    let named = message.contains("NonExistentQueue") || message.contains("QueueDoesNotExist");
    assert!(message.contains(&path.queue_url) && named, "{message}");
    assert!(message.contains("detection is by polling every 2s"), "{message}");
    let (_, m) = ctl.get("/metrics").await;
    assert_eq!(sample(&m, "recovery_event_queue_up", &[("queue", &path.queue_url)]), 0.0, "{m}");

    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 1})).await;
    let target = format!("ecs/{cluster}/web");
    eventually("an incident by polling", WAIT, || async { policy::open_for(&client, &ns, &target).await.pop() }).await;
    let p = policy::get(&client, &ns, "p").await;
    assert_eq!(policy::condition(&p, "Ready").map(|c| c.0), Some("True".into()), "the controller carries on");
}

/// RDS events name an instance or a cluster by identifier; each wakes its own target.
#[tokio::test]
async fn rds_instance_and_cluster_events_wake_their_probes() {
    let client = support::client().await;
    let ns = namespace(&client, "push-rds").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let db = unique("pdb");
    let cluster = unique("pcl");
    let members = [format!("{cluster}-a"), format!("{cluster}-b")];
    aws::rds_instance(&cfg, &db, true).await;
    aws::rds_cluster(&cfg, &cluster, &members).await;
    let path = EventPath::new(&cfg, "push-rds").await;
    let targets = json!({"rdsInstances": [{"identifier": db}], "rdsClusters": [{"identifier": cluster}]});
    policy::create(&client, &ns, "p", spec(targets, "Corroborate", "1h")).await;
    let ctl = start(&client, &ns, &path).await;

    faults.rds_instance(json!({"dbInstanceIdentifier": db, "status": "failed", "pin": true})).await;
    let detail = json!({"EventCategories": ["failure"], "SourceType": "DB_INSTANCE", "SourceIdentifier": db,
                        "EventID": "RDS-EVENT-0031", "Message": "DB instance put into a failed state"});
    path.put("aws.rds", "RDS DB Instance Event", &[format!("arn:aws:rds:us-east-1:{ACCOUNT}:db:{db}")], detail).await;
    let instance = format!("rds/{db}");
    eventually("the instance's incident", WAIT, || async { policy::open_for(&client, &ns, &instance).await.pop() })
        .await;

    faults.rds_instance(json!({"dbInstanceIdentifier": members[0], "status": "failed", "pin": true})).await;
    let detail = json!({"EventCategories": ["failover"], "SourceType": "CLUSTER", "SourceIdentifier": cluster,
                        "EventID": "RDS-EVENT-0069", "Message": "Started cross AZ failover"});
    let arn = format!("arn:aws:rds:us-east-1:{ACCOUNT}:cluster:{cluster}");
    path.put("aws.rds", "RDS DB Cluster Event", &[arn], detail).await;
    let target = format!("rdscluster/{cluster}");
    eventually("the cluster's incident", WAIT, || async { policy::open_for(&client, &ns, &target).await.pop() }).await;
    let (_, m) = ctl.get("/metrics").await;
    for detail_type in ["RDS DB Instance Event", "RDS DB Cluster Event"] {
        let matched = [("source", "aws.rds"), ("detail_type", detail_type), ("outcome", "matched")];
        assert_eq!(sample(&m, "recovery_events_total", &matched), 1.0, "{detail_type}: {m}");
    }
}

/// Route 53 health checks are heard through CloudWatch alarms on their metric.
#[tokio::test]
async fn a_route53_alarm_wakes_the_health_check_probe() {
    let client = support::client().await;
    let ns = namespace(&client, "push-dns").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let record = format!("api.{}.example.com", unique("pz"));
    let hc = aws::health_check(&cfg, &record).await;
    let path = EventPath::new(&cfg, "push-dns").await;
    let targets = json!({"route53HealthChecks": [{"healthCheckId": hc}]});
    policy::create(&client, &ns, "p", spec(targets, "Corroborate", "1h")).await;
    let ctl = start(&client, &ns, &path).await;

    faults.health_check(&hc, 3, 3).await;
    let detail = json!({
        "alarmName": format!("{hc}-unhealthy"),
        "state": {"value": "ALARM", "reason": "Threshold Crossed"},
        "previousState": {"value": "OK"},
        "configuration": {"metrics": [{"id": "m1", "metricStat": {"metric": {
            "namespace": "AWS/Route53", "name": "HealthCheckStatus", "dimensions": {"HealthCheckId": hc}},
            "period": 60, "stat": "Minimum"}, "returnData": true}]}
    });
    let alarm = format!("arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:{hc}-unhealthy");
    path.put("aws.cloudwatch", "CloudWatch Alarm State Change", &[alarm], detail).await;
    let target = format!("route53/{hc}");
    eventually("the health check's incident", WAIT, || async { policy::open_for(&client, &ns, &target).await.pop() })
        .await;
    let (_, m) = ctl.get("/metrics").await;
    let matched = [("source", "aws.cloudwatch"), ("outcome", "matched")];
    assert_eq!(sample(&m, "recovery_events_total", &matched), 1.0, "{m}");
}
