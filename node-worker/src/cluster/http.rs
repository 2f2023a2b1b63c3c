//! `/healthz` (the process is alive and the capture loop goes round), `/readyz` (a config is loaded and
//! capture runs) and `/metrics`, over plain HTTP/1 on the worker's health port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use interceptor_crds::worker_env::{LIVENESS_PATH, METRICS_PATH, READINESS_PATH};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::metrics::Metrics;
use super::state::Shared;

/// What the endpoints report.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub shared: Arc<Shared>,
    /// The loop counts as stalled (liveness fails) after this long without a round.
    pub stall_after: Duration,
}

/// Why the worker is not ready, if it is not.
pub fn not_ready(shared: &Shared) -> Option<&'static str> {
    if shared.stopping() {
        Some("shutting down")
    } else if shared.config().version.is_none() {
        Some("no valid config loaded yet")
    } else if !shared.capture_running() {
        Some("capture not running")
    } else {
        None
    }
}

/// The answer to one request (pure apart from reading the shared state).
pub fn respond(health: &Health, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        response
    };
    if method != Method::GET && method != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match path {
        METRICS_PATH => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            health.metrics.encode(),
        ),
        LIVENESS_PATH => {
            if health
                .shared
                .loop_stalled(SystemTime::now(), health.stall_after)
            {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!(
                        "the capture loop has not gone round for more than {}s\n",
                        health.stall_after.as_secs()
                    ),
                )
            } else {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            }
        }
        READINESS_PATH => match not_ready(&health.shared) {
            None => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Some(reason) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{reason}\n"),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serve until `shutdown` turns true.
pub async fn serve(listener: TcpListener, health: Health, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (stream, peer): (_, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a health connection failed");
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<Incoming>| {
                let response = respond(&health, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "health connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pods::SharedPods;
    use crate::cluster::state::ConfigState;

    fn health() -> Health {
        let shared = Shared::new();
        Health {
            metrics: Arc::new(Metrics::new(Arc::clone(&shared), SharedPods::default())),
            shared,
            stall_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn readiness_needs_a_config_and_a_running_capture() {
        let h = health();
        let get = |p| respond(&h, &Method::GET, p).status();
        assert_eq!(get("/healthz"), StatusCode::OK);
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        h.shared.set_config(ConfigState {
            version: Some("1".into()),
            refused: None,
        });
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        h.shared.set_capture_running(true);
        assert_eq!(get("/readyz"), StatusCode::OK);
        h.shared.set_stopping();
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/metrics"), StatusCode::OK);
        assert_eq!(get("/nope"), StatusCode::NOT_FOUND);
        assert_eq!(
            respond(&h, &Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn liveness_fails_when_the_capture_loop_stops_going_round() {
        let h = health();
        h.shared.set_capture_running(true);
        let long_ago = SystemTime::now() - Duration::from_secs(120);
        h.shared.beat(long_ago);
        assert_eq!(
            respond(&h, &Method::GET, "/healthz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.shared.beat(SystemTime::now());
        assert_eq!(
            respond(&h, &Method::GET, "/healthz").status(),
            StatusCode::OK
        );
    }
}
