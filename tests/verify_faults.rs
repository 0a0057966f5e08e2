//! AWS failing while a verify step polls: each fault in turn (throttling, 500, 503, an answer
//! slower than the client's timeout, a reset connection) while the target is still unhealthy.
//! The step must say what is failing, not fail the plan, not act again, and complete once
//! AWS answers and the target is healthy.
//!
//! The DNS test holds its Route 53 change PENDING through a process-wide setting of the fault
//! layer, so it must stay the only DNS test of this binary.

mod support;

use std::time::Duration;

use aws_recovery_controller::api::plan::{PlanPhase, RecoveryPlan, StepPhase};
use serde_json::json;

use support::broken::{Broken, Kind};
use support::controller::ControllerProcess;
use support::{eventually, plans, policy};

const WAIT: Duration = Duration::from_secs(90);

/// Each fault and the words the step's message must show while it lasts.
fn faults(kind: Kind) -> Vec<(serde_json::Value, &'static [&'static str])> {
    let throttling = match kind {
        Kind::Ecs => "ThrottlingException",
        Kind::Rds => "Throttling",
        Kind::Dns | Kind::Cluster => "Throttling",
    };
    vec![
        (json!({"error": throttling}), &["Throttling"]),
        (json!({"status": 500}), &["InternalFailure"]),
        (json!({"error": "ServiceUnavailable"}), &["ServiceUnavailable"]),
        (json!({"delayMs": 5000}), &["Timeout"]),
        (json!({"reset": true}), &["Dispatch", "Response", "connection"]),
    ]
}

fn verify_step(p: &RecoveryPlan) -> Option<aws_recovery_controller::api::plan::StepStatus> {
    p.status.as_ref()?.steps.iter().find(|s| s.order == 2).cloned()
}

async fn faults_while_verifying(kind: Kind) {
    let prefix = format!("vf-{kind:?}").to_lowercase();
    let b = Broken::new(kind, &prefix, json!({})).await;
    if kind == Kind::Dns {
        b.faults.settings(json!({"route53": {"changePendingSeconds": 3600}})).await;
    }
    // A cluster's failover stays under way (failing-over) until the faults are done.
    if kind == Kind::Cluster {
        b.faults.rds_cluster(json!({"dbClusterIdentifier": b.id, "failoverSeconds": 3600})).await;
    }
    let _ctl = ControllerProcess::start_args(&["--namespace", &b.ns, "--aws-attempt-timeout", "2s"], &[]);
    let plan = eventually("the verify step", WAIT, || async {
        plans::all(&b.client, &b.ns)
            .await
            .into_iter()
            .find(|p| verify_step(p).is_some_and(|s| s.phase == StepPhase::InProgress))
    })
    .await;
    let name = plan.metadata.name.clone().unwrap();
    // DNS: the verify read worth faulting is GetChange of this plan's change, held PENDING.
    let change = plan.status.as_ref().unwrap().steps[0].evidence.get("changeId").cloned();
    if kind == Kind::Dns {
        b.faults.settings(json!({"route53": {"changePendingSeconds": 0}})).await;
    }
    for (fault, words) in faults(kind) {
        let mut rule = match (&change, kind) {
            (Some(id), Kind::Dns) => {
                json!({"service": "route53", "operation": "GetChange", "match": {"Id": id.rsplit('/').next().unwrap()}})
            }
            _ => b.verify_rule(&json!({})),
        };
        rule.as_object_mut().unwrap().extend(fault.as_object().cloned().unwrap());
        let id = b.faults.rule(rule).await;
        let seen = eventually(&format!("the verify step to report {words:?}"), WAIT, || async {
            let p =
                plans::all(&b.client, &b.ns).await.into_iter().find(|p| p.metadata.name.as_deref() == Some(&name))?;
            let message = verify_step(&p)?.message.unwrap_or_default();
            words.iter().any(|w| message.contains(w)).then_some(message)
        })
        .await;
        b.faults.remove_rule(&id).await;
        let p = plans::all(&b.client, &b.ns).await.into_iter().find(|p| p.metadata.name.as_deref() == Some(&name));
        let p = p.expect("the plan");
        assert_eq!(plans::phase(&p), Some(PlanPhase::Executing), "{kind:?} {fault}: still executing after {seen}");
        assert_eq!(verify_step(&p).unwrap().phase, StepPhase::InProgress);
    }
    b.heal().await;
    if kind == Kind::Cluster {
        b.faults.rds_cluster(json!({"dbClusterIdentifier": b.id, "completeFailover": true})).await;
    }
    if let Some(id) = &change {
        b.faults.force_change(id, "INSYNC").await;
    }
    let done = plans::wait_phase(&b.client, &b.ns, PlanPhase::Completed, WAIT).await;
    let st = done.status.unwrap();
    assert!(st.steps.iter().all(|s| s.phase == StepPhase::Completed), "{st:?}");
    assert_eq!(st.steps[0].attempts, 1, "the action ran once");
    assert_eq!(b.effective_mutations().await, 1, "{kind:?}: one mutating call in all");
    assert_eq!(b.mutations().await.len(), 1, "{kind:?}: and no other attempt");
    assert_eq!(policy::incidents(&b.client, &b.ns).await.len(), 1, "no second incident");
}

#[tokio::test]
async fn ecs_verify_rides_out_every_fault() {
    faults_while_verifying(Kind::Ecs).await;
}

#[tokio::test]
async fn rds_verify_rides_out_every_fault() {
    faults_while_verifying(Kind::Rds).await;
}

#[tokio::test]
async fn dns_verify_rides_out_every_fault() {
    faults_while_verifying(Kind::Dns).await;
}

#[tokio::test]
async fn cluster_verify_rides_out_every_fault() {
    faults_while_verifying(Kind::Cluster).await;
}
