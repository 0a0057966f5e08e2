//! Valid manifests that point at nothing: a missing ECS cluster, an unknown RDS instance, an
//! unknown health check, a missing alert Secret, a region whose endpoint cannot be reached.
//! Each must open no incident, say what is wrong in a condition, keep the process healthy,
//! and not spin: AWS is asked once per probe cycle, and an unreachable one less and less often.

mod support;

use std::time::Duration;

use serde_json::{Value, json};

use support::controller::ControllerProcess;
use support::{Faults, aws, eventually, namespace, plans, policy, unique};

const WAIT: Duration = Duration::from_secs(60);

fn spec(region: &str, targets: Value) -> Value {
    json!({
        "aws": {"region": region},
        "probeInterval": "2s",
        "targets": targets,
        "detection": {"failureThreshold": 1, "successThreshold": 1},
        "remediation": {"mode": "Automatic", "cooldown": "0s", "maxUnhealthyPercent": 100}
    })
}

/// Applies the policy, waits for `condition` False with `reason`, checks nothing opened and
/// the process is healthy, and returns the condition's message, the controller and the
/// namespace.
async fn points_at_nothing(
    prefix: &str,
    spec: Value,
    condition: &str,
    reason: &str,
) -> (String, ControllerProcess, String) {
    let client = support::client().await;
    let ns = namespace(&client, prefix).await;
    policy::create(&client, &ns, "p", spec).await;
    let ctl = ControllerProcess::start(&ns);
    let (_, got, message) = eventually(&format!("{condition}=False"), WAIT, || async {
        let p = policy::get(&client, &ns, "p").await;
        policy::condition(&p, condition).filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(got, reason, "{message}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(policy::incidents(&client, &ns).await.is_empty(), "no incident for what does not exist");
    assert!(plans::all(&client, &ns).await.is_empty());
    assert_eq!(ctl.get("/healthz").await.0, 200, "no crash");
    let p = policy::get(&client, &ns, "p").await;
    assert_eq!(policy::condition(&p, "Ready").map(|c| c.0).as_deref(), Some("False"), "Ready says so too");
    (message, ctl, ns)
}

/// Log entries of one operation whose params mention `needle` anywhere.
async fn calls_mentioning(faults: &Faults, service: &str, operation: &str, needle: &str) -> Vec<Value> {
    faults.log(service, operation).await.into_iter().filter(|e| e["params"].to_string().contains(needle)).collect()
}

/// Over `window`, the target is asked about at most once per 2 s probe cycle (plus slack).
async fn no_hot_loop(faults: &Faults, service: &str, operation: &str, needle: &str) {
    let before = calls_mentioning(faults, service, operation, needle).await.len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = calls_mentioning(faults, service, operation, needle).await.len() - before;
    assert!((1..=7).contains(&during), "{service}:{operation} for {needle}: {during} calls in 10 s at a 2 s interval");
}

#[tokio::test]
async fn a_missing_ecs_cluster() {
    let cluster = unique("nocluster");
    let targets = json!({"ecsServices": [{"cluster": cluster, "services": ["web"]}]});
    let (message, _ctl, _) =
        points_at_nothing("nothing-ecs", spec("us-east-1", targets), "TargetsFound", "TargetsMissing").await;
    assert!(message.contains(&format!("ecs/{cluster}/web")), "{message}");
    no_hot_loop(&Faults::from_env(), "ecs", "DescribeServices", &cluster).await;
}

#[tokio::test]
async fn an_unknown_rds_instance() {
    let db = unique("nodb");
    let targets = json!({"rdsInstances": [{"identifier": db}]});
    let (message, _ctl, _) =
        points_at_nothing("nothing-rds", spec("us-east-1", targets), "TargetsFound", "TargetsMissing").await;
    assert!(message.contains(&format!("rds/{db}")), "{message}");
    no_hot_loop(&Faults::from_env(), "rds", "DescribeDBInstances", &db).await;
}

#[tokio::test]
async fn an_unknown_health_check() {
    let hc = uuid::Uuid::new_v4().to_string();
    let targets = json!({"route53HealthChecks": [{"healthCheckId": hc}]});
    let (message, _ctl, _) =
        points_at_nothing("nothing-hc", spec("us-east-1", targets), "TargetsFound", "TargetsMissing").await;
    assert!(message.contains(&format!("route53/{hc}")), "{message}");
    no_hot_loop(&Faults::from_env(), "route53", "GetHealthCheckStatus", &hc).await;
}

#[tokio::test]
async fn a_missing_alert_secret() {
    let cfg = aws::config().await;
    let cluster = unique("nosecret");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 2).await;
    let mut s = spec("us-east-1", json!({"ecsServices": [{"cluster": cluster, "services": ["web"]}]}));
    s["alerts"] = json!({"slack": {"webhookSecretRef": {"name": "nowhere", "key": "url"}, "channel": "#incidents"}});
    let (message, ctl, _) = points_at_nothing("nothing-secret", s, "AlertsConfigured", "SecretMissing").await;
    assert!(message.contains("nowhere"), "{message}");
    // The policy is reconciled about twice per probe cycle (the probe, then its own status
    // write), not in a loop.
    let reconciles = || async {
        let body = ctl.get("/metrics").await.1;
        body.lines()
            .filter(|l| l.starts_with("recovery_reconciles_total") && l.contains("controller=\"policy\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = reconciles().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = reconciles().await - before;
    assert!((1.0..=14.0).contains(&during), "{during} policy reconciles in 10 s at a 2 s interval");
}

/// Every call to the region is cut off. The policy says AWS is unreachable, and the wait
/// between probe cycles grows instead of hammering the endpoint.
#[tokio::test]
async fn an_unreachable_region_backs_off() {
    let faults = Faults::from_env();
    let region = "eu-west-3"; // no other test uses it
    let rule = faults.rule(json!({"service": "*", "region": region, "reset": true})).await;
    let cluster = unique("noreach");
    let targets = json!({"ecsServices": [{"cluster": cluster, "services": ["web"]}]});
    let (message, _ctl, ns) =
        points_at_nothing("nothing-region", spec(region, targets), "AwsReachable", "Dispatch").await;
    assert!(message.contains("ecs:DescribeServices"), "{message}");
    tokio::time::sleep(Duration::from_secs(24)).await;
    let p = policy::get(&support::client().await, &ns, "p").await;
    let message = policy::condition(&p, "AwsReachable").unwrap().2;
    assert!(message.contains("backing off: next probe in"), "{message}");
    faults.remove_rule(&rule).await;
    // One probe cycle = one SDK invocation (its retries share the id): start and end times.
    let mut cycles: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for e in calls_mentioning(&faults, "ecs", "DescribeServices", &cluster).await {
        let (t, id) = (e["time"].as_f64().unwrap(), e["invocationId"].as_str().unwrap_or_default().to_owned());
        let c = cycles.entry(id).or_insert((t, t));
        c.0 = c.0.min(t);
        c.1 = c.1.max(t + e["durationMs"].as_f64().unwrap_or(0.0) / 1000.0);
    }
    let mut spans: Vec<(f64, f64)> = cycles.into_values().collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Cycles start probeInterval apart while AWS answers; while it fails, each waits as long
    // as AWS has been failing, so over the ~30 s window the last gap is at least a quarter
    // of it. Without the backoff every gap would be one cycle's length (about 4 s).
    let gaps: Vec<f64> = spans.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(spans.len() <= 6 && gaps.last().is_some_and(|g| *g >= 7.0), "probe cycles (start, end): {spans:?}");
}

/// An Aurora instance listed under `rdsInstances`: it fails over with its cluster, never by
/// RebootDBInstance, so the policy says where it belongs (and is not Ready) — even while the
/// instance is healthy, before anything could go wrong.
#[tokio::test]
async fn an_aurora_instance_under_rds_instances() {
    let cfg = aws::config().await;
    let cluster = unique("misplaced");
    let instance = format!("{cluster}-a");
    aws::rds_cluster(&cfg, &cluster, std::slice::from_ref(&instance)).await;
    let (message, _ctl, _ns) = points_at_nothing(
        "misplaced",
        spec("us-east-1", json!({"rdsInstances": [{"identifier": instance}]})),
        "TargetsPlaced",
        "TargetsMisplaced",
    )
    .await;
    assert!(message.contains(&instance) && message.contains(&cluster) && message.contains("rdsClusters"), "{message}");
}
