//! The committed `crds/` must be exactly what the code generates, and every field must carry
//! a description (it is what `kubectl explain` shows).

use std::path::Path;

use aws_recovery_controller::api::{crd_file_name, crds};
use serde_json::Value;

#[test]
fn committed_crds_match_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for crd in crds() {
        let file = dir.join(crd_file_name(&crd));
        let want = serde_norway::to_string(&crd).unwrap();
        let have = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask crds` to write it", file.display()));
        assert!(have == want, "{} differs from the code; run `cargo xtask crds` and commit the result", file.display());
    }
    let committed = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(committed, crds().len(), "crds/ holds a file that the code no longer generates");
}

/// Walks a schema and returns the paths of properties without a description.
fn undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let here = format!("{path}.{name}");
            let described = sub.get("description").and_then(Value::as_str).is_some_and(|d| !d.trim().is_empty());
            if !described {
                out.push(here.clone());
            }
            undocumented(sub, &here, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, &format!("{path}[]"), out);
    }
}

#[test]
fn every_field_is_documented() {
    for crd in crds() {
        let v = serde_json::to_value(&crd).unwrap();
        let schema = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = vec![];
        for top in ["spec", "status"] {
            undocumented(&schema["properties"][top], top, &mut missing);
        }
        // metadata and apiVersion/kind are Kubernetes' own.
        assert!(missing.is_empty(), "{}: fields without a doc comment: {missing:?}", crd.metadata.name.unwrap());
    }
}

#[test]
fn printer_columns_short_names_and_categories() {
    let want = [
        ("recoverypolicies.recovery.dev", "rpol", vec!["Ready", "Targets", "Unhealthy", "Open Incidents", "Age"]),
        ("incidents.recovery.dev", "inc", vec!["Type", "Severity", "Target", "Phase", "Age"]),
        ("recoveryplans.recovery.dev", "rplan", vec!["Incident", "Phase", "Step", "Age"]),
    ];
    for (crd, (name, short, columns)) in crds().into_iter().zip(want) {
        assert_eq!(crd.metadata.name.as_deref(), Some(name));
        assert_eq!(crd.spec.names.short_names, Some(vec![short.to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["recovery".to_string()]));
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{name} has a status subresource");
        let shown: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(shown, columns, "{name}");
        let yaml = serde_norway::to_string(&crd).unwrap();
        assert!(yaml.contains("x-kubernetes-validations"), "{name} carries CEL rules");
    }
}
