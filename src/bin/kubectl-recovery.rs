//! The `kubectl-recovery` binary: `kubectl recovery …` once it is on PATH.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    aws_recovery_controller::cli::main()
}
