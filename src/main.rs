//! The `recovery-controller` binary.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use aws_recovery_controller::api::{crd_file_name, crds, crds_yaml};
use aws_recovery_controller::aws::ClientCache;
use aws_recovery_controller::controller::{self, Context};

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
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "RECOVERY_NAMESPACE")]
    namespace: Option<String>,
    /// Policies reconciled at once.
    #[arg(long, env = "RECOVERY_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// AWS calls in flight across the process.
    #[arg(long, env = "RECOVERY_AWS_IN_FLIGHT", default_value_t = 32)]
    aws_in_flight: usize,
    /// Log format.
    #[arg(long, env = "RECOVERY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Name of this instance in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Crds { dir: None } => print!("{}", crds_yaml()),
        Command::Crds { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for crd in crds() {
                std::fs::write(dir.join(crd_file_name(&crd)), serde_yaml::to_string(&crd)?)?;
            }
        }
        Command::Run(args) => run(args).await?,
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,aws=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let client = kube::Client::try_default().await?;
    let aws = ClientCache::from_env(args.aws_in_flight).await;
    let ctx = Context::new(client, aws, args.instance);
    tracing::info!(namespace = args.namespace.as_deref().unwrap_or("<all>"), "starting");
    controller::run(ctx, args.namespace, args.concurrency).await;
    Ok(())
}
