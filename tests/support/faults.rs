//! Client of the fault layer's control API (see testenv/aws/README.md).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The fault layer in front of moto.
#[derive(Clone)]
pub struct Faults {
    base: String,
    http: reqwest::Client,
}

impl Faults {
    /// From `RECOVERY_FAULTS_URL`.
    pub fn from_env() -> Self {
        Self { base: super::var("RECOVERY_FAULTS_URL"), http: reqwest::Client::new() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("fault layer {method} {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "fault layer {method} {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Adds a fault rule; returns its id.
    pub async fn rule(&self, rule: Value) -> String {
        let v = self.send(reqwest::Method::POST, "/rules", Some(rule)).await;
        v["id"].as_str().map(str::to_owned).or_else(|| v["id"].as_u64().map(|n| n.to_string())).expect("rule id")
    }

    /// Removes one rule.
    pub async fn remove_rule(&self, id: &str) {
        self.send(reqwest::Method::DELETE, &format!("/rules/{id}"), None).await;
    }

    /// Calls by `service.Operation`, all tests together.
    pub async fn calls(&self) -> BTreeMap<String, u64> {
        serde_json::from_value(self.send(reqwest::Method::GET, "/calls", None).await).unwrap()
    }

    /// The call log for one service and operation.
    pub async fn log(&self, service: &str, operation: &str) -> Vec<Value> {
        let v = self.send(reqwest::Method::GET, &format!("/log?service={service}&operation={operation}"), None).await;
        match v {
            Value::Array(a) => a,
            Value::Object(mut o) => o.remove("entries").and_then(|e| e.as_array().cloned()).unwrap_or_default(),
            _ => vec![],
        }
    }

    /// Log entries of one operation whose params contain `key` = `value` (string or list).
    pub async fn calls_for(&self, service: &str, operation: &str, key: &str, value: &str) -> Vec<Value> {
        self.log(service, operation)
            .await
            .into_iter()
            .filter(|e| {
                let p = &e["params"][key];
                p.as_str() == Some(value) || p.as_array().is_some_and(|a| a.iter().any(|x| x.as_str() == Some(value)))
            })
            .collect()
    }

    /// ECS service override.
    pub async fn ecs_service(&self, body: Value) -> Value {
        self.send(reqwest::Method::POST, "/ecs/services", Some(body)).await
    }

    /// RDS instance override.
    pub async fn rds_instance(&self, body: Value) -> Value {
        self.send(reqwest::Method::POST, "/rds/instances", Some(body)).await
    }

    /// DB cluster behaviour (`failoverSeconds`, `completeFailover`).
    pub async fn rds_cluster(&self, body: Value) -> Value {
        self.send(reqwest::Method::POST, "/rds/clusters", Some(body)).await
    }

    /// Route 53 health check override (`failing` of `total` checkers fail).
    pub async fn health_check(&self, id: &str, failing: u32, total: u32) -> Value {
        self.send(
            reqwest::Method::POST,
            "/route53/healthchecks",
            Some(json!({"healthCheckId": id, "failing": failing, "total": total})),
        )
        .await
    }

    /// Route 53 health check back to moto's default (healthy).
    pub async fn clear_health_check(&self, id: &str) {
        self.send(reqwest::Method::DELETE, &format!("/route53/healthchecks/{id}"), None).await;
    }

    /// Behaviour settings.
    pub async fn settings(&self, body: Value) -> Value {
        self.send(reqwest::Method::POST, "/settings", Some(body)).await
    }

    /// Tracked Route 53 changes.
    pub async fn changes(&self) -> Value {
        self.send(reqwest::Method::GET, "/route53/changes", None).await
    }

    /// Forces a tracked Route 53 change's status (`INSYNC`, `PENDING`).
    pub async fn force_change(&self, change_id: &str, status: &str) {
        let id = change_id.rsplit('/').next().unwrap_or(change_id);
        self.send(reqwest::Method::POST, &format!("/route53/changes/{id}"), Some(json!({"status": status}))).await;
    }
}
