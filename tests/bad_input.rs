//! Bad input fails at `kubectl apply`, on the real API server, with a message naming the field.
//!
//! Every file in `tests/bad_input/` is one invalid `RecoveryPolicy`. Its leading comment
//! lines say what the server must answer: each `# expect: <text>` must appear in kubectl's
//! stderr. The files are applied with `--validate=strict` (server-side field validation, so
//! unknown fields are errors too). Every problem of every file is collected and reported in
//! one failure, so a single run shows the whole picture.
//!
//! A corpus that passes because everything is rejected proves nothing, so valid policies
//! (one per target type, one with alerts, one at every inclusive bound) must be accepted.

mod support;

use std::path::{Path, PathBuf};

use support::{kubectl, namespace};

/// The corpus must not quietly shrink.
const MIN_CORPUS: usize = 30;

/// kubectl processes run at once while applying the corpus.
const PARALLEL: usize = 8;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("bad_input")
}

/// The corpus files, sorted by name.
fn corpus() -> Vec<PathBuf> {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// The `# expect:` lines of the leading comment block.
fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("# expect:"))
        .map(|expect| expect.trim().to_owned())
        .filter(|expect| !expect.is_empty())
        .collect()
}

/// What is wrong with how the server treated one file; empty when all is as expected.
fn check(path: &Path, ns: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let expects = expectations(&text);
    let mut problems = vec![];
    if expects.is_empty() {
        problems.push("has no leading `# expect: <text>` line".to_owned());
    }
    let file = path.to_str().expect("a UTF-8 path");
    let out = kubectl(&["apply", "--validate=strict", "-f", file, "-n", ns], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        problems.push(format!(
            "was ACCEPTED by the API server (a schema gap): {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ));
        return problems;
    }
    // A 422 prints `The RecoveryPolicy "x" is invalid: ...`, a 400 `Error from server (BadRequest)`.
    // Anything else is kubectl failing on its own (e.g. a YAML syntax error), which proves
    // nothing about the schema.
    if !stderr.contains("Error from server") && !stderr.contains("is invalid:") {
        problems.push("was rejected by kubectl itself, not by the API server".to_owned());
    }
    for expect in &expects {
        if !stderr.contains(expect.as_str()) {
            problems.push(format!("stderr lacks `{expect}`"));
        }
    }
    if !problems.is_empty() {
        problems.push(format!("stderr was:\n{}", indent(stderr.trim())));
    }
    problems
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("        {line}")).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn every_bad_manifest_is_rejected_naming_the_field() {
    let client = support::client().await;
    let ns = namespace(&client, "bad-input").await;
    let files = corpus();
    assert!(
        files.len() >= MIN_CORPUS,
        "the corpus in {} has {} manifests; at least {MIN_CORPUS} are expected",
        corpus_dir().display(),
        files.len()
    );
    let chunk = files.len().div_ceil(PARALLEL);
    let results: Vec<(PathBuf, Vec<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let ns = ns.as_str();
                scope.spawn(move || part.iter().map(|path| (path.clone(), check(path, ns))).collect::<Vec<_>>())
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a corpus worker")).collect()
    });
    let failures: Vec<String> = results
        .iter()
        .filter(|(_, problems)| !problems.is_empty())
        .map(|(path, problems)| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            format!("{name}:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} bad manifests were not rejected as expected:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn expectations_are_read_from_the_leading_comment_only() {
    let text = "# expect: spec.a: Invalid value\n# expect:   spec.b  \n# a note\napiVersion: v1\n# expect: ignored\n";
    assert_eq!(expectations(text), ["spec.a: Invalid value", "spec.b"]);
}

/// A valid policy per target type, one with both alert channels, and one at every inclusive
/// bound of the schema: the corpus fails for its faults, not because everything fails.
fn valid_policies() -> Vec<(&'static str, String)> {
    let ecs = r#"
spec:
  aws: { region: us-east-1, roleArn: "arn:aws:iam::123456789012:role/recovery/controller" }
  targets:
    ecsServices:
      - { cluster: prod, services: [checkout, cart], severity: critical }
      - { cluster: Staging_Cluster-2, services: [web] }
  remediation: { pause: { until: "2021-06-01T00:00:00+09:00", reason: "a window long past pauses nothing" } }
  retention: { successfulHistoryLimit: 0, failedHistoryLimit: 1000, ttlAfterResolved: 1m, summaryLimit: 0 }
"#;
    let rds = r#"
spec:
  aws: { region: eu-central-1 }
  probeInterval: 1h
  targets:
    rdsInstances:
      - { identifier: prod-db, severity: high }
      - { identifier: a }
  detection: { failureThreshold: 1, successThreshold: 10 }
  remediation: { mode: Manual, stepTimeout: 2h, cooldown: 24h, maxUnhealthyPercent: 100, maxAttempts: 10 }
  retention: { successfulHistoryLimit: 1000, failedHistoryLimit: 0, ttlAfterResolved: 8760h, summaryLimit: 100 }
"#;
    let route53 = r#"
spec:
  aws: { region: us-gov-west-1, roleArn: "arn:aws-us-gov:iam::123456789012:role/recovery" }
  probeInterval: 2s
  targets:
    route53HealthChecks:
      - healthCheckId: 0b7e2c5e-8b6f-4f43-9d1a-0a6c2d3e4f51
        failover:
          hostedZoneId: Z1D633PJN98FT9
          recordName: api.example.com.
          recordType: AAAA
          aliasTarget: { dnsName: dualstack.backup-123.us-east-1.elb.amazonaws.com, hostedZoneId: Z35SXDOTRQ7X7K, evaluateTargetHealth: true }
      - healthCheckId: 1c8f3d6f-9c70-4a54-8e2b-1b7d3e4f5a62
  remediation: { mode: DryRun, stepTimeout: 30s, cooldown: 0s, maxUnhealthyPercent: 0, maxAttempts: 1, maxConcurrentPlans: 20 }
"#;
    let alerts = r#"
spec:
  aws: { region: ap-northeast-2 }
  targets:
    rdsInstances: [{ identifier: orders-db }]
  remediation:
    mode: Disabled
    pause: { until: "2099-12-31T23:59:59Z", reason: "RDS maintenance", targets: [rds/orders-db], requestedBy: alice }
  alerts:
    minSeverity: critical
    locale: ko
    slack: { webhookSecretRef: { name: slack-webhook, key: url }, channel: '#incidents' }
    email:
      smtpSecretRef: { name: smtp.mail }
      from: recovery+prod@example.com
      to: [oncall@example.com, "o'brien@example.co.uk"]
"#;
    let services: Vec<String> = (1..=100).map(|i| format!("svc-{i:03}")).collect();
    let groups: String = (1..=20)
        .map(|i| format!("      - {{ cluster: cluster-{i:02}, services: [{}] }}\n", services.join(", ")))
        .collect();
    let dbs: String = (1..=100).map(|i| format!("      - {{ identifier: db-{i:03} }}\n")).collect();
    let checks: String =
        (1..=50).map(|i| format!("      - {{ healthCheckId: {i:08x}-0000-4000-8000-{i:012x} }}\n")).collect();
    let recipients: Vec<String> = (1..=20).map(|i| format!("oncall-{i:02}@example.com")).collect();
    let limits = format!(
        r#"
spec:
  aws: {{ region: us-east-1 }}
  probeInterval: 59m59s999ms
  targets:
    ecsServices:
{groups}    rdsInstances:
{dbs}    route53HealthChecks:
{checks}  alerts:
    email: {{ smtpSecretRef: {{ name: smtp }}, from: a@b.co, to: [{}] }}
"#,
        recipients.join(", ")
    );
    vec![
        ("ecs", ecs.to_owned()),
        ("rds", rds.to_owned()),
        ("route53", route53.to_owned()),
        ("alerts", alerts.to_owned()),
        ("limits", limits),
    ]
}

#[tokio::test]
async fn valid_policies_are_accepted() {
    let client = support::client().await;
    let ns = namespace(&client, "good-input").await;
    let mut failures = vec![];
    for (name, spec) in valid_policies() {
        let manifest =
            format!("apiVersion: recovery.dev/v1alpha1\nkind: RecoveryPolicy\nmetadata:\n  name: {name}\n{spec}");
        let out = kubectl(&["apply", "--validate=strict", "-f", "-", "-n", &ns], Some(&manifest));
        if !out.status.success() {
            failures.push(format!("{name}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    assert!(failures.is_empty(), "valid policies were rejected:\n{}", failures.join("\n"));
    let out = kubectl(&["get", "recoverypolicies", "-n", &ns, "-o", "name"], None);
    let listed = String::from_utf8_lossy(&out.stdout);
    for (name, _) in valid_policies() {
        assert!(listed.lines().any(|l| l == format!("recoverypolicy.recovery.dev/{name}")), "{name} in {listed}");
    }
}
