//! The Kubernetes control plane restarted under a running plan: watches come back, the plan
//! resumes, and no step is repeated. This binary holds one test, so the restarts disturb no
//! other test (cargo runs test binaries one after another).

mod support;

use std::time::Duration;

use aws_recovery_controller::api::plan::PlanPhase;
use serde_json::Value;

use support::scene::Scene;
use support::{eventually, plans};

/// Restarts one part through the control plane's supervisor and waits until it serves again.
async fn restart(part: &str, signal: &str) {
    let ready = std::path::PathBuf::from(support::var("RECOVERY_TESTENV_DIR")).join("controlplane.json");
    let count = || -> u64 {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&ready).unwrap_or_default()).unwrap_or(Value::Null);
        v["restarts"][part].as_u64().unwrap_or(0)
    };
    let before = count();
    let status =
        std::process::Command::new("kill").args([signal, &support::var("RECOVERY_CONTROLPLANE_PID")]).status().unwrap();
    assert!(status.success());
    eventually(&format!("{part} restarted"), Duration::from_secs(60), || async { (count() > before).then_some(()) })
        .await;
}

#[tokio::test]
async fn api_server_and_etcd_restarts_mid_plan_repeat_nothing() {
    let (s, ctl, _) = Scene::verifying("restart").await;
    restart("kube-apiserver", "-USR1").await;
    restart("etcd", "-USR2").await;
    // The controller's watches reconnect; the plan is still verifying and resumes.
    s.heal().await;
    let done = plans::wait_phase(&s.client, &s.ns, PlanPhase::Completed, Duration::from_secs(90)).await;
    assert_eq!(done.status.unwrap().progress.as_deref(), Some("2/2"));
    assert_eq!(s.restarts().await, 1, "the restart was not repeated");
    assert_eq!(ctl.get("/healthz").await.0, 200);
}
