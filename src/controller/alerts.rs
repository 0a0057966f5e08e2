//! The alert reconciler: a fourth controller over Incidents (and their plans) that delivers
//! the alerts the incident's story calls for, through the ledger in `Incident.status.alerts`
//! (see `core::alerts`). It runs beside the recovery controllers, so a slow or failing
//! channel never delays or fails a plan.
//!
//! Network: reads the incident, plan and Secrets (the policy from the watch cache); writes the
//! incident's status; sends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use tracing::{info, instrument, warn};

use crate::alert::{self, Alert, SlackApi, SlackWebhook, SmtpSettings};
use crate::api::RecoveryPolicy;
use crate::api::common::{SecretKeyRef, set_condition};
use crate::api::incident::{AlertChannel, AlertKind, Incident, SlackMessage};
use crate::api::plan::RecoveryPlan;
use crate::api::policy::AlertsSpec;
use crate::core::alerts::{Facts, channels, claim, delivery_failure, due, record, slack_thread, threaded};
use crate::core::targets::plan_name;
use crate::metrics::AlertLabels;

use super::{Context, Error, now, replace_status};

use crate::api::conditions::incident::ALERT_DELIVERY_FAILED;
use crate::api::conditions::reason;

/// Reconciles the alerts of one incident.
#[instrument(skip_all, fields(incident = %incident.name_any(), namespace = incident.namespace().unwrap_or_default()))]
pub async fn reconcile(incident: Arc<Incident>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = incident.namespace().unwrap_or_default();
    let Some(policy) = ctx.get(&ns, |c| &c.policies, &incident.spec.policy).await? else {
        return Ok(Action::await_change());
    };
    let Some(spec) = policy.spec.alerts.clone() else { return Ok(Action::await_change()) };
    let channels = channels(&spec);
    let incidents: Api<Incident> = Api::namespaced(ctx.client.clone(), &ns);
    // The ledger must be read as persisted: a stale cache could resend.
    let Some(mut inc) = incidents.get_opt(&incident.name_any()).await? else { return Ok(Action::await_change()) };
    // By its deterministic name: the incident's status may not name it yet (its writers race),
    // and "resolved" must still wait for it.
    let plan = Api::<RecoveryPlan>::namespaced(ctx.client.clone(), &ns).get_opt(&plan_name(&inc.name_any())).await?;
    let plan_facts = plan.as_ref().and_then(|p| Some((p.status.as_ref()?.phase?, p.spec.dry_run)));
    let status = inc.status.clone().unwrap_or_default();
    let facts = Facts {
        status: &status,
        severity: inc.spec.severity,
        min_severity: spec.min_severity,
        plan: plan_facts,
        channels: &channels,
        threaded: threaded(&spec),
        now: now(),
    };
    let (todo, next) = due(&facts);
    for (kind, channel) in todo {
        // Claim, then send, then record. Both writes re-read and retry on a conflict (the
        // recovery controllers write the same status): failing the record after a send
        // would send again.
        inc = with_status(&ctx, &incidents, &inc.name_any(), |s| claim(s, kind, channel, now())).await?;
        let paused = crate::core::pause::for_target(&policy.spec.remediation, &inc.spec.target, now());
        let mut alert = build(&inc, plan.as_ref(), &spec, kind);
        alert.paused = paused.map(crate::core::pause::describe);
        let thread = inc.status.as_ref().and_then(slack_thread).cloned();
        let outcome = deliver(&ctx, &ns, &spec, &alert, channel, thread.as_ref()).await;
        let label =
            AlertLabels { channel: channel_name(channel), outcome: if outcome.is_ok() { "sent" } else { "failed" } };
        ctx.metrics.alerts.get_or_create(&label).inc();
        match &outcome {
            Ok(message) => info!(?kind, ?channel, slack_ts = message.as_ref().map(|m| m.ts.as_str()), "alert sent"),
            Err((e, retryable)) => warn!(?kind, ?channel, retryable, error = %e, "alert not delivered"),
        }
        let generation = inc.metadata.generation;
        inc = with_status(&ctx, &incidents, &inc.name_any(), |s| {
            record(s, kind, channel, outcome.clone(), now());
            let (failing, message) = delivery_failure(s);
            let reason = if failing { reason::DELIVERY_FAILED } else { reason::DELIVERED };
            set_condition(&mut s.conditions, ALERT_DELIVERY_FAILED, failing, reason, message, generation, now());
        })
        .await?;
    }
    // Look again for alerts backing off; later ones are triggered by incident/plan changes.
    let (_, next_after) = due(&Facts { status: inc.status.as_ref().unwrap_or(&status), ..facts });
    Ok(match next_after.or(next) {
        Some(after) => Action::requeue(after.max(Duration::from_secs(1))),
        None => Action::await_change(),
    })
}

/// Applies `change` to the incident's status as read now, retrying on write conflicts.
async fn with_status(
    ctx: &Context,
    api: &Api<Incident>,
    name: &str,
    mut change: impl FnMut(&mut crate::api::incident::IncidentStatus),
) -> Result<Incident, Error> {
    let mut attempt = 0;
    loop {
        let mut inc = api.get(name).await?;
        change(inc.status.get_or_insert_with(Default::default));
        match replace_status(ctx, api, &inc).await {
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => attempt += 1,
            other => return Ok(other?),
        }
    }
}

fn channel_name(c: AlertChannel) -> &'static str {
    match c {
        AlertChannel::Slack => "slack",
        AlertChannel::Email => "email",
        AlertChannel::PagerDuty => "pagerduty",
    }
}

fn build(inc: &Incident, plan: Option<&RecoveryPlan>, spec: &AlertsSpec, kind: AlertKind) -> Alert {
    let status = inc.status.clone().unwrap_or_default();
    let plan_summary = plan.and_then(|p| {
        let st = p.status.as_ref()?;
        st.message.clone().or_else(|| st.steps.iter().rev().find_map(|s| s.message.clone()))
    });
    Alert {
        kind,
        namespace: inc.namespace().unwrap_or_default(),
        incident_name: inc.name_any(),
        incident: inc.spec.clone(),
        metrics: status.metrics.clone(),
        plan_name: plan.and_then(|p| p.metadata.name.clone()).or(status.plan.clone()),
        plan_summary,
        detected_at: status.detected_at.map(|t| t.0),
        resolved_at: status.resolved_at.map(|t| t.0),
        locale: spec.locale,
        slack_channel: spec.slack.as_ref().and_then(|s| s.channel.clone()),
        paused: None,
    }
}

/// One attempt on one channel: Ok (with the Slack message posted, in Web API mode, which
/// replies in `thread` when there is one), or (error without secrets, retryable).
async fn deliver(
    ctx: &Context,
    ns: &str,
    spec: &AlertsSpec,
    alert: &Alert,
    channel: AlertChannel,
    thread: Option<&SlackMessage>,
) -> Result<Option<SlackMessage>, (String, bool)> {
    match channel {
        AlertChannel::Slack => {
            let slack = spec.slack.as_ref().ok_or(("slack is not configured".to_owned(), false))?;
            if let Some(at) = &slack.bot_token_secret_ref {
                let token = secret_key(ctx, ns, at).await?;
                let api = SlackApi::parse(
                    &String::from_utf8_lossy(&token),
                    slack.api_url.as_deref(),
                    ctx.allow_insecure_endpoints,
                )
                .map_err(|e| (e.to_string(), false))?;
                // The schema requires a channel with a bot token.
                let channel = slack.channel.as_deref().unwrap_or_default();
                let body = alert::post_message_body(alert, channel, thread);
                let message =
                    alert::post_message(&ctx.http, &api, &body).await.map_err(|e| (e.message, e.retryable))?;
                return Ok(Some(message));
            }
            let at = slack.webhook_secret_ref.as_ref().ok_or(("slack names no webhook".to_owned(), false))?;
            let url = secret_key(ctx, ns, at).await?;
            let hook = SlackWebhook::parse(&String::from_utf8_lossy(&url), ctx.allow_insecure_endpoints)
                .map_err(|e| (e.to_string(), false))?;
            alert::send_slack(&ctx.http, &hook, &alert::slack_payload(alert))
                .await
                .map_err(|e| (e.message, e.retryable))
                .map(|()| None)
        }
        AlertChannel::Email => {
            let email = spec.email.as_ref().ok_or(("email is not configured".to_owned(), false))?;
            let data = secret(ctx, ns, &email.smtp_secret_ref.name).await?;
            let settings = SmtpSettings::from_secret(&data)
                .map_err(|e| (format!("secret {}: {e}", email.smtp_secret_ref.name), true))?;
            let message = alert::email_message(alert, &email.from, &email.to).map_err(|e| (e.to_string(), false))?;
            alert::send_email(&settings, message).await.map_err(|e| (e.message, e.retryable)).map(|()| None)
        }
        AlertChannel::PagerDuty => {
            let pd = spec.pagerduty.as_ref().ok_or(("pagerduty is not configured".to_owned(), false))?;
            let raw = secret_key(ctx, ns, &pd.routing_key_secret_ref).await?;
            let key = alert::routing_key(&String::from_utf8_lossy(&raw)).map_err(|e| (e.to_string(), false))?;
            let url =
                alert::events_url(pd.events_url.as_deref().unwrap_or(alert::EVENTS_URL), ctx.allow_insecure_endpoints)
                    .map_err(|e| (e.to_string(), false))?;
            // The ledger asks only for the kinds PagerDuty carries (`core::alerts::carries`).
            let Some(event) = alert::pagerduty_event(alert, &key) else { return Ok(None) };
            alert::send_pagerduty(&ctx.http, &url, &event).await.map_err(|e| (e.message, e.retryable)).map(|()| None)
        }
    }
}

/// A Secret's data; a missing Secret is retryable (it may be created later).
async fn secret(ctx: &Context, ns: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, (String, bool)> {
    let found = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| (format!("reading secret {name}: {e}"), true))?;
    let secret = found.ok_or_else(|| (format!("secret {name} not found in namespace {ns}"), true))?;
    Ok(secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// One key of a Secret; a missing Secret or key is retryable (it may be created later).
async fn secret_key(ctx: &Context, ns: &str, at: &SecretKeyRef) -> Result<Vec<u8>, (String, bool)> {
    let mut data = secret(ctx, ns, &at.name).await?;
    data.remove(&at.key).ok_or_else(|| (format!("secret {} has no key {}", at.name, at.key), true))
}

/// Whether the policy's alert Secrets exist with the keys it names: Ok, or a message naming
/// the Secret and key (never a value). For the policy's `AlertsConfigured` condition.
pub async fn check_secrets(ctx: &Context, policy: &RecoveryPolicy) -> Result<(), String> {
    let Some(spec) = &policy.spec.alerts else { return Ok(()) };
    let ns = policy.namespace().unwrap_or_default();
    if let Some(slack) = &spec.slack {
        if let Some(at) = &slack.webhook_secret_ref {
            secret_key(ctx, &ns, at).await.map_err(|e| e.0)?;
        }
        if let Some(at) = &slack.bot_token_secret_ref {
            let raw = secret_key(ctx, &ns, at).await.map_err(|e| e.0)?;
            SlackApi::parse(&String::from_utf8_lossy(&raw), slack.api_url.as_deref(), ctx.allow_insecure_endpoints)
                .map_err(|e| format!("secret {} key {}: {e}", at.name, at.key))?;
        }
    }
    if let Some(email) = &spec.email {
        let data = secret(ctx, &ns, &email.smtp_secret_ref.name).await.map_err(|e| e.0)?;
        SmtpSettings::from_secret(&data).map_err(|e| format!("secret {}: {e}", email.smtp_secret_ref.name))?;
    }
    if let Some(pd) = &spec.pagerduty {
        let at = &pd.routing_key_secret_ref;
        let raw = secret_key(ctx, &ns, at).await.map_err(|e| e.0)?;
        alert::routing_key(&String::from_utf8_lossy(&raw))
            .map_err(|e| format!("secret {} key {}: {e}", at.name, at.key))?;
    }
    Ok(())
}
