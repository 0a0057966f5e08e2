//! `cargo xtask bench`: builds the controller and the benchmark driver (`benches/controller`)
//! in release mode, starts the real parts, installs the CRDs and runs the driver, which starts
//! the controller at each scale and writes the report (default `bench/out/results.md`, git-ignored;
//! BENCHMARKS.md keeps the published figures).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::parts::Environment;
use crate::{Result, cargo, run};

/// moto's cap on RDS snapshots (see [`bench`]).
const SNAPSHOT_LIMIT: &str = "MOTO_RDS_SNAPSHOT_LIMIT";

/// Runs the benchmark; `args` are passed to the driver (`--scale`, `--recovery`, `--out`).
pub fn bench(root: &Path, args: &[String]) -> Result {
    // moto keeps an automated snapshot per DB instance and refuses more than
    // MOTO_RDS_SNAPSHOT_LIMIT of them (1,000 by default); the parts inherit this process's
    // environment, so run again with a limit that fits 10,000 targets.
    if std::env::var_os(SNAPSHOT_LIMIT).is_none() {
        let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
        let status = Command::new(me)
            .args(std::env::args_os().skip(1))
            .env(SNAPSHOT_LIMIT, "1000000")
            .status()
            .map_err(|e| format!("re-running xtask: {e}"))?;
        return status.success().then_some(()).ok_or_else(|| format!("bench failed ({status})"));
    }
    let driver = build(root)?;
    let mut args = args.to_vec();
    if !args.iter().any(|a| a.starts_with("--out")) {
        let dir = root.join("bench/out");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        args.extend(["--out".into(), dir.join("results.md").display().to_string()]);
    }
    let env = Environment::start(root)?;
    let kubectl =
        env.vars().iter().find(|(k, _)| k == "RECOVERY_KUBECTL").map(|(_, v)| v.clone()).ok_or("no kubectl")?;
    let mut apply = Command::new(&kubectl);
    apply.args(["apply", "--server-side", "-f"]).arg(root.join("crds"));
    env.apply(&mut apply);
    run("install the CRDs", &mut apply)?;
    let mut wait = Command::new(&kubectl);
    wait.args(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    env.apply(&mut wait);
    run("wait for the CRDs", &mut wait)?;

    let mut cmd = Command::new(&driver);
    cmd.args(&args).current_dir(root);
    env.apply(&mut cmd);
    let result = run("benchmark (the driver prints progress, then the report)", &mut cmd);
    if result.is_err() {
        env.print_log_tails();
    }
    result
}

/// `cargo build --release` of the controller and the driver; returns the driver's path,
/// read from cargo's JSON messages (its file name carries a hash).
fn build(root: &Path) -> Result<PathBuf> {
    eprintln!("xtask: build the controller and the benchmark driver (release)");
    let out = cargo(root)
        .args(["build", "--release", "--bin", "recovery-controller", "--bench", "controller"])
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build --release failed ({})", out.status));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "controller")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo built no benchmark driver".into())
}
