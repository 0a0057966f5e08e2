//! Faults from the Kubernetes side: people deleting objects mid-flight, and a second writer
//! racing the controller's status writes.

mod support;

use std::time::Duration;

use aws_recovery_controller::api::RecoveryPolicy;
use aws_recovery_controller::api::plan::{PlanPhase, RecoveryPlan, StepPhase};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use support::scene::Scene;
use support::{eventually, plans, policy};

const WAIT: Duration = Duration::from_secs(60);

/// A policy deleted while its plan runs: the plan stops at the next step boundary and says why.
#[tokio::test]
async fn a_deleted_policy_stops_its_plan_at_the_next_boundary() {
    let (s, ctl, _) = Scene::verifying("hard-delpol").await;
    Api::<RecoveryPolicy>::namespaced(s.client.clone(), &s.ns).delete("shop", &DeleteParams::default()).await.unwrap();
    let failed = plans::wait_phase(&s.client, &s.ns, PlanPhase::Failed, WAIT).await;
    let st = failed.status.unwrap();
    assert_eq!(st.message.as_deref(), Some("stopped: policy shop no longer exists"));
    assert_eq!(st.steps[0].phase, StepPhase::Completed, "what was done stays on record");
    assert_eq!(s.restarts().await, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ctl.get("/healthz").await.0, 200, "no crash");
}

/// A plan deleted by a person mid-flight: no crash, no new plan, no further action.
#[tokio::test]
async fn a_deleted_plan_is_not_remade() {
    let (s, ctl, plan) = Scene::verifying("hard-delplan").await;
    let name = plan.metadata.name.clone().unwrap();
    Api::<RecoveryPlan>::namespaced(s.client.clone(), &s.ns).delete(&name, &DeleteParams::default()).await.unwrap();
    let (_, reason) = eventually("RemediationAllowed=False PlanDeleted", WAIT, || async {
        let inc = policy::incidents(&s.client, &s.ns).await.pop()?;
        let c = inc.status?.conditions.into_iter().find(|c| c.type_ == "RemediationAllowed" && c.status == "False")?;
        Some(((), c.reason))
    })
    .await;
    assert_eq!(reason, "PlanDeleted");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(plans::all(&s.client, &s.ns).await.is_empty(), "no plan is remade");
    assert_eq!(s.restarts().await, 1, "nothing acted again");
    assert_eq!(ctl.get("/healthz").await.0, 200, "no crash");
}

/// A second writer bumps the plan's resourceVersion all along: every status write of the
/// controller that races it gets 409, re-reads, and nothing is lost or done twice.
#[tokio::test]
async fn a_second_writer_causes_no_lost_update() {
    let (s, _ctl, plan) = Scene::verifying("hard-409").await;
    let name = plan.metadata.name.clone().unwrap();
    let api = Api::<RecoveryPlan>::namespaced(s.client.clone(), &s.ns);
    let writer = {
        let (api, name) = (api.clone(), name.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                let patch = json!({"metadata": {"annotations": {"test/bump": i.to_string()}}});
                let _ = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    s.faults
        .ecs_service(json!({"cluster": s.cluster, "service": "web", "runningCount": 2, "completeRollout": true}))
        .await;
    let done = plans::wait_phase(&s.client, &s.ns, PlanPhase::Completed, WAIT).await;
    writer.abort();
    let st = done.status.unwrap();
    assert!(st.steps.iter().all(|s| s.phase == StepPhase::Completed), "{st:?}");
    assert!(st.steps[0].evidence.contains_key("deploymentId"), "the restart's evidence survived");
    assert_eq!(s.restarts().await, 1);
}

/// AWS failing across the process opens the circuit breaker: incidents still open, but no new
/// remediation acts until the failures leave the window; then the plan goes on by itself.
/// (Failing calls are slow — the SDK retries them — while healthy ones are quick, so the
/// window is long and the ratio low enough that the breaker holds steadily.)
#[tokio::test]
async fn the_aws_circuit_breaker_pauses_new_remediation_and_closes_by_itself() {
    use support::controller::ControllerProcess;
    use support::{Faults, aws, namespace, unique};

    let client = support::client().await;
    let ns = namespace(&client, "hard-breaker").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("brk");
    let db = unique("brkdb");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 2).await;
    aws::rds_instance(&cfg, &db, false).await;
    // Every RDS call fails like an outage (no other test of this binary calls RDS).
    let rule =
        faults.rule(json!({"service": "rds", "operation": "DescribeDBInstances", "error": "InternalFailure"})).await;
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 1})).await;
    policy::create(
        &client,
        &ns,
        "mixed",
        json!({
            "aws": {"region": "us-east-1"},
            "probeInterval": "2s",
            "targets": {"ecsServices": [{"cluster": cluster, "services": ["web"]}], "rdsInstances": [{"identifier": db}]},
            "detection": {"failureThreshold": 2, "successThreshold": 1},
            "remediation": {"mode": "Automatic", "stepTimeout": "60s", "cooldown": "0s", "maxUnhealthyPercent": 100}
        }),
    )
    .await;
    let args = [
        "--namespace",
        &ns,
        "--aws-breaker-window",
        "30s",
        "--aws-breaker-min-calls",
        "2",
        "--aws-breaker-failure-ratio",
        "0.1",
    ];
    let ctl = ControllerProcess::start_args(&args, &[]);
    eventually("the plan held by the open breaker", WAIT, || async {
        plans::all(&client, &ns).await.into_iter().find(|p| plans::held(p).as_deref() == Some("AwsCircuitOpen"))
    })
    .await;
    let p = policy::get(&client, &ns, "mixed").await;
    assert_eq!(policy::condition(&p, "RemediationAllowed").map(|c| c.1).as_deref(), Some("AwsCircuitOpen"));
    assert!(ctl.get("/metrics").await.1.contains("recovery_aws_circuit_open 1"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarts = || faults.calls_for("ecs", "UpdateService", "cluster", &cluster);
    assert!(restarts().await.is_empty(), "nothing acts while AWS is failing");
    faults.remove_rule(&rule).await;
    eventually("the restart once the breaker closes", Duration::from_secs(90), || async {
        Some(restarts().await).filter(|r| r.len() == 1)
    })
    .await;
}

/// SIGTERM while a restart is in flight (AWS answers after 3 s): the call finishes and is
/// recorded, nothing new starts, the process exits 0; the next process completes the plan
/// without a second restart.
#[tokio::test]
async fn sigterm_mid_step_finishes_the_action_then_exits() {
    use support::controller::ControllerProcess;
    use support::{namespace, scene};

    let client = support::client().await;
    let ns = namespace(&client, "hard-term").await;
    let (cluster, faults) = scene::degraded_web(&client, &ns, "hard-term", json!({})).await;
    faults
        .rule(json!({"service": "ecs", "operation": "UpdateService", "match": {"cluster": cluster}, "delayMs": 3000, "count": 1}))
        .await;
    let mut ctl = ControllerProcess::start(&ns);
    eventually("the restart in flight", WAIT, || async {
        plans::all(&client, &ns).await.into_iter().find(|p| {
            p.status.as_ref().is_some_and(|s| s.steps[0].phase == StepPhase::InProgress && s.steps[0].attempts == 1)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctl.terminate();
    let status = ctl.exited(Duration::from_secs(30)).await;
    assert!(status.success(), "a clean exit: {status:?}\n{}", ctl.log_text());
    let restarts = || faults.calls_for("ecs", "UpdateService", "cluster", &cluster);
    assert_eq!(restarts().await.len(), 1);
    let plan = plans::all(&client, &ns).await.pop().expect("the plan");
    let st = plan.status.unwrap();
    assert_eq!(st.steps[0].phase, StepPhase::Completed, "the action's outcome was recorded before the exit: {st:?}");
    assert!(st.steps[0].evidence.contains_key("deploymentId"));
    assert_eq!(st.steps[1].phase, StepPhase::Pending, "nothing new started after SIGTERM: {st:?}");
    assert!(ctl.log_text().contains("starting nothing new"));

    let _next = ControllerProcess::start(&ns);
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 2, "completeRollout": true})).await;
    plans::wait_phase(&client, &ns, PlanPhase::Completed, WAIT).await;
    assert_eq!(restarts().await.len(), 1, "no second restart");
}
