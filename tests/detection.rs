//! Detection against the real parts: the controller process, the API server, moto and the
//! fault layer.

mod support;

use std::time::Duration;

use aws_recovery_controller::api::Severity;
use aws_recovery_controller::api::incident::{IncidentPhase, IncidentType};
use kube::ResourceExt;
use serde_json::json;

use support::controller::ControllerProcess;
use support::{Faults, aws, eventually, kubectl, namespace, policy, unique};

const WAIT: Duration = Duration::from_secs(40);

fn ecs_policy(cluster: &str, services: &[&str], failure: u32) -> serde_json::Value {
    json!({
        "aws": {"region": "us-east-1"},
        "probeInterval": "2s",
        "targets": {"ecsServices": [{"cluster": cluster, "services": services}]},
        "detection": {"failureThreshold": failure, "successThreshold": 2},
        "remediation": {"mode": "Disabled"}
    })
}

#[tokio::test]
async fn ecs_degrade_opens_one_incident_heal_resolves_relapse_opens_anew() {
    let client = support::client().await;
    let ns = namespace(&client, "det-ecs").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("det");
    aws::ecs_services(&cfg, &cluster, &["checkout".into()], 3).await;
    policy::create(&client, &ns, "shop", ecs_policy(&cluster, &["checkout"], 2)).await;
    let _ctl = ControllerProcess::start(&ns);
    let target = format!("ecs/{cluster}/checkout");

    // Healthy first: the policy becomes Ready with counts, and nothing opens.
    eventually("policy ready", WAIT, || async {
        let p = policy::get(&client, &ns, "shop").await;
        (policy::condition(&p, "Ready").map(|c| c.0) == Some("True".into())).then_some(())
    })
    .await;
    let p = policy::get(&client, &ns, "shop").await;
    let counts = p.status.unwrap().targets.unwrap();
    assert_eq!((counts.total, counts.healthy, counts.unhealthy), (1, 1, 0));

    faults.ecs_service(json!({"cluster": cluster, "service": "checkout", "runningCount": 1})).await;
    let inc =
        eventually("a service incident", WAIT, || async { policy::open_for(&client, &ns, &target).await.pop() }).await;
    assert_eq!(inc.spec.type_, IncidentType::Service);
    assert_eq!(inc.spec.severity, Severity::High);
    assert_eq!(
        inc.spec.description,
        "ECS service checkout in cluster prod runs 1 of 3 desired tasks (0 pending)".replace("prod", &cluster)
    );
    uuid::Uuid::parse_str(&inc.spec.id).expect("the id is a uuid");
    let status = inc.status.clone().unwrap();
    assert_eq!(status.phase, Some(IncidentPhase::Detected));
    let m = status.metrics.unwrap();
    assert_eq!((m.running_count, m.desired_count, m.pending_count), (Some(1), Some(3), Some(0)));
    assert!(m.primary_deployment.is_some());
    assert_eq!(inc.owner_references()[0].name, "shop");

    // Still unhealthy for a few more probes: still exactly one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(policy::open_for(&client, &ns, &target).await.len(), 1);

    faults.ecs_service(json!({"cluster": cluster, "service": "checkout", "runningCount": 3})).await;
    let resolved = eventually("resolution", WAIT, || async {
        let all = policy::incidents(&client, &ns).await;
        all.into_iter().find(|i| i.status.as_ref().and_then(|s| s.phase) == Some(IncidentPhase::Resolved))
    })
    .await;
    assert_eq!(resolved.metadata.name, inc.metadata.name);
    assert!(resolved.status.unwrap().resolved_at.is_some());

    faults.ecs_service(json!({"cluster": cluster, "service": "checkout", "runningCount": 0})).await;
    let relapse =
        eventually("a new incident", WAIT, || async { policy::open_for(&client, &ns, &target).await.pop() }).await;
    assert_ne!(relapse.metadata.name, inc.metadata.name, "a relapse is a new incident");
    assert_ne!(relapse.spec.id, inc.spec.id);
    assert_eq!(policy::incidents(&client, &ns).await.len(), 2);

    // kubectl shows the columns across namespaces, and describe shows the policy's Events.
    let out = kubectl(&["get", "incidents", "-A"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().next().unwrap().split_whitespace().eq([
            "NAMESPACE",
            "NAME",
            "TYPE",
            "SEVERITY",
            "TARGET",
            "PHASE",
            "AGE"
        ]),
        "{text}"
    );
    let out = kubectl(&["describe", "recoverypolicy", "shop", "-n", &ns], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("IncidentOpened") && text.contains("IncidentResolved"), "{text}");
}

#[tokio::test]
async fn rds_and_route53_incidents() {
    let client = support::client().await;
    let ns = namespace(&client, "det-rds").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let db = unique("db");
    aws::rds_instance(&cfg, &db, true).await;
    let hc = aws::health_check(&cfg, "api.example.com").await;
    policy::create(
        &client,
        &ns,
        "data",
        json!({
            // Calls go through an assumed role (STS AssumeRole, against moto).
            "aws": {"region": "us-east-1", "roleArn": "arn:aws:iam::123456789012:role/recovery-controller"},
            "probeInterval": "2s",
            "targets": {"rdsInstances": [{"identifier": db}], "route53HealthChecks": [{"healthCheckId": hc}]},
            "detection": {"failureThreshold": 1, "successThreshold": 1},
            "remediation": {"mode": "Disabled"}
        }),
    )
    .await;
    let _ctl = ControllerProcess::start(&ns);
    faults.rds_instance(json!({"dbInstanceIdentifier": db, "status": "stopped", "pin": true})).await;
    faults.health_check(&hc, 2, 3).await;

    let db_inc = eventually("database incident", WAIT, || async {
        policy::open_for(&client, &ns, &format!("rds/{db}")).await.pop()
    })
    .await;
    assert_eq!((db_inc.spec.type_, db_inc.spec.severity), (IncidentType::Database, Severity::Critical));
    let m = db_inc.status.unwrap().metrics.unwrap();
    assert_eq!((m.db_status.as_deref(), m.multi_az), (Some("stopped"), Some(true)));

    let net = eventually("network incident", WAIT, || async {
        policy::open_for(&client, &ns, &format!("route53/{hc}")).await.pop()
    })
    .await;
    assert_eq!((net.spec.type_, net.spec.severity), (IncidentType::Network, Severity::High));
    let m = net.status.unwrap().metrics.unwrap();
    assert_eq!(
        (m.health_check_id.as_deref(), m.failing_observations, m.total_observations),
        (Some(hc.as_str()), Some(2), Some(3))
    );
    faults.clear_health_check(&hc).await;
    let assumed = faults.log("sts", "AssumeRole").await;
    assert!(!assumed.is_empty(), "the role was assumed through STS");
}

#[tokio::test]
async fn a_flap_below_the_threshold_opens_nothing() {
    let client = support::client().await;
    let ns = namespace(&client, "det-flap").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("flap");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 2).await;
    policy::create(&client, &ns, "flappy", ecs_policy(&cluster, &["web"], 4)).await;
    let _ctl = ControllerProcess::start(&ns);
    // Unhealthy for about two probes at a time, then healthy: never four in a row, even if
    // the machine is slow and a sleep overshoots.
    for _ in 0..4 {
        faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 1})).await;
        tokio::time::sleep(Duration::from_millis(3000)).await;
        faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 2})).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let p = policy::get(&client, &ns, "flappy").await;
    assert!(p.status.and_then(|s| s.last_probe_time).is_some(), "the policy was probed");
    assert!(policy::incidents(&client, &ns).await.is_empty(), "a flap below failureThreshold opens nothing");
}

#[tokio::test]
async fn twenty_five_services_cost_three_calls_per_probe() {
    let client = support::client().await;
    let ns = namespace(&client, "det-batch").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("batch");
    let services: Vec<String> = (0..25).map(|i| format!("svc-{i:02}")).collect();
    aws::ecs_services(&cfg, &cluster, &services, 1).await;
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    policy::create(&client, &ns, "many", ecs_policy(&cluster, &names, 2)).await;
    let ctl = ControllerProcess::start(&ns);
    let p = eventually("two probe cycles", WAIT, || async {
        let p = policy::get(&client, &ns, "many").await;
        let calls = faults.calls_for("ecs", "DescribeServices", "cluster", &cluster).await.len();
        (calls >= 6 && p.status.as_ref().is_some_and(|s| s.targets.as_ref().is_some_and(|t| t.healthy == 25)))
            .then_some(p)
    })
    .await;
    ctl.kill();
    let calls = faults.calls_for("ecs", "DescribeServices", "cluster", &cluster).await;
    let per_call: Vec<usize> = calls.iter().map(|c| c["params"]["services"].as_array().map_or(0, Vec::len)).collect();
    assert!(per_call.iter().all(|n| *n == 10 || *n == 5), "10 + 10 + 5 services per cycle: {per_call:?}");
    // One call of five closes each cycle; the kill may cut the last cycle short.
    let cycles = per_call.iter().filter(|n| **n == 5).count();
    let tens = per_call.iter().filter(|n| **n == 10).count();
    assert!(cycles >= 2 && tens.abs_diff(2 * cycles) <= 2, "3 calls per cycle: {per_call:?}");
    assert_eq!(p.status.unwrap().targets.unwrap().total, 25);
}

#[tokio::test]
async fn policies_probing_together_share_calls() {
    let client = support::client().await;
    let ns = namespace(&client, "det-share").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("share");
    let services: Vec<String> = (0..25).map(|i| format!("svc-{i:02}")).collect();
    aws::ecs_services(&cfg, &cluster, &services, 1).await;
    let dbs: Vec<String> = (0..2).map(|i| unique(&format!("share-db{i}"))).collect();
    for db in &dbs {
        aws::rds_instance(&cfg, db, false).await;
    }
    // Five teams, five services each in one cluster; two of them also own a database.
    for (team, names) in services.chunks(5).enumerate() {
        let rds: Vec<_> = dbs.get(team).map(|db| json!({"identifier": db})).into_iter().collect();
        let spec = json!({
            "aws": {"region": "us-east-1"},
            "probeInterval": "2s",
            "targets": {"ecsServices": [{"cluster": cluster, "services": names}], "rdsInstances": rds},
            "remediation": {"mode": "Disabled"}
        });
        policy::create(&client, &ns, &format!("team-{team}"), spec).await;
    }
    // A wider window than the default 50 ms: a debug build on a busy machine may take that
    // long between the first and the last policy's reconcile of one cycle.
    let ctl = ControllerProcess::start_with(&ns, &[("RECOVERY_PROBE_BATCH_WINDOW", "300ms")]);
    tokio::time::sleep(Duration::from_secs(11)).await;
    ctl.kill();

    // Group the calls into cycles by the 2 s probe grid they start on; the first and last
    // cycles may be cut short.
    let ecs = faults.calls_for("ecs", "DescribeServices", "cluster", &cluster).await;
    let rds: Vec<_> = faults
        .log("rds", "DescribeDBInstances")
        .await
        .into_iter()
        .filter(|e| e.to_string().contains(&dbs[0]) || e.to_string().contains(&dbs[1]))
        .collect();
    let slot = |e: &serde_json::Value| (e["time"].as_f64().expect("log entries have a time") / 2.0).floor() as i64;
    let mut cycles: Vec<i64> = ecs.iter().map(slot).collect();
    cycles.dedup();
    assert!(cycles.len() >= 4, "at least four probe cycles in 11 s at a 2 s interval: {cycles:?}");
    let middle = &cycles[1..cycles.len() - 1];
    let mut shared = 0;
    let mut seen = Vec::new();
    for cycle in middle {
        let mut sizes: Vec<usize> = ecs
            .iter()
            .filter(|e| slot(e) == *cycle)
            .map(|c| c["params"]["services"].as_array().map_or(0, Vec::len))
            .collect();
        sizes.sort();
        let rds_calls = rds.iter().filter(|e| slot(e) == *cycle).count();
        // Each policy alone has five services and one database: 10 + 10 + 5 and one RDS call
        // happen only when the five policies' reads share calls.
        if sizes == [5, 10, 10] && rds_calls == 1 {
            shared += 1;
        }
        seen.push((sizes, rds_calls));
    }
    // A probe that starts later than the window (a loaded machine) goes alone; most do not.
    assert!(2 * shared >= middle.len(), "25 services in three calls, two databases in one, per cycle: {seen:?}");
}

#[tokio::test]
async fn throttling_opens_nothing_says_why_and_detection_resumes() {
    let client = support::client().await;
    let ns = namespace(&client, "det-throttle").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("thr");
    aws::ecs_services(&cfg, &cluster, &["api".into()], 2).await;
    policy::create(&client, &ns, "throttled", ecs_policy(&cluster, &["api"], 1)).await;
    let rule = faults
        .rule(json!({"service": "ecs", "operation": "DescribeServices", "match": {"cluster": cluster}, "error": "ThrottlingException"}))
        .await;
    let _ctl = ControllerProcess::start(&ns);
    let (_, reason, message) = eventually("AwsReachable=False", WAIT, || async {
        let p = policy::get(&client, &ns, "throttled").await;
        policy::condition(&p, "AwsReachable").filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(reason, "ThrottlingException");
    assert!(message.contains("ecs:DescribeServices"), "{message}");
    let p = policy::get(&client, &ns, "throttled").await;
    assert_eq!(policy::condition(&p, "Ready").unwrap().1, "AwsUnreachable");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(policy::incidents(&client, &ns).await.is_empty(), "an AWS error is not an unhealthy target");

    faults.remove_rule(&rule).await;
    faults.ecs_service(json!({"cluster": cluster, "service": "api", "runningCount": 0})).await;
    eventually("AwsReachable=True", WAIT, || async {
        let p = policy::get(&client, &ns, "throttled").await;
        policy::condition(&p, "AwsReachable").filter(|c| c.0 == "True")
    })
    .await;
    eventually("detection resumes", WAIT, || async {
        policy::open_for(&client, &ns, &format!("ecs/{cluster}/api")).await.pop()
    })
    .await;
}

#[tokio::test]
async fn restarts_never_make_a_second_open_incident() {
    let client = support::client().await;
    let ns = namespace(&client, "det-restart").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("rst");
    aws::ecs_services(&cfg, &cluster, &["pay".into()], 2).await;
    policy::create(&client, &ns, "pay", ecs_policy(&cluster, &["pay"], 2)).await;
    faults.ecs_service(json!({"cluster": cluster, "service": "pay", "runningCount": 0})).await;
    let target = format!("ecs/{cluster}/pay");
    // Kill the controller at varied points of its cycles, restarting it each time.
    for delay_ms in [700u64, 1900, 2600, 3300, 4100, 5200] {
        let ctl = ControllerProcess::start(&ns);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        ctl.kill();
        let open = policy::all_for(&client, &ns, &target).await;
        assert!(open.len() <= 1, "after a kill at {delay_ms}ms: {:?}", policy::names(&open));
    }
    let _ctl = ControllerProcess::start(&ns);
    eventually("the incident", WAIT, || async { policy::open_for(&client, &ns, &target).await.pop() }).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let all = policy::incidents(&client, &ns).await;
    assert_eq!(all.len(), 1, "one incident in all: {:?}", policy::names(&all));
}
