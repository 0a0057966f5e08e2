//! Smoke tests of the test environment itself: the real API server with our CRDs, kubectl,
//! moto through the Rust SDK, and every fault-layer rule and state override.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_ecs::error::ProvideErrorMetadata;
use serde_json::json;

use support::{Faults, aws, kubectl, namespace, unique};

#[tokio::test]
async fn crds_install_and_kubectl_shows_the_columns() {
    let client = support::client().await;
    let ns = namespace(&client, "smoke-cols").await;
    let incident = format!(
        r#"
apiVersion: recovery.dev/v1alpha1
kind: Incident
metadata: {{ name: checkout-down, namespace: {ns} }}
spec:
  id: 6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f
  type: service
  severity: high
  policy: payments
  target: ecs/prod/checkout
  resource: {{ kind: EcsService, region: us-east-1, cluster: prod, service: checkout }}
  description: ECS service checkout runs 1 of 3 desired tasks
"#
    );
    let out = kubectl(&["apply", "-f", "-"], Some(&incident));
    assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl(&["get", "incidents", "-n", &ns], None);
    let text = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = text.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "SEVERITY", "TARGET", "PHASE", "AGE"], "{text}");
    assert!(text.contains("checkout-down") && text.contains("ecs/prod/checkout"), "{text}");
    // Short name and category work too.
    let out = kubectl(&["get", "inc,rpol,rplan", "-n", &ns], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl(&["get", "recovery", "-n", &ns, "-o", "name"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("incident.recovery.dev/checkout-down"));
}

#[tokio::test]
async fn invalid_policy_is_rejected_with_the_cel_message() {
    let client = support::client().await;
    let ns = namespace(&client, "smoke-cel").await;
    let policy = format!(
        r#"
apiVersion: recovery.dev/v1alpha1
kind: RecoveryPolicy
metadata: {{ name: empty, namespace: {ns} }}
spec:
  aws: {{ region: us-east-1 }}
  targets: {{}}
"#
    );
    let out = kubectl(&["apply", "-f", "-"], Some(&policy));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an empty policy must be rejected");
    assert!(err.contains("targets must name at least one"), "{err}");
    assert!(err.contains("spec.targets"), "the message names the field: {err}");
}

#[tokio::test]
async fn the_sdk_describes_ecs_rds_and_route53_on_moto() {
    let cfg = aws::config().await;
    let cluster = unique("smoke");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 2).await;
    let db = unique("db");
    aws::rds_instance(&cfg, &db, true).await;
    let hc = aws::health_check(&cfg, "api.example.com").await;

    let out =
        aws_sdk_ecs::Client::new(&cfg).describe_services().cluster(&cluster).services("web").send().await.unwrap();
    let svc = &out.services()[0];
    assert_eq!((svc.running_count(), svc.desired_count()), (2, 2));

    let out = aws_sdk_rds::Client::new(&cfg).describe_db_instances().db_instance_identifier(&db).send().await.unwrap();
    assert_eq!(out.db_instances()[0].db_instance_status(), Some("available"));
    assert_eq!(out.db_instances()[0].multi_az(), Some(true));

    let out = aws_sdk_route53::Client::new(&cfg).get_health_check_status().health_check_id(&hc).send().await.unwrap();
    assert!(!out.health_check_observations().is_empty());
}

/// Each fault rule kind, seen through the SDK, with the SDK's own retries in the call log.
#[tokio::test]
async fn fault_rules_reach_the_sdk() {
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("faulty");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 1).await;
    let ecs = aws_sdk_ecs::Client::new(&cfg);
    let describe = || ecs.describe_services().cluster(&cluster).services("web").send();

    // Throttling twice: the SDK retries and succeeds on the third attempt.
    faults.rule(json!({"service": "ecs", "operation": "DescribeServices", "match": {"cluster": cluster}, "error": "ThrottlingException", "count": 2})).await;
    describe().await.expect("the SDK retries throttling");
    let attempts = faults.calls_for("ecs", "DescribeServices", "cluster", &cluster).await;
    assert_eq!(attempts.len(), 3, "two throttled attempts and one success: {attempts:?}");
    assert_eq!(attempts.iter().filter(|e| e["faulted"] == true).count(), 2);

    // 500 and 503 are retried too.
    faults.rule(json!({"service": "ecs", "operation": "DescribeServices", "match": {"cluster": cluster}, "error": "InternalFailure", "count": 1})).await;
    faults.rule(json!({"service": "ecs", "operation": "DescribeServices", "match": {"cluster": cluster}, "error": "ServiceUnavailable", "count": 1})).await;
    describe().await.expect("the SDK retries 5xx");
    let statuses: Vec<_> = faults
        .calls_for("ecs", "DescribeServices", "cluster", &cluster)
        .await
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(&statuses[3..], [500, 503, 200]);

    // A non-retryable error reaches the caller with its code.
    faults.rule(json!({"service": "ecs", "operation": "DescribeServices", "match": {"cluster": cluster}, "error": "AccessDeniedException", "count": 1})).await;
    let err = describe().await.expect_err("access denied is not retried");
    assert_eq!(err.code(), Some("AccessDeniedException"));

    // Added latency.
    faults.rule(json!({"service": "ecs", "operation": "DescribeServices", "match": {"cluster": cluster}, "delayMs": 700, "count": 1})).await;
    let t = Instant::now();
    describe().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(700), "{:?}", t.elapsed());

    // A dropped connection is retried.
    faults.rule(json!({"service": "ecs", "operation": "DescribeServices", "match": {"cluster": cluster}, "reset": true, "count": 1})).await;
    describe().await.expect("the SDK retries a dropped connection");
    let last = faults.calls_for("ecs", "DescribeServices", "cluster", &cluster).await;
    assert_eq!(last[last.len() - 2]["status"], 0, "the reset is logged with status 0");

    // RDS (query protocol) and Route 53 (REST-XML) throttling are retried as well.
    let db = unique("fdb");
    aws::rds_instance(&cfg, &db, false).await;
    faults.rule(json!({"service": "rds", "operation": "DescribeDBInstances", "match": {"DBInstanceIdentifier": db}, "error": "Throttling", "count": 1})).await;
    aws_sdk_rds::Client::new(&cfg).describe_db_instances().db_instance_identifier(&db).send().await.expect("retried");
    assert_eq!(faults.calls_for("rds", "DescribeDBInstances", "DBInstanceIdentifier", &db).await.len(), 2);
    let hc = aws::health_check(&cfg, "faulty.example.com").await;
    faults.rule(json!({"service": "route53", "operation": "GetHealthCheckStatus", "match": {"HealthCheckId": hc}, "error": "PriorRequestNotComplete", "count": 1})).await;
    aws_sdk_route53::Client::new(&cfg).get_health_check_status().health_check_id(&hc).send().await.expect("retried");
    assert_eq!(faults.calls_for("route53", "GetHealthCheckStatus", "HealthCheckId", &hc).await.len(), 2);
    assert!(faults.calls().await["ecs.DescribeServices"] >= 9, "the counter sees every attempt");
}

/// Each state override, seen through the SDK.
#[tokio::test]
async fn state_overrides_reach_the_sdk() {
    let cfg = aws::config().await;
    let faults = Faults::from_env();

    // ECS: runningCount pinned below desired, an event, and a new PRIMARY deployment.
    let cluster = unique("ovr");
    aws::ecs_services(&cfg, &cluster, &["api".into()], 3).await;
    faults
        .ecs_service(json!({"cluster": cluster, "service": "api", "runningCount": 1,
            "events": [{"message": "(service api) has started 1 tasks"}],
            "newDeployment": {"rolloutState": "IN_PROGRESS"}}))
        .await;
    let ecs = aws_sdk_ecs::Client::new(&cfg);
    let out = ecs.describe_services().cluster(&cluster).services("api").send().await.unwrap();
    let svc = &out.services()[0];
    assert_eq!((svc.running_count(), svc.desired_count()), (1, 3));
    assert_eq!(svc.events()[0].message(), Some("(service api) has started 1 tasks"));
    let primaries: Vec<_> = svc.deployments().iter().filter(|d| d.status() == Some("PRIMARY")).collect();
    assert_eq!(primaries.len(), 1);
    assert_eq!(svc.deployments().len(), 2, "the old deployment is demoted to ACTIVE");

    // A real forceNewDeployment makes a new deployment id, as in AWS.
    let before = primaries[0].id().unwrap().to_owned();
    ecs.update_service().cluster(&cluster).service("api").force_new_deployment(true).send().await.unwrap();
    let out = ecs.describe_services().cluster(&cluster).services("api").send().await.unwrap();
    let now_primary = out.services()[0].deployments().iter().find(|d| d.status() == Some("PRIMARY")).unwrap();
    assert_ne!(now_primary.id().unwrap(), before);

    // RDS: status and AZs.
    let db = unique("odb");
    aws::rds_instance(&cfg, &db, true).await;
    faults.rds_instance(json!({"dbInstanceIdentifier": db, "status": "stopped", "availabilityZone": "us-east-1a", "secondaryAvailabilityZone": "us-east-1b"})).await;
    let rds = aws_sdk_rds::Client::new(&cfg);
    let out = rds.describe_db_instances().db_instance_identifier(&db).send().await.unwrap();
    let inst = &out.db_instances()[0];
    assert_eq!(inst.db_instance_status(), Some("stopped"));
    assert_eq!(inst.secondary_availability_zone(), Some("us-east-1b"));

    // Route 53: failing observations.
    let hc = aws::health_check(&cfg, "ovr.example.com").await;
    faults.health_check(&hc, 2, 3).await;
    let r53 = aws_sdk_route53::Client::new(&cfg);
    let out = r53.get_health_check_status().health_check_id(&hc).send().await.unwrap();
    let failing = out
        .health_check_observations()
        .iter()
        .filter(|o| !o.status_report().and_then(|r| r.status()).unwrap_or_default().starts_with("Success"))
        .count();
    assert_eq!((failing, out.health_check_observations().len()), (2, 3));
    faults.clear_health_check(&hc).await;

    // Route 53: a change that stays PENDING for one GetChange before INSYNC.
    let zone_name = format!("{}.example.com", unique("z"));
    let zone = aws::hosted_zone(&cfg, &zone_name).await;
    faults.settings(json!({"route53": {"changePendingCalls": 1}})).await;
    let change = r53
        .change_resource_record_sets()
        .hosted_zone_id(&zone)
        .change_batch(
            aws_sdk_route53::types::ChangeBatch::builder()
                .changes(
                    aws_sdk_route53::types::Change::builder()
                        .action(aws_sdk_route53::types::ChangeAction::Upsert)
                        .resource_record_set(
                            aws_sdk_route53::types::ResourceRecordSet::builder()
                                .name(format!("www.{zone_name}"))
                                .r#type(aws_sdk_route53::types::RrType::A)
                                .ttl(60)
                                .resource_records(
                                    aws_sdk_route53::types::ResourceRecord::builder()
                                        .value("192.0.2.1")
                                        .build()
                                        .unwrap(),
                                )
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await;
    let id = change.unwrap().change_info().unwrap().id().to_owned();
    let first = r53.get_change().id(&id).send().await.unwrap();
    let second = r53.get_change().id(&id).send().await.unwrap();
    faults.settings(json!({"route53": {"changePendingCalls": 0}})).await;
    assert_eq!(first.change_info().unwrap().status().as_str(), "PENDING");
    assert_eq!(second.change_info().unwrap().status().as_str(), "INSYNC");
}

/// Every example under examples/ is accepted by the real API server.
#[tokio::test]
async fn the_examples_are_valid() {
    let client = support::client().await;
    let ns = namespace(&client, "smoke-examples").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out =
            kubectl(&["apply", "--dry-run=server", "--validate=strict", "-n", &ns, "-f", path.to_str().unwrap()], None);
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        checked += 1;
    }
    assert!(checked >= 4, "examples checked: {checked}");
}
