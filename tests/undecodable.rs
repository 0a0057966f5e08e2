//! One object this controller cannot decode does not stall the others. A newer CRD adds a
//! field; a policy that uses it fails `deny_unknown_fields` here, as it would under an older
//! controller. It is reported on itself and in a metric, and a policy beside it goes on being
//! probed and opens its incident.
//!
//! This binary changes the shared RecoveryPolicy CRD (adding an optional field, which the
//! other tests never set) and puts it back at the end; test binaries run one after another,
//! and each applies the generated CRDs when it starts.

mod support;

use std::time::Duration;

use aws_recovery_controller::api::RecoveryPolicy;
use futures::FutureExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};

use support::controller::ControllerProcess;
use support::ecs::Services;
use support::{events, eventually, policy};

const WAIT: Duration = Duration::from_secs(60);

/// Server-side applies the policy CRD as generated, plus `spec.futureField` if asked, under
/// the manager the test support applies CRDs with (so applying it without the field
/// removes the field again).
async fn apply_policy_crd(client: &Client, future_field: bool) {
    let mut crd = serde_json::to_value(RecoveryPolicy::crd()).unwrap();
    if future_field {
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["futureField"] =
            json!({"type": "string", "description": "a field of a newer version"});
    }
    let name = RecoveryPolicy::crd_name();
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(name, &PatchParams::apply("recovery-tests").force(), &Patch::Apply(&crd))
        .await
        .expect("apply the policy CRD");
}

/// Creates a policy that uses `futureField`, once the API server keeps the field (until the
/// new schema is in effect it is pruned, and the object would decode).
async fn create_future_policy(client: &Client, ns: &str, name: &str, spec: Value) {
    let ar = ApiResource::erase::<RecoveryPolicy>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let mut spec = spec;
    spec["futureField"] = json!("from a newer version");
    eventually("a policy stored with futureField", WAIT, || async {
        let obj = DynamicObject::new(name, &ar).within(ns).data(json!({ "spec": spec }));
        let _ = api.create(&PostParams::default(), &obj).await;
        let stored = api.get(name).await.ok()?;
        if stored.data["spec"].get("futureField").is_some() {
            return Some(());
        }
        let _ = api.delete(name, &Default::default()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        None
    })
    .await;
}

async fn body(client: &Client) {
    apply_policy_crd(client, true).await;
    let detection = json!({"failureThreshold": 1, "successThreshold": 1});
    let good = Services::down("undecodable", &["web"], 1, detection, json!({"mode": "DryRun"})).await;
    let bad_spec = json!({
        "aws": {"region": "us-east-1"},
        "probeInterval": "2s",
        "targets": {"ecsServices": [{"cluster": good.cluster, "services": ["web"]}]},
        "remediation": {"mode": "DryRun"},
    });
    create_future_policy(client, &good.ns, "future", bad_spec).await;
    let ctl = ControllerProcess::start(&good.ns);

    // The policy beside it goes on: probed, its incident open.
    eventually("the decodable policy's incident", WAIT, || async {
        policy::incidents(client, &good.ns).await.into_iter().find(|i| i.spec.policy == "shop")
    })
    .await;
    // The other is reported on itself, and counted.
    let note = eventually("a Warning Event on the undecodable policy", WAIT, || async {
        events(client, &good.ns, "future").await.into_iter().find(|e| e.1 == "Undecodable")
    })
    .await;
    assert_eq!(note.0, "Warning");
    assert!(note.2.contains("futureField"), "the Event names what does not decode: {note:?}");
    let (_, metrics) = ctl.get("/metrics").await;
    assert!(metrics.contains(r#"recovery_undecodable_objects_total{kind="RecoveryPolicy"} 1"#), "{metrics}");
    // Left alone: no status written, no incident of its own.
    let ar = ApiResource::erase::<RecoveryPolicy>(&());
    let stored = Api::<DynamicObject>::namespaced_with(client.clone(), &good.ns, &ar).get("future").await.unwrap();
    assert!(stored.data.get("status").is_none(), "nothing written to it: {:?}", stored.data);
    assert!(policy::incidents(client, &good.ns).await.iter().all(|i| i.spec.policy != "future"));
    let log = ctl.log_text();
    assert!(log.contains("object does not decode"), "the log says so too");
    eprintln!("undecodable policy: reported ({}), the other opened its incident", note.2);
}

#[tokio::test]
async fn an_undecodable_policy_does_not_stall_the_others() {
    let client = support::client().await;
    let result = std::panic::AssertUnwindSafe(body(&client)).catch_unwind().await;
    apply_policy_crd(&client, false).await; // put the CRD back, pass or fail
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
