//! The controller under test, as a child process with a kill switch.

use std::process::{Child, Command, Stdio};

/// A running `recovery-controller run`, killed (SIGKILL) when dropped.
pub struct ControllerProcess {
    child: Child,
    /// Where its log goes.
    pub log: std::path::PathBuf,
    /// Port of /metrics, /healthz and /readyz on 127.0.0.1.
    pub metrics_port: u16,
}

impl ControllerProcess {
    /// Starts the controller watching one namespace.
    pub fn start(namespace: &str) -> Self {
        Self::start_with(namespace, &[])
    }

    /// Starts it with extra environment (e.g. `RECOVERY_FAILPOINT`).
    pub fn start_with(namespace: &str, env: &[(&str, &str)]) -> Self {
        Self::start_args(&["--namespace", namespace], env)
    }

    /// Starts it with the given `run` flags (a free metrics port is added).
    pub fn start_args(args: &[&str], env: &[(&str, &str)]) -> Self {
        let namespace = args.iter().skip_while(|a| **a != "--namespace").nth(1).copied().unwrap_or("all");
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let dir = std::path::PathBuf::from(super::var("RECOVERY_TESTENV_DIR"));
        let log = dir.join(format!("controller-{namespace}-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).expect("controller log");
        let child = Command::new(env!("CARGO_BIN_EXE_recovery-controller"))
            .arg("run")
            .args(args)
            .args(["--metrics-addr", &metrics_addr])
            .env("RUST_LOG", "info,aws_recovery_controller=debug,kube=warn")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .envs(env.iter().copied())
            .spawn()
            .expect("start the controller");
        Self { child, log, metrics_port }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident and peak resident memory (VmRSS, VmHWM) in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/PID/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM, as Kubernetes stops a pod.
    pub fn terminate(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    /// GET a path of its HTTP server: (status, body). A refused connection is tried again
    /// for a few seconds: right after the start the process may not listen yet, and a test
    /// that polls `/readyz` must not fail on that race.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.metrics_port);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let resp = loop {
            match reqwest::get(&url).await {
                Err(e) if e.is_connect() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                answer => break answer.expect("the controller's HTTP server answers"),
            }
        };
        (resp.status().as_u16(), resp.text().await.unwrap_or_default())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself (a failpoint aborts it); panics on timeout.
    pub async fn exited(&mut self, timeout: std::time::Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the controller did not exit within {timeout:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
