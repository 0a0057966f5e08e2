//! The API: three namespaced kinds in `recovery.dev/v1alpha1`.
//!
//! `crds/` holds the YAML generated from these types (`recovery-controller crds`); a test
//! fails when the two drift.

pub mod common;
pub mod conditions;
pub mod incident;
pub mod labels;
pub mod plan;
pub mod policy;

pub use common::Severity;
pub use incident::{Incident, IncidentSpec, IncidentStatus};
pub use plan::{RecoveryPlan, RecoveryPlanSpec, RecoveryPlanStatus};
pub use policy::{RecoveryPolicy, RecoveryPolicySpec, RecoveryPolicyStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The three CRDs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![RecoveryPolicy::crd(), Incident::crd(), RecoveryPlan::crd()]
}

/// The CRDs as one multi-document YAML stream, exactly as committed under `crds/`.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_norway::to_string(crd).expect("a CRD always serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// File name of a CRD under `crds/`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}
