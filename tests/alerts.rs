//! Alerts against the real SMTP server and the loopback Slack receiver.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_recovery_controller::api::incident::IncidentPhase;
use aws_recovery_controller::api::plan::PlanPhase;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::{Value, json};

use support::controller::ControllerProcess;
use support::receivers::Receivers;
use support::scene::degraded_web;
use support::{Faults, eventually, namespace, plans, policy, unique};

const WAIT: Duration = Duration::from_secs(90);

/// A degraded ECS service under a policy that alerts on Slack and e-mail.
struct Scene {
    client: kube::Client,
    ns: String,
    cluster: String,
    faults: Faults,
    rx: Receivers,
    slack_path: String,
    webhook_token: String,
    smtp_password: String,
    to: String,
}

impl Scene {
    async fn new(prefix: &str, with_slack_secret: bool) -> Self {
        let client = support::client().await;
        let ns = namespace(&client, prefix).await;
        let webhook_token = unique("hook");
        let slack_path = format!("/slack/{ns}");
        let smtp_password = unique("pw");
        let (host, port) =
            support::var("RECOVERY_SMTP_ADDR").rsplit_once(':').map(|(h, p)| (h.to_owned(), p.to_owned())).unwrap();
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        let make = |name: &str, data: &[(&str, String)]| Secret {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        };
        if with_slack_secret {
            let url = format!("{}/{ns}/{webhook_token}", support::var("RECOVERY_SLACK_URL"));
            secrets.create(&PostParams::default(), &make("slack", &[("url", url)])).await.unwrap();
        }
        let smtp = make(
            "smtp",
            &[
                ("host", host),
                ("port", port),
                ("tls", "none".into()),
                ("username", "alerts".into()),
                ("password", smtp_password.clone()),
            ],
        );
        secrets.create(&PostParams::default(), &smtp).await.unwrap();
        let to = format!("oncall@{ns}.example.com");
        let alerts = json!({"alerts": {
            "minSeverity": "medium",
            "slack": {"webhookSecretRef": {"name": "slack", "key": "url"}, "channel": "#incidents"},
            "email": {"smtpSecretRef": {"name": "smtp"}, "from": "recovery@example.com", "to": [to]}
        }});
        let (cluster, faults) = degraded_web(&client, &ns, prefix, alerts).await;
        Self { client, ns, cluster, faults, rx: Receivers::from_env(), slack_path, webhook_token, smtp_password, to }
    }

    fn start(&self) -> ControllerProcess {
        ControllerProcess::start_args(&["--namespace", &self.ns, "--allow-insecure-endpoints"], &[])
    }

    async fn heal_after_restart(&self) {
        eventually("the restart", WAIT, || async {
            Some(()).filter(|_| true).and(
                Some(self.faults.calls_for("ecs", "UpdateService", "cluster", &self.cluster).await)
                    .filter(|r| !r.is_empty()),
            )
        })
        .await;
        self.faults
            .ecs_service(json!({"cluster": self.cluster, "service": "web", "runningCount": 2, "completeRollout": true}))
            .await;
    }

    async fn resolved(&self) {
        eventually("resolution", WAIT, || async {
            let inc = policy::incidents(&self.client, &self.ns).await.pop()?;
            (inc.status?.phase == Some(IncidentPhase::Resolved)).then_some(())
        })
        .await;
    }

    /// Waits for `n` messages on each channel; returns (slack texts, mail subjects, mails).
    async fn messages(&self, n: usize) -> (Vec<String>, Vec<String>, Vec<Value>) {
        eventually(&format!("{n} alerts on each channel"), WAIT, || async {
            let slack = self.rx.slack(&self.slack_path).await;
            let mail = self.rx.mail(&self.to).await;
            (slack.len() >= n && mail.len() >= n).then_some((slack, mail))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await; // anything extra would arrive now
        let slack: Vec<String> = self
            .rx
            .slack(&self.slack_path)
            .await
            .iter()
            .map(|p| p["json"]["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        let mail = self.rx.mail(&self.to).await;
        let subjects = mail.iter().map(|m| m["subject"].as_str().unwrap_or_default().to_owned()).collect();
        (slack, subjects, mail)
    }
}

const SEQUENCE: [&str; 3] =
    ["[HIGH] service Incident Detected", "[HIGH] service Recovery Plan Completed", "[HIGH] service Incident Resolved"];

fn assert_sequence(slack: &[String], subjects: &[String]) {
    assert_eq!(subjects, SEQUENCE, "e-mail subjects");
    assert_eq!(slack.len(), 3, "{slack:#?}");
    for (text, title) in slack.iter().zip(SEQUENCE) {
        assert!(text.contains(title), "{text} should carry {title}");
    }
}

#[tokio::test]
async fn a_recovery_sends_detected_completed_resolved_on_both_channels() {
    let s = Scene::new("alert-seq", true).await;
    let ctl = s.start();
    s.heal_after_restart().await;
    s.resolved().await;
    let (slack, subjects, mail) = s.messages(3).await;
    assert_sequence(&slack, &subjects);
    // Content: the facts and the links back.
    let detected = &mail[0];
    let text = detected["text"].as_str().unwrap();
    assert!(text.contains("runs 1 of 2 desired tasks"), "{text}");
    assert!(text.contains("kubectl describe incident") && text.contains(&s.ns), "{text}");
    // Threading: follow-ups reply to the first message.
    let first_id = detected["messageId"].as_str().unwrap().to_owned();
    for follow_up in &mail[1..] {
        assert_eq!(follow_up["inReplyTo"].as_str(), Some(first_id.as_str()), "{follow_up}");
    }
    let resolved = mail[2]["text"].as_str().unwrap();
    assert!(resolved.to_lowercase().contains("time to recovery"), "{resolved}");
    let payload = &s.rx.slack(&s.slack_path).await[0]["json"];
    assert!(payload["blocks"].as_array().is_some_and(|b| !b.is_empty()), "Block Kit blocks: {payload}");
    assert_eq!(payload["channel"], "#incidents");
    // The ledger records each alert once per channel.
    let inc = policy::incidents(&s.client, &s.ns).await.pop().unwrap();
    assert_eq!(inc.status.unwrap().alerts.len(), 6);
    // No secret value in the controller's log.
    let log = ctl.log_text();
    assert!(!log.contains(&s.webhook_token), "the webhook URL leaked into the log");
    assert!(!log.contains(&s.smtp_password), "the SMTP password leaked into the log");
}

#[tokio::test]
async fn a_restart_mid_sequence_sends_no_duplicate() {
    let s = Scene::new("alert-restart", true).await;
    let first = s.start();
    s.messages(1).await;
    first.kill();
    let _second = s.start();
    s.heal_after_restart().await;
    s.resolved().await;
    let (slack, subjects, _) = s.messages(3).await;
    assert_sequence(&slack, &subjects);
}

#[tokio::test]
async fn a_failing_receiver_never_delays_recovery() {
    let s = Scene::new("alert-500", true).await;
    s.rx.fail_slack(&s.slack_path, 500, 3).await;
    let _ctl = s.start();
    let inc = eventually("AlertDeliveryFailed=True", WAIT, || async {
        let inc = policy::incidents(&s.client, &s.ns).await.pop()?;
        let c = inc
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "AlertDeliveryFailed" && c.status == "True")?
            .clone();
        Some((inc, c))
    })
    .await;
    assert!(inc.1.message.contains("Slack") && inc.1.message.contains("500"), "{}", inc.1.message);
    assert!(!inc.1.message.contains(&s.webhook_token));
    // Recovery goes on regardless.
    s.heal_after_restart().await;
    plans::wait_phase(&s.client, &s.ns, PlanPhase::Completed, WAIT).await;
    s.resolved().await;
    let (slack, subjects, _) = s.messages(3).await;
    assert_sequence(&slack, &subjects);
    eventually("AlertDeliveryFailed=False", WAIT, || async {
        let inc = policy::incidents(&s.client, &s.ns).await.pop()?;
        inc.status?.conditions.iter().any(|c| c.type_ == "AlertDeliveryFailed" && c.status == "False").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_missing_secret_is_a_condition_and_nothing_leaks() {
    let s = Scene::new("alert-nosecret", false).await;
    let ctl = s.start();
    let (_, reason, message) = eventually("AlertsConfigured=False", WAIT, || async {
        let p = policy::get(&s.client, &s.ns, "shop").await;
        policy::condition(&p, "AlertsConfigured").filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(reason, "SecretMissing");
    assert!(message.contains("secret slack"), "{message}");
    // E-mail still works, recovery still runs, and the process is alive.
    s.heal_after_restart().await;
    s.resolved().await;
    eventually("three e-mails", WAIT, || async { (s.rx.mail(&s.to).await.len() >= 3).then_some(()) }).await;
    assert!(s.rx.slack(&s.slack_path).await.is_empty());
    assert_eq!(ctl.get("/healthz").await.0, 200);
    assert!(!ctl.log_text().contains(&s.smtp_password), "the SMTP password leaked into the log");
}

/// PagerDuty Events API v2: a trigger when the incident opens, keyed by the incident's id,
/// retried through a 429 by the ledger, and a resolve when it is resolved; the completed plan
/// sends nothing of its own. The receiver implements the contract, deduplication included.
#[tokio::test]
async fn pagerduty_triggers_and_resolves_under_the_incidents_id() {
    let client = support::client().await;
    let ns = namespace(&client, "alert-pd").await;
    let routing_key: String = uuid::Uuid::new_v4().simple().to_string();
    let secret = Secret {
        metadata: ObjectMeta { name: Some("pagerduty".into()), ..Default::default() },
        data: Some(BTreeMap::from([("routingKey".to_string(), ByteString(routing_key.as_bytes().to_vec()))])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();
    let alerts = json!({"alerts": {"minSeverity": "medium", "pagerduty": {
        "routingKeySecretRef": {"name": "pagerduty", "key": "routingKey"},
        "eventsUrl": support::var("RECOVERY_PAGERDUTY_URL")}}});
    let (cluster, faults) = degraded_web(&client, &ns, "alert-pd", alerts).await;
    let rx = Receivers::from_env();
    rx.fail_pagerduty(429, 1).await;
    let ctl = ControllerProcess::start_args(&["--namespace", &ns, "--allow-insecure-endpoints"], &[]);

    let trigger = eventually("the trigger", WAIT, || async { rx.pagerduty(&routing_key).await.pop() }).await;
    let inc = policy::incidents(&client, &ns).await.pop().expect("the incident");
    let event = &trigger["json"];
    assert_eq!(event["event_action"], "trigger");
    assert_eq!(event["dedup_key"], json!(inc.spec.id));
    assert_eq!(event["payload"]["severity"], "error", "high is PagerDuty's error");
    assert_eq!(event["payload"]["source"], json!(inc.spec.target));
    assert!(event["payload"]["summary"].as_str().unwrap().contains("runs 1 of 2 desired tasks"), "{event}");

    eventually("the restart", WAIT, || async {
        Some(faults.calls_for("ecs", "UpdateService", "cluster", &cluster).await).filter(|r| !r.is_empty())
    })
    .await;
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 2, "completeRollout": true})).await;
    let alert = eventually("PagerDuty's alert resolved", WAIT, || async {
        rx.pagerduty_alerts(&routing_key).await.pop().filter(|a| a["status"] == "resolved")
    })
    .await;
    assert_eq!(alert["dedup_key"], json!(inc.spec.id));
    eventually("the plan completed", WAIT, || async {
        plans::all(&client, &ns).await.pop().filter(|p| plans::phase(p) == Some(PlanPhase::Completed))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // anything extra would arrive now
    let actions: Vec<String> = rx
        .pagerduty(&routing_key)
        .await
        .iter()
        .map(|e| e["json"]["event_action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["trigger", "resolve"], "a completed plan sends nothing to PagerDuty");
    let ledger = policy::incidents(&client, &ns).await.pop().unwrap().status.unwrap().alerts;
    let entries: Vec<(String, u32)> =
        ledger.iter().map(|a| (format!("{:?} {:?} {:?}", a.alert, a.channel, a.state), a.attempts)).collect();
    assert_eq!(
        entries,
        [("Detected PagerDuty Sent".to_owned(), 2), ("Resolved PagerDuty Sent".to_owned(), 1)],
        "the 429 is recorded as an attempt and retried"
    );
    assert!(!ctl.log_text().contains(&routing_key), "the routing key leaked into the log");
}

/// Slack's Web API mode: the incident's first message opens a thread, the follow-ups reply in
/// it (a restart in between keeps it: the ts is in the ledger), and only the resolution is
/// also shown in the channel. A rate-limited first post is retried.
#[tokio::test]
async fn slack_web_api_keeps_an_incident_in_one_thread_across_a_restart() {
    let client = support::client().await;
    let ns = namespace(&client, "alert-thread").await;
    let token = format!("xoxb-{}", uuid::Uuid::new_v4().simple());
    let channel = unique("inc");
    let rx = Receivers::from_env();
    let ids = rx.slack_workspace(&token, &[&channel]).await;
    let secret = Secret {
        metadata: ObjectMeta { name: Some("slack-bot".into()), ..Default::default() },
        data: Some(BTreeMap::from([("token".to_string(), ByteString(format!("{token}\n").into_bytes()))])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();
    let alerts = json!({"alerts": {"minSeverity": "medium", "slack": {
        "botTokenSecretRef": {"name": "slack-bot", "key": "token"},
        "channel": format!("#{channel}"),
        "apiUrl": support::var("RECOVERY_SLACK_API_URL")}}});
    let (cluster, faults) = degraded_web(&client, &ns, "alert-thread", alerts).await;
    rx.fail_slack_api(429, "ratelimited", 1).await;
    let ctl = ControllerProcess::start_args(&["--namespace", &ns, "--allow-insecure-endpoints"], &[]);

    let first = eventually("the first message", WAIT, || async { rx.slack_api_messages(&channel).await.pop() }).await;
    assert_eq!(first["channel"], ids[channel.as_str()], "posted to the channel named");
    assert!(first["threadTs"].is_null(), "the first message opens the thread: {first}");
    assert!(first["json"]["text"].as_str().unwrap().contains("Incident Detected"), "{first}");
    let ts = first["ts"].as_str().unwrap().to_owned();
    eventually("the ts in the ledger", WAIT, || async {
        let inc = policy::incidents(&client, &ns).await.pop()?;
        let ledger = inc.status?.alerts;
        ledger.iter().find(|a| a.slack_message.as_ref().is_some_and(|m| m.ts == ts)).map(|_| ())
    })
    .await;
    // A new process must find the thread in the ledger: nothing of it is in memory.
    ctl.kill();
    let ctl = ControllerProcess::start_args(&["--namespace", &ns, "--allow-insecure-endpoints"], &[]);
    eventually("the restart", WAIT, || async {
        Some(faults.calls_for("ecs", "UpdateService", "cluster", &cluster).await).filter(|r| !r.is_empty())
    })
    .await;
    faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 2, "completeRollout": true})).await;
    let posted = eventually("completed and resolved in the thread", WAIT, || async {
        let all = rx.slack_api_messages(&channel).await;
        (all.len() >= 3).then_some(all)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // anything extra would arrive now
    let posted_now = rx.slack_api_messages(&channel).await;
    assert_eq!(posted_now.len(), 3, "detected, completed, resolved and nothing more: {posted_now:#?}");
    let story: Vec<(bool, Option<&str>, bool)> = posted
        .iter()
        .map(|m| {
            let text = m["json"]["text"].as_str().unwrap();
            (text.contains("Resolved"), m["threadTs"].as_str(), m["replyBroadcast"] == true)
        })
        .collect();
    assert_eq!(
        story,
        [(false, None, false), (false, Some(ts.as_str()), false), (true, Some(ts.as_str()), true)],
        "follow-ups reply in the first message's thread; only the resolution is shown in the channel too"
    );
    let ledger = policy::incidents(&client, &ns).await.pop().unwrap().status.unwrap().alerts;
    let entries: Vec<(String, u32, Option<String>)> = ledger
        .iter()
        .map(|a| {
            (format!("{:?} {:?}", a.alert, a.state), a.attempts, a.slack_message.as_ref().map(|m| m.channel.clone()))
        })
        .collect();
    let cid = ids[channel.as_str()].as_str().map(str::to_owned);
    assert_eq!(
        entries,
        [
            ("Detected Sent".to_owned(), 2, cid.clone()),
            ("PlanCompleted Sent".to_owned(), 1, cid.clone()),
            ("Resolved Sent".to_owned(), 1, cid.clone())
        ],
        "the 429 is an attempt, and each message is recorded"
    );
    assert!(!ctl.log_text().contains(&token), "the bot token leaked into the log");
}
