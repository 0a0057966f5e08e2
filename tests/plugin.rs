//! `kubectl recovery` against the real parts: found by kubectl as a plugin; `status` and
//! `timeline` of a recovery a person approves with it; `pause`/`resume` and `--watch`; errors
//! that say what to do; and `simulate`, proven to make no mutating AWS call (the fault layer's
//! log) and no write to the cluster (the API server's audit log).
//!
//! Layout is checked two ways: every row of a table starts its cells where its header's
//! columns start, and the text, with names, ages and times replaced by placeholders and runs
//! of spaces by one, equals a golden file in tests/plugin/ (`RECOVERY_UPDATE_GOLDEN=1`
//! rewrites them).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use aws_recovery_controller::api::incident::IncidentPhase;
use aws_recovery_controller::api::labels::APPROVED_BY_ANNOTATION;
use aws_recovery_controller::api::plan::PlanPhase;
use kube::ResourceExt;
use serde_json::{Value, json};

use support::controller::ControllerProcess;
use support::scene::degraded_web;
use support::{aws, eventually, namespace, plans, policy, unique};

const WAIT: Duration = Duration::from_secs(90);
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-recovery");

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs the plugin binary against the test cluster.
fn plugin(args: &[&str]) -> Output {
    plugin_with(args, &[])
}

fn plugin_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(PLUGIN)
        .args(args)
        .env("KUBECONFIG", support::var("KUBECONFIG"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the plugin runs")
}

/// Runs `kubectl recovery …` the way people do: kubectl finds `kubectl-recovery` on PATH.
fn kubectl_recovery(args: &[&str]) -> Output {
    let dir = Path::new(PLUGIN).parent().expect("the binary's directory");
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(support::var("RECOVERY_KUBECTL"))
        .arg("recovery")
        .args(args)
        .env("KUBECONFIG", support::var("KUBECONFIG"))
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs")
}

/// Checks that each table's rows start their cells at the header's column starts (a table
/// is a header line in capitals and the lines under it, up to a blank line).
fn assert_aligned(out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let header = lines[i];
        let is_header = header.split("  ").filter(|c| !c.trim().is_empty()).count() > 1
            && header.chars().all(|c| c.is_ascii_uppercase() || c == ' ' || c == '(' || c == ')');
        if !is_header {
            i += 1;
            continue;
        }
        let starts: Vec<usize> = header
            .char_indices()
            .filter(|(j, c)| *c != ' ' && (*j == 0 || header[..*j].ends_with("  ")))
            .map(|(j, _)| j)
            .collect();
        i += 1;
        while i < lines.len() && !lines[i].trim().is_empty() {
            let row = lines[i];
            for s in &starts[1..] {
                let before = row.get(..*s).unwrap_or_default();
                assert!(
                    before.ends_with("  ") && row.get(*s..*s + 1).is_some_and(|c| c != " "),
                    "row not aligned under the header at column {s}:\n{header}\n{row}\n\n{out}"
                );
            }
            i += 1;
        }
    }
}

/// The text with what changes from run to run replaced, and runs of spaces made one.
fn normalized(out: &str, names: &[(&str, &str)]) -> String {
    let mut s = out.to_owned();
    for (name, placeholder) in names {
        s = s.replace(name, placeholder);
    }
    let words: Vec<String> =
        s.lines().map(|l| l.split_whitespace().map(placeholder_of).collect::<Vec<_>>().join(" ")).collect();
    words.join("\n") + "\n"
}

/// A word that is a time, date, age or id, as its placeholder.
fn placeholder_of(w: &str) -> String {
    let core = w.trim_matches(|c: char| matches!(c, ',' | '(' | ')' | ';' | ':' | '.' | '[' | ']'));
    let is_age = |s: &str| {
        let s = s.strip_prefix('+').unwrap_or(s);
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_digit() || "smhd".contains(c))
            && s.chars().last().is_some_and(|c| "smhd".contains(c))
    };
    let is_date = core.len() == 10 && core.as_bytes().get(4) == Some(&b'-') && core.as_bytes().get(7) == Some(&b'-');
    let is_clock = core.len() == 8 && core.as_bytes().get(2) == Some(&b':') && core.as_bytes().get(5) == Some(&b':');
    let placeholder = if is_age(core) {
        "<age>"
    } else if is_date {
        "<date>"
    } else if is_clock {
        "<time>"
    } else if let Some((k, v)) = core.split_once('=')
        && !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric())
        && !v.is_empty()
    {
        // Evidence values (deployment ids, times) differ every run; their keys do not.
        return w.replace(core, &format!("{k}=<value>"));
    } else if core.as_bytes().windows(8).any(|d| d.iter().all(u8::is_ascii_digit)) {
        "<id>"
    } else {
        return w.to_owned();
    };
    w.replace(core, placeholder)
}

fn golden(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/plugin").join(name);
    if std::env::var_os("RECOVERY_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got, want, "differs from {} (RECOVERY_UPDATE_GOLDEN=1 rewrites it)", path.display());
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", text(out)))
}

/// A recovery seen and steered through the plugin: `status` while the plan waits for
/// approval (exit 3), `approve` through kubectl's plugin lookup, then `status` (exit 0) and
/// the `timeline` of the whole story.
#[tokio::test]
async fn status_approve_and_timeline_of_a_recovery() {
    let client = support::client().await;
    let ns = namespace(&client, "plugin").await;
    let manual = json!({"remediation": {"mode": "Manual", "stepTimeout": "120s", "cooldown": "0s"}});
    let (cluster, faults) = degraded_web(&client, &ns, "plug", manual).await;
    let _ctl = ControllerProcess::start(&ns);
    let plan = plans::wait_phase(&client, &ns, PlanPhase::AwaitingApproval, WAIT).await;
    let incident = policy::incidents(&client, &ns).await.pop().expect("the incident");
    let (plan_name, incident_name) = (plan.name_any(), incident.name_any());
    eventually("the policy's counts and the incident investigating", WAIT, || async {
        let p = policy::get(&client, &ns, "shop").await;
        let inc = policy::incidents(&client, &ns).await.pop()?;
        let investigating = inc.status?.phase == Some(IncidentPhase::Investigating);
        (p.status?.targets?.unhealthy == 1 && investigating).then_some(())
    })
    .await;
    let names = [
        (plan_name.as_str(), "<plan>"),
        (incident_name.as_str(), "<incident>"),
        (cluster.as_str(), "<cluster>"),
        (ns.as_str(), "<ns>"),
    ];

    let out = plugin(&["status", "-n", &ns]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "unhealthy: exit 3\n{stdout}{stderr}");
    eprintln!("$ kubectl recovery status -n {ns}\n{stdout}");
    assert_aligned(&stdout);
    golden("status-awaiting-approval.txt", &normalized(&stdout, &names));
    let report = json_of(&plugin(&["status", "-n", &ns, "-o", "json"]));
    assert_eq!(report["policies"][0]["name"], "shop");
    assert_eq!(report["policies"][0]["unhealthy"], 1);
    assert_eq!(report["targets"][0]["health"], "Unhealthy");
    assert_eq!(report["incidents"][0]["planPhase"], "AwaitingApproval");
    let held = report["incidents"][0]["held"].as_str().unwrap();
    assert!(held.contains(&format!("kubectl recovery approve {plan_name} -n {ns}")), "{held}");
    let yaml = text(&plugin(&["status", "-n", &ns, "-o", "yaml"])).0;
    assert!(yaml.contains("unhealthy: true"), "{yaml}");

    let out = kubectl_recovery(&["approve", &plan_name, "-n", &ns]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("plan {plan_name} approved by ")), "{stdout}");
    let approved = plans::all(&client, &ns).await.pop().unwrap();
    let by = approved.annotations().get(APPROVED_BY_ANNOTATION).cloned().expect("the annotation");
    assert!(stdout.contains(&by), "who asked, as the API server knows them: {by}\n{stdout}");
    let again = plugin(&["approve", &plan_name, "-n", &ns]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).1.contains("only a plan awaiting approval can be approved"), "{:?}", text(&again));

    eventually("the restart", WAIT, || async {
        Some(faults.calls_for("ecs", "UpdateService", "cluster", &cluster).await).filter(|r| !r.is_empty())
    })
    .await;
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 2, "completeRollout": true})).await;
    eventually("resolution", WAIT, || async {
        let inc = policy::incidents(&client, &ns).await.pop()?;
        (inc.status?.phase == Some(IncidentPhase::Resolved)).then_some(())
    })
    .await;
    eventually("status exits 0 once healthy", WAIT, || async {
        (plugin(&["status", "-n", &ns]).status.code() == Some(0)).then_some(())
    })
    .await;

    let out = plugin(&["timeline", &incident_name, "-n", &ns]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    eprintln!("$ kubectl recovery timeline {incident_name} -n {ns}\n{stdout}");
    assert_aligned(&stdout);
    for want in [
        "detected (high)",
        "RestartService started",
        "RestartService completed",
        "deploymentId=",
        "VerifyService completed",
        &format!("approved by {by}"),
        "resolved",
    ] {
        assert!(stdout.contains(want), "timeline lacks {want:?}:\n{stdout}");
    }
    let order: Vec<usize> =
        ["detected", "approved by", "RestartService started", "VerifyService completed", "resolved"]
            .iter()
            .map(|w| stdout.find(w).unwrap_or(usize::MAX))
            .collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "in time order:\n{stdout}");
    // Events are published a moment after what they tell, so where one falls among the
    // status's entries of the same second varies: the golden file holds the rest.
    let shown = normalized(&stdout, &names);
    let (events, story): (Vec<&str>, Vec<&str>) = shown.lines().partition(|l| l.contains(" <age> event "));
    assert!(events.iter().any(|l| l.contains("event PlanExecuting: executing, approved by")), "{shown}");
    golden("timeline-resolved.txt", &(story.join("\n") + "\n"));
    let t = json_of(&plugin(&["timeline", &incident_name, "-n", &ns, "-o", "json"]));
    assert!(t["secondsToFirstAction"].as_u64().is_some() && t["secondsToResolve"].as_u64().is_some(), "{t}");
    let times: Vec<k8s_openapi::jiff::Timestamp> =
        t["entries"].as_array().unwrap().iter().map(|e| e["at"].as_str().unwrap().parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

/// `pause` and `resume` write the policy's pause with who asked; `status --watch` prints
/// again when it changes.
#[tokio::test]
async fn pause_resume_and_watch() {
    let client = support::client().await;
    let ns = namespace(&client, "plugin-pause").await;
    let cluster = unique("pause");
    let spec = json!({
        "aws": {"region": "us-east-1"},
        "targets": {"ecsServices": [{"cluster": cluster, "services": ["web", "api"]}]},
    });
    policy::create(&client, &ns, "shop", spec).await;
    let mut watch = Command::new(PLUGIN)
        .args(["status", "shop", "-n", &ns, "--watch", "--interval", "1s"])
        .env("KUBECONFIG", support::var("KUBECONFIG"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch runs");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        let mut stdout = watch.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let printed = |what: &'static str| {
        let seen = seen.clone();
        async move {
            eventually(what, Duration::from_secs(20), || async { seen.lock().unwrap().contains(what).then_some(()) })
                .await
        }
    };
    printed("POLICY").await;

    let target = format!("ecs/{cluster}/web");
    let out = plugin(&["pause", "shop", "-n", &ns, "--for", "2h", "--target", &target, "--reason", "db migration"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let p = policy::get(&client, &ns, "shop").await;
    let pause = p.spec.remediation.pause.clone().expect("a pause");
    assert_eq!((pause.reason.as_str(), pause.targets.clone()), ("db migration", vec![target.clone()]));
    let left = pause.until.0.duration_since(k8s_openapi::jiff::Timestamp::now()).as_secs();
    assert!((7000..=7200).contains(&left), "until in 2h: {left}s");
    let who = pause.requested_by.clone().expect("who asked");
    assert!(stdout.contains(&who), "{stdout}");
    printed("1 target(s)").await;

    for (args, why) in [
        (vec!["pause", "shop", "-n", &ns, "--for", "31d", "--reason", "x"], "at most 30 days"),
        (
            vec!["pause", "shop", "-n", &ns, "--for", "1h", "--target", "ecs/nope/x", "--reason", "x"],
            "not targets of policy shop",
        ),
    ] {
        let out = plugin(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out).1.contains(why), "{args:?}: {:?}", text(&out));
    }
    let out = plugin(&["resume", "shop", "-n", &ns]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(policy::get(&client, &ns, "shop").await.spec.remediation.pause.is_none());
    assert!(text(&plugin(&["resume", "shop", "-n", &ns])).0.contains("is not paused"));

    // The watch printed the policy, then again for the pause, and again for the resume.
    eventually("a print for the resume", Duration::from_secs(20), || async {
        (seen.lock().unwrap().matches("\n--- ").count() >= 2).then_some(())
    })
    .await;
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.starts_with("POLICY"), "{seen}");
    let last = seen.rsplit("\n--- ").next().unwrap();
    assert!(!last.contains("target(s)"), "the last print has no pause:\n{seen}");

    // Under --watch, JSON is one object a line, so a script can read the stream.
    let mut json_watch = Command::new(PLUGIN)
        .args(["status", "shop", "-n", &ns, "--watch", "-o", "json"])
        .env("KUBECONFIG", support::var("KUBECONFIG"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch runs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = json_watch.kill();
    let lines = String::from_utf8_lossy(&json_watch.wait_with_output().unwrap().stdout).into_owned();
    assert!(!lines.trim().is_empty(), "printed at once");
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert_eq!(v["policies"][0]["name"], "shop");
    }
}

/// Errors say what to do, and exit 1.
#[tokio::test]
async fn errors_say_what_to_do() {
    let client = support::client().await;
    let ns = namespace(&client, "plugin-err").await;
    let empty = std::env::temp_dir().join(unique("no-home"));
    /// Arguments, extra environment, what stderr says.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["status"],
            vec![("KUBECONFIG", "/nonexistent/kubeconfig"), ("HOME", empty.to_str().unwrap())],
            "no cluster to talk to",
        ),
        (vec!["status", "-n", &ns, "--as", "nobody"], vec![], "Ask a cluster admin for that permission"),
        (vec!["timeline", "nope", "-n", &ns], vec![], "Incident nope not found in namespace"),
        (vec!["approve", "nope", "-n", &ns], vec![], "RecoveryPlan nope not found"),
        (vec!["status", "nope", "-n", &ns], vec![], "RecoveryPolicy nope not found"),
        (vec!["simulate", "-f", "/nonexistent/policy.yaml"], vec![], "reading /nonexistent/policy.yaml"),
    ];
    for (args, env, want) in cases {
        let out = plugin_with(&args, &env);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    let out = plugin(&["status", "-n", &ns]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out).0, "No RecoveryPolicies found.\n");
    let usage = plugin(&["pause", "shop"]);
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");
}

/// The audit log of the test API server, as JSON events.
fn audit_events() -> Vec<Value> {
    let dir = PathBuf::from(support::var("RECOVERY_TESTENV_DIR"));
    let ready: Value = serde_json::from_slice(&std::fs::read(dir.join("controlplane.json")).unwrap()).unwrap();
    let path = ready["logs"]["audit"].as_str().expect("the control plane writes an audit log");
    std::fs::read_to_string(path).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// `simulate` reads AWS with the probe's own calls and the cluster with get/list only: the
/// fault layer logs no mutating call, the audit log no write by its identity; and it says
/// what the policy would do, rail by rail.
#[tokio::test]
async fn simulate_reads_only_and_says_what_would_happen() {
    let client = support::client().await;
    let ns = namespace(&client, "plugin-sim").await;
    let cfg = aws::config().await;
    let faults = support::Faults::from_env();
    let cluster = unique("sim");
    aws::ecs_services(&cfg, &cluster, &["web".into(), "api".into()], 2).await;
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 0})).await;
    let db = unique("simdb");
    aws::rds_instance(&cfg, &db, true).await;
    let file = std::env::temp_dir().join(format!("{}.yaml", unique("policy")));
    let manifest = format!(
        "apiVersion: recovery.dev/v1alpha1\nkind: RecoveryPolicy\nmetadata:\n  name: sim\n  namespace: {ns}\nspec:\n  \
         aws: {{ region: us-east-1 }}\n  targets:\n    ecsServices: [{{ cluster: {cluster}, services: [web, api] }}]\n    \
         rdsInstances: [{{ identifier: {db} }}]\n  detection: {{ failureThreshold: 1 }}\n  remediation: {{ mode: Automatic, maxUnhealthyPercent: 50 }}\n"
    );
    std::fs::write(&file, manifest).unwrap();
    let me = unique("simulator");
    let args = ["simulate", "-f", file.to_str().unwrap(), "--as", &me, "--as-group", "system:masters"];

    let out = plugin(&args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "an unhealthy target: exit 3\n{stdout}{stderr}");
    assert_aligned(&stdout);
    let web = format!("ecs/{cluster}/web");
    let line = stdout.lines().find(|l| l.starts_with(&web)).unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("Unhealthy") && line.contains("opens sim-ecs-") && line.contains("the plan would act now"),
        "{line}"
    );
    assert!(stdout.contains("1. ") && stdout.contains("2. "), "the plan's steps:\n{stdout}");
    let api = stdout.lines().find(|l| l.starts_with(&format!("ecs/{cluster}/api"))).unwrap();
    assert!(api.contains("Healthy"), "{api}");
    assert!(stdout.contains(&format!("rds/{db}")), "{stdout}");
    // The incident's name carries a hash of the target, which has a random cluster in it. It
    // is replaced before the words are, or a hash of eight digits would read as an id.
    let mut names = vec![(cluster.as_str(), "<cluster>"), (db.as_str(), "<db>"), (ns.as_str(), "<ns>")];
    names.extend(
        stdout
            .split_whitespace()
            .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
            .filter(|w| w.starts_with("sim-ecs-"))
            .map(|w| (w, "<incident>")),
    );
    let shown = normalized(&stdout, &names);
    golden("simulate.txt", &shown);

    // With more unhealthy than maxUnhealthyPercent, the storm guard would hold the plan.
    faults.ecs_service(json!({"cluster": cluster, "service": "api", "runningCount": 0})).await;
    let s = json_of(&plugin(&[&args[..], &["-o", "json"]].concat()));
    let verdicts = s["targets"].as_array().unwrap();
    let held: Vec<&Value> = verdicts.iter().filter(|v| !v["held"].is_null()).collect();
    assert_eq!(held.len(), 2, "{s}");
    assert!(held.iter().all(|v| v["held"][0] == "TooManyUnhealthy"), "{s}");
    assert_eq!(s["counts"]["unhealthy"], 2);
    assert_eq!(s["live"], false, "no policy of that name in the cluster");

    // Nothing changed anywhere.
    for (service, op, key, value) in [
        ("ecs", "UpdateService", "cluster", cluster.as_str()),
        ("rds", "RebootDBInstance", "DBInstanceIdentifier", db.as_str()),
    ] {
        assert!(faults.calls_for(service, op, key, value).await.is_empty(), "{op} was called");
    }
    assert!(!faults.calls_for("ecs", "DescribeServices", "cluster", &cluster).await.is_empty(), "AWS was read");
    let mine = eventually("the simulation's requests in the audit log", Duration::from_secs(30), || async {
        let mine: Vec<Value> = audit_events()
            .into_iter()
            .filter(|e| e["impersonatedUser"]["username"] == me.as_str() && e["stage"] == "ResponseComplete")
            .collect();
        (mine.len() >= 4).then_some(mine)
    })
    .await;
    let verbs: Vec<&str> = mine.iter().map(|e| e["verb"].as_str().unwrap()).collect();
    assert!(verbs.iter().all(|v| ["get", "list", "watch"].contains(v)), "only reads: {verbs:?}");
    assert!(verbs.contains(&"get") && verbs.contains(&"list"), "{verbs:?}");
    let _ = std::fs::remove_file(file);
}
