//! Operating the controller: /metrics, /healthz, /readyz, SIGTERM, leader election.

mod support;

use std::time::{Duration, Instant};

use aws_recovery_controller::api::plan::PlanPhase;
use serde_json::json;

use support::controller::ControllerProcess;
use support::{Faults, aws, eventually, namespace, plans, policy, unique};

const WAIT: Duration = Duration::from_secs(60);

fn spec(cluster: &str, mode: &str) -> serde_json::Value {
    json!({
        "aws": {"region": "us-east-1"},
        "probeInterval": "2s",
        "targets": {"ecsServices": [{"cluster": cluster, "services": ["web"]}]},
        "detection": {"failureThreshold": 1, "successThreshold": 1},
        "remediation": {"mode": mode, "stepTimeout": "60s", "cooldown": "0s"}
    })
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let client = support::client().await;
    let ns = namespace(&client, "ops-metrics").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("ops");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 2).await;
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 1})).await;
    policy::create(&client, &ns, "shop", spec(&cluster, "Disabled")).await;
    let ctl = ControllerProcess::start(&ns);
    eventually("/readyz", WAIT, || async { (ctl.get("/readyz").await.0 == 200).then_some(()) }).await;
    assert_eq!(ctl.get("/healthz").await, (200, "ok".into()));
    eventually("an incident", WAIT, || async { policy::incidents(&client, &ns).await.pop() }).await;
    let text = eventually("metrics of a whole cycle", WAIT, || async {
        let (_, text) = ctl.get("/metrics").await;
        text.contains(r#"recovery_open_incidents{type="service",severity="high"} 1"#).then_some(text)
    })
    .await;
    for want in [
        r#"recovery_reconciles_total{controller="policy",result="ok"}"#,
        r#"recovery_aws_calls_total{service="ecs",operation="DescribeServices",outcome="ok"}"#,
        r#"recovery_open_incidents{type="service",severity="high"} 1"#,
        "recovery_reconcile_duration_seconds_bucket",
        "recovery_detection_latency_seconds_count 1",
    ] {
        assert!(text.contains(want), "/metrics lacks {want}:\n{text}");
    }
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let client = support::client().await;
    let ns = namespace(&client, "ops-term").await;
    let mut ctl = ControllerProcess::start(&ns);
    eventually("/readyz", WAIT, || async { (ctl.get("/readyz").await.0 == 200).then_some(()) }).await;
    let t = Instant::now();
    ctl.terminate();
    let status = ctl.exited(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status}:\n{}", ctl.log_text());
    assert!(ctl.log_text().contains("shutting down"), "{}", ctl.log_text());
    eprintln!("stopped {:?} after SIGTERM", t.elapsed());
}

/// A SIGTERM in the first moments, before the controller is ready (the API server's lists
/// still under way), is a clean stop too, not a kill by the signal's default action.
#[tokio::test]
async fn sigterm_while_starting_stops_cleanly() {
    let client = support::client().await;
    let ns = namespace(&client, "ops-term-early").await;
    let mut ctl = ControllerProcess::start(&ns);
    // The health server is bound right after the handlers are in place, and well before
    // the first lists return: that is the moment to stop it.
    let addr = format!("127.0.0.1:{}", ctl.metrics_port);
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(Instant::now() < deadline, "the health server never listened:\n{}", ctl.log_text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ctl.terminate();
    let status = ctl.exited(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status}:\n{}", ctl.log_text());
    assert!(ctl.log_text().contains("shutting down"), "{}", ctl.log_text());
}

/// Two replicas with leader election: one acts; killing it hands over within the lease
/// duration, and the new leader resumes the plan without repeating the restart.
#[tokio::test]
async fn leader_election_hands_over_without_repeating_actions() {
    let client = support::client().await;
    let ns = namespace(&client, "ops-leader").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let cluster = unique("lead");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 2).await;
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 1})).await;
    policy::create(&client, &ns, "shop", spec(&cluster, "Automatic")).await;
    let lease = unique("lease");
    let args = [
        "--namespace",
        &ns,
        "--leader-election",
        "--lease-name",
        &lease,
        "--lease-namespace",
        &ns,
        "--lease-duration",
        "4",
    ];
    let a = ControllerProcess::start_args(&args, &[]);
    let b = ControllerProcess::start_args(&args, &[]);
    let leader_of = |text: &str| text.lines().any(|l| l.trim() == "recovery_leader 1");
    let (leader, standby) = eventually("one leader", WAIT, || async {
        let (la, lb) = (leader_of(&a.get("/metrics").await.1), leader_of(&b.get("/metrics").await.1));
        match (la, lb) {
            (true, false) => Some((0, 1)),
            (false, true) => Some((1, 0)),
            _ => None,
        }
    })
    .await;
    let mut procs = [Some(a), Some(b)];
    let restarts = || faults.calls_for("ecs", "UpdateService", "cluster", &cluster);
    eventually("the restart", WAIT, || async { Some(restarts().await).filter(|r| r.len() == 1) }).await;
    plans::wait_phase(&client, &ns, PlanPhase::Executing, WAIT).await;

    // Kill the leader mid-verify; the standby takes the lease.
    let t = Instant::now();
    procs[leader].take().unwrap().kill();
    let standby = procs[standby].take().unwrap();
    eventually("the standby leads", Duration::from_secs(20), || async {
        leader_of(&standby.get("/metrics").await.1).then_some(())
    })
    .await;
    let handover = t.elapsed();
    assert!(handover <= Duration::from_secs(4 + 3), "handover took {handover:?} for a 4s lease");
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 2, "completeRollout": true})).await;
    plans::wait_phase(&client, &ns, PlanPhase::Completed, WAIT).await;
    assert_eq!(restarts().await.len(), 1, "the new leader did not repeat the restart");
    eprintln!("leader handover in {handover:?}");
}

/// The controller's client multiplexes its requests over one HTTP/2 connection to the API
/// server, where kube's own HTTP/1.1 client opens one connection per request in flight.
#[tokio::test]
async fn api_server_requests_share_one_http2_connection() {
    let path = std::path::PathBuf::from(support::var("KUBECONFIG"));
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("the test kubeconfig is readable");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kubeconfig");
    // The connections a client opens: counted by a TCP relay to the API server (TLS passes
    // through it untouched), after one request and after a burst of 32 at once.
    let connections = |client: fn(kube::Config) -> kube::Client| {
        let mut config = config.clone();
        async move {
            let url = &config.cluster_url;
            let server = format!("{}:{}", url.host().expect("a host"), url.port_u16().expect("a port"));
            let (port, opened) = relay(server).await;
            config.cluster_url = format!("https://127.0.0.1:{port}").parse().expect("a URL");
            let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client(config));
            let params = kube::api::ListParams::default();
            api.list(&params).await.expect("the API server lists namespaces");
            let first = opened.load(std::sync::atomic::Ordering::SeqCst);
            for result in futures::future::join_all((0..32).map(|_| api.list(&params))).await {
                result.expect("the API server lists namespaces");
            }
            (first, opened.load(std::sync::atomic::Ordering::SeqCst))
        }
    };
    let h2 = connections(|c| aws_recovery_controller::controller::client::client(c).expect("a client")).await;
    let h1 = connections(|c| kube::Client::try_from(c).expect("kube's default client")).await;
    eprintln!("connections after one request / after 32 more at once: HTTP/2 {h2:?}, kube's HTTP/1.1 {h1:?}");
    assert_eq!(h2, (1, 1), "one HTTP/2 connection carries the burst");
    assert!(h1.1 > 1, "the contrast: HTTP/1.1 needs a connection per request in flight ({h1:?})");
}

/// A TCP relay on loopback to `target` (host:port): its port and the count of connections
/// it has accepted.
async fn relay(target: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let port = listener.local_addr().expect("bound").port();
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = opened.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, opened)
}
