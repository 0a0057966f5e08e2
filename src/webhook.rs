//! The admission webhook: a `ValidatingWebhookConfiguration` sends every create and update
//! of a RecoveryPolicy here, and a pause that ends in the past (or more than 30 days ahead)
//! is refused at `kubectl apply`, which the CRD schema cannot do (CEL has no clock). The rule
//! is `core::pause::admit`; a pause whose `until` did not change is always admitted, so
//! GitOps can re-apply a manifest whose window has passed.
//!
//! Served over HTTPS (the API server calls webhooks only so) by every replica, leader or not:
//! it reads nothing but the request. The certificate and key are read from
//! `--webhook-cert-dir` (`tls.crt`, `tls.key`: a `kubernetes.io/tls` Secret, e.g. made by
//! cert-manager) at start.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::routing::post;
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::api::policy::PauseSpec;
use crate::core::pause;

/// Where the API server posts RecoveryPolicy reviews.
pub const PATH: &str = "/validate-recoverypolicy";

/// The TLS settings from `dir/tls.crt` and `dir/tls.key`.
pub fn tls_config(dir: &Path) -> Result<rustls::ServerConfig, String> {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let certs = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("reading {}: {e}", key.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("the webhook certificate in {}: {e}", dir.display()))
}

/// Serves until the process ends: each connection's TLS handshake and requests in a task of
/// its own, so a slow client holds up no one.
pub async fn serve(listener: tokio::net::TcpListener, tls: rustls::ServerConfig) -> std::io::Result<()> {
    let app = Router::new().route(PATH, post(validate));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tracing::info!(addr = %listener.local_addr()?, path = PATH, "serving the admission webhook");
    loop {
        let (tcp, peer) = listener.accept().await?;
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(e) => return tracing::debug!(%peer, error = %e, "webhook TLS handshake failed"),
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
}

/// One review: the pause of the new object against the old one's.
async fn validate(Json(review): Json<AdmissionReview<DynamicObject>>) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(e) => return Json(AdmissionResponse::invalid(e).into_review()),
    };
    let response = AdmissionResponse::from(&request);
    Json(match review_pause(&request, Timestamp::now()) {
        Ok(()) => response.into_review(),
        Err(why) => {
            tracing::info!(name = %request.name, namespace = ?request.namespace, %why, "refused a policy");
            response.deny(why).into_review()
        }
    })
}

/// The pause rule over a request. Only the pause is decoded: whatever else the object holds
/// is the schema's to judge, and a pause that does not decode was refused by it already.
fn review_pause(request: &AdmissionRequest<DynamicObject>, now: Timestamp) -> Result<(), String> {
    let pause_of = |obj: &Option<DynamicObject>| -> Option<PauseSpec> {
        let value = obj.as_ref()?.data.pointer("/spec/remediation/pause")?.clone();
        serde_json::from_value(value).ok()
    };
    pause::admit(pause_of(&request.object).as_ref(), pause_of(&request.old_object).as_ref(), now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(until: Option<&str>, old_until: Option<&str>) -> AdmissionReview<DynamicObject> {
        let policy = |until: Option<&str>| {
            let pause = until.map(|u| json!({"until": u, "reason": "maintenance"}));
            json!({"apiVersion": "recovery.dev/v1alpha1", "kind": "RecoveryPolicy",
                   "metadata": {"name": "shop", "namespace": "shop"},
                   "spec": {"aws": {"region": "us-east-1"}, "targets": {}, "remediation": {"pause": pause}}})
        };
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "recovery.dev", "version": "v1alpha1", "kind": "RecoveryPolicy"},
                "resource": {"group": "recovery.dev", "version": "v1alpha1", "resource": "recoverypolicies"},
                "name": "shop", "namespace": "shop",
                "operation": if old_until.is_some() { "UPDATE" } else { "CREATE" },
                "userInfo": {"username": "alice"},
                "object": policy(until),
                "oldObject": old_until.map(|u| policy(Some(u))),
                "dryRun": false
            }
        }))
        .expect("a review")
    }

    #[tokio::test]
    async fn a_pause_in_the_past_is_refused_an_unchanged_one_is_not() {
        let answer = |r| async move {
            let Json(out) = validate(Json(r)).await;
            let response = out.response.expect("a response");
            (response.allowed, response.result.message)
        };
        let (allowed, message) = answer(review(Some("2020-01-02T00:00:00Z"), None)).await;
        assert!(!allowed && message.contains("is not in the future"), "{message}");
        let ahead = (Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(2)).to_string();
        assert!(answer(review(Some(&ahead), None)).await.0, "a pause two hours ahead");
        assert!(answer(review(Some("2020-01-02T00:00:00Z"), Some("2020-01-02T00:00:00Z"))).await.0, "unchanged");
        assert!(answer(review(None, None)).await.0, "no pause");
    }
}
