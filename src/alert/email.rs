//! E-mail: the plain-text message with thread headers, SMTP settings from a Secret, and delivery.

use std::collections::BTreeMap;
use std::fmt;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::render::{facts, kind_slug};
use super::{Alert, AlertError, DELIVERY_TIMEOUT, DeliveryError};
use crate::api::incident::AlertKind;

/// Right-hand side of every Message-ID: ids are ours, not the relay's, so that they are stable.
const MESSAGE_ID_DOMAIN: &str = "aws-recovery-controller";

/// The Message-ID of one alert of one incident: `<{incident-id}.{kind}@aws-recovery-controller>`.
///
/// Stable across retries and restarts, so a resend is recognisably the same message, and every
/// follow-up can name the Detected message without having stored anything.
pub fn message_id(incident_id: &str, kind: AlertKind) -> String {
    // The id is a UUID by schema; anything else is reduced to what a msg-id may hold.
    let id: String = incident_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let id = if id.is_empty() { "unknown" } else { id.as_str() };
    format!("<{id}.{}@{MESSAGE_ID_DOMAIN}>", kind_slug(kind))
}

/// The alert as a plain-text e-mail.
///
/// Follow-ups (every kind but Detected) carry `In-Reply-To` and `References` naming the Detected
/// message, so mail clients thread them under it.
pub fn email_message(alert: &Alert, from: &str, to: &[String]) -> Result<Message, AlertError> {
    let parse = |field: &'static str, address: &str| {
        address.trim().parse::<Mailbox>().map_err(|_| AlertError::InvalidAddress { field, address: address.into() })
    };
    if to.is_empty() {
        return Err(AlertError::NoRecipients);
    }
    let mut builder = Message::builder()
        .from(parse("from", from)?)
        .subject(super::title(alert))
        .message_id(Some(message_id(&alert.incident.id, alert.kind)))
        .header(ContentType::TEXT_PLAIN);
    for address in to {
        builder = builder.to(parse("to", address)?);
    }
    if alert.kind != AlertKind::Detected {
        let root = message_id(&alert.incident.id, AlertKind::Detected);
        builder = builder.in_reply_to(root.clone()).references(root);
    }
    builder.body(plain_text(alert)).map_err(|e| AlertError::Message(e.to_string()))
}

/// The e-mail body: the same facts as the Slack message, as `Label: value` lines.
pub fn plain_text(alert: &Alert) -> String {
    let f = facts(alert);
    let t = f.texts;
    let mut out = format!("{}\n\n{}\n\n", f.lead, f.title);
    if !f.description.trim().is_empty() {
        out.push_str(&format!("{}\n\n", f.description));
    }
    for (label, value) in &f.fields {
        out.push_str(&format!("{label}: {value}\n"));
    }
    out.push_str(&format!("{}: {}\n", t.incident_id, f.incident_id));
    if let Some(summary) = &f.plan_summary {
        out.push_str(&format!("\n{}:\n  {summary}\n", t.plan_status));
    }
    if !f.events.is_empty() {
        out.push_str(&format!("\n{}:\n", t.recent_events));
        for event in &f.events {
            out.push_str(&format!("  - {event}\n"));
        }
    }
    out.push_str(&format!("\n{}:\n", t.inspect));
    for command in &f.inspect {
        out.push_str(&format!("  {command}\n"));
    }
    if let Some(approve) = &f.approve {
        out.push_str(&format!("\n{}:\n  {approve}\n", t.approve));
    }
    out
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required: a server that does not offer
    /// it gets no credentials and no mail (no silent downgrade). Default port 587.
    StartTls,
    /// TLS from the first byte (SMTPS). Default port 465.
    Tls,
    /// No encryption at all. Default port 25. For relays on a trusted network and tests.
    None,
}

/// SMTP settings read from the Secret named by `alerts.email.smtpSecretRef`.
#[derive(Clone)]
pub struct SmtpSettings {
    /// Relay host name (also the name its certificate must carry).
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Login, when the relay wants one.
    pub username: Option<String>,
    /// Password for `username`. Never shown by `Debug` nor in errors.
    pub password: Option<String>,
    /// Connection security.
    pub tls: SmtpTls,
    /// An extra trusted root (`ca.crt`, PEM), for relays with a private or self-signed CA.
    pub ca: Option<Certificate>,
}

impl SmtpSettings {
    /// Reads keys `host` (required), `port` (default by `tls`), `username` and `password`
    /// (both or neither), `tls` (`starttls` (default), `tls`, `none`) and `ca.crt`.
    ///
    /// Errors name the key that is wrong, never its value.
    pub fn from_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, AlertError> {
        // Surrounding whitespace is dropped (a file made with `echo` ends in a newline), except
        // that a password only loses its line ending: spaces may belong to it.
        let text = |key: &'static str| -> Result<Option<String>, AlertError> {
            let Some(bytes) = data.get(key) else { return Ok(None) };
            let value = std::str::from_utf8(bytes)
                .map_err(|_| AlertError::InvalidKey { key, problem: "is not valid UTF-8" })?;
            let value = if key == "password" { value.trim_end_matches(['\r', '\n']) } else { value.trim() };
            Ok((!value.is_empty()).then(|| value.to_string()))
        };
        let host = text("host")?.ok_or(AlertError::MissingKey("host"))?;
        let tls = match text("tls")?.map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("starttls") => SmtpTls::StartTls,
            Some("tls") => SmtpTls::Tls,
            Some("none") => SmtpTls::None,
            Some(_) => return Err(AlertError::InvalidKey { key: "tls", problem: "must be starttls, tls or none" }),
        };
        let port = match text("port")? {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or(AlertError::InvalidKey { key: "port", problem: "is not a port number" })?,
            None => match tls {
                SmtpTls::StartTls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            },
        };
        let username = text("username")?;
        let password = text("password")?;
        match (&username, &password) {
            (Some(_), None) => return Err(AlertError::MissingKey("password")),
            (None, Some(_)) => return Err(AlertError::MissingKey("username")),
            _ => {}
        }
        let ca = match data.get("ca.crt") {
            None => None,
            Some(pem) => {
                let invalid = AlertError::InvalidKey { key: "ca.crt", problem: "is not a PEM certificate" };
                // lettre accepts a PEM without any certificate in it; that would trust nothing.
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(invalid);
                }
                Some(Certificate::from_pem(pem).map_err(|_| invalid)?)
            }
        };
        Ok(Self { host, port, username, password, tls, ca })
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
        // Same as lettre's `starttls_relay` / `relay`, but with our port and optional CA.
        let params = || {
            let mut params = TlsParameters::builder(self.host.clone());
            if let Some(ca) = &self.ca {
                params = params.add_root_certificate(ca.clone());
            }
            params.build().map_err(|_| DeliveryError::permanent("smtp tls settings are invalid"))
        };
        let tls = match self.tls {
            SmtpTls::StartTls => Tls::Required(params()?),
            SmtpTls::Tls => Tls::Wrapper(params()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.as_str())
            .port(self.port)
            .tls(tls)
            .timeout(Some(DELIVERY_TIMEOUT));
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

/// Sends the message once through the relay, within [`DELIVERY_TIMEOUT`] for the whole exchange
/// (lettre's own timeout bounds only the TCP connect on tokio, not a server that stops answering).
/// A timeout after the relay took the message means a second copy on retry; it carries the same
/// Message-ID, which lets clients and archives fold the two.
///
/// Retryable: SMTP 4xx, timeouts, refused or lost connections, TLS failures. Not retryable:
/// SMTP 5xx (bad recipient, relay denied, authentication refused) and client-side refusals
/// such as a relay that offers no STARTTLS when it is required.
pub async fn send_email(settings: &SmtpSettings, message: Message) -> Result<(), DeliveryError> {
    let transport = settings.transport()?;
    match tokio::time::timeout(DELIVERY_TIMEOUT, transport.send(message)).await {
        Err(_) => Err(DeliveryError::retryable("smtp delivery timed out")),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(classify(&e, settings.password.as_deref())),
    }
}

fn classify(e: &lettre::transport::smtp::Error, password: Option<&str>) -> DeliveryError {
    // The server's words (or the I/O error) help whoever reads the condition; they are clipped
    // and scrubbed of the password in case a server echoes what it was sent.
    let mut detail = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default();
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        detail = detail.replace(password, "<redacted>");
    }
    let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    let detail = super::render::clip(&detail, 200);
    let with = |what: String| if detail.is_empty() { what } else { format!("{what}: {detail}") };
    if let Some(code) = e.status() {
        let message = with(format!("smtp server answered {code}"));
        return if e.is_permanent() { DeliveryError::permanent(message) } else { DeliveryError::retryable(message) };
    }
    if e.is_timeout() {
        return DeliveryError::retryable(with("smtp server timed out".into()));
    }
    if e.is_client() {
        return DeliveryError::permanent(with("smtp client refused to send".into()));
    }
    if e.is_tls() {
        return DeliveryError::retryable(with("smtp tls failed".into()));
    }
    DeliveryError::retryable(with("smtp connection failed".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::fixtures::{ID, alert};
    use crate::api::policy::Locale;

    fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
        m.headers().get_raw(name)
    }

    fn to() -> Vec<String> {
        vec!["oncall@example.com".into(), "sre@example.com".into()]
    }

    #[test]
    fn detected_has_a_stable_message_id_and_no_thread_headers() {
        let m = email_message(&alert(AlertKind::Detected), "recovery@example.com", &to()).unwrap();
        assert_eq!(header(&m, "Message-ID"), Some(format!("<{ID}.detected@aws-recovery-controller>").as_str()));
        assert_eq!(header(&m, "In-Reply-To"), None);
        assert_eq!(header(&m, "References"), None);
        assert_eq!(header(&m, "Subject"), Some("[HIGH] service Incident Detected"));
        assert_eq!(m.envelope().to().len(), 2);
        let again = email_message(&alert(AlertKind::Detected), "recovery@example.com", &to()).unwrap();
        assert_eq!(header(&again, "Message-ID"), header(&m, "Message-ID"));
    }

    #[test]
    fn follow_ups_reply_to_the_detected_message() {
        let root = format!("<{ID}.detected@aws-recovery-controller>");
        for (kind, slug) in [
            (AlertKind::AwaitingApproval, "awaiting-approval"),
            (AlertKind::PlanCompleted, "plan-completed"),
            (AlertKind::PlanFailed, "plan-failed"),
            (AlertKind::Resolved, "resolved"),
        ] {
            let m = email_message(&alert(kind), "recovery@example.com", &to()).unwrap();
            assert_eq!(header(&m, "Message-ID"), Some(format!("<{ID}.{slug}@aws-recovery-controller>").as_str()));
            assert_eq!(header(&m, "In-Reply-To"), Some(root.as_str()), "{kind:?}");
            assert_eq!(header(&m, "References"), Some(root.as_str()), "{kind:?}");
            let raw = String::from_utf8(m.formatted()).unwrap();
            assert!(raw.contains(&format!("In-Reply-To: {root}\r\n")), "{raw}");
        }
    }

    #[test]
    fn korean_subject_is_encoded_and_body_is_utf8_text() {
        let mut a = alert(AlertKind::PlanCompleted);
        a.locale = Locale::Ko;
        let m = email_message(&a, "recovery@example.com", &to()).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(raw.contains("Subject: [HIGH] service =?utf-8?b?"), "non-ASCII words are RFC 2047 encoded: {raw}");
        assert!(raw.contains("Content-Type: text/plain; charset=utf-8"));
    }

    #[test]
    fn body_has_the_facts_and_time_to_recovery() {
        let body = plain_text(&alert(AlertKind::Resolved));
        for want in [
            "[1a2b3c4d · prod/ecs-prod-checkout-1] Update to this incident\n\n[HIGH] service Incident Resolved\n\n",
            "ECS service checkout in cluster prod runs 1 of 3 desired tasks (2 pending)\n",
            "Target: ecs/prod/checkout\n",
            "AWS resource: ECS service checkout (cluster prod, us-east-1)\n",
            "Tasks: running 1 / desired 3 / pending 2\n",
            "Recovery plan: ecs-prod-checkout-1-plan\n",
            "Detected at: 2023-11-14T22:13:20Z\n",
            "Resolved at: 2023-11-14T22:17:32Z\n",
            "Time to recovery: 4m 12s\n",
            &format!("Incident id: {ID}\n"),
            "Plan status:\n  ForceNewDeployment of checkout succeeded",
            "Recent ECS events:\n  - (service checkout) has started 2 tasks",
            "  kubectl describe incident ecs-prod-checkout-1 -n prod\n",
            "  kubectl describe recoveryplan ecs-prod-checkout-1-plan -n prod\n",
        ] {
            assert!(body.contains(want), "missing {want:?} in\n{body}");
        }
        assert!(!body.contains("kubectl annotate"));
        let body = plain_text(&alert(AlertKind::AwaitingApproval));
        assert!(body.contains(
            "Approve:\n  kubectl annotate recoveryplan ecs-prod-checkout-1-plan -n prod recovery.dev/approved-by=$USER\n"
        ));
        assert!(!body.contains("Time to recovery"));
    }

    #[test]
    fn database_and_network_facts() {
        use crate::api::incident::{IncidentType, ResourceKind};
        let mut a = alert(AlertKind::Detected);
        a.incident.type_ = IncidentType::Database;
        a.incident.resource.kind = ResourceKind::RdsInstance;
        a.incident.resource.identifier = Some("prod-db".into());
        a.metrics = Some(crate::api::incident::IncidentMetrics {
            db_status: Some("rebooting".into()),
            multi_az: Some(true),
            ..Default::default()
        });
        let body = plain_text(&a);
        assert!(body.contains("AWS resource: RDS instance prod-db (us-east-1)\nDB status: rebooting\nMulti-AZ: yes\n"));

        a.incident.type_ = IncidentType::Network;
        a.incident.resource.kind = ResourceKind::Route53HealthCheck;
        a.incident.resource.health_check_id = Some("hc-1".into());
        a.metrics = Some(crate::api::incident::IncidentMetrics {
            failing_observations: Some(3),
            total_observations: Some(8),
            ..Default::default()
        });
        a.locale = Locale::Ko;
        let body = plain_text(&a);
        assert!(body.contains("AWS 리소스: Route 53 헬스 체크 hc-1\n헬스 체커: 8개 중 3개 실패\n"), "{body}");
    }

    #[test]
    fn bad_addresses_are_named() {
        let a = alert(AlertKind::Detected);
        let err = email_message(&a, "not an address", &to()).unwrap_err();
        assert_eq!(err.to_string(), "email from address \"not an address\" is invalid");
        let err = email_message(&a, "r@example.com", &["oops".into()]).unwrap_err();
        assert_eq!(err.to_string(), "email to address \"oops\" is invalid");
        assert_eq!(email_message(&a, "r@example.com", &[]).unwrap_err(), AlertError::NoRecipients);
    }

    fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn smtp_settings_defaults_follow_tls() {
        let s = SmtpSettings::from_secret(&secret(&[("host", "smtp.example.com\n")])).unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("smtp.example.com", 587, SmtpTls::StartTls));
        assert_eq!((s.username, s.password), (None, None));
        let s = SmtpSettings::from_secret(&secret(&[("host", "h"), ("tls", "TLS")])).unwrap();
        assert_eq!((s.port, s.tls), (465, SmtpTls::Tls));
        let s = SmtpSettings::from_secret(&secret(&[("host", "h"), ("tls", "none")])).unwrap();
        assert_eq!((s.port, s.tls), (25, SmtpTls::None));
        let s = SmtpSettings::from_secret(&secret(&[("host", "h"), ("tls", "none"), ("port", "2525")])).unwrap();
        assert_eq!(s.port, 2525);
    }

    #[test]
    fn smtp_settings_errors_name_the_key_never_the_value() {
        let err = SmtpSettings::from_secret(&secret(&[("port", "25"), ("password", "hunter2")])).unwrap_err();
        assert_eq!(err.to_string(), "smtp secret has no key \"host\"");
        for (pairs, key) in [
            (&[("host", "h"), ("port", "hunter2")][..], "port"),
            (&[("host", "h"), ("port", "0")][..], "port"),
            (&[("host", "h"), ("tls", "hunter2")][..], "tls"),
            (&[("host", "h"), ("ca.crt", "hunter2")][..], "ca.crt"),
        ] {
            let err = SmtpSettings::from_secret(&secret(pairs)).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(shown.contains(&format!("{key:?}")) && !shown.contains("hunter2"), "{shown}");
        }
        let err = SmtpSettings::from_secret(&secret(&[("host", "h"), ("password", "hunter2")])).unwrap_err();
        assert_eq!(err, AlertError::MissingKey("username"));
        let err = SmtpSettings::from_secret(&secret(&[("host", "h"), ("username", "u")])).unwrap_err();
        assert_eq!(err, AlertError::MissingKey("password"));
        let mut bad = secret(&[("host", "h")]);
        bad.insert("username".into(), vec![0xff, 0xfe]);
        assert_eq!(
            SmtpSettings::from_secret(&bad).unwrap_err().to_string(),
            "smtp secret key \"username\" is not valid UTF-8"
        );
    }

    #[test]
    fn smtp_password_is_kept_exactly_and_never_shown() {
        let s = SmtpSettings::from_secret(&secret(&[("host", "h"), ("username", "u"), ("password", " hunter2 \n")]))
            .unwrap();
        assert_eq!(s.password.as_deref(), Some(" hunter2 "));
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && shown.contains("<redacted>"), "{shown}");
    }

    #[tokio::test]
    async fn refused_connection_is_retryable() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let settings = SmtpSettings::from_secret(&secret(&[
            ("host", "127.0.0.1"),
            ("port", "1"),
            ("tls", "none"),
            ("username", "u"),
            ("password", "hunter2"),
        ]))
        .unwrap();
        let m = email_message(&alert(AlertKind::Detected), "r@example.com", &to()).unwrap();
        let err = send_email(&settings, m).await.unwrap_err();
        assert!(err.retryable, "{err:?}");
        assert!(err.message.starts_with("smtp connection failed"), "{}", err.message);
        assert!(!err.message.contains("hunter2"));
    }
}
