//! Client of the SMTP and Slack receivers' control API (see testenv/receivers/README.md).

use serde_json::{Value, json};

/// The receivers.
#[derive(Clone)]
pub struct Receivers {
    base: String,
    http: reqwest::Client,
}

impl Receivers {
    /// From `RECOVERY_RECEIVERS_URL`.
    pub fn from_env() -> Self {
        Self { base: super::var("RECOVERY_RECEIVERS_URL"), http: reqwest::Client::new() }
    }

    async fn get(&self, path: &str) -> Vec<Value> {
        let url = format!("{}{path}", self.base);
        let v: Value = self.http.get(&url).send().await.expect("receivers answer").json().await.expect("json");
        match v {
            Value::Array(a) => a,
            Value::Object(mut o) => o
                .remove("messages")
                .or_else(|| o.remove("items"))
                .and_then(|m| m.as_array().cloned())
                .unwrap_or_default(),
            _ => vec![],
        }
    }

    /// Mail received for a recipient.
    pub async fn mail(&self, to: &str) -> Vec<Value> {
        self.get(&format!("/mail?to={to}")).await
    }

    /// Slack payloads received on a path (and below), delivered ones only.
    pub async fn slack(&self, path: &str) -> Vec<Value> {
        self.get(&format!("/slack?path={path}")).await
    }

    /// Makes the Slack receiver answer `status` to the next `count` posts on a path.
    pub async fn fail_slack(&self, path: &str, status: u16, count: u32) {
        let body = json!({"status": status, "count": count, "path": path});
        let resp =
            self.http.post(format!("{}/slack/fail", self.base)).json(&body).send().await.expect("receivers answer");
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap_or_default());
    }
}

impl Receivers {
    /// PagerDuty events accepted (202) for a routing key, oldest first.
    pub async fn pagerduty(&self, routing_key: &str) -> Vec<Value> {
        let all = self.get("/pagerduty").await;
        all.into_iter().filter(|e| e["json"]["routing_key"] == routing_key).collect()
    }

    /// PagerDuty's alerts for a routing key, as the receiver keeps them.
    pub async fn pagerduty_alerts(&self, routing_key: &str) -> Vec<Value> {
        self.get(&format!("/pagerduty/alerts?routing_key={routing_key}")).await
    }

    /// Makes the PagerDuty receiver answer `status` to the next `count` events.
    pub async fn fail_pagerduty(&self, status: u16, count: u32) {
        let body = json!({"status": status, "count": count, "retryAfter": 1});
        let resp =
            self.http.post(format!("{}/pagerduty/fail", self.base)).json(&body).send().await.expect("receivers answer");
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap_or_default());
    }
}

impl Receivers {
    /// Registers a bot token with the Slack Web API fake and invites its app to `channels`
    /// (created when new); returns their ids by name.
    pub async fn slack_workspace(&self, token: &str, channels: &[&str]) -> Value {
        let body = json!({"token": token, "channels": channels});
        let resp = self
            .http
            .post(format!("{}/slack-api/workspace", self.base))
            .json(&body)
            .send()
            .await
            .expect("receivers answer");
        assert!(resp.status().is_success());
        resp.json::<Value>().await.expect("json")["channels"].clone()
    }

    /// Messages posted with `chat.postMessage` to a channel (name or id), oldest first.
    pub async fn slack_api_messages(&self, channel: &str) -> Vec<Value> {
        self.get(&format!("/slack-api/messages?channel={channel}")).await
    }

    /// Makes the next `count` Web API calls answer HTTP `status` (200: `ok: false` with `error`).
    pub async fn fail_slack_api(&self, status: u16, error: &str, count: u32) {
        let body = json!({"status": status, "error": error, "count": count, "retryAfter": 1});
        let resp =
            self.http.post(format!("{}/slack-api/fail", self.base)).json(&body).send().await.expect("receivers answer");
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap_or_default());
    }
}

/// Creates the Secret `slack` (key `url`) in `ns`, holding a webhook URL of the Slack
/// receiver; returns the path its posts are listed (and failed) under.
pub async fn slack_secret(client: &kube::Client, ns: &str) -> String {
    use k8s_openapi::api::core::v1::Secret;
    let url = format!("{}/{ns}/{}", super::var("RECOVERY_SLACK_URL"), super::unique("hook"));
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "slack"},
        "stringData": {"url": url},
    }))
    .expect("a secret");
    kube::Api::<Secret>::namespaced(client.clone(), ns)
        .create(&Default::default(), &secret)
        .await
        .expect("create the slack secret");
    format!("/slack/{ns}")
}

/// A policy's `alerts` sending every severity to the Secret made by [`slack_secret`].
pub fn slack_alerts() -> Value {
    json!({"minSeverity": "low", "slack": {"webhookSecretRef": {"name": "slack", "key": "url"}, "channel": "#incidents"}})
}
