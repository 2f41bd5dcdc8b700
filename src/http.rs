//! The HTTP endpoints: `/metrics` for Prometheus, `/healthz` and `/readyz` for the kubelet,
//! `/ping` for peers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::MAX_PING_BYTES;
use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};

/// Longest any request may take before the server answers 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No endpoint takes a body; anything larger than this is refused with 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub node_name: Arc<str>,
    /// Set once the config is loaded and every target is scheduled.
    pub ready: Arc<AtomicBool>,
}

/// The router, without a listener, so tests can drive it with `oneshot`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/ping", get(ping))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// OpenMetrics for clients that ask for it (Prometheus does), the classic text format for the
/// rest (curl, promtool), as the Go client does.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if wants_openmetrics {
        (OPENMETRICS_CONTENT_TYPE, state.metrics.encode_openmetrics())
    } else {
        (
            PROMETHEUS_TEXT_CONTENT_TYPE,
            state.metrics.encode_prometheus_text(),
        )
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

#[derive(Debug, serde::Deserialize)]
struct PingQuery {
    bytes: Option<u64>,
}

/// `/ping`: the node name; `/ping?bytes=N`: N bytes (at most 1 MiB), for peers' bulk probes.
async fn ping(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<PingQuery>,
) -> Response {
    match query.bytes {
        None => format!("{}\n", state.node_name).into_response(),
        Some(n) if n > MAX_PING_BYTES => (
            StatusCode::BAD_REQUEST,
            format!("bytes={n} is more than the {MAX_PING_BYTES} this server sends\n"),
        )
            .into_response(),
        Some(n) => {
            // Not constant, so no compression along the path can shrink it.
            let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    fn state(ready: bool) -> AppState {
        AppState {
            metrics: Arc::new(Metrics::new()),
            node_name: "node-a".into(),
            ready: Arc::new(AtomicBool::new(ready)),
        }
    }

    async fn get(state: AppState, uri: &str, accept: Option<&str>) -> (StatusCode, String, String) {
        let mut request = Request::get(uri);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let response = router(state)
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn metrics_negotiates_the_format() {
        let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (status, ct, body) = get(state(true), "/metrics", Some(prometheus_accept)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(body.ends_with("# EOF\n"));
        assert!(body.contains("netprobe_build_info{"));

        let (_, ct, body) = get(state(true), "/metrics", None).await;
        assert_eq!(ct, PROMETHEUS_TEXT_CONTENT_TYPE);
        assert!(!body.contains("# EOF"));
    }

    #[tokio::test]
    async fn readiness_follows_the_flag() {
        assert_eq!(
            get(state(false), "/readyz", None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(state(true), "/readyz", None).await.0, StatusCode::OK);
        assert_eq!(get(state(false), "/healthz", None).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn ping_names_the_node_and_unknown_paths_are_404() {
        let (status, _, body) = get(state(true), "/ping", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "node-a\n"));
        assert_eq!(
            get(state(true), "/nope", None).await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let response = router(state(true))
            .oneshot(
                Request::get("/ping")
                    .header(header::CONTENT_LENGTH, MAX_BODY_BYTES + 1)
                    .body(Body::from(vec![b'x'; MAX_BODY_BYTES + 1]))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
