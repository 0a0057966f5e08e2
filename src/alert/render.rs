//! Alert text shared by both channels: the per-locale strings, titles, and the facts an
//! alert shows. Pure: no I/O, no clock.

use k8s_openapi::jiff::Timestamp;

use super::Alert;
use crate::api::incident::{AlertKind, IncidentMetrics};
use crate::api::plan::APPROVED_BY_ANNOTATION;
use crate::api::policy::Locale;
use crate::core::kinds::Place;

/// Every user-visible string of one locale. Severity tags, incident types, AWS identifiers and
/// kubectl commands are API values and stay in English in every locale. `{name}` marks a
/// placeholder filled by [`fill`], so word order can differ between languages.
pub(crate) struct Texts {
    pub detected: &'static str,
    pub awaiting_approval: &'static str,
    pub plan_completed: &'static str,
    pub plan_failed: &'static str,
    pub resolved: &'static str,
    pub follow_up: &'static str,
    pub target: &'static str,
    pub severity: &'static str,
    pub type_: &'static str,
    pub resource: &'static str,
    pub cluster: &'static str,
    pub tasks: &'static str,
    pub tasks_value: &'static str,
    pub deployment: &'static str,
    pub db_status: &'static str,
    pub multi_az: &'static str,
    pub yes: &'static str,
    pub no: &'static str,
    pub endpoint: &'static str,
    pub writer: &'static str,
    pub members: &'static str,
    pub zones: &'static str,
    pub checkers: &'static str,
    pub checkers_value: &'static str,
    pub affected: &'static str,
    pub plan: &'static str,
    pub plan_status: &'static str,
    pub detected_at: &'static str,
    pub resolved_at: &'static str,
    pub time_to_recovery: &'static str,
    pub incident_id: &'static str,
    pub recent_events: &'static str,
    pub inspect: &'static str,
    pub approve: &'static str,
    pub paused: &'static str,
    /// Day, hour, minute, second suffixes for durations such as `4m 12s`.
    pub units: [&'static str; 4],
}

// The two tables, field for field. Keep them in the same order so they read side by side.
const EN: Texts = Texts {
    detected: "Incident Detected",
    awaiting_approval: "Recovery Plan Awaiting Approval",
    plan_completed: "Recovery Plan Completed",
    plan_failed: "Recovery Plan Failed — escalating to on-call",
    resolved: "Incident Resolved",
    follow_up: "Update to this incident",
    target: "Target",
    severity: "Severity",
    type_: "Type",
    resource: "AWS resource",
    cluster: "cluster",
    tasks: "Tasks",
    tasks_value: "running {running} / desired {desired} / pending {pending}",
    deployment: "Primary deployment",
    db_status: "DB status",
    multi_az: "Multi-AZ",
    yes: "yes",
    no: "no",
    endpoint: "Endpoint",
    writer: "Writer",
    members: "Members",
    zones: "Availability zones",
    checkers: "Health checkers",
    checkers_value: "{failing} of {total} failing",
    affected: "Affected",
    plan: "Recovery plan",
    plan_status: "Plan status",
    detected_at: "Detected at",
    resolved_at: "Resolved at",
    time_to_recovery: "Time to recovery",
    incident_id: "Incident id",
    recent_events: "Recent ECS events",
    inspect: "Inspect",
    approve: "Approve",
    paused: "Remediation paused",
    units: ["d", "h", "m", "s"],
};

const KO: Texts = Texts {
    detected: "인시던트 감지",
    awaiting_approval: "복구 계획 승인 대기",
    plan_completed: "복구 계획 실행 완료",
    plan_failed: "복구 계획 실패 — 담당자 호출",
    resolved: "인시던트 해결",
    follow_up: "이 인시던트의 후속 알림",
    target: "대상",
    severity: "심각도",
    type_: "유형",
    resource: "AWS 리소스",
    cluster: "클러스터",
    tasks: "태스크",
    tasks_value: "실행 {running} / 목표 {desired} / 대기 {pending}",
    deployment: "기본 배포",
    db_status: "DB 상태",
    multi_az: "Multi-AZ",
    yes: "예",
    no: "아니요",
    endpoint: "엔드포인트",
    writer: "라이터",
    members: "멤버",
    zones: "가용 영역",
    checkers: "헬스 체커",
    checkers_value: "{total}개 중 {failing}개 실패",
    affected: "영향 받는 구성 요소",
    plan: "복구 계획",
    plan_status: "계획 상태",
    detected_at: "감지 시각",
    resolved_at: "해결 시각",
    time_to_recovery: "복구 소요 시간",
    incident_id: "인시던트 ID",
    recent_events: "최근 ECS 이벤트",
    inspect: "조회",
    approve: "승인",
    paused: "복구 일시 중지",
    units: ["일", "시간", "분", "초"],
};

pub(crate) fn texts(locale: Locale) -> &'static Texts {
    match locale {
        Locale::En => &EN,
        Locale::Ko => &KO,
    }
}

/// The title of an alert: `[HIGH] service Incident Detected`. Also the e-mail subject and the
/// Slack header.
pub fn title(alert: &Alert) -> String {
    let t = texts(alert.locale);
    let what = match alert.kind {
        AlertKind::Detected => t.detected,
        AlertKind::AwaitingApproval => t.awaiting_approval,
        AlertKind::PlanCompleted => t.plan_completed,
        AlertKind::PlanFailed => t.plan_failed,
        AlertKind::Resolved => t.resolved,
    };
    let severity = alert.incident.severity.as_str().to_ascii_uppercase();
    format!("[{severity}] {} {what}", alert.incident.type_.as_str())
}

/// The reference every message of one incident starts with, on both channels:
/// `[1a2b3c4d · prod/ecs-prod-checkout-1]`. Slack webhooks cannot thread, so this is what lets
/// a reader tie the follow-ups to the first message.
pub fn incident_tag(alert: &Alert) -> String {
    let short: String = alert.incident.id.chars().take(8).collect();
    format!("[{short} · {}/{}]", alert.namespace, alert.incident_name)
}

/// A stable, lowercase name of an alert kind, used in Message-IDs.
pub(crate) fn kind_slug(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::Detected => "detected",
        AlertKind::AwaitingApproval => "awaiting-approval",
        AlertKind::PlanCompleted => "plan-completed",
        AlertKind::PlanFailed => "plan-failed",
        AlertKind::Resolved => "resolved",
    }
}

/// What an alert shows, in display order, already localized. Each channel lays it out.
pub(crate) struct Facts {
    pub texts: &'static Texts,
    /// The incident tag, followed on follow-ups by "Update to this incident".
    pub lead: String,
    pub title: String,
    pub description: String,
    /// Label and value; values are never empty.
    pub fields: Vec<(String, String)>,
    pub plan_summary: Option<String>,
    pub events: Vec<String>,
    /// `kubectl describe` for the incident and, when there is one, the plan.
    pub inspect: Vec<String>,
    /// The approval command, only on AwaitingApproval.
    pub approve: Option<String>,
    pub incident_id: String,
}

pub(crate) fn facts(alert: &Alert) -> Facts {
    let t = texts(alert.locale);
    let spec = &alert.incident;
    let tag = incident_tag(alert);
    let lead = if alert.kind == AlertKind::Detected { tag } else { format!("{tag} {}", t.follow_up) };

    let mut fields = Vec::new();
    let mut push = |label: &str, value: String| {
        if !value.trim().is_empty() {
            fields.push((label.to_string(), value));
        }
    };
    push(t.target, spec.target.clone());
    push(t.severity, spec.severity.as_str().to_string());
    push(t.type_, spec.type_.as_str().to_string());
    push(t.resource, resource(alert, t));
    if let Some(m) = &alert.metrics {
        for (label, value) in metric_fields(m, t) {
            push(&label, value);
        }
    }
    push(t.affected, spec.affected_components.join(", "));
    if let Some(pause) = &alert.paused {
        // The pause's own words (the reason people wrote), after the label of the locale.
        push(t.paused, pause.clone());
    }
    if let Some(plan) = &alert.plan_name {
        push(t.plan, plan.clone());
    }
    if let Some(at) = alert.detected_at {
        push(t.detected_at, whole_seconds(at));
    }
    if let Some(at) = alert.resolved_at {
        push(t.resolved_at, whole_seconds(at));
    }
    if let Some(ttr) = time_to_recovery(alert) {
        push(t.time_to_recovery, ttr);
    }

    let ns = &alert.namespace;
    let mut inspect = vec![format!("kubectl describe incident {} -n {ns}", alert.incident_name)];
    let mut approve = None;
    if let Some(plan) = &alert.plan_name {
        inspect.push(format!("kubectl describe recoveryplan {plan} -n {ns}"));
        if alert.kind == AlertKind::AwaitingApproval {
            approve = Some(format!("kubectl annotate recoveryplan {plan} -n {ns} {APPROVED_BY_ANNOTATION}=$USER"));
        }
    }

    Facts {
        texts: t,
        lead,
        title: title(alert),
        description: spec.description.clone(),
        fields,
        plan_summary: alert.plan_summary.clone().filter(|s| !s.trim().is_empty()),
        events: alert.metrics.as_ref().map(|m| m.recent_events.clone()).unwrap_or_default(),
        inspect,
        approve,
        incident_id: spec.id.clone(),
    }
}

/// `ECS service checkout (cluster prod, us-east-1)`, `RDS instance prod-db (us-east-1)`: the
/// kind names and places the resource (`core::kinds`), the locale gives the words.
fn resource(alert: &Alert, t: &Texts) -> String {
    let kind = crate::core::kinds::of(alert.incident.resource.kind);
    let (name, places) = kind.alert_resource(&alert.incident.resource);
    let parts: Vec<String> = places
        .into_iter()
        .map(|p| match p {
            Place::Cluster(c) => format!("{} {c}", t.cluster),
            Place::Region(r) => r,
        })
        .filter(|p| !p.is_empty())
        .collect();
    let paren = if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) };
    format!("{} {name}{paren}", kind.noun(alert.locale))
}

fn metric_fields(m: &IncidentMetrics, t: &Texts) -> Vec<(String, String)> {
    let n = |v: Option<i32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    let mut out = Vec::new();
    if m.running_count.is_some() || m.desired_count.is_some() || m.pending_count.is_some() {
        let value = fill(
            t.tasks_value,
            &[("running", n(m.running_count)), ("desired", n(m.desired_count)), ("pending", n(m.pending_count))],
        );
        out.push((t.tasks.to_string(), value));
    }
    if let Some(d) = &m.primary_deployment {
        out.push((t.deployment.to_string(), d.clone()));
    }
    if let Some(s) = &m.db_status {
        out.push((t.db_status.to_string(), s.clone()));
    }
    if let Some(multi_az) = m.multi_az {
        out.push((t.multi_az.to_string(), (if multi_az { t.yes } else { t.no }).to_string()));
    }
    if let Some(e) = &m.endpoint {
        out.push((t.endpoint.to_string(), e.clone()));
    }
    if let Some(w) = &m.writer {
        out.push((t.writer.to_string(), w.clone()));
    }
    if !m.members.is_empty() {
        out.push((t.members.to_string(), m.members.join(", ")));
    }
    if !m.availability_zones.is_empty() {
        out.push((t.zones.to_string(), m.availability_zones.join(", ")));
    }
    if m.failing_observations.is_some() || m.total_observations.is_some() {
        let n = |v: Option<u32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        let value =
            fill(t.checkers_value, &[("failing", n(m.failing_observations)), ("total", n(m.total_observations))]);
        out.push((t.checkers.to_string(), value));
    }
    // `extra` is free-form: its keys are shown as they are, untranslated.
    out.extend(m.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// Resolved alerts only: how long the target was unhealthy, e.g. `4m 12s`.
fn time_to_recovery(alert: &Alert) -> Option<String> {
    if alert.kind != AlertKind::Resolved {
        return None;
    }
    let secs = alert.resolved_at?.duration_since(alert.detected_at?).as_secs();
    // A resolution stamped before its detection means skewed clocks; say nothing rather than lie.
    (secs >= 0).then(|| human_duration(secs.unsigned_abs(), &texts(alert.locale).units))
}

/// The two most significant units: `42s`, `4m 12s`, `1h 3m`, `2d 5h`; a zero second unit is dropped.
pub(crate) fn human_duration(secs: u64, units: &[&str; 4]) -> String {
    let parts = [secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60, secs % 60];
    let first = parts.iter().position(|&p| p > 0).unwrap_or(3);
    let mut out = format!("{}{}", parts[first], units[first]);
    if first < 3 && parts[first + 1] > 0 {
        out.push_str(&format!(" {}{}", parts[first + 1], units[first + 1]));
    }
    out
}

/// RFC 3339 in UTC without fractions: people read these, sub-second precision is noise.
fn whole_seconds(at: Timestamp) -> String {
    Timestamp::from_second(at.as_second()).unwrap_or(at).to_string()
}

/// Fills `{name}` placeholders of a table template.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_string(), |text, (name, value)| text.replace(&format!("{{{name}}}"), value))
}

/// Cuts `text` to at most `max` UTF-16 code units (how Slack counts), on a char boundary,
/// ending in `…` when cut. Counting UTF-16 units is never less than counting chars, so the
/// result also fits any char-counted limit.
pub(crate) fn clip(text: &str, max: usize) -> String {
    clip_mapped(text, max, |c, out| out.push(c))
}

/// Like [`clip`], but writes each char through `map` (e.g. an escaper) and counts the output,
/// so an escape sequence is never cut in half.
pub(crate) fn clip_mapped(text: &str, max: usize, map: impl Fn(char, &mut String)) -> String {
    let units = |s: &str| s.encode_utf16().count();
    let mut out = String::new();
    let mut used = 0;
    let mut piece = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        piece.clear();
        map(c, &mut piece);
        let n = units(&piece);
        // Leave room for the ellipsis unless this is the very last char.
        let reserve = if chars.peek().is_some() { 1 } else { 0 };
        if used + n + reserve > max {
            if used < max {
                out.push('…');
            }
            return out;
        }
        out.push_str(&piece);
        used += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::fixtures::alert;

    #[test]
    fn titles_in_both_locales_for_every_kind() {
        let cases = [
            (AlertKind::Detected, "[HIGH] service Incident Detected", "[HIGH] service 인시던트 감지"),
            (
                AlertKind::AwaitingApproval,
                "[HIGH] service Recovery Plan Awaiting Approval",
                "[HIGH] service 복구 계획 승인 대기",
            ),
            (AlertKind::PlanCompleted, "[HIGH] service Recovery Plan Completed", "[HIGH] service 복구 계획 실행 완료"),
            (
                AlertKind::PlanFailed,
                "[HIGH] service Recovery Plan Failed — escalating to on-call",
                "[HIGH] service 복구 계획 실패 — 담당자 호출",
            ),
            (AlertKind::Resolved, "[HIGH] service Incident Resolved", "[HIGH] service 인시던트 해결"),
        ];
        for (kind, en, ko) in cases {
            let mut a = alert(kind);
            assert_eq!(title(&a), en);
            a.locale = Locale::Ko;
            assert_eq!(title(&a), ko);
        }
    }

    #[test]
    fn title_carries_severity_and_type_as_api_values() {
        let mut a = alert(AlertKind::Resolved);
        a.incident.severity = crate::api::Severity::Critical;
        a.incident.type_ = crate::api::incident::IncidentType::Database;
        assert_eq!(title(&a), "[CRITICAL] database Incident Resolved");
        a.locale = Locale::Ko;
        assert_eq!(title(&a), "[CRITICAL] database 인시던트 해결");
    }

    /// A paused target's alert says until when and why, in both locales; others say nothing.
    #[test]
    fn a_paused_target_alert_says_until_when_and_why() {
        let mut a = alert(AlertKind::Detected);
        assert!(!facts(&a).fields.iter().any(|(l, _)| l == "Remediation paused"));
        a.paused = Some("until 2026-12-03T18:00:00Z (by alice): database maintenance".into());
        let en = facts(&a).fields;
        assert!(en.contains(&("Remediation paused".into(), a.paused.clone().unwrap())), "{en:?}");
        a.locale = Locale::Ko;
        let ko = facts(&a).fields;
        assert!(ko.contains(&("복구 일시 중지".into(), a.paused.clone().unwrap())), "{ko:?}");
    }

    /// A DB cluster names itself, its region, its writer and members, in both locales.
    #[test]
    fn a_cluster_alert_names_writer_and_members() {
        let mut a = alert(AlertKind::Detected);
        a.incident.type_ = crate::api::incident::IncidentType::Database;
        a.incident.resource = crate::api::incident::AwsResource {
            kind: crate::api::incident::ResourceKind::RdsCluster,
            region: "eu-west-1".into(),
            cluster: None,
            service: None,
            identifier: Some("payments-aurora".into()),
            health_check_id: None,
        };
        a.metrics = Some(IncidentMetrics {
            db_status: Some("available".into()),
            writer: Some("payments-aurora-a".into()),
            members: vec!["payments-aurora-a (writer): failed".into(), "payments-aurora-b (reader): available".into()],
            ..IncidentMetrics::default()
        });
        let shown = |a: &Alert| facts(a).fields;
        let en = shown(&a);
        let has = |fields: &[(String, String)], label: &str, value: &str| {
            fields.iter().any(|(l, v)| l == label && v == value)
        };
        assert!(has(&en, "AWS resource", "DB cluster payments-aurora (eu-west-1)"), "{en:?}");
        assert!(has(&en, "Writer", "payments-aurora-a"), "{en:?}");
        assert!(
            has(&en, "Members", "payments-aurora-a (writer): failed, payments-aurora-b (reader): available"),
            "{en:?}"
        );
        a.locale = Locale::Ko;
        let ko = shown(&a);
        assert!(ko.iter().any(|(_, v)| v == "DB 클러스터 payments-aurora (eu-west-1)"), "{ko:?}");
        assert!(has(&ko, "라이터", "payments-aurora-a"), "{ko:?}");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let en = &EN.units;
        assert_eq!(human_duration(0, en), "0s");
        assert_eq!(human_duration(42, en), "42s");
        assert_eq!(human_duration(252, en), "4m 12s");
        assert_eq!(human_duration(3_600, en), "1h");
        assert_eq!(human_duration(3_785, en), "1h 3m");
        assert_eq!(human_duration(2 * 86_400 + 5 * 3_600 + 7, en), "2d 5h");
        assert_eq!(human_duration(252, &KO.units), "4분 12초");
    }

    #[test]
    fn time_to_recovery_only_on_resolved_and_never_negative() {
        let mut a = alert(AlertKind::Resolved);
        assert_eq!(time_to_recovery(&a).as_deref(), Some("4m 12s"));
        a.kind = AlertKind::PlanCompleted;
        assert_eq!(time_to_recovery(&a), None);
        a.kind = AlertKind::Resolved;
        std::mem::swap(&mut a.detected_at, &mut a.resolved_at);
        assert_eq!(time_to_recovery(&a), None);
        a.resolved_at = None;
        assert_eq!(time_to_recovery(&a), None);
    }

    #[test]
    fn clip_cuts_on_char_boundaries_within_the_limit() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("exactly10!", 10), "exactly10!");
        assert_eq!(clip("abcdefghijk", 10), "abcdefghi…");
        let ko = "인시던트".repeat(100);
        let cut = clip(&ko, 150);
        assert_eq!(cut.encode_utf16().count(), 150);
        assert!(cut.ends_with('…'));
        // An emoji is two UTF-16 units: it must not be split nor overflow.
        let cut = clip(&"😀".repeat(10), 6);
        assert_eq!(cut, "😀😀…");
    }

    #[test]
    fn fill_replaces_every_placeholder() {
        assert_eq!(fill(KO.checkers_value, &[("failing", "3".into()), ("total", "8".into())]), "8개 중 3개 실패");
    }
}
