//! The fakes are tested too: the fault layer in front of moto (held answers, faults, the
//! ECS/RDS/Route 53 states moto lacks) and the alert receivers run their self-tests, each
//! against servers of its own, so a fake that drifts from the contract it stands for fails
//! here rather than passing a controller test it should not.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The test venv's python (`bash testenv/venv.sh` builds it once and prints its path).
fn venv_python() -> PathBuf {
    let out =
        Command::new("bash").arg(root().join("testenv/venv.sh")).current_dir(root()).output().unwrap_or_else(|e| {
            panic!("cannot run `bash testenv/venv.sh` ({e}): it builds the test venv (Python >= 3.10 and PyPI)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python = stdout.lines().rev().find(|l| !l.trim().is_empty()).map(str::trim).unwrap_or_default();
    assert!(
        out.status.success() && !python.is_empty(),
        "`bash testenv/venv.sh` failed ({}): it builds the test venv from testenv/requirements.txt; it needs \
         Python >= 3.10 and PyPI on a cold cache\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(python)
}

fn self_test(script: &str) {
    let out = Command::new(venv_python()).arg(root().join(script)).current_dir(root()).output().expect("python runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{text}");
    let summary = text.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or_default().to_owned();
    assert!(summary.ends_with(" 0 failed"), "{script}: no clean summary line\n{text}");
    eprintln!("{script}: {summary}");
}

#[test]
fn the_fault_layer_keeps_its_contract() {
    self_test("testenv/aws/selftest.py");
}

#[test]
fn the_alert_receivers_keep_their_contract() {
    self_test("testenv/receivers/selftest.py");
}
