//! The `recovery-controller` binary.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{Api, ListParams};
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};

use aws_recovery_controller::api::{Incident, RecoveryPlan, RecoveryPolicy, crd_file_name, crds, crds_yaml};
use aws_recovery_controller::aws::breaker::BreakerConfig;
use aws_recovery_controller::aws::{AwsSettings, ClientCache};
use aws_recovery_controller::controller::{self, Context, Scope, shutdown_signal};
use aws_recovery_controller::metrics::Metrics;
use aws_recovery_controller::server::{self, Health};

/// A Kubernetes controller that keeps AWS workloads alive.
#[derive(Parser)]
#[command(name = "recovery-controller", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the three CRDs as one YAML stream, or write one file per CRD with --dir.
    Crds {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run the controller against the cluster of the current kubeconfig or service account.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only these namespaces (repeat the flag, or comma-separate); default all.
    #[arg(long = "namespace", env = "RECOVERY_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Reconcile only policies matching this label selector (e.g. `shard=a`) — and their
    /// incidents and plans, which carry the policy's labels.
    #[arg(long, env = "RECOVERY_POLICY_SELECTOR")]
    policy_selector: Option<String>,
    /// Incidents, plans and alert deliveries reconciled at once (each kind).
    #[arg(long, env = "RECOVERY_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Policies probed at once. A probe mostly waits on AWS (whose calls --aws-in-flight
    /// bounds), and probes running together share their reads: when every policy due at
    /// once fits, every read is batched to the minimum. A waiting probe costs under 1 KB
    /// (see BENCHMARKS.md).
    #[arg(long, env = "RECOVERY_PROBE_CONCURRENCY", default_value_t = 1024)]
    probe_concurrency: u16,
    /// How long a probe read waits for other policies' ids to share its call (ten ECS
    /// services, a hundred RDS instances a call).
    #[arg(long, env = "RECOVERY_PROBE_BATCH_WINDOW", default_value = "50ms", value_parser = humantime::parse_duration)]
    probe_batch_window: Duration,
    /// Threads that run the controller. One (the default) costs the least CPU: the work
    /// is waiting on AWS and the API server, and on one thread no task is handed between
    /// threads (at 10,000 targets: 0.81 s of CPU in a 24 s probe cycle; see BENCHMARKS.md).
    /// More help only if reconciles become CPU-bound.
    #[arg(long, env = "RECOVERY_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: u16,
    /// ECS and RDS calls in flight across the process (Route 53 calls are bounded by its
    /// account-wide rate limit instead).
    #[arg(long, env = "RECOVERY_AWS_IN_FLIGHT", default_value_t = 32)]
    aws_in_flight: usize,
    /// AWS circuit breaker: how far back AWS call outcomes count (e.g. `60s`).
    #[arg(long, env = "RECOVERY_AWS_BREAKER_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    aws_breaker_window: Duration,
    /// AWS circuit breaker: calls in the window before it may open.
    #[arg(long, env = "RECOVERY_AWS_BREAKER_MIN_CALLS", default_value_t = 20)]
    aws_breaker_min_calls: usize,
    /// AWS circuit breaker: share of failed calls (throttling, 5xx, timeouts) that opens it.
    #[arg(long, env = "RECOVERY_AWS_BREAKER_FAILURE_RATIO", default_value_t = 0.5)]
    aws_breaker_failure_ratio: f64,
    /// One HTTP attempt to AWS gives up after this long (e.g. `10s`).
    #[arg(long, env = "RECOVERY_AWS_ATTEMPT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    aws_attempt_timeout: Duration,
    /// A whole AWS operation, retries of reads included, gives up after this long.
    #[arg(long, env = "RECOVERY_AWS_OPERATION_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    aws_operation_timeout: Duration,
    /// Read AWS events from this SQS queue (repeat the flag, or comma-separate): an
    /// EventBridge rule's target (see examples/events/). An event wakes the probe of the
    /// targets it names at once; polling at each policy's probeInterval goes on regardless.
    /// The queue's region comes from its URL; it is read with the controller's own
    /// credentials (rules in other accounts forward to its event bus).
    #[arg(long = "event-queue", env = "RECOVERY_EVENT_QUEUES", value_delimiter = ',')]
    event_queues: Vec<String>,
    /// Log format.
    #[arg(long, env = "RECOVERY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "RECOVERY_METRICS_ADDR", default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,
    /// Serve the admission webhook over HTTPS on this address (e.g. `0.0.0.0:9443`): it refuses
    /// a policy whose new `remediation.pause.until` is past or more than 30 days ahead. Needs
    /// `--webhook-cert-dir`.
    #[arg(long, env = "RECOVERY_WEBHOOK_ADDR", requires = "webhook_cert_dir")]
    webhook_addr: Option<SocketAddr>,
    /// Directory holding the webhook's `tls.crt` and `tls.key` (a mounted `kubernetes.io/tls`
    /// Secret), read at start.
    #[arg(long, env = "RECOVERY_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<std::path::PathBuf>,
    /// Only the holder of a coordination.k8s.io Lease reconciles.
    #[arg(long, env = "RECOVERY_LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "RECOVERY_LEASE_NAME", default_value = "aws-recovery-controller")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "RECOVERY_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a Lease is held without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Admit `http` Slack webhook URLs. For tests against a loopback receiver only.
    #[arg(long, env = "RECOVERY_ALLOW_INSECURE_ENDPOINTS")]
    allow_insecure_endpoints: bool,
    /// Name of this instance in Events and the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// After a stop signal, in-flight reconciles get this long to finish their status write.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Crds { dir: None } => print!("{}", crds_yaml()),
        Command::Crds { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for crd in crds() {
                std::fs::write(dir.join(crd_file_name(&crd)), serde_norway::to_string(&crd)?)?;
            }
        }
        Command::Run(args) => {
            let mut runtime = match args.worker_threads {
                1 => tokio::runtime::Builder::new_current_thread(),
                n => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n.into());
                    b
                }
            };
            runtime.enable_all().build()?.block_on(run(*args))?;
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // Our own crates at info, every library at warn. (A directive matches by prefix, so
        // `aws=warn` would also have silenced `aws_recovery_controller`.)
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,aws_recovery_controller=info,recovery_controller=info")
        });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    // Before anything can report ready: a SIGTERM from the first moment on is a clean stop.
    controller::listen_for_shutdown();
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health { metrics: metrics.clone(), ready: ready.clone() };
    let addr = args.metrics_addr;
    // Bound before anything else: a port in use stops the start with a clear error, and
    // probes connect from the first moment (answered as soon as the runtime gets to them).
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding --metrics-addr {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, health).await {
            tracing::error!(error = %e, %addr, "metrics server failed");
        }
    });

    if let (Some(addr), Some(dir)) = (args.webhook_addr, args.webhook_cert_dir.as_deref()) {
        let tls = aws_recovery_controller::webhook::tls_config(dir)?;
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding --webhook-addr {addr}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = aws_recovery_controller::webhook::serve(listener, tls).await {
                tracing::error!(error = %e, %addr, "admission webhook failed");
            }
        });
    }

    // HTTP/2 to the API server: one connection for every request in flight (see `controller::client`).
    let client = controller::client::client(kube::Config::infer().await?)?;
    let settings = AwsSettings {
        in_flight: args.aws_in_flight,
        breaker: BreakerConfig {
            window: args.aws_breaker_window,
            min_calls: args.aws_breaker_min_calls,
            failure_ratio: args.aws_breaker_failure_ratio,
        },
        attempt_timeout: args.aws_attempt_timeout,
        operation_timeout: args.aws_operation_timeout,
        batch_window: args.probe_batch_window,
    };
    let aws = ClientCache::from_env(settings, metrics.clone()).await;
    let identity = args.instance.clone().unwrap_or_else(|| format!("recovery-controller-{}", std::process::id()));
    let ctx = Context::new(client.clone(), aws, Some(identity.clone()), metrics.clone(), args.allow_insecure_endpoints);
    ctx.queues.configure(args.event_queues.clone());
    let scope = Scope {
        namespaces: args.namespaces.clone(),
        selector: args.policy_selector.clone(),
        concurrency: args.concurrency,
        probe_concurrency: args.probe_concurrency,
    };
    tracing::info!(namespaces = ?scope.namespaces, selector = ?scope.selector, leader_election = args.leader_election, event_queues = ?ctx.queues.urls(), "starting");

    wait_until_ready(&client, &scope).await;
    ready.store(true, Ordering::Relaxed);

    let work = async {
        if !args.leader_election {
            controller::run(ctx.clone(), scope).await;
            ctx.flush_events().await;
            return Ok::<_, Box<dyn std::error::Error>>(());
        }
        let namespace = args.lease_namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
        let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&namespace)
            .with_parameters(LeaseParams::new(&identity, args.lease_duration, (args.lease_duration / 3).max(1)))
            .build()
            .await?;
        let (mut leader, _task) = manager.watch().await;
        loop {
            while !*leader.borrow_and_update() {
                tracing::info!(lease = %args.lease_name, %namespace, "standing by: another replica holds the lease");
                metrics.leader.set(0);
                leader.changed().await?;
            }
            tracing::info!(lease = %args.lease_name, "acquired the lease: reconciling");
            metrics.leader.set(1);
            let lost = async {
                while *leader.borrow_and_update() {
                    if leader.changed().await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = controller::run(ctx.clone(), scope.clone()) => {
                    ctx.flush_events().await;
                    return Ok(());
                }
                _ = lost => tracing::warn!("lost the lease: stopping every controller"),
            }
        }
    };
    let forced = async {
        shutdown_signal().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = work => result?,
        _ = forced => tracing::warn!("in-flight work did not finish within {SHUTDOWN_GRACE:?}; exiting"),
    }
    Ok(())
}

/// Ready means the API server answers for all three kinds in scope: the CRDs are installed
/// and RBAC lets the controller list them. Only metadata is asked for: one object this
/// version cannot decode must not keep the controller from starting (the watches report
/// and skip it). Retried until it holds.
async fn wait_until_ready(client: &kube::Client, scope: &Scope) {
    let one = ListParams::default().limit(1);
    loop {
        let ns = scope.namespaces.first();
        let check = async {
            match ns {
                Some(ns) => {
                    Api::<RecoveryPolicy>::namespaced(client.clone(), ns).list_metadata(&one).await?;
                    Api::<Incident>::namespaced(client.clone(), ns).list_metadata(&one).await?;
                    Api::<RecoveryPlan>::namespaced(client.clone(), ns).list_metadata(&one).await?;
                }
                None => {
                    Api::<RecoveryPolicy>::all(client.clone()).list_metadata(&one).await?;
                    Api::<Incident>::all(client.clone()).list_metadata(&one).await?;
                    Api::<RecoveryPlan>::all(client.clone()).list_metadata(&one).await?;
                }
            }
            Ok::<_, kube::Error>(())
        };
        match check.await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "not ready: cannot list the recovery.dev kinds yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}
