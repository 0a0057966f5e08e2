//! `cargo xtask test` — the one test command: lint, build the real parts if not cached,
//! start them, run every test against them, and stop them whatever happened.
//!
//! `cargo xtask env` starts the same parts and keeps them up until Ctrl-C, printing the
//! variables a shell needs to run `cargo test` or the controller against them.
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod parts;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use parts::Environment;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&root, &args[1..]),
        Some("lint") => lint(&root),
        Some("env") => env(&root),
        Some("crds") => crds(&root),
        Some("demo") => demo::demo(&root),
        Some("bench") => bench::bench(&root, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n  test [--no-lint] [-- <args>]  lint, start the real parts, run every test, stop the parts\n  lint                          cargo fmt --check and clippy -D warnings\n  env                           start the real parts and wait for Ctrl-C\n  demo                          the main job locally: break an ECS service, watch it recover\n  bench [--scale 100,1000:100] [--recovery N] [--push N] [--push-targets T] [--out FILE]\n                                release controller against the real parts: calls, cycle time, CPU, RSS, latency\n  crds                          regenerate crds/ and the chart's copy from the Rust types"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root);
    c
}

fn run(what: &str, cmd: &mut Command) -> Result {
    eprintln!("xtask: {what}");
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    status.success().then_some(()).ok_or_else(|| format!("{what} failed ({status})"))
}

fn lint(root: &Path) -> Result {
    run("cargo fmt --check", cargo(root).args(["fmt", "--all", "--", "--check"]))?;
    run("cargo clippy", cargo(root).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
}

fn test(root: &Path, extra: &[String]) -> Result {
    // `--no-lint` is for iterating on one test locally; CI always lints.
    let (no_lint, extra): (Vec<&String>, Vec<&String>) = extra.iter().partition(|a| *a == "--no-lint");
    if no_lint.is_empty() {
        lint(root)?;
    }
    // Build the tests before starting the parts, so a compile error costs no start-up and
    // the parts are not left idle through a long build.
    run("build tests", cargo(root).args(["test", "--workspace", "--no-run"]))?;
    let env = Environment::start(root)?;
    let mut cmd = cargo(root);
    cmd.args(["test", "--workspace"]).args(extra.into_iter().skip_while(|a| *a == "--"));
    env.apply(&mut cmd);
    // Integration tests mostly wait on the controller and the parts; more threads than cores
    // keeps the run short without loading the machine.
    if std::env::var_os("RUST_TEST_THREADS").is_none() {
        cmd.env("RUST_TEST_THREADS", "8");
    }
    let result = run("cargo test (unit and integration, against the real parts)", &mut cmd);
    if result.is_err() {
        env.print_log_tails();
    }
    drop(env);
    result
}

/// The CRDs are generated from the API types into `crds/`; the chart ships a copy (Helm
/// installs a chart's `crds/` first). Tests fail when either drifts.
fn crds(root: &Path) -> Result {
    run("generate crds/", cargo(root).args(["run", "--quiet", "--", "crds", "--dir", "crds"]))?;
    let chart = root.join("charts/aws-recovery-controller/crds");
    for entry in std::fs::read_dir(root.join("crds")).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path.file_name().ok_or("a file name")?;
        std::fs::copy(&path, chart.join(name)).map_err(|e| format!("copying {}: {e}", path.display()))?;
    }
    eprintln!("xtask: crds/ and {} are up to date", chart.display());
    Ok(())
}

fn env(root: &Path) -> Result {
    let env = Environment::start(root)?;
    println!("# the test environment is up; in another shell:");
    for (k, v) in env.vars() {
        println!("export {k}='{v}'");
    }
    println!("# Ctrl-C stops it");
    parts::wait_for_interrupt();
    drop(env);
    Ok(())
}

/// Where built tools and the Python venv are cached: outside the checkout, so a fresh clone
/// (as CI makes) reuses them.
pub fn tools_cache() -> PathBuf {
    if let Ok(dir) = std::env::var("RECOVERY_TOOLS_CACHE") {
        return dir.into();
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())).join(".cache"));
    base.join("aws-recovery-controller").join("tools")
}
