//! AWS failing during each kind of mutating step: throttling bursts, 500 and 503, an answer
//! slower than the client's timeout, a reset connection. For every template the step's
//! mutating call must take effect exactly once, the plan must say what happened (step
//! message, Events) and complete once the fault is gone.
//!
//! The controller runs with a 2 s attempt timeout so that "slower than the client timeout"
//! needs only a 5 s delay. Each test's rules match only its own target.

mod support;

use std::time::Duration;

use aws_recovery_controller::api::plan::{PlanPhase, RecoveryPlan, StepPhase};
use serde_json::{Value, json};

use support::broken::{Broken, Kind};
use support::controller::ControllerProcess;
use support::{events, eventually, plans};

const WAIT: Duration = Duration::from_secs(90);

/// One fault on the mutating call and what it must lead to.
struct Case {
    /// The rule's fault part (error / delayMs / reset / count).
    fault: Value,
    /// Requests of the mutating call in the fault layer's log when the step is done.
    requests: usize,
    /// The step's attempts (a throttled call is refused, not attempted).
    attempts: u32,
    /// Whether the step completed through the check-first read (the slow call took effect
    /// after the client gave up) rather than through its own answer.
    found_by_check: bool,
}

fn throttling(kind: Kind) -> &'static str {
    match kind {
        Kind::Ecs => "ThrottlingException",
        Kind::Rds => "Throttling",
        Kind::Dns => "PriorRequestNotComplete",
        Kind::Cluster => "Throttling",
    }
}

fn case(kind: Kind, fault: &str) -> Case {
    match fault {
        // Three refusals in a row: the step waits and sends again without spending attempts.
        "throttling" => Case {
            fault: json!({"error": throttling(kind), "count": 3}),
            requests: 4,
            attempts: 1,
            found_by_check: false,
        },
        "500" => Case { fault: json!({"status": 500, "count": 1}), requests: 2, attempts: 2, found_by_check: false },
        "503" => Case {
            fault: json!({"error": "ServiceUnavailable", "count": 1}),
            requests: 2,
            attempts: 2,
            found_by_check: false,
        },
        // AWS carries the call out after the client gave up: the next attempt must find it.
        "slow" => Case { fault: json!({"delayMs": 5000, "count": 1}), requests: 1, attempts: 2, found_by_check: true },
        "reset" => Case { fault: json!({"reset": true, "count": 1}), requests: 2, attempts: 2, found_by_check: false },
        other => panic!("no case {other}"),
    }
}

async fn fault_during_action(kind: Kind, fault: &str) {
    let prefix = format!("sf-{kind:?}-{fault}").to_lowercase();
    let case = case(kind, fault);
    let b = Broken::new(kind, &prefix, json!({})).await;
    b.faults.rule(b.mutation_rule(&case.fault)).await;
    let _ctl = ControllerProcess::start_args(&["--namespace", &b.ns, "--aws-attempt-timeout", "2s"], &[]);
    let step_done = |p: &RecoveryPlan| p.status.as_ref().is_some_and(|s| s.steps[0].phase == StepPhase::Completed);
    let plan = eventually("the action step done", WAIT, || async {
        plans::all(&b.client, &b.ns).await.into_iter().find(step_done)
    })
    .await;
    b.heal().await;
    let done = plans::wait_phase(&b.client, &b.ns, PlanPhase::Completed, WAIT).await;
    let st = done.status.clone().unwrap();
    let (service, operation, _) = b.mutation();
    let requests = b.mutations().await;
    assert_eq!(
        b.effective_mutations().await,
        1,
        "{kind:?}/{fault}: {service}:{operation} took effect once: {requests:#?}"
    );
    assert_eq!(requests.len(), case.requests, "{kind:?}/{fault}: requests: {requests:#?}");
    assert_eq!(st.steps[0].attempts, case.attempts, "{kind:?}/{fault}: {:?}", st.steps[0]);
    let message = st.steps[0].message.clone().unwrap_or_default();
    assert_eq!(message.contains("already"), case.found_by_check, "{kind:?}/{fault}: {message}");
    assert!(st.steps.iter().all(|s| s.phase == StepPhase::Completed), "{st:?}");
    // What happened is on record: a StepRetry Warning for every attempt that failed.
    let name = plan.metadata.name.clone().unwrap();
    let retries: Vec<_> = events(&b.client, &b.ns, &name).await.into_iter().filter(|e| e.1 == "StepRetry").collect();
    assert_eq!(retries.len() as u32, case.attempts - 1, "{kind:?}/{fault}: {retries:?}");
    assert!(retries.iter().all(|e| e.0 == "Warning"));
}

macro_rules! step_fault_tests {
    ($($name:ident: $kind:expr, $fault:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            fault_during_action($kind, $fault).await;
        }
    )*};
}

step_fault_tests! {
    ecs_restart_throttled: Kind::Ecs, "throttling";
    ecs_restart_500: Kind::Ecs, "500";
    ecs_restart_503: Kind::Ecs, "503";
    ecs_restart_slower_than_the_timeout: Kind::Ecs, "slow";
    ecs_restart_connection_reset: Kind::Ecs, "reset";
    rds_reboot_throttled: Kind::Rds, "throttling";
    rds_reboot_500: Kind::Rds, "500";
    rds_reboot_503: Kind::Rds, "503";
    rds_reboot_slower_than_the_timeout: Kind::Rds, "slow";
    rds_reboot_connection_reset: Kind::Rds, "reset";
    dns_change_throttled: Kind::Dns, "throttling";
    dns_change_500: Kind::Dns, "500";
    dns_change_503: Kind::Dns, "503";
    dns_change_slower_than_the_timeout: Kind::Dns, "slow";
    dns_change_connection_reset: Kind::Dns, "reset";
    cluster_failover_throttled: Kind::Cluster, "throttling";
    cluster_failover_500: Kind::Cluster, "500";
    cluster_failover_slower_than_the_timeout: Kind::Cluster, "slow";
    cluster_failover_connection_reset: Kind::Cluster, "reset";
}
