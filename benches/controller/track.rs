//! Watches the controller's objects and stamps, with the driver's clock, when each change
//! arrived: incidents appearing, plans completing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use aws_recovery_controller::api::incident::Incident;
use aws_recovery_controller::api::plan::{PlanPhase, RecoveryPlan};

/// Seconds since the epoch, as the fault layer's log records them.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// When a watched value was first seen, and the value.
type Stamp = (f64, String);

/// Per object name, the times at which a watched value took a new value.
#[derive(Clone, Default)]
pub struct Stamps(Arc<Mutex<HashMap<String, Vec<Stamp>>>>);

impl Stamps {
    fn record(&self, name: String, value: Option<String>) {
        let Some(value) = value else { return };
        let mut all = self.0.lock().expect("not poisoned");
        let seen = all.entry(name).or_default();
        if seen.last().is_none_or(|(_, v)| *v != value) {
            seen.push((now(), value));
        }
    }

    /// When the `k`-th value (from 1) had arrived for all of `names` objects: the latest
    /// arrival among them, or `None` while some lack it.
    pub fn all_reached(&self, names: usize, k: usize) -> Option<f64> {
        let all = self.0.lock().expect("not poisoned");
        if all.len() < names {
            return None;
        }
        all.values().map(|v| v.get(k - 1).map(|(t, _)| *t)).try_fold(0.0f64, |m, t| Some(m.max(t?)))
    }

    /// The first arrival of each object with its value.
    pub fn firsts(&self) -> HashMap<String, Stamp> {
        let all = self.0.lock().expect("not poisoned");
        all.iter().filter_map(|(k, v)| Some((k.clone(), v.first()?.clone()))).collect()
    }
}

fn spawn<K, F>(client: &kube::Client, ns: &str, value: F) -> Stamps
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    F: Fn(&K) -> Option<String> + Send + 'static,
{
    let stamps = Stamps::default();
    let out = stamps.clone();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(event) = events.next().await {
            if let Ok(obj) = event {
                out.record(obj.name_any(), value(&obj));
            }
        }
    });
    stamps
}

/// Each incident once it exists; the value is its ECS service.
pub fn incidents(client: &kube::Client, ns: &str) -> Stamps {
    spawn::<Incident, _>(client, ns, |i| Some(i.spec.resource.service.clone().unwrap_or_default()))
}

/// Each plan once it is Completed or Failed; the value is the phase.
pub fn finished_plans(client: &kube::Client, ns: &str) -> Stamps {
    spawn::<RecoveryPlan, _>(client, ns, |p| match p.status.as_ref()?.phase? {
        PlanPhase::Completed => Some("Completed".into()),
        PlanPhase::Failed => Some("Failed".into()),
        _ => None,
    })
}

/// Polls `done` every 100 ms until it yields; panics after `timeout`.
pub async fn until<T>(what: &str, timeout: Duration, done: impl FnMut() -> Option<T>) -> T {
    within(timeout, done).await.unwrap_or_else(|| panic!("{what}: not within {timeout:?}"))
}

/// Polls `done` every 100 ms until it yields, or gives up after `timeout`.
pub async fn within<T>(timeout: Duration, mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = done() {
            return Some(v);
        }
        if started.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
