//! The real parts the tests run against, as child processes: the Kubernetes control plane
//! (kube-apiserver + etcd), moto with the project's fault layer, and the SMTP and Slack
//! receivers. Each writes a JSON "ready file" once it serves; dropping [`Environment`]
//! stops them all, on success and on failure alike.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Result, run, tools_cache};

/// A started part.
struct Part {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// The running parts and what tests need to reach them.
pub struct Environment {
    parts: Vec<Part>,
    vars: Vec<(String, String)>,
    /// The venv's python (moto, boto3, the receivers).
    pub python: PathBuf,
}

impl Environment {
    /// Builds or reuses the tools, then starts every part and waits until each serves.
    pub fn start(root: &Path) -> Result<Self> {
        let cache = tools_cache();
        eprintln!("xtask: tools cache {}", cache.display());
        run(
            "control-plane binaries (built once per version, then cached)",
            Command::new("bash").arg(root.join("testenv/tools.sh")).env("RECOVERY_TOOLS_CACHE", &cache),
        )?;
        let python = venv_python(root, &cache)?;
        let work = root.join("target/testenv").join(std::process::id().to_string());
        fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let mut env = Environment { parts: vec![], vars: vec![], python: python.clone() };
        let me = std::process::id().to_string();

        let cp = env.spawn(
            "control plane",
            Command::new("python3")
                .arg(root.join("testenv/controlplane.py"))
                .arg("--workdir")
                .arg(work.join("controlplane"))
                .arg("--ready-file")
                .arg(work.join("controlplane.json"))
                .env("RECOVERY_TOOLS_CACHE", &cache)
                .env("RECOVERY_PARENT_PID", &me),
            &work,
        )?;
        let aws = env.spawn(
            "moto + fault layer",
            Command::new(&python)
                .arg(root.join("testenv/aws/server.py"))
                .args(["--port", "0", "--ready-file"])
                .arg(work.join("aws.json"))
                .env("RECOVERY_PARENT_PID", &me),
            &work,
        )?;
        let rx = env.spawn(
            "SMTP + Slack receivers",
            Command::new(&python)
                .arg(root.join("testenv/receivers/server.py"))
                .arg("--ready-file")
                .arg(work.join("receivers.json"))
                .env("RECOVERY_PARENT_PID", &me),
            &work,
        )?;

        let cp_ready = env.ready(cp, &work.join("controlplane.json"), Duration::from_secs(180))?;
        let aws_ready = env.ready(aws, &work.join("aws.json"), Duration::from_secs(120))?;
        let rx_ready = env.ready(rx, &work.join("receivers.json"), Duration::from_secs(60))?;
        let s =
            |v: &Value, k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| format!("ready file lacks {k}: {v}"));
        env.vars = vec![
            ("KUBECONFIG".into(), s(&cp_ready, "kubeconfig")?),
            ("RECOVERY_KUBECTL".into(), s(&cp_ready, "kubectl")?),
            ("RECOVERY_CONTROLPLANE_PID".into(), env.parts[cp].child.id().to_string()),
            ("AWS_ENDPOINT_URL".into(), s(&aws_ready, "endpoint")?),
            ("RECOVERY_FAULTS_URL".into(), s(&aws_ready, "control")?),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("RECOVERY_SMTP_ADDR".into(), s(&rx_ready, "smtp")?),
            ("RECOVERY_SLACK_URL".into(), s(&rx_ready, "slack")?),
            ("RECOVERY_PAGERDUTY_URL".into(), s(&rx_ready, "pagerduty")?),
            ("RECOVERY_SLACK_API_URL".into(), s(&rx_ready, "slackApi")?),
            ("RECOVERY_RECEIVERS_URL".into(), s(&rx_ready, "control")?),
            ("RECOVERY_TESTENV_DIR".into(), work.display().to_string()),
        ];
        eprintln!("xtask: every part is up ({})", work.display());
        Ok(env)
    }

    /// The variables tests read.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// Sets the variables on a command.
    pub fn apply(&self, cmd: &mut Command) {
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
    }

    fn spawn(&mut self, name: &'static str, cmd: &mut Command, work: &Path) -> Result<usize> {
        let log = work.join(format!("{}.log", name.split_whitespace().next().unwrap_or(name)));
        let file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        self.parts.push(Part { name, child, log });
        Ok(self.parts.len() - 1)
    }

    fn ready(&mut self, index: usize, file: &Path, timeout: Duration) -> Result<Value> {
        let started = Instant::now();
        loop {
            if let Ok(text) = fs::read_to_string(file)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                eprintln!("xtask: {} ready in {:.1}s", self.parts[index].name, started.elapsed().as_secs_f64());
                return Ok(v);
            }
            let part = &mut self.parts[index];
            if let Ok(Some(status)) = part.child.try_wait() {
                return Err(format!("{} exited ({status}) before it was ready:\n{}", part.name, tail(&part.log, 30)));
            }
            if started.elapsed() > timeout {
                return Err(format!("{} not ready after {timeout:?}:\n{}", part.name, tail(&part.log, 30)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Prints the end of every part's log (after a failed run).
    pub fn print_log_tails(&self) {
        for p in &self.parts {
            eprintln!("--- {} ({}) ---\n{}", p.name, p.log.display(), tail(&p.log, 15));
        }
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        // SIGTERM first so each part stops its own children (etcd, kube-apiserver) cleanly.
        for p in &self.parts {
            let _ = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for p in &mut self.parts {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Ok(None) = p.child.try_wait() {
                eprintln!("xtask: {} did not stop on SIGTERM; killing it", p.name);
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

fn venv_python(root: &Path, cache: &Path) -> Result<PathBuf> {
    eprintln!("xtask: python venv for moto and the receivers (built once per requirements.txt)");
    let out = Command::new("bash")
        .arg(root.join("testenv/venv.sh"))
        .env("RECOVERY_TOOLS_CACHE", cache)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("testenv/venv.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("testenv/venv.sh failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let python = text.lines().rev().find(|l| !l.trim().is_empty()).ok_or("testenv/venv.sh printed no python path")?;
    Ok(PathBuf::from(python.trim()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Blocks until the process is interrupted (the parts share the terminal's process group,
/// so Ctrl-C reaches them too and each stops itself).
pub fn wait_for_interrupt() {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
