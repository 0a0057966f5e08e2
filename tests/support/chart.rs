//! The chart and the tools that check it: rendering with helm, and the Go tools
//! `testenv/tools.sh` builds from the Go module proxy and caches (helm, promtool).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

/// The chart, relative to the crate root.
pub const CHART: &str = "charts/aws-recovery-controller";

/// The crate root (commands run here).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A command's stdout and stderr, for failure messages.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs a command with optional stdin, capturing its output.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> std::io::Result<Output> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut input = child.stdin.take().expect("piped stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes())?;
    }
    drop(input);
    child.wait_with_output()
}

/// The last non-empty stdout line of a setup script run with `args` (its answer: a path), or
/// a failure saying how to set the part up.
pub fn script_answer(script: &str, args: &[&str], what: &str, setup: &str) -> PathBuf {
    let out = run(Command::new("bash").arg(root().join(script)).args(args).current_dir(root()), None)
        .unwrap_or_else(|e| panic!("{what}: cannot run `bash {script}`: {e}. {setup}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer = stdout.lines().rev().find(|l| !l.trim().is_empty()).map(|l| PathBuf::from(l.trim()));
    match answer {
        Some(path) if out.status.success() && path.exists() => path,
        _ => panic!("{what}: `bash {script} {}` failed ({}):\n{}\n{setup}", args.join(" "), out.status, text(&out)),
    }
}

/// A Go tool of `testenv/tools.sh` (`helm`, `promtool`): the binary `$env` names, else the
/// one the script builds once and caches.
pub fn go_tool(name: &str, env: &str, cold_build: &str) -> PathBuf {
    let setup = format!(
        "The chart tests need {name}: run `bash testenv/tools.sh path {name}` (builds it once from the Go module \
         proxy, {cold_build} cold, then cached; see testenv/README.md) or set {env} to a {name} binary."
    );
    if let Ok(path) = std::env::var(env) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{env}={} does not exist. {setup}", path.display());
        return path;
    }
    script_answer("testenv/tools.sh", &["path", name], name, &setup)
}

/// The helm binary: `RECOVERY_HELM`, else the one `testenv/tools.sh` builds and caches.
pub fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| go_tool("helm", "RECOVERY_HELM", "~4 min"))
}

/// Runs helm with its config, cache and data in target/ (nothing in $HOME) and no cluster.
pub fn helm(args: &[&str]) -> Output {
    let home = root().join("target/chart-tests/helm-home");
    let mut cmd = Command::new(helm_bin());
    cmd.args(args)
        .current_dir(root())
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG");
    run(&mut cmd, None).unwrap_or_else(|e| panic!("running {}: {e}", helm_bin().display()))
}

/// `helm template` of the chart; panics with helm's message on failure.
pub fn render(release: &str, ns: &str, sets: &[&str]) -> String {
    let out = try_render(release, ns, sets);
    assert!(out.status.success(), "helm template {sets:?} failed:\n{}", text(&out));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `helm template` of the chart with `--set` values, as it came out.
pub fn try_render(release: &str, ns: &str, sets: &[&str]) -> Output {
    let mut args = vec!["template", release, CHART, "--namespace", ns];
    for s in sets {
        args.extend(["--set", s]);
    }
    helm(&args)
}

/// The documents of a YAML stream (empty ones, e.g. comment-only, left out).
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The documents of one kind.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one document of a kind (fails unless there is exactly one).
pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}
