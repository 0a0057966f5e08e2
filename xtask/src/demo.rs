//! `cargo xtask demo`: the main job, locally, on the real parts. Starts the control plane
//! and moto, installs the CRDs, applies a policy for one ECS service, runs the controller,
//! breaks the service and prints `kubectl get incidents,recoveryplans` until it is Resolved.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::parts::Environment;
use crate::{Result, cargo, run};

const NS: &str = "demo";

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

pub fn demo(root: &Path) -> Result {
    run("build the controller", cargo(root).args(["build", "--bin", "recovery-controller"]))?;
    let env = Environment::start(root)?;
    let kubectl = |args: &[&str]| -> Result<String> {
        let mut cmd = Command::new(var(&env, "RECOVERY_KUBECTL")?);
        cmd.args(args);
        env.apply(&mut cmd);
        let out = cmd.output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let aws = |step: &str| -> Result<String> {
        let mut cmd = Command::new(&env.python);
        cmd.arg(root.join("examples/demo/aws.py")).arg(step);
        env.apply(&mut cmd);
        let out = cmd.output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("aws.py {step}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };

    say("installing the CRDs and the demo policy");
    kubectl(&["apply", "--server-side", "-f", &root.join("crds").display().to_string()])?;
    kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"])?;
    kubectl(&["create", "namespace", NS])?;
    aws("setup")?;
    kubectl(&["apply", "-n", NS, "-f", &root.join("examples/demo/policy.yaml").display().to_string()])?;

    say("starting the controller");
    let target =
        std::env::var("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let log = std::fs::File::create(root.join("target/demo-controller.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(target.join("debug/recovery-controller"));
    cmd.args(["run", "--namespace", NS, "--metrics-addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    env.apply(&mut cmd);
    let _controller = Controller(cmd.spawn().map_err(|e| format!("starting the controller: {e}"))?);
    std::thread::sleep(Duration::from_secs(6));
    println!("{}", kubectl(&["get", "recoverypolicies", "-n", NS])?);

    say("breaking ECS service demo/checkout: 1 of 3 tasks running");
    aws("break")?;
    let started = Instant::now();
    let mut healed = false;
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(300) {
        let now = kubectl(&["get", "incidents,recoveryplans", "-n", NS])?;
        if now != last {
            println!("--- {:>4.0}s\n{now}", started.elapsed().as_secs_f64());
            last = now;
        }
        if !healed && aws("restarts")? != "0" {
            say("the controller restarted the service; its new deployment comes up: 3 of 3 running");
            aws("heal")?;
            healed = true;
        }
        let phases = kubectl(&["get", "incidents", "-n", NS, "-o", "jsonpath={.items[*].status.phase}"])?;
        if phases.split_whitespace().any(|p| p == "Resolved") {
            println!("{}", kubectl(&["get", "incidents,recoveryplans", "-n", NS])?);
            say(&format!("resolved in {:.0}s; the plan's audit trail:", started.elapsed().as_secs_f64()));
            println!("{}", kubectl(&["get", "recoveryplans", "-n", NS, "-o", "yaml"])?);
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Err("the demo incident did not resolve within 5 minutes; see target/demo-controller.log".into())
}

fn var(env: &Environment, name: &str) -> Result<String> {
    env.vars().iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).ok_or_else(|| format!("{name} is not set"))
}

fn say(what: &str) {
    println!("\n==> {what}");
}
