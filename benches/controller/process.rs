//! The release controller as a child process, and what /proc says about it and the parts.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::limit::MemoryLimit;

/// The fields of `/proc/PID/stat` after the command name, from the state (field 3) on: the
/// name (field 2) may hold spaces, the fields after it are plain. Empty once it has gone.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    rest.split_whitespace().map(str::to_owned).collect()
}

fn stat_number(fields: &[String], field: usize) -> f64 {
    fields.get(field - 3).and_then(|f| f.parse().ok()).unwrap_or_default()
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(pid);
    (stat_number(&fields, 14) + stat_number(&fields, 15)) / clock_ticks()
}

/// Major page faults of a process (pages it waited for the disk for: under a memory limit,
/// code the kernel dropped and read again).
pub fn major_faults(pid: u32) -> f64 {
    stat_number(&stat_fields(pid), 12)
}

/// Whether a child is still running (not gone, not a zombie waiting to be reaped).
fn running(pid: u32) -> bool {
    stat_fields(pid).first().is_some_and(|state| state != "Z")
}

/// Clock ticks per second, the unit of `/proc/PID/stat`'s times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `/proc/PID/status` field in KiB (e.g. `VmHWM`, the peak resident set).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}

/// The largest resident set of a process, sampled every 100 ms until dropped (the kernel
/// keeps only the total's peak, VmHWM): its anonymous part (heap, stacks) and its file-backed
/// part (the binary's code and data as its pages are touched; clean, so the kernel may drop
/// them under pressure and read them again).
pub struct RssSampler {
    peaks: std::sync::Arc<std::sync::Mutex<(u64, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let peaks = std::sync::Arc::new(std::sync::Mutex::new((0, 0)));
        let shared = peaks.clone();
        let task = tokio::spawn(async move {
            loop {
                let (anon, file) = (status_kib(pid, "RssAnon"), status_kib(pid, "RssFile"));
                {
                    let mut p = shared.lock().expect("not poisoned");
                    *p = (p.0.max(anon), p.1.max(file));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        Self { peaks, task }
    }

    /// The peaks so far: (anonymous, file-backed), KiB.
    pub fn peaks(&self) -> (u64, u64) {
        *self.peaks.lock().expect("not poisoned")
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `recovery-controller run` for one namespace, stopped (SIGTERM) when dropped.
pub struct Controller {
    child: Child,
    /// Port of its /metrics.
    pub metrics_port: u16,
    /// One kept-alive connection for the driver's scrapes, which are part of what the
    /// controller's CPU figure includes.
    http: reqwest::Client,
}

impl Controller {
    /// Starts the release binary cargo built next to this driver, logging to `log`, with
    /// `extra` flags after the driver's own; in the memory cgroup `limit` when one is given.
    pub fn start(namespace: &str, log: &Path, extra: &[String], limit: Option<&MemoryLimit>) -> Self {
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        // `RECOVERY_BENCH_WRAPPER` runs the controller under a tool, e.g. `heaptrack -o FILE`
        // for a heap profile (its CPU and RSS figures are then the tool's, not the controller's).
        let wrapper = std::env::var("RECOVERY_BENCH_WRAPPER").unwrap_or_default();
        let mut program: Vec<String> = wrapper.split_whitespace().map(str::to_owned).collect();
        program.push(env!("CARGO_BIN_EXE_recovery-controller").to_owned());
        if let Some(limit) = limit {
            limit.before_start();
            // The shell joins the cgroup, then becomes the controller: everything the
            // controller allocates from its first instruction counts, and its pid stays the
            // one the driver samples.
            let join = ["sh", "-c", r#"echo $$ > "$0" && exec "$@""#].map(str::to_owned);
            program.splice(0..0, join.into_iter().chain([limit.procs().display().to_string()]));
        }
        let child = Command::new(&program[0])
            .args(&program[1..])
            .args(["run", "--namespace", namespace, "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start the controller");
        // A scrape gives up after a while: a controller starved of memory may take minutes
        // to answer, and the driver's wait for its cycles must still end at its limit.
        let http =
            reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().expect("an HTTP client");
        Self { child, metrics_port, http }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the controller has finished `n` policy probe cycles in all (its
    /// `recovery_probe_cycle_seconds_count`; a policy's status is not written for a probe
    /// that changed nothing, so the metric, not a watch, marks the cycles), or `limit`
    /// passes. Returns when (driver clock), and the count.
    pub async fn probe_cycles_reached(&self, n: usize, limit: std::time::Duration) -> (f64, usize) {
        let started = std::time::Instant::now();
        loop {
            let done = self.metric("recovery_probe_cycle_seconds_count").await.unwrap_or_default() as usize;
            // A controller the kernel killed (out of its memory limit) finishes no more.
            if done >= n || started.elapsed() >= limit || !running(self.pid()) {
                return (crate::track::now(), done);
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// One sample of a Prometheus metric (first line starting with `name`), e.g.
    /// `recovery_reconcile_duration_seconds_sum{controller="policy"}`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        text.lines().find(|l| l.starts_with(name))?.rsplit(' ').next()?.parse().ok()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // A wrapper's child first: heaptrack's script does not pass SIGTERM on, and the
        // controller under it would outlive the run.
        let pid = self.child.id().to_string();
        let _ = Command::new("pkill").args(["-TERM", "-P", &pid]).status();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        // One starved of memory may not get through its shutdown at all.
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
