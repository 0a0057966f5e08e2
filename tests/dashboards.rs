//! The chart's Grafana dashboard and PrometheusRule: they render only when enabled, with the
//! sidecar label and this release's selector; the rules pass `promtool check rules` and
//! `promtool test rules` (tests/dashboards/rules-test.yaml); the dashboard's queries are valid
//! PromQL; and every metric either names exists in a running controller's `/metrics`, as the
//! type the name implies.
//!
//! helm and promtool come from `RECOVERY_HELM` / `RECOVERY_PROMTOOL`, else from
//! `bash testenv/tools.sh path helm|promtool` (built from the Go module proxy once, then
//! cached). A missing part fails the test with a message saying how to set it up.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use support::chart::{CHART, documents, go_tool, helm, of_kind, one, render, root, run, text};
use support::controller::ControllerProcess;
use support::events::EventPath;
use support::{aws, eventually, namespace, policy, unique};

const DASHBOARD: &str = "dashboards/aws-recovery-controller.json";
const ENABLED: [&str; 2] = ["grafanaDashboard.enabled=true", "prometheusRule.enabled=true"];
const ALERTS: [&str; 6] = [
    "RecoveryControllerNoLeader",
    "RecoveryControllerProbeLagHigh",
    "RecoveryControllerAwsCircuitOpen",
    "RecoveryControllerAlertDeliveriesFailing",
    "RecoveryControllerEventQueueDown",
    "RecoveryControllerUndecodableObjects",
];

fn promtool_bin() -> &'static Path {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(|| go_tool("promtool", "RECOVERY_PROMTOOL", "~6 min"))
}

/// Runs promtool in `dir`; fails with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new(promtool_bin()).args(args).current_dir(dir), None)
        .unwrap_or_else(|e| panic!("running {}: {e}", promtool_bin().display()));
    assert!(out.status.success(), "promtool {args:?} failed:\n{}", text(&out));
    text(&out)
}

/// A fresh scratch directory under target/.
fn scratch(name: &str) -> PathBuf {
    let dir = root().join("target/chart-tests").join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn dashboard() -> Value {
    let path = root().join(CHART).join(DASHBOARD);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every query of the dashboard, with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let d = dashboard();
    let panels = d["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("every target has an expr").to_owned()))
        })
        .collect()
}

/// The PrometheusRule's groups as rendered for release `arc` in namespace `recovery`.
fn rule_groups(sets: &[&str]) -> Value {
    let mut all: Vec<&str> = ENABLED.to_vec();
    all.extend(sets);
    let docs = documents(&render("arc", "recovery", &all));
    let rule = one(&docs, "PrometheusRule");
    json!({"groups": rule["spec"]["groups"]})
}

fn rule_exprs(groups: &Value) -> Vec<(String, String)> {
    groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| (r["alert"].as_str().unwrap().to_owned(), r["expr"].as_str().unwrap().to_owned()))
        .collect()
}

/// The metric names a PromQL expression selects (every exported metric starts `recovery_`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("recovery_") {
        let start = i + at;
        let word_start = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end =
            expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |n| start + n);
        // A label value such as `job="recovery_x"` is not a metric: skip what sits in quotes.
        let quoted = expr[..start].matches('"').count() % 2 == 1;
        if word_start && !quoted {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// Family name → type, from the `# TYPE` lines of an exposition.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// Whether a sample name a query uses is exported: a counter's `_total`, a histogram's
/// `_bucket` / `_sum` / `_count`, a gauge's own name.
fn exported(name: &str, families: &BTreeMap<String, String>) -> Result<(), String> {
    let typed = |family: &str, want: &str| match families.get(family) {
        Some(kind) if kind == want => Ok(()),
        Some(kind) => Err(format!("{name}: {family} is a {kind}, the query reads it as a {want}")),
        None => Err(format!("{name}: no metric family {family} in /metrics")),
    };
    if let Some(family) = name.strip_suffix("_total") {
        return typed(family, "counter");
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(family) = name.strip_suffix(suffix)
            && families.get(family).is_some_and(|k| k == "histogram")
        {
            return Ok(());
        }
    }
    if name.ends_with("_bucket") {
        return typed(name.trim_end_matches("_bucket"), "histogram");
    }
    typed(name, "gauge")
}

#[test]
fn dashboard_and_rules_render_only_when_enabled() {
    let docs = documents(&render("arc", "recovery", &[]));
    assert!(of_kind(&docs, "PrometheusRule").is_empty(), "no PrometheusRule unless enabled");
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"].as_str().unwrap().ends_with("-dashboard")),
        "no dashboard ConfigMap unless enabled"
    );

    let docs = documents(&render(
        "arc",
        "recovery",
        &[
            ENABLED[0],
            ENABLED[1],
            "grafanaDashboard.namespace=monitoring",
            "grafanaDashboard.annotations.grafana_folder=Recovery",
            "prometheusRule.labels.release=kps",
            "prometheusRule.additionalLabels.team=sre",
        ],
    ));
    let cm = one(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "arc-aws-recovery-controller-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1", "the sidecar's label");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Recovery");
    let shipped: Value = serde_json::from_str(cm["data"]["aws-recovery-controller.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard(), "the ConfigMap carries {DASHBOARD} verbatim");
    assert_eq!(shipped["uid"], "aws-recovery-controller");

    let rule = one(&docs, "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], "recovery");
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(names, ALERTS);
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        assert!(expr.contains(r#"job="arc-aws-recovery-controller""#), "{}: default selector in {expr}", r["alert"]);
        assert_eq!(r["labels"]["team"], "sre", "{}", r["alert"]);
        assert!(["critical", "warning"].contains(&r["labels"]["severity"].as_str().unwrap()));
        assert!(!r["annotations"]["summary"].as_str().unwrap().is_empty());
    }

    let custom = rule_groups(&[r#"prometheusRule.selector=namespace="ops"\,service="arc""#]);
    for (alert, expr) in rule_exprs(&custom) {
        assert!(expr.contains(r#"{namespace="ops",service="arc""#), "{alert}: custom selector in {expr}");
        assert!(!expr.contains("job="), "{alert}: {expr}");
    }

    let mut args = vec!["lint", "--strict", CHART];
    for s in ENABLED {
        args.extend(["--set", s]);
    }
    let out = helm(&args);
    assert!(out.status.success() && text(&out).contains("0 chart(s) failed"), "helm lint:\n{}", text(&out));
}

#[test]
fn the_rules_pass_promtool_check_and_unit_tests() {
    let dir = scratch("rules");
    let groups = rule_groups(&[]);
    std::fs::write(dir.join("rules.yaml"), serde_json::to_string_pretty(&groups).unwrap()).unwrap();
    let checked = promtool(&dir, &["check", "rules", "rules.yaml"]);
    assert!(checked.contains(&format!("SUCCESS: {} rules found", ALERTS.len())), "{checked}");
    std::fs::copy(root().join("tests/dashboards/rules-test.yaml"), dir.join("rules-test.yaml")).unwrap();
    let tested = promtool(&dir, &["test", "rules", "rules-test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Each alert has a case that fires it.
    let cases = std::fs::read_to_string(dir.join("rules-test.yaml")).unwrap();
    for alert in ALERTS {
        assert!(cases.contains(&format!("alertname: {alert}")), "rules-test.yaml has no case for {alert}");
    }
}

#[test]
fn the_dashboards_queries_are_valid_promql() {
    // promtool parses rule expressions; each query becomes a recording rule, with Grafana's
    // variables replaced by what they stand for at query time.
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr.replace("$__rate_interval", "2m").replace("$job", ".+");
            json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let dir = scratch("dashboard");
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(dir.join("queries.yaml"), serde_json::to_string_pretty(&file).unwrap()).unwrap();
    let checked = promtool(&dir, &["check", "rules", "queries.yaml"]);
    assert!(checked.contains(&format!("SUCCESS: {} rules found", queries.len())), "{checked}");
    for (title, expr) in &queries {
        assert!(expr.contains(r#"job=~"$job""#), "{title}: the query ignores the job variable: {expr}");
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_rules_name_is_exported() {
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for (title, expr) in dashboard_queries() {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "dashboard panel {title}: no recovery_ metric in {expr}");
        for n in names {
            named.entry(n).or_insert_with(|| format!("dashboard panel {title}"));
        }
    }
    for (alert, expr) in rule_exprs(&rule_groups(&[])) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "alert {alert}: no recovery_ metric in {expr}");
        for n in names {
            named.entry(n).or_insert_with(|| format!("alert {alert}"));
        }
    }

    // A controller at work: a policy probing an ECS service, an event queue with one event
    // on it. Series with fixed labels exist from the start; the others once they happened.
    let client = support::client().await;
    let ns = namespace(&client, "dash-metrics").await;
    let cfg = aws::config().await;
    let cluster = unique("dash");
    aws::ecs_services(&cfg, &cluster, &["web".into()], 1).await;
    let spec = json!({
        "aws": {"region": "us-east-1"},
        "probeInterval": "2s",
        "targets": {"ecsServices": [{"cluster": cluster, "services": ["web"]}]},
        "remediation": {"mode": "Disabled"}
    });
    policy::create(&client, &ns, "dash", spec).await;
    let path = EventPath::new(&cfg, "dash").await;
    let ctl = ControllerProcess::start_args(&["--namespace", &ns, "--event-queue", &path.queue_url], &[]);
    let arn = format!("arn:aws:ecs:us-east-1:123456789012:service/{cluster}/web");
    path.put("aws.ecs", "ECS Service Action", &[arn], json!({"eventName": "SERVICE_STEADY_STATE"})).await;
    let exposition = eventually("a probe and an event in /metrics", Duration::from_secs(60), || async {
        let (status, body) = ctl.get("/metrics").await;
        let probed =
            body.contains(r#"recovery_aws_calls_total{service="ecs",operation="DescribeServices",outcome="ok"}"#);
        (status == 200 && probed && body.contains("recovery_events_total{")).then_some(body)
    })
    .await;
    let families = families(&exposition);
    let missing: Vec<String> =
        named.iter().filter_map(|(name, by)| exported(name, &families).err().map(|e| format!("{by}: {e}"))).collect();
    assert!(missing.is_empty(), "{}\n/metrics:\n{exposition}", missing.join("\n"));
    eprintln!("{} metric names checked against {} exported families", named.len(), families.len());
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"histogram_quantile(0.9, sum by (le) (rate(recovery_a_bucket{job="recovery_x"}[5m]))) > recovery_b"#),
        ["recovery_a_bucket", "recovery_b"]
    );
    assert_eq!(names("sum(not_recovery_c)"), Vec::<String>::new());
    let fams: BTreeMap<String, String> =
        [("recovery_a", "histogram"), ("recovery_b", "gauge"), ("recovery_c", "counter")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
    assert!(exported("recovery_a_bucket", &fams).is_ok());
    assert!(exported("recovery_a_count", &fams).is_ok());
    assert!(exported("recovery_b", &fams).is_ok());
    assert!(exported("recovery_c_total", &fams).is_ok());
    assert!(exported("recovery_c", &fams).is_err(), "a counter read without _total");
    assert!(exported("recovery_b_total", &fams).is_err(), "a gauge read as a counter");
    assert!(exported("recovery_d", &fams).is_err());
}
