//! The HTTP endpoints: `/metrics` for Prometheus, `/healthz` and `/readyz` for the kubelet,
//! `/ping` for peers, `/` (also `/status`) for people ([`status`]); [`server`] serves them
//! within the limits below.

mod server;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::MAX_PING_BYTES;
use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
pub use server::{ConnHandle, serve};

// The limits below keep what any client can make the daemon hold to a few MiB (the chart's
// memory limit is 96 Mi, and any pod may connect when the NetworkPolicy is off); README's
// "HTTP server limits" lists them for users.

/// Longest a request may take, once its head is in, before the server answers 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No endpoint takes a body; anything larger than this, chunked or not, is refused with 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// A connection that has not sent a complete request head this long after it was opened, or
/// after its previous response, is closed (slowloris, and the idle keep-alive timeout).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers); a larger one gets 431. Prometheus' and the
/// kubelet's are under 2 KiB, bearer token included.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in a request head; more get 431.
pub const MAX_HEADERS: usize = 64;
/// Connections open at once. Each costs at most about 40 KiB here (hyper's buffers), so the
/// cap bounds the server to about 10 MiB; a node sees Prometheus, the kubelet and its peers.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a new connection may wait for a slot when every connection is busy with a request.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(1);
/// `/ping?bytes=` bodies being sent at once; more get 503, so bulk transfers cannot take all the
/// connections.
pub const MAX_BULK_RESPONSES: usize = 32;
/// A client that asked for `/ping?bytes=` and has not taken the body this long after asking is
/// reset. The kernel applies the same bound to any connection whose client stops acknowledging.
pub const SEND_DEADLINE: Duration = Duration::from_secs(10);

/// Connections the kernel queues for the server before refusing more. A burst beyond the
/// connection cap waits here while the server makes room (tokio's default is 128).
pub const LISTEN_BACKLOG: u32 = 1024;

/// The server's listening socket, with [`LISTEN_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio's own `bind` do, so a restarted daemon need not wait out TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

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
        .route("/", get(status_page))
        .route("/status", get(status_page))
        .layer(middleware::from_fn(read_body))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// Reads (and drops) any request body before the handler runs. No handler reads bodies, so
/// without this a chunked body, which has no Content-Length for `RequestBodyLimitLayer` to
/// check, would never meet the limit.
async fn read_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if !body.is_end_stream() {
        let conn = parts.extensions.get::<ConnHandle>();
        // A slow body is the client's doing, like a slow head.
        if let Some(conn) = conn {
            conn.waiting_on_client();
        }
        let read = axum::body::to_bytes(body, MAX_BODY_BYTES).await;
        if let Some(conn) = conn {
            conn.busy();
        }
        if let Err(e) = read {
            // The limit error sits under one or two wrappers (tower-http's limit wraps the body
            // too), so look through the whole chain.
            let too_large = std::iter::successors(std::error::Error::source(&e), |s| s.source())
                .any(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body larger than {MAX_BODY_BYTES} bytes; no endpoint takes a body\n"),
                )
                    .into_response()
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}\n"),
                )
                    .into_response()
            };
        }
    }
    next.run(Request::from_parts(parts, Body::empty())).await
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

/// The status page. Built from the metrics at each request, never cached: a stale copy of it
/// would show peers up that are down.
async fn status_page(State(state): State<AppState>) -> Response {
    let s = status::Status::read(
        &state.metrics,
        &state.node_name,
        state.ready.load(Ordering::Acquire),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, crate::html::CSP),
        ],
        status::render(&s),
    )
        .into_response()
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
    conn: Option<Extension<ConnHandle>>,
) -> Response {
    match query.bytes {
        None => format!("{}\n", state.node_name).into_response(),
        Some(n) if n > MAX_PING_BYTES => (
            StatusCode::BAD_REQUEST,
            format!("bytes={n} is more than the {MAX_PING_BYTES} this server sends\n"),
        )
            .into_response(),
        Some(n) => {
            let bulk = match conn {
                Some(Extension(conn)) => match conn.start_bulk() {
                    Some(permit) => Some(permit),
                    None => {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "{MAX_BULK_RESPONSES} bulk bodies are being sent already; try again\n"
                            ),
                        )
                            .into_response();
                    }
                },
                None => None,
            };
            // Not constant, so no compression along the path can shrink it.
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                Body::new(server::PingBody::new(n, bulk)),
            )
                .into_response()
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
    async fn chunked_bodies_meet_the_limit_too() {
        // A body without Content-Length, as a chunked request arrives.
        let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024]));
        let response = router(state(true))
            .oneshot(
                Request::get("/ping")
                    .body(Body::from_stream(futures_util::stream::iter(chunks)))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let small = futures_util::stream::iter([Ok::<_, std::io::Error>(b"hello".to_vec())]);
        let response = router(state(true))
            .oneshot(
                Request::get("/ping")
                    .body(Body::from_stream(small))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn bulk_bodies_have_their_length_and_pattern() {
        for n in [0u64, 1, 26, 16_380, 16_381, 100_000] {
            let response = router(state(true))
                .oneshot(
                    Request::get(format!("/ping?bytes={n}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                HttpBody::size_hint(response.body()).exact(),
                Some(n),
                "bytes={n}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            assert_eq!(body.len() as u64, n);
            assert!(
                body.iter()
                    .enumerate()
                    .all(|(i, b)| *b == b'a' + (i % 26) as u8),
                "bytes={n}"
            );
        }
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
