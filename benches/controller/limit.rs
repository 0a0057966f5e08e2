//! A memory limit for the controller, as a pod's `resources.limits.memory` sets one: a
//! memory cgroup (v2 `memory.max`, or v1 `memory.limit_in_bytes`). The kernel counts the
//! controller's anonymous memory and the page cache it brings in (its binary's code) against
//! the limit, reclaims the page cache when the sum reaches it, and kills the process when
//! nothing more can be reclaimed. There is no swap on the bench's machines and none is
//! allowed here, so anonymous memory cannot be pushed out.

use std::path::{Path, PathBuf};

const V2_ROOT: &str = "/sys/fs/cgroup";
const V1_ROOT: &str = "/sys/fs/cgroup/memory";

/// One memory cgroup, removed when dropped (after the controller in it has gone).
pub struct MemoryLimit {
    dir: PathBuf,
    v2: bool,
    /// The limit, bytes.
    pub bytes: u64,
}

impl MemoryLimit {
    /// Creates the cgroup `name` limited to `bytes`, or panics saying what the bench needs.
    pub fn create(name: &str, bytes: u64) -> Self {
        let v2 = std::fs::read_to_string(Path::new(V2_ROOT).join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let root = if v2 { V2_ROOT } else { V1_ROOT };
        if v2 {
            // Children get the memory controller only when the parent hands it down; it may
            // already, and the root cgroup is allowed to.
            let _ = std::fs::write(Path::new(V2_ROOT).join("cgroup.subtree_control"), "+memory");
        }
        let limit = Self { dir: Path::new(root).join(name), v2, bytes };
        let made = std::fs::create_dir_all(&limit.dir).and_then(|()| match v2 {
            true => {
                limit.write("memory.max", bytes)?;
                // Absent when the kernel does not account swap.
                let _ = limit.write("memory.swap.max", 0);
                Ok(())
            }
            false => {
                limit.write("memory.limit_in_bytes", bytes)?;
                // memory + swap no higher than memory: no swap (the file exists only when the
                // kernel accounts swap).
                let _ = limit.write("memory.memsw.limit_in_bytes", bytes);
                Ok(())
            }
        });
        if let Err(e) = made {
            panic!(
                "--memory-limit needs a writable memory cgroup ({}: {e}): run the bench as root on a host with \
                 cgroup v2's memory controller at {V2_ROOT} or cgroup v1's at {V1_ROOT}",
                limit.dir.display()
            );
        }
        limit
    }

    fn write(&self, file: &str, value: u64) -> std::io::Result<()> {
        std::fs::write(self.dir.join(file), value.to_string())
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// The file a process writes its pid to, to join.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Empties the page cache, so that the binary's pages are read again, by the controller,
    /// and count against its limit: a page is charged to the cgroup that first reads it, and
    /// the build or an earlier scale read them.
    pub fn before_start(&self) {
        let _ = std::process::Command::new("sync").status();
        if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "1") {
            panic!("--memory-limit empties the page cache before the controller starts: /proc/sys/vm/drop_caches: {e}");
        }
    }

    /// The highest usage the kernel recorded, bytes (v2 `memory.peak` needs Linux 5.19).
    pub fn peak(&self) -> u64 {
        let file = if self.v2 { "memory.peak" } else { "memory.max_usage_in_bytes" };
        self.read(file).trim().parse().unwrap_or_default()
    }

    /// Processes the kernel killed for want of memory in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_default()
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `40Mi`, `40MiB`, `512Ki`, `1Gi` (powers of 1,024, as Kubernetes writes limits) or bytes.
pub fn parse_bytes(s: &str) -> u64 {
    let s = s.trim().trim_end_matches('B');
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let scale = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => panic!("--memory-limit takes a size like 40Mi or 40MiB, not {s}"),
    };
    number.parse::<u64>().unwrap_or_else(|_| panic!("--memory-limit takes a size like 40Mi, not {s}")) * scale
}
