//! The fault layer's control API (testenv/aws/server.py): call log, state overrides, resets.

use serde_json::{Value, json};

/// One AWS call as the fault layer logged it.
#[derive(Clone, Debug)]
pub struct Call {
    /// Seconds since the epoch when the request arrived.
    pub time: f64,
    /// `ecs`, `rds`, `route53`.
    pub service: String,
    /// e.g. `DescribeServices`.
    pub operation: String,
    /// The identifying parameters.
    pub params: Value,
    /// How long the layer took to answer, seconds (latency it added included).
    pub duration: f64,
}

impl Call {
    /// `service.Operation`.
    pub fn key(&self) -> String {
        format!("{}.{}", self.service, self.operation)
    }
}

/// Client of `RECOVERY_FAULTS_URL`, plus moto's own reset at `AWS_ENDPOINT_URL`.
#[derive(Clone)]
pub struct Faults {
    control: String,
    endpoint: String,
    http: reqwest::Client,
}

impl Faults {
    /// From the environment `cargo xtask bench` sets.
    pub fn from_env() -> Self {
        Self {
            control: crate::var("RECOVERY_FAULTS_URL"),
            endpoint: crate::var("AWS_ENDPOINT_URL"),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {url}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Wipes moto's data and the fault layer's state: each scale starts from nothing, so
    /// moto's lookups are not slowed by the previous scale's resources.
    pub async fn reset_all(&self) {
        self.send(reqwest::Method::POST, format!("{}/moto-api/reset", self.endpoint), None).await;
        self.send(reqwest::Method::POST, format!("{}/reset", self.control), None).await;
    }

    /// Empties the call log (its sequence numbers go on).
    pub async fn clear_log(&self) {
        self.send(reqwest::Method::DELETE, format!("{}/log", self.control), None).await;
    }

    /// Every call logged since the last [`Faults::clear_log`] (the layer keeps the last 20,000).
    pub async fn log(&self) -> Vec<Call> {
        let v = self.send(reqwest::Method::GET, format!("{}/log", self.control), None).await;
        let entries = match v {
            Value::Array(a) => a,
            Value::Object(mut o) => o.remove("entries").and_then(|e| e.as_array().cloned()).unwrap_or_default(),
            _ => vec![],
        };
        entries
            .into_iter()
            .map(|e| Call {
                time: e["time"].as_f64().unwrap_or_default(),
                service: e["service"].as_str().unwrap_or_default().to_owned(),
                operation: e["operation"].as_str().unwrap_or_default().to_owned(),
                params: e["params"].clone(),
                duration: e["durationMs"].as_f64().unwrap_or_default() / 1000.0,
            })
            .collect()
    }

    /// Adds `latency` to every AWS call from now on, as a region's round trip would (the
    /// layer sleeps outside moto's lock, so concurrent calls wait side by side).
    pub async fn add_latency(&self, latency: std::time::Duration) {
        let body = json!({"service": "*", "delayMs": latency.as_millis() as u64, "count": null});
        self.send(reqwest::Method::POST, format!("{}/rules", self.control), Some(body)).await;
    }

    /// Removes every fault rule.
    pub async fn clear_rules(&self) {
        self.send(reqwest::Method::DELETE, format!("{}/rules", self.control), None).await;
    }

    /// Sets an ECS service's running count once, unpinned: a restart's new deployment then
    /// completes at the next ECS call (`ecs.rolloutSeconds` 0), as a healthy rollout would.
    pub async fn degrade_ecs(&self, cluster: &str, service: &str, running: i32) {
        let body = json!({"cluster": cluster, "service": service, "runningCount": running, "pin": false});
        self.send(reqwest::Method::POST, format!("{}/ecs/services", self.control), Some(body)).await;
    }
}
