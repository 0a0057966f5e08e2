//! The `recovery-controller` binary.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use aws_recovery_controller::api::{crd_file_name, crds, crds_yaml};

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
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Crds { dir: None } => print!("{}", crds_yaml()),
        Command::Crds { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for crd in crds() {
                std::fs::write(dir.join(crd_file_name(&crd)), serde_yaml::to_string(&crd)?)?;
            }
        }
    }
    Ok(())
}
