//! `kubectl recovery`: what on-call needs from a terminal. `status` and `timeline` read the
//! objects (and their Events); `approve`, `retry`, `reverify`, `cancel`, `pause` and `resume`
//! write the annotations and spec fields the controller already honours, with who asked; no
//! verb calls AWS to change anything. `simulate` reads AWS with the controller's own probe code
//! (read-only calls) and the cluster (no write) and prints what a policy would do.
//!
//! Exit status: 0 done (and, for `status` and `simulate`, all healthy); 1 an error (the
//! message says what to do); 2 a usage error; 3 `status` found an unhealthy target or an open
//! incident, or `simulate` an unhealthy target.

mod connect;
mod intent;
mod simulate;
mod status;
mod table;
mod timeline;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

pub use connect::CliError;

/// Exit status of `status` / `simulate` when something is unhealthy.
pub const EXIT_UNHEALTHY: u8 = 3;

/// `kubectl recovery`: status, timelines, approvals and pauses of aws-recovery-controller, and
/// policy simulation against AWS.
#[derive(Parser, Debug)]
#[command(name = "kubectl-recovery", bin_name = "kubectl recovery", version)]
pub struct Cli {
    #[command(flatten)]
    conn: connect::Conn,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    verb: Verb,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON, for scripts.
    Json,
    /// YAML.
    Yaml,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Policies, their targets' health, open incidents, plans and the rails holding them.
    Status {
        /// Only this policy (all its targets are listed, healthy ones too).
        policy: Option<String>,
        /// Print again whenever something changes, until interrupted.
        #[arg(short, long)]
        watch: bool,
        /// How often --watch reads the cluster.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// An incident's story: detected, plan steps with their evidence, alerts, resolved.
    Timeline {
        /// The Incident's name.
        incident: String,
    },
    /// Approve a plan waiting for approval (annotation recovery.dev/approved-by).
    Approve {
        /// The RecoveryPlan's name.
        plan: String,
    },
    /// Give a failed plan's failed step one more attempt (annotation recovery.dev/retry).
    Retry {
        /// The RecoveryPlan's name.
        plan: String,
    },
    /// Run a plan's verification again now (annotation recovery.dev/reverify).
    Reverify {
        /// The RecoveryPlan's name.
        plan: String,
    },
    /// Cancel a waiting plan (annotation recovery.dev/cancel).
    Cancel {
        /// The RecoveryPlan's name.
        plan: String,
    },
    /// Pause a policy's remediation (spec.remediation.pause): incidents still open and alert.
    Pause {
        /// The RecoveryPolicy's name.
        policy: String,
        /// For how long (e.g. 2h, 30m; at most 30 days).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Only these targets (repeat; e.g. ecs/prod/checkout); default the whole policy.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Why, for the Paused condition and the alerts.
        #[arg(long)]
        reason: String,
    },
    /// End a policy's pause now.
    Resume {
        /// The RecoveryPolicy's name.
        policy: String,
    },
    /// What a policy would do now: read AWS (read-only) and the cluster (no writes).
    Simulate {
        /// The RecoveryPolicy manifest (`-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

/// Runs the plugin with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&CliError::Io(format!("starting: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

fn fail(e: &CliError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    let out = cli.output;
    match cli.verb {
        Verb::Simulate { file } => simulate::run(&cli.conn, &file, out).await,
        verb => {
            let k = cli.conn.connect().await?;
            match verb {
                Verb::Status { policy, watch, interval } => {
                    status::run(&k, policy.as_deref(), watch, interval, out).await
                }
                Verb::Timeline { incident } => timeline::run(&k, &incident, out).await,
                Verb::Approve { plan } => intent::plan(&k, &plan, intent::PlanIntent::Approve).await,
                Verb::Retry { plan } => intent::plan(&k, &plan, intent::PlanIntent::Retry).await,
                Verb::Reverify { plan } => intent::plan(&k, &plan, intent::PlanIntent::Reverify).await,
                Verb::Cancel { plan } => intent::plan(&k, &plan, intent::PlanIntent::Cancel).await,
                Verb::Pause { policy, duration, targets, reason } => {
                    intent::pause(&k, &policy, duration, &targets, &reason).await
                }
                Verb::Resume { policy } => intent::resume(&k, &policy).await,
                Verb::Simulate { .. } => unreachable!("handled above"),
            }
        }
    }
}

/// Prints a value as JSON or YAML (tables are printed by each verb).
fn print_data<T: Serialize>(value: &T, out: Output) -> Result<(), CliError> {
    let text = match out {
        Output::Json => serde_json::to_string_pretty(value).map_err(|e| CliError::Io(e.to_string()))? + "\n",
        Output::Yaml | Output::Table => serde_norway::to_string(value).map_err(|e| CliError::Io(e.to_string()))?,
    };
    print!("{text}");
    Ok(())
}
