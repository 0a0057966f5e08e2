//! Test support: reach the real parts started by `cargo xtask test` (or `cargo xtask env`).
//!
//! Every part is found through environment variables; a test that needs one that is absent
//! fails with a message saying how to start it. Nothing skips.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod aws;
pub mod broken;
pub mod chart;
pub mod controller;
pub mod ecs;
pub mod events;
pub mod faults;
pub mod plans;
pub mod policy;
pub mod receivers;
pub mod scene;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use aws_recovery_controller::api::crds;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use tokio::sync::OnceCell;

#[allow(unused_imports)] // not every test binary uses the fault layer
pub use faults::Faults;

/// Reads a variable the test environment sets, or fails saying how to set it up.
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: integration tests run against the real parts. Run them with \
             `cargo xtask test`, or start the parts with `cargo xtask env` and export what it prints."
        )
    })
}

/// A kube client for the test API server (from KUBECONFIG), with the CRDs installed.
pub async fn client() -> Client {
    let path = PathBuf::from(var("KUBECONFIG"));
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("the test kubeconfig is readable");
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kubeconfig is valid");
    let client = Client::try_from(config).expect("client");
    install_crds(&client).await;
    client
}

static CRDS: OnceCell<()> = OnceCell::const_new();

/// Server-side applies the generated CRDs once per test binary and waits until established.
pub async fn install_crds(client: &Client) {
    CRDS.get_or_init(|| async {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in crds() {
            let name = crd.metadata.name.clone().unwrap();
            api.patch(&name, &PatchParams::apply("recovery-tests").force(), &Patch::Apply(&crd))
                .await
                .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(api.clone(), &name, conditions::is_crd_established()),
            )
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not established in 30s"))
            .unwrap();
        }
    })
    .await;
}

/// Creates a fresh namespace for one test (there is no garbage collector: isolation is by
/// namespace, and names carry a random suffix).
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let ns =
        Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    name
}

/// A unique name for AWS resources of one test (moto is shared by every test).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Runs the environment's kubectl (built to match the server) against the test cluster.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(var("RECOVERY_KUBECTL"))
        .args(args)
        .env("KUBECONFIG", var("KUBECONFIG"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Polls `check` until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Labels selecting what a test made.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Events about one object, as (type, reason, note), oldest first.
pub async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let mut items: Vec<_> = api
        .list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    items.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    items
        .into_iter()
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}
