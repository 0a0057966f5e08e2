//! The controller's client of the API server: kube's own stack (base URI, credentials,
//! impersonation headers, retries of 429/503/504), over HTTP/2 where the server offers it.
//!
//! kube-rs speaks HTTP/1.1 only, so each request in flight holds a connection of its own: the
//! cold cycle's status writes at 10,000 targets opened over 300 of them, each with its TLS
//! handshake and about 30 KiB of buffers (a heap profile; see BENCHMARKS.md, issue #21).
//! client-go, which every Kubernetes controller written in Go uses, multiplexes its requests
//! over one HTTP/2 connection; this does the same. kube-apiserver allows at least 250 streams
//! a connection (Go's default), more than the reconciles in flight and the watches need, and
//! a request beyond the limit waits for a stream rather than failing. HTTP/2 pings find a
//! dead connection, as client-go's do, where HTTP/1.1 relied on the read timeout.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder, ConfigExt, RustlsTlsError};
use kube::{Client, Config};
use tower::ServiceBuilder;
use tower::retry::RetryLayer;

/// How often an HTTP/2 connection is pinged when nothing arrives on it (client-go's
/// `ReadIdleTimeout`).
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is dropped and its requests
/// fail, to be retried on a new one (client-go's `PingTimeout`).
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// Set (to anything), the controller speaks HTTP/1.1 to the API server: the variable
/// client-go honours for the same choice, for a path that mishandles HTTP/2.
pub const DISABLE_HTTP2: &str = "DISABLE_HTTP2";

/// A client for `config`, over HTTP/2 when the API server negotiates it (TLS with ALPN),
/// else HTTP/1.1. A proxy in the kubeconfig, or [`DISABLE_HTTP2`] set, leaves it to kube's
/// own stack (HTTP/1.1).
pub fn client(config: Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() || std::env::var_os(DISABLE_HTTP2).is_some() {
        return Client::try_from(config);
    }
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may have installed one meanwhile; either is the same provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // As Go's net package does for every connection client-go opens. hyper writes a request's
    // HEADERS and DATA frames apart, and with Nagle's algorithm the second waited for the
    // server's delayed ACK: every request with a body took 40 ms more (an Event's create,
    // 43 ms at the API server; 2 ms with this).
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let tls =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config.rustls_client_config()?).https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => {
            let name =
                name.clone().try_into().map_err(|e| kube::Error::RustlsTls(RustlsTlsError::InvalidServerName(e)))?;
            tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => tls,
    };
    // ALPN offers h2 and http/1.1; the server picks.
    let https = tls.enable_all_versions().wrap_connector(http);
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build::<_, Body>(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(ClientBuilder::new(service, config.default_namespace.clone()).build())
}
