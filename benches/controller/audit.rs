//! API server requests per namespace, counted from kube-apiserver's audit log (level
//! Metadata: one line per request, with verb, resource, subresource and namespace).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Requests by `resource[/subresource]` and verb.
#[derive(Debug, Default, Clone)]
pub struct Writes {
    /// (resource, verb) → count of writes the API server accepted; verbs create, update,
    /// patch, delete.
    pub writes: BTreeMap<(String, String), usize>,
    /// (resource, verb) → writes refused with 409 Conflict (a resourceVersion precondition
    /// that failed, or a create of an existing name): requests that changed nothing.
    pub conflicts: BTreeMap<(String, String), usize>,
    /// (resource, verb) → count; verbs get, list, watch.
    pub reads: BTreeMap<(String, String), usize>,
}

/// Counts the requests in `namespace` (the log and its one rotated backup).
pub fn count(log: &Path, namespace: &str) -> Writes {
    let mut out = Writes::default();
    let dir = log.parent().unwrap_or(Path::new("."));
    let stem = log.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(stem)))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in text.lines() {
            // Cheap filter before parsing: most lines belong to other namespaces.
            if !line.contains(namespace) {
                continue;
            }
            let Ok(e) = serde_json::from_str::<Value>(line) else { continue };
            let r = &e["objectRef"];
            if e["stage"] != "ResponseComplete" || r["namespace"] != namespace {
                continue;
            }
            let mut resource = r["resource"].as_str().unwrap_or_default().to_owned();
            if let Some(sub) = r["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            let verb = e["verb"].as_str().unwrap_or_default().to_owned();
            let bucket = if matches!(verb.as_str(), "get" | "list" | "watch") {
                &mut out.reads
            } else if e["responseStatus"]["code"] == 409 {
                &mut out.conflicts
            } else {
                &mut out.writes
            };
            *bucket.entry((resource, verb)).or_insert(0) += 1;
        }
    }
    out
}
