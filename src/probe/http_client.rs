//! One HTTP/1.1 GET on a connection the caller opened, with the time of the first response byte.
//!
//! Neither reqwest nor hyper-util's pooled client exposes per-phase hooks (connect, TLS, first
//! byte), so
//! the probers drive each phase themselves: they connect (and handshake TLS), then hand the
//! stream to [`get`], which wraps it to stamp the first byte the server sends back.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::metrics::NetFailure;

/// What a GET saw.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub body_len: u64,
    /// When the first response byte arrived.
    pub first_byte: Instant,
    /// When the body was complete.
    pub done: Instant,
}

/// Why a GET failed, sorted into the probers' closed `result` sets.
#[derive(Debug)]
pub enum Failure {
    Io(io::Error),
    /// The server broke the HTTP protocol (garbage, an early close).
    Protocol(String),
}

impl Failure {
    /// The `result` label: refused, reset, unreachable, timeout, permission_denied or error.
    pub fn result(&self) -> NetFailure {
        match self {
            Failure::Io(e) => io_result(e),
            Failure::Protocol(_) => NetFailure::error,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Protocol(e) => write!(f, "{e}"),
        }
    }
}

/// The `result` label of a socket error.
pub fn io_result(e: &io::Error) -> NetFailure {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => NetFailure::refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            NetFailure::reset
        }
        K::HostUnreachable | K::NetworkUnreachable => NetFailure::unreachable,
        K::TimedOut => NetFailure::timeout,
        K::PermissionDenied => NetFailure::permission_denied,
        _ => NetFailure::error,
    }
}

fn from_hyper(e: hyper::Error) -> Failure {
    // An I/O error underneath (a reset mid-body) says more than hyper's own wrapping.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Failure::Io(io::Error::new(io.kind(), io.to_string()));
        }
        source = err.source();
    }
    if e.is_incomplete_message() {
        return Failure::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the response was complete",
        ));
    }
    Failure::Protocol(e.to_string())
}

/// A stream that remembers when its first byte was read.
struct FirstByte<S> {
    inner: S,
    first: Arc<OnceLock<Instant>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByte<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let _ = self.first.set(Instant::now());
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByte<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Sends `GET path` on `stream` (`Connection: close`) and reads the whole body. The caller
/// bounds it with its deadline.
pub async fn get<S>(
    stream: S,
    host: &str,
    path: &str,
    bearer: Option<&str>,
) -> Result<Response, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first = Arc::new(OnceLock::new());
    let io = TokioIo::new(FirstByte {
        inner: stream,
        first: first.clone(),
    });
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(from_hyper)?;
    // The connection task ends with the response (Connection: close) or when dropped.
    let driver = tokio::spawn(connection);
    let _abort = AbortOnDrop(driver.abort_handle());
    let mut request = Request::get(path)
        .header(header::HOST, host)
        .header(header::CONNECTION, "close")
        .header(
            header::USER_AGENT,
            concat!("kube-netprobe/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Protocol(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(from_hyper)?;
    let status = response.status();
    let mut body = response.into_body();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.map_err(from_hyper)?.data_ref() {
            body_len += data.len() as u64;
        }
    }
    let done = Instant::now();
    Ok(Response {
        status,
        body_len,
        first_byte: first.get().copied().unwrap_or(done),
        done,
    })
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
