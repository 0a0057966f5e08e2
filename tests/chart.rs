//! The Helm chart (`charts/aws-recovery-controller`) and the Argo CD health checks
//! (`deploy/argocd`): `helm lint`, what `helm template` renders, a server-side dry run of the
//! rendered manifests against the real API server in both RBAC modes, the RBAC rules as the API
//! server's authorizer applies them, the chart's CRD copies, and the Lua health checks on a real
//! Lua 5.1 (lupa, from the test venv) against every fixture.
//!
//! helm comes from `RECOVERY_HELM`, else from `bash testenv/tools.sh path helm` (built from the
//! Go module proxy once, then cached); the Lua engine from the venv of `testenv/venv.sh`. A
//! missing part fails the test with a message saying how to set it up; nothing skips.

// support re-exports `Faults`, which only the AWS tests use.
#[allow(unused_imports)]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use support::chart::{CHART, documents, helm, of_kind, one, render, root, run, script_answer, text, try_render};
use support::{kubectl, namespace};

const KINDS: [&str; 3] = ["RecoveryPolicy", "Incident", "RecoveryPlan"];

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap_or_default().to_owned()).collect()).unwrap_or_default()
}

/// The controller's rules on the watched namespaces (ClusterRole, or each namespace's Role).
fn controller_rules(secret_names: Option<&[&str]>) -> Value {
    let mut secrets = json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]});
    if let Some(names) = secret_names {
        secrets["resourceNames"] = json!(names);
    }
    json!([
        {"apiGroups": ["recovery.dev"], "resources": ["recoverypolicies"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["recovery.dev"], "resources": ["recoverypolicies/status"], "verbs": ["get", "patch", "update"]},
        {"apiGroups": ["recovery.dev"], "resources": ["incidents"],
            "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
        {"apiGroups": ["recovery.dev"], "resources": ["incidents/status"], "verbs": ["get", "patch", "update"]},
        {"apiGroups": ["recovery.dev"], "resources": ["recoveryplans"],
            "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": ["recovery.dev"], "resources": ["recoveryplans/status"], "verbs": ["get", "patch", "update"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        secrets,
    ])
}

fn lease_rules(lease: &str) -> Value {
    json!([
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease],
            "verbs": ["get", "update", "patch"]},
    ])
}

#[test]
fn helm_version_is_the_pinned_one() {
    let gomod = std::fs::read_to_string(root().join("testenv/go/helm/go.mod")).unwrap();
    let pinned = gomod
        .lines()
        .find_map(|l| l.strip_prefix("require helm.sh/helm/v3 "))
        .expect("testenv/go/helm/go.mod requires helm.sh/helm/v3")
        .trim()
        .to_owned();
    let out = helm(&["version", "--template", "{{ .Version }}"]);
    assert!(out.status.success(), "{}", text(&out));
    // RECOVERY_HELM may name another helm v3; the built one must be exactly the pin.
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if std::env::var_os("RECOVERY_HELM").is_none() {
        assert_eq!(version, pinned, "tools.sh builds helm with its version in the ldflags");
    }
    assert!(version.starts_with("v3."), "helm v3 expected, got {version}");
}

#[test]
fn helm_lint_passes() {
    for sets in [
        &[][..],
        &["watchNamespaces={team-a,team-b}", "rbac.secretNames={slack-webhook,smtp}"][..],
        &["serviceMonitor.enabled=true", "serviceAccount.roleArn=arn:aws:iam::123456789012:role/recovery"][..],
        &[
            "events.queueUrls={https://sqs.us-east-1.amazonaws.com/123456789012/a,https://sqs.eu-west-1.amazonaws.com/123456789012/b}",
        ][..],
        &["replicaCount=1", "leaderElection.enabled=false", "logFormat=text", "policySelector=team=payments"][..],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = helm(&args);
        assert!(out.status.success(), "helm lint --strict {sets:?}:\n{}", text(&out));
        assert!(text(&out).contains("0 chart(s) failed"), "{}", text(&out));
    }
}

#[test]
fn chart_crds_equal_the_generated_crds() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let generated = root().join("crds");
    let copies = root().join(CHART).join("crds");
    assert_eq!(
        names(&copies),
        names(&generated),
        "{CHART}/crds must hold exactly the files of crds/: cp crds/*.yaml {CHART}/crds/"
    );
    for name in names(&generated) {
        let want = std::fs::read(generated.join(&name)).unwrap();
        let have = std::fs::read(copies.join(&name)).unwrap();
        assert!(have == want, "{CHART}/crds/{name} differs from crds/{name}: cp crds/*.yaml {CHART}/crds/");
    }
}

#[test]
fn every_value_is_documented() {
    let values = std::fs::read_to_string(root().join(CHART).join("values.yaml")).unwrap();
    let mut previous = "";
    let mut undocumented = vec![];
    for line in values.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let is_key = !t.starts_with('#') && !t.starts_with('-') && t.split_once(':').is_some();
        if is_key && !previous.starts_with('#') {
            undocumented.push(t.to_owned());
        }
        previous = t;
    }
    assert!(undocumented.is_empty(), "values.yaml keys without a comment line above them: {undocumented:?}");
}

#[test]
fn default_render_is_the_documented_deployment() {
    let docs = documents(&render("recovery", "ops", &[]));
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]),
        "no ServiceMonitor unless enabled"
    );
    for d in &docs {
        let cluster_scoped = matches!(d["kind"].as_str(), Some("ClusterRole" | "ClusterRoleBinding"));
        assert_eq!(d["metadata"]["namespace"].is_null(), cluster_scoped, "namespace set on {}", d["kind"]);
    }

    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        strings(&c["args"]),
        [
            "run",
            "--leader-election",
            "--lease-name",
            "recovery",
            "--lease-namespace",
            "ops",
            "--metrics-addr",
            "0.0.0.0:8080",
            "--log-format",
            "json"
        ]
    );
    assert_eq!(c["env"][0], json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}));
    assert!(!c["env"].as_array().unwrap().iter().any(|e| e["name"] == "AWS_REGION"), "AWS_REGION only when set");
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}})
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["ports"], json!([{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}]));
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http-metrics"}));
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http-metrics"}));
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert_eq!(spread.len(), 2);
    assert!(spread.iter().all(|s| s["whenUnsatisfiable"] == "ScheduleAnyway"), "soft spreading: {spread:?}");
    assert_eq!(spread[0]["topologyKey"], "kubernetes.io/hostname");
    let anti = &pod["affinity"]["podAntiAffinity"];
    assert!(anti["requiredDuringSchedulingIgnoredDuringExecution"].is_null(), "soft anti-affinity only");
    assert_eq!(
        anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(pod["serviceAccountName"], "recovery-aws-recovery-controller");

    let sa = one(&docs, "ServiceAccount");
    assert!(sa["metadata"]["annotations"].is_null(), "no IRSA annotation without serviceAccount.roleArn");
    assert_eq!(one(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
    assert_eq!(
        one(&docs, "Service")["spec"]["ports"],
        json!([{"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}])
    );
    assert_eq!(one(&docs, "ClusterRole")["rules"], controller_rules(None));
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "recovery-aws-recovery-controller", "namespace": "ops"}])
    );
    let lease_role = one(&docs, "Role");
    assert_eq!(lease_role["metadata"]["namespace"], "ops");
    assert_eq!(lease_role["rules"], lease_rules("recovery"));
}

#[test]
fn values_reach_the_manifests() {
    let docs = documents(&render(
        "recovery",
        "ops",
        &[
            "watchNamespaces={team-a,team-b}",
            "policySelector=tier in (prod)",
            "rbac.secretNames={slack-webhook,smtp}",
            "serviceAccount.roleArn=arn:aws:iam::123456789012:role/recovery",
            "aws.region=eu-west-1",
            "leaderElection.leaseName=recovery-leader",
            "leaderElection.leaseNamespace=kube-system",
            "logFormat=text",
            "metrics.port=9090",
            "events.queueUrls={https://sqs.eu-west-1.amazonaws.com/123456789012/recovery-events}",
            "extraArgs={--concurrency,32}",
            "extraEnv[0].name=RUST_LOG",
            "extraEnv[0].value=debug",
            "serviceMonitor.enabled=true",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ],
    ));
    let c = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        strings(&c["args"]),
        [
            "run",
            "--leader-election",
            "--lease-name",
            "recovery-leader",
            "--lease-namespace",
            "kube-system",
            "--metrics-addr",
            "0.0.0.0:9090",
            "--log-format",
            "text",
            "--namespace",
            "team-a",
            "--namespace",
            "team-b",
            "--policy-selector",
            "tier in (prod)",
            "--event-queue",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/recovery-events",
            "--concurrency",
            "32"
        ]
    );
    let env = c["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "AWS_REGION", "value": "eu-west-1"})), "{env:?}");
    assert!(env.contains(&json!({"name": "RUST_LOG", "value": "debug"})), "{env:?}");
    assert!(c["image"].as_str().unwrap().starts_with("aws-recovery-controller@sha256:"), "{}", c["image"]);
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    assert_eq!(
        one(&docs, "ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/recovery"
    );

    // Namespaced RBAC: a Role per watched namespace, nothing cluster-wide.
    assert!(of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty());
    let roles = of_kind(&docs, "Role");
    let ns_of = |d: &&Value| d["metadata"]["namespace"].as_str().unwrap().to_owned();
    assert_eq!(
        roles.iter().map(ns_of).collect::<BTreeSet<_>>(),
        BTreeSet::from(["team-a", "team-b", "kube-system"].map(String::from))
    );
    for role in &roles {
        let want = if ns_of(role) == "kube-system" {
            lease_rules("recovery-leader")
        } else {
            controller_rules(Some(&["slack-webhook", "smtp"]))
        };
        assert_eq!(role["rules"], want, "Role in {}", ns_of(role));
    }
    let bindings = of_kind(&docs, "RoleBinding");
    assert_eq!(bindings.len(), 3);
    for b in bindings {
        assert_eq!(b["subjects"][0]["namespace"], "ops", "the ServiceAccount lives in the release namespace");
    }

    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");

    // One replica: no PodDisruptionBudget (it would block every drain).
    let docs = documents(&render("recovery", "ops", &["replicaCount=1"]));
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
}

#[test]
fn unsafe_values_are_refused() {
    for (sets, message) in [
        (&["leaderElection.enabled=false"][..], "replicaCount > 1 needs leaderElection.enabled"),
        (&["logFormat=xml"][..], "logFormat"),
        (&["watchNamespaces={Not_A_Namespace}"][..], "watchNamespaces"),
        (&["serviceAccount.roleArn=role/recovery"][..], "roleArn"),
        (&["replicas=3"][..], "additional properties 'replicas' not allowed"),
        (&["webhook.enabled=true"][..], "webhook.enabled needs webhook.certSecretName"),
        (&["webhook.enabled=true", "webhook.certSecretName=certs"][..], "needs webhook.caBundle or"),
        (&["webhook.failurePolicy=Sometimes"][..], "failurePolicy"),
        (&["events.queueUrls={recovery-events}"][..], "queueUrls"),
    ] {
        let out = try_render("recovery", "ops", sets);
        assert!(!out.status.success(), "{sets:?} must be refused");
        assert!(text(&out).contains(message), "{sets:?}: {}", text(&out));
    }
}

/// The admission webhook, when enabled: served by the Deployment from the mounted Secret,
/// reached through the Service, registered for policies' creates and updates.
#[test]
fn the_webhook_renders_when_enabled() {
    let sets = [
        "webhook.enabled=true",
        "webhook.certSecretName=recovery-webhook-tls",
        "webhook.certManagerCertificate=ops/recovery-webhook",
        "watchNamespaces={team-a}",
    ];
    let docs = documents(&render("recovery", "ops", &sets));
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    let args = strings(&pod["containers"][0]["args"]);
    let at = args.iter().position(|a| a == "--webhook-addr").expect("--webhook-addr");
    assert_eq!(args[at + 1..at + 4], ["0.0.0.0:9443", "--webhook-cert-dir", "/etc/recovery/webhook-certs"]);
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "recovery-webhook-tls");
    let ports = &one(&docs, "Service")["spec"]["ports"];
    assert_eq!(ports[1]["targetPort"], "https-webhook");
    let hook = &one(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], "ops/recovery-webhook");
    let w = &hook["webhooks"][0];
    assert_eq!(w["clientConfig"]["service"]["path"], aws_recovery_controller::webhook::PATH);
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(strings(&w["namespaceSelector"]["matchExpressions"][0]["values"]), ["team-a"]);
    let default = documents(&render("recovery", "ops", &[]));
    assert!(of_kind(&default, "ValidatingWebhookConfiguration").is_empty(), "off by default");
}

// ---------------------------------------------------------------------------------------------
// against the real API server

/// `kubectl apply --dry-run=server` of a rendered stream; returns kubectl's output.
fn apply_dry_run(manifests: &str) -> String {
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(manifests));
    assert!(out.status.success(), "kubectl apply --dry-run=server failed:\n{}\n---\n{manifests}", text(&out));
    text(&out)
}

/// Labels a namespace so the API server warns about pod templates that break the
/// `restricted` Pod Security Standard.
fn warn_restricted(ns: &str) {
    let out = kubectl(
        &[
            "label",
            "namespace",
            ns,
            "pod-security.kubernetes.io/warn=restricted",
            "pod-security.kubernetes.io/warn-version=latest",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn cluster_mode_passes_a_server_side_dry_run() {
    let client = support::client().await;
    let ns = namespace(&client, "chart-cluster").await;
    warn_restricted(&ns);
    let mut args = vec!["template", &ns, CHART, "--namespace", &ns, "--include-crds"];
    args.extend(["--set", "serviceAccount.roleArn=arn:aws:iam::123456789012:role/recovery"]);
    let out = helm(&args);
    assert!(out.status.success(), "{}", text(&out));
    let manifests = String::from_utf8(out.stdout).unwrap();
    let result = apply_dry_run(&manifests);
    for what in [
        "customresourcedefinition.apiextensions.k8s.io/recoverypolicies.recovery.dev",
        "deployment.apps/",
        "clusterrole.rbac.authorization.k8s.io/",
        "clusterrolebinding.rbac.authorization.k8s.io/",
        "role.rbac.authorization.k8s.io/",
        "poddisruptionbudget.policy/",
        "service/",
        "serviceaccount/",
    ] {
        assert!(result.contains(what), "{what} missing from the dry run:\n{result}");
    }
    assert!(!result.contains("would violate PodSecurity"), "the pod template must meet `restricted`:\n{result}");

    // The Pod Security check above is live: a weakened pod template is reported.
    let weak = render(&ns, &ns, &["securityContext.allowPrivilegeEscalation=true"]);
    let result = apply_dry_run(&weak);
    assert!(result.contains("would violate PodSecurity") && result.contains("allowPrivilegeEscalation"), "{result}");
}

#[tokio::test]
async fn namespaced_mode_passes_a_server_side_dry_run() {
    let client = support::client().await;
    let ns = namespace(&client, "chart-ns").await;
    let team_a = namespace(&client, "chart-team-a").await;
    let team_b = namespace(&client, "chart-team-b").await;
    warn_restricted(&ns);
    let watch = format!("watchNamespaces={{{team_a},{team_b}}}");
    let manifests = render(&ns, &ns, &[&watch, "rbac.secretNames={slack-webhook}"]);
    let result = apply_dry_run(&manifests);
    assert!(!result.contains("clusterrole"), "no cluster-wide RBAC in namespaced mode:\n{result}");
    assert_eq!(result.matches("role.rbac.authorization.k8s.io/").count(), 3, "{result}");
    assert!(!result.contains("would violate PodSecurity"), "{result}");
}

/// Asks the API server's authorizer whether the chart's ServiceAccount may do something
/// (`kubectl auth can-i <check> --as <sa>`).
fn can_i(sa: &str, check: &str) -> bool {
    let mut args = vec!["auth", "can-i", "--as", sa];
    args.extend(check.split_whitespace());
    let out = kubectl(&args, None);
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        _ => panic!("kubectl auth can-i {check}: {}", text(&out)),
    }
}

/// Checks (`can-i` arguments, expected) pairs, waiting for the first to hold (RBAC reaches the
/// authorizer through an informer, a moment after the apply).
async fn expect_access(sa: &str, checks: &[(String, bool)]) {
    let (first, want) = &checks[0];
    support::eventually("the chart's RBAC to take effect", Duration::from_secs(20), || async {
        (can_i(sa, first) == *want).then_some(())
    })
    .await;
    let wrong: Vec<String> = checks
        .iter()
        .filter(|(check, want)| can_i(sa, check) != *want)
        .map(|(check, want)| format!("can-i {check}: want {}", if *want { "yes" } else { "no" }))
        .collect();
    assert!(wrong.is_empty(), "{sa}:\n{}", wrong.join("\n"));
}

fn apply(manifests: &str) {
    let out = kubectl(&["apply", "-f", "-"], Some(manifests));
    assert!(out.status.success(), "kubectl apply failed:\n{}", text(&out));
}

#[tokio::test]
async fn cluster_rbac_grants_exactly_what_the_controller_needs() {
    let client = support::client().await;
    let ns = namespace(&client, "chart-rbac").await;
    let other = namespace(&client, "chart-rbac-other").await;
    apply(&render(&ns, &ns, &[]));
    let sa = format!("system:serviceaccount:{ns}:{ns}-aws-recovery-controller");
    let (pol, inc, plan) = ("recoverypolicies.recovery.dev", "incidents.recovery.dev", "recoveryplans.recovery.dev");
    let lease = "leases.coordination.k8s.io";
    let o = format!("-n {other}");
    let checks: Vec<(String, bool)> = [
        (format!("watch {pol} {o}"), true),
        (format!("list {pol} --all-namespaces"), true),
        (format!("get {pol} {o}"), true),
        (format!("create {pol} {o}"), false),
        (format!("update {pol} {o}"), false),
        (format!("patch {pol} {o}"), false),
        (format!("delete {pol} {o}"), false),
        (format!("patch {pol} --subresource=status {o}"), true),
        (format!("update {pol} --subresource=status {o}"), true),
        (format!("watch {inc} {o}"), true),
        (format!("create {inc} {o}"), true),
        (format!("patch {inc} {o}"), true),
        (format!("update {inc} {o}"), true),
        (format!("delete {inc} {o}"), true),
        (format!("deletecollection {inc} {o}"), false),
        (format!("update {inc} --subresource=status {o}"), true),
        (format!("watch {plan} {o}"), true),
        (format!("create {plan} {o}"), true),
        (format!("update {plan} {o}"), false),
        (format!("patch {plan} {o}"), false),
        (format!("delete {plan} {o}"), true),
        (format!("deletecollection {plan} {o}"), false),
        (format!("update {plan} --subresource=status {o}"), true),
        (format!("patch {plan} --subresource=status {o}"), true),
        (format!("create events {o}"), true),
        (format!("patch events {o}"), true),
        (format!("create events.events.k8s.io {o}"), true),
        (format!("patch events.events.k8s.io {o}"), true),
        (format!("delete events {o}"), false),
        (format!("get secrets/slack-webhook {o}"), true),
        (format!("list secrets {o}"), false),
        (format!("watch secrets {o}"), false),
        (format!("create {lease} -n {ns}"), true),
        (format!("get {lease}/{ns} -n {ns}"), true),
        (format!("update {lease}/{ns} -n {ns}"), true),
        (format!("patch {lease}/{ns} -n {ns}"), true),
        (format!("list {lease} -n {ns}"), false),
        (format!("get {lease}/someone-else -n {ns}"), false),
        (format!("delete {lease}/{ns} -n {ns}"), false),
        (format!("create {lease} {o}"), false),
        (format!("get pods {o}"), false),
        (format!("get configmaps {o}"), false),
        ("create customresourcedefinitions.apiextensions.k8s.io".to_owned(), false),
    ]
    .into_iter()
    .collect();
    expect_access(&sa, &checks).await;
}

#[tokio::test]
async fn namespaced_rbac_stays_in_the_watched_namespaces() {
    let client = support::client().await;
    let ns = namespace(&client, "chart-nsrbac").await;
    let team = namespace(&client, "chart-nsrbac-team").await;
    let other = namespace(&client, "chart-nsrbac-other").await;
    let watch = format!("watchNamespaces={{{team}}}");
    apply(&render(&ns, &ns, &[&watch, "rbac.secretNames={slack-webhook,smtp}"]));
    let sa = format!("system:serviceaccount:{ns}:{ns}-aws-recovery-controller");
    let (pol, inc, plan) = ("recoverypolicies.recovery.dev", "incidents.recovery.dev", "recoveryplans.recovery.dev");
    let (t, o) = (format!("-n {team}"), format!("-n {other}"));
    let checks: Vec<(String, bool)> = [
        (format!("watch {pol} {t}"), true),
        (format!("patch {pol} --subresource=status {t}"), true),
        (format!("create {inc} {t}"), true),
        (format!("create {plan} {t}"), true),
        (format!("create events.events.k8s.io {t}"), true),
        (format!("get secrets/slack-webhook {t}"), true),
        (format!("get secrets/smtp {t}"), true),
        (format!("get secrets/database-password {t}"), false),
        (format!("list secrets {t}"), false),
        (format!("watch {pol} {o}"), false),
        (format!("create {inc} {o}"), false),
        (format!("create events {o}"), false),
        (format!("get secrets/slack-webhook {o}"), false),
        (format!("list {pol} --all-namespaces"), false),
        (format!("create leases.coordination.k8s.io {t}"), false),
        (format!("create leases.coordination.k8s.io -n {ns}"), true),
    ]
    .into_iter()
    .collect();
    expect_access(&sa, &checks).await;
}

// ---------------------------------------------------------------------------------------------
// Argo CD health checks

fn argocd() -> PathBuf {
    root().join("deploy/argocd")
}

fn script(kind: &str) -> PathBuf {
    argocd().join("health").join(format!("recovery.dev_{kind}.lua"))
}

/// The test venv's python (it has lupa, whose `lupa.lua51` is the reference Lua 5.1).
fn venv_python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        script_answer(
            "testenv/venv.sh",
            &[],
            "the Lua 5.1 engine for the Argo CD health checks",
            "It comes from PyPI `lupa` (pinned in testenv/requirements.txt) in the venv that `bash testenv/venv.sh` \
             creates and caches; that needs Python >= 3.10 and PyPI on a cold cache.",
        )
    })
}

/// Evaluates health checks the way Argo CD does (deploy/argocd/health.py run), one result per
/// request.
fn lua_health(requests: &Value) -> Vec<Value> {
    let out = run(
        Command::new(venv_python()).arg(argocd().join("health.py")).arg("run").current_dir(root()),
        Some(&requests.to_string()),
    )
    .expect("the venv python runs");
    assert!(
        out.status.success(),
        "deploy/argocd/health.py run failed:\n{}\n(the Lua engine is PyPI `lupa` in the test venv: \
         testenv/requirements.txt pins it; `bash testenv/venv.sh` rebuilds the venv when that file changes)",
        text(&out)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("health.py prints a JSON list");
    assert_eq!(results.len(), requests.as_array().unwrap().len());
    results
}

struct Fixture {
    kind: &'static str,
    case: String,
    object: Value,
    expected: Value,
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixtures() -> Vec<Fixture> {
    let mut all = vec![];
    for kind in KINDS {
        let dir = argocd().join("testdata").join(kind);
        let mut cases: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") && !n.ends_with(".expected.yaml"))
            .map(|n| n.trim_end_matches(".yaml").to_owned())
            .collect();
        cases.sort();
        assert!(cases.len() >= 5, "{}: too few fixtures", dir.display());
        for case in cases {
            let object = read_yaml(&dir.join(format!("{case}.yaml")));
            let expected = read_yaml(&dir.join(format!("{case}.expected.yaml")));
            assert_eq!(object["kind"], kind, "{kind}/{case}.yaml is a {}", object["kind"]);
            assert_eq!(object["apiVersion"], "recovery.dev/v1alpha1", "{kind}/{case}.yaml");
            assert!(expected["status"].is_string(), "{kind}/{case}.expected.yaml needs a status");
            all.push(Fixture { kind, case, object, expected });
        }
    }
    all
}

#[test]
fn argocd_health_checks_match_every_fixture() {
    let fixtures = fixtures();
    let requests: Vec<Value> =
        fixtures.iter().map(|f| json!({"script": script(f.kind).to_str().unwrap(), "obj": f.object})).collect();
    let results = lua_health(&json!(requests));
    let mut wrong = vec![];
    for (f, got) in fixtures.iter().zip(&results) {
        let want = json!({"status": f.expected["status"], "message": f.expected["message"]});
        let got = json!({"status": got.get("status").unwrap_or(&got["error"]), "message": got["message"]});
        if got != want {
            wrong.push(format!("{}/{}: want {want}, got {got}", f.kind, f.case));
        }
    }
    assert!(wrong.is_empty(), "health checks disagree with their fixtures:\n{}", wrong.join("\n"));
    let statuses: BTreeSet<&str> = fixtures.iter().map(|f| f.expected["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, BTreeSet::from(["Degraded", "Healthy", "Progressing", "Suspended"]));
}

/// Every phase of the CRDs' status.phase enum has a fixture, so a new phase cannot slip past
/// the health checks unnoticed.
#[test]
fn every_phase_in_the_crds_has_a_fixture() {
    let fixtures = fixtures();
    for (kind, file) in [("Incident", "incidents"), ("RecoveryPlan", "recoveryplans")] {
        let crd = read_yaml(&root().join(format!("crds/{file}.recovery.dev.yaml")));
        let phases = strings(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]["enum"],
        );
        assert!(!phases.is_empty(), "{file}: no status.phase enum");
        let covered: BTreeSet<String> = fixtures
            .iter()
            .filter(|f| f.kind == kind)
            .filter_map(|f| f.object["status"]["phase"].as_str().map(String::from))
            .collect();
        let missing: Vec<&String> = phases.iter().filter(|p| !covered.contains(*p)).collect();
        assert!(missing.is_empty(), "{kind}: phases without a fixture in deploy/argocd/testdata/{kind}: {missing:?}");
    }
}

/// The engine runs scripts as Argo CD does by default: no string or math library and no string
/// methods, but the base and table libraries.
#[test]
fn argocd_lua_sandbox_has_no_string_or_math_library() {
    let cases = [
        ("return {status = string.upper('healthy')}", Some("global 'string'")),
        ("local s = 'Healthy'; return {status = s:sub(1)}", Some("a string value")),
        ("local s = 'Healthy'; return {status = 'Healthy', message = s:find('H')}", Some("a string value")),
        ("return {status = 'Healthy', message = tostring(math.floor(1.5))}", Some("global 'math'")),
        ("return {status = 'Healthy', message = io.read()}", Some("global 'io'")),
        (
            "local t = {}; table.insert(t, 'a'); table.insert(t, 'b') \
             return {status = 'Healthy', message = table.concat(t, ',') .. #t .. tostring(1 < 2)}",
            None,
        ),
    ];
    let requests: Vec<Value> = cases.iter().map(|(src, _)| json!({"source": src, "obj": {}})).collect();
    let results = lua_health(&json!(requests));
    for ((src, err), got) in cases.iter().zip(&results) {
        match err {
            Some(e) => assert!(
                got["error"].as_str().is_some_and(|m| m.contains(e)),
                "{src}: want an error with {e}, got {got}"
            ),
            None => assert_eq!(got, &json!({"status": "Healthy", "message": "a,b2true"}), "{src}"),
        }
    }
    // And statically: the scripts name neither library, nor call a method on a value.
    for kind in KINDS {
        let path = script(kind);
        let code: String = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        for banned in ["string.", "math.", "io.", "require", "loadstring"] {
            assert!(!code.contains(banned), "{}: uses {banned}", path.display());
        }
        let code_without_strings: String = code.split('"').step_by(2).collect();
        assert!(
            !code_without_strings.contains(':'),
            "{}: method call syntax (s:f()) needs the string library",
            path.display()
        );
    }
}

#[test]
fn argocd_cm_snippet_installs_the_scripts() {
    let cm = read_yaml(&argocd().join("argocd-cm.yaml"));
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let data = cm["data"].as_object().expect("data");
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    let want: BTreeSet<String> =
        KINDS.iter().map(|k| format!("resource.customizations.health.recovery.dev_{k}")).collect();
    assert_eq!(keys, want.iter().map(String::as_str).collect());
    for kind in KINDS {
        let lua = std::fs::read_to_string(script(kind)).unwrap();
        assert!(
            data[&format!("resource.customizations.health.recovery.dev_{kind}")] == lua,
            "deploy/argocd/argocd-cm.yaml is out of date for {kind}: \
             python3 deploy/argocd/health.py cm > deploy/argocd/argocd-cm.yaml"
        );
    }
}

/// The fixtures are objects the API server accepts, status included, so they cannot drift from
/// the CRDs.
#[tokio::test]
async fn argocd_fixtures_are_valid_objects() {
    let client = support::client().await;
    let ns = namespace(&client, "chart-fixtures").await;
    let mut failures = vec![];
    for f in fixtures() {
        let mut object = f.object.clone();
        let name = format!("{}-{}", f.kind.to_lowercase(), f.case);
        object["metadata"] = json!({"name": name, "namespace": ns});
        let status = object.as_object_mut().unwrap().remove("status");
        let out = kubectl(&["create", "-f", "-"], Some(&object.to_string()));
        if !out.status.success() {
            failures.push(format!("{}/{}: create: {}", f.kind, f.case, text(&out)));
            continue;
        }
        if let Some(status) = status {
            let resource = format!("{}.recovery.dev/{name}", f.kind.to_lowercase());
            let patch = json!({ "status": status }).to_string();
            let out =
                kubectl(&["patch", &resource, "-n", &ns, "--subresource=status", "--type=merge", "-p", &patch], None);
            if !out.status.success() {
                failures.push(format!("{}/{}: status: {}", f.kind, f.case, text(&out)));
            }
        }
    }
    assert!(failures.is_empty(), "fixtures the API server refuses:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// the controller under the chart's RBAC

/// The detection and recovery scenario with the controller authenticated as the chart's
/// ServiceAccount (a TokenRequest token bound to the chart's Roles): no request is refused,
/// and the account can neither read Secrets cluster-wide nor write a policy's spec.
#[tokio::test]
async fn the_controller_runs_as_the_charts_service_account_without_a_403() {
    use aws_recovery_controller::api::incident::IncidentPhase;
    use aws_recovery_controller::api::plan::PlanPhase;
    use support::controller::ControllerProcess;
    use support::{eventually, plans, policy};

    let client = support::client().await;
    let ns = namespace(&client, "rbac-run").await;
    let lease = "recovery-rbac";
    let manifests = render(
        "rec",
        &ns,
        &[&format!("watchNamespaces[0]={ns}"), "replicaCount=1", &format!("leaderElection.leaseName={lease}")],
    );
    let out = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&manifests));
    assert!(out.status.success(), "applying the chart: {}", text(&out));
    let sa = documents(&manifests)
        .into_iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str().map(str::to_owned))
        .expect("the chart renders a ServiceAccount");
    let token = kubectl(&["create", "token", &sa, "-n", &ns, "--duration", "1h"], None);
    assert!(token.status.success(), "TokenRequest: {}", text(&token));
    let view = |path: &str| {
        let out = kubectl(&["config", "view", "--raw", "--minify", "-o", &format!("jsonpath={path}")], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: test, cluster: {{server: '{}', certificate-authority-data: '{}'}}}}]\n\
         users: [{{name: sa, user: {{token: '{}'}}}}]\ncontexts: [{{name: sa, context: {{cluster: test, user: sa, namespace: {ns}}}}}]\n\
         current-context: sa\n",
        view("{.clusters[0].cluster.server}"),
        view("{.clusters[0].cluster.certificate-authority-data}"),
        String::from_utf8_lossy(&token.stdout).trim()
    );
    let path = PathBuf::from(support::var("RECOVERY_TESTENV_DIR")).join(format!("{ns}.kubeconfig"));
    std::fs::write(&path, kubeconfig).unwrap();

    let (cluster, faults) = support::scene::degraded_web(&client, &ns, "rbac", json!({})).await;
    let args = ["--namespace", &ns, "--leader-election", "--lease-name", lease, "--lease-namespace", &ns];
    let ctl = ControllerProcess::start_args(&args, &[("KUBECONFIG", path.to_str().unwrap())]);
    let wait = Duration::from_secs(60);
    eventually("the restart", wait, || async {
        Some(faults.calls_for("ecs", "UpdateService", "cluster", &cluster).await).filter(|r| !r.is_empty())
    })
    .await;
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 2, "completeRollout": true})).await;
    plans::wait_phase(&client, &ns, PlanPhase::Completed, wait).await;
    eventually("resolution", wait, || async {
        let inc = policy::incidents(&client, &ns).await.pop()?;
        (inc.status?.phase == Some(IncidentPhase::Resolved)).then_some(())
    })
    .await;
    let log = ctl.log_text();
    // kube reports a refusal as `Forbidden` (code 403); a bare "403" would match timestamps.
    for refused in ["Forbidden", "forbidden", "code: 403", "status: 403"] {
        assert!(!log.contains(refused), "the controller was refused ({refused}) under the chart's RBAC:\n{log}");
    }
    let can = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let subject = format!("system:serviceaccount:{ns}:{sa}");
        all.extend(["--as", &subject]);
        String::from_utf8_lossy(&kubectl(&all, None).stdout).trim().to_owned()
    };
    assert_eq!(can(&["get", "secrets", "-A"]), "no", "no Secrets cluster-wide");
    assert_eq!(can(&["list", "secrets", "-n", &ns]), "no", "Secrets are read by name only");
    assert_eq!(can(&["patch", "recoverypolicies", "-n", &ns]), "no", "a policy's spec is people's");
    assert_eq!(can(&["patch", "recoverypolicies", "--subresource=status", "-n", &ns]), "yes");
}
