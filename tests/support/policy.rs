//! Building and reading RecoveryPolicies and Incidents in a test namespace.

use aws_recovery_controller::api::incident::{Incident, IncidentPhase};
use aws_recovery_controller::api::{RecoveryPolicy, RecoveryPolicySpec};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

/// Creates a policy from a JSON spec.
pub async fn create(client: &Client, ns: &str, name: &str, spec: Value) -> RecoveryPolicy {
    let spec: RecoveryPolicySpec = serde_json::from_value(spec).expect("a valid spec");
    let mut p = RecoveryPolicy::new(name, spec);
    p.metadata.namespace = Some(ns.to_owned());
    Api::<RecoveryPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &p)
        .await
        .expect("create policy")
}

/// Merge-patches a policy (`{"spec": …}`), as a person or Git would change it.
pub async fn patch(client: &Client, ns: &str, name: &str, patch: Value) -> RecoveryPolicy {
    Api::<RecoveryPolicy>::namespaced(client.clone(), ns)
        .patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("patch policy")
}

/// The policy as stored.
pub async fn get(client: &Client, ns: &str, name: &str) -> RecoveryPolicy {
    Api::<RecoveryPolicy>::namespaced(client.clone(), ns).get(name).await.expect("get policy")
}

/// Every incident in the namespace.
pub async fn incidents(client: &Client, ns: &str) -> Vec<Incident> {
    Api::<Incident>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list incidents").items
}

/// Incidents of one target that are open (their first status written, not resolved).
pub async fn open_for(client: &Client, ns: &str, target: &str) -> Vec<Incident> {
    incidents(client, ns)
        .await
        .into_iter()
        .filter(|i| i.spec.target == target)
        .filter(|i| i.status.as_ref().and_then(|s| s.phase).is_some_and(|p| p != IncidentPhase::Resolved))
        .collect()
}

/// Incidents of one target that exist at all, whatever their status.
pub async fn all_for(client: &Client, ns: &str, target: &str) -> Vec<Incident> {
    incidents(client, ns).await.into_iter().filter(|i| i.spec.target == target).collect()
}

/// A condition's (status, reason, message) on a policy.
pub fn condition(p: &RecoveryPolicy, type_: &str) -> Option<(String, String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Names, for messages.
pub fn names(items: &[Incident]) -> Vec<String> {
    items.iter().map(|i| i.name_any()).collect()
}
