//! The listener behind [`super::router`]: hyper's HTTP/1 connections with their limits, a cap on
//! how many are open, and what happens at the cap.
//!
//! At the cap, the connection that has waited longest on its client (for a request head, a
//! request body, or to take a response) is closed to admit the new one, as nginx closes idle
//! keep-alive connections when it runs out. Idle, slow-head and slowloris clients therefore
//! cannot keep Prometheus or the kubelet out: a scrape waits on its client for microseconds, so
//! it is never the one chosen. Only when every connection is busy with a request does a new one
//! wait (at most [`ADMISSION_WAIT`]) and then get closed unserved.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use super::{
    ADMISSION_WAIT, AppState, HEADER_READ_TIMEOUT, MAX_BULK_RESPONSES, MAX_CONNECTIONS,
    MAX_HEAD_BYTES, MAX_HEADERS, SEND_DEADLINE,
};
use crate::metrics::{CloseReason, HttpMetrics};

/// `waiting_since` of a connection the server is working for (or has chosen to close).
const BUSY: u64 = u64::MAX;

/// One open connection, as the pool sees it.
#[derive(Debug)]
struct Conn {
    /// Milliseconds after [`Pool::epoch`] since when the connection has waited on its client,
    /// or [`BUSY`].
    waiting_since: AtomicU64,
    /// Told to close to make room for a new connection.
    evict: Notify,
}

/// The open connections and the limits they share.
#[derive(Debug)]
struct Pool {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    slots: Arc<Semaphore>,
    bulk: Arc<Semaphore>,
    metrics: HttpMetrics,
}

impl Pool {
    fn new(metrics: HttpMetrics) -> Self {
        Self {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            bulk: Arc::new(Semaphore::new(MAX_BULK_RESPONSES)),
            metrics,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(BUSY - 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // The map stays consistent whatever a panicking holder did: every update is one call.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            waiting_since: AtomicU64::new(self.now()),
            evict: Notify::new(),
        });
        let mut conns = self.lock();
        conns.insert(id, conn.clone());
        self.metrics.set_connections(conns.len());
        (id, conn)
    }

    fn unregister(&self, id: u64) {
        let mut conns = self.lock();
        conns.remove(&id);
        self.metrics.set_connections(conns.len());
    }

    /// A slot for a new connection: a free one, or the one of the connection that has waited
    /// longest on its client, or `None` after [`ADMISSION_WAIT`] when every connection is busy.
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        let victim = {
            let conns = self.lock();
            conns
                .values()
                .filter(|c| c.waiting_since.load(Ordering::Acquire) != BUSY)
                .min_by_key(|c| c.waiting_since.load(Ordering::Acquire))
                .cloned()
        };
        if let Some(victim) = victim {
            // Not chosen twice while its task winds down.
            victim.waiting_since.store(BUSY, Ordering::Release);
            victim.evict.notify_one();
        }
        tokio::time::timeout(ADMISSION_WAIT, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// What a handler may know about the connection its request came on (a request extension;
/// absent when the router is driven without a listener, as in unit tests).
#[derive(Debug, Clone)]
pub struct ConnHandle {
    conn: Arc<Conn>,
    pool: Arc<Pool>,
    deadline: Arc<watch::Sender<Option<tokio::time::Instant>>>,
}

impl ConnHandle {
    /// The server waits on the client (reading a request body, sending a response).
    pub fn waiting_on_client(&self) {
        self.conn
            .waiting_since
            .store(self.pool.now(), Ordering::Release);
    }

    /// The server works on a request.
    pub fn busy(&self) {
        self.conn.waiting_since.store(BUSY, Ordering::Release);
    }

    /// Starts a bulk response: a place among the [`MAX_BULK_RESPONSES`] in flight, to hold for
    /// as long as the body is sent, and the connection's [`SEND_DEADLINE`]. `None` when all are
    /// taken.
    pub fn start_bulk(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.pool.bulk.clone().try_acquire_owned().ok()?;
        self.deadline
            .send_replace(Some(tokio::time::Instant::now() + SEND_DEADLINE));
        Some(permit)
    }
}

/// A response body that marks its connection as waiting on the client once hyper has taken
/// all of it (or dropped it).
struct Tracked {
    body: axum::body::Body,
    handle: ConnHandle,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.handle.waiting_on_client();
    }
}

impl Body for Tracked {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves `state`'s router on `listener` until `shutdown` completes, then lets every open
/// connection finish its request and waits for them (the caller bounds that wait).
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) {
    let app = super::router(state.clone());
    let pool = Arc::new(Pool::new(state.metrics.http.clone()));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper starts this clock whenever it waits for a request head: on a new connection and
        // after each response, so it is the idle keep-alive timeout too.
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // The read buffer holds the request head; a head that does not fit gets 431.
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut accept_errors = AcceptErrors::default();
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_errors.failed(e).await;
                    continue;
                }
            },
        };
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = pool.admit() => permit,
        };
        match permit {
            Some(permit) => {
                tokio::spawn(connection(
                    stream,
                    permit,
                    pool.clone(),
                    app.clone(),
                    builder.clone(),
                    stop_rx.clone(),
                ));
            }
            None => pool.metrics.closed(CloseReason::refused),
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection gives its slot back when it ends.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = pool.slots.acquire_many(all).await;
}

/// Accept errors, and when the last was logged.
#[derive(Debug, Default)]
struct AcceptErrors {
    logged_at: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    /// Errors about one connection (reset before it was taken) need nothing. Running out of
    /// file descriptors or memory does: retrying at once would spin, so wait a moment for
    /// connections to close, and log it at most once every 10 s, with the count left out.
    async fn failed(&mut self, e: std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
        if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
            return;
        }
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(error = %e, suppressed = self.suppressed, "HTTP server cannot accept a connection");
            self.logged_at = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resolves when the armed deadline passes; never while none is armed.
async fn expired(deadline: &mut watch::Receiver<Option<tokio::time::Instant>>) {
    loop {
        let armed = *deadline.borrow_and_update();
        match armed {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    changed = deadline.changed() => if changed.is_err() {
                        tokio::time::sleep_until(at).await;
                        return;
                    },
                }
            }
            None => {
                if deadline.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    pool: Arc<Pool>,
    app: Router,
    builder: http1::Builder,
    mut stop: watch::Receiver<bool>,
) {
    let (id, conn) = pool.register();
    // A second handle on the socket, to reset it when the send deadline passes: hyper owns the
    // stream, and a plain close would leave the unread bytes queued in the kernel until the
    // client takes them, possibly never.
    let split = stream.into_std().and_then(|std| {
        let reset = socket2::Socket::from(std.try_clone()?);
        Ok((TcpStream::from_std(std)?, reset))
    });
    let (stream, reset) = match split {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "cannot take a second handle on a connection; closing it");
            pool.metrics.closed(CloseReason::refused);
            pool.unregister(id);
            drop(permit);
            return;
        }
    };
    // The kernel's own send deadline: once the client stops acknowledging (a zero window
    // included), the connection is aborted after this long, even after the daemon closed it.
    if let Err(e) = reset.set_tcp_user_timeout(Some(SEND_DEADLINE)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }

    let (deadline_tx, mut deadline_rx) = watch::channel(None);
    let handle = ConnHandle {
        conn: conn.clone(),
        pool: pool.clone(),
        deadline: Arc::new(deadline_tx),
    };
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let handle = handle.clone();
        handle.busy();
        // A new request means the client took the previous response.
        handle.deadline.send_replace(None);
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(handle.clone());
        let response = app.clone().oneshot(request);
        async move {
            let response = response.await.unwrap_or_else(|never| match never {});
            Ok::<_, Infallible>(response.map(|body| Tracked { body, handle }))
        }
    });
    let mut served = Box::pin(builder.serve_connection(TokioIo::new(stream), service));
    let mut stopping = false;
    let closed_for = loop {
        tokio::select! {
            // In this order when several are ready at once: after a bulk body that fit in the
            // kernel's buffers, hyper's head timer starts a moment after the send deadline, and
            // under load both may be found expired in the same poll.
            biased;
            () = expired(&mut deadline_rx) => break Some(CloseReason::send_deadline),
            () = conn.evict.notified() => break Some(CloseReason::evicted),
            result = served.as_mut() => break match result {
                Err(e) if e.is_timeout() => Some(CloseReason::header_timeout),
                Err(e) if e.is_parse_too_large() => Some(CloseReason::head_too_large),
                _ => None,
            },
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    };
    if closed_for.is_some() && deadline_rx.borrow().is_some() {
        // Closed by a limit while a bulk body may still sit unread in the kernel's queues: a
        // reset discards it and tells the client at once. A plain close would leave it queued
        // behind the FIN until the kernel gives up on the client, which never learns of it.
        let _ = reset.set_linger(Some(Duration::ZERO));
    }
    drop(served);
    drop(reset);
    if let Some(reason) = closed_for {
        pool.metrics.closed(reason);
    }
    pool.unregister(id);
    drop(permit);
}

/// The bytes of every `/ping?bytes=` body: `a..z` repeated. Its length is a multiple of 26, so
/// the body can be sent as slices of it without copying and stays the same pattern throughout.
const PATTERN_LEN: usize = 26 * 630;
static PATTERN: [u8; PATTERN_LEN] = pattern();

const fn pattern() -> [u8; PATTERN_LEN] {
    let mut bytes = [0u8; PATTERN_LEN];
    let mut i = 0;
    while i < PATTERN_LEN {
        bytes[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    bytes
}

/// A `/ping?bytes=` body, produced as hyper sends it: a non-reading client costs no memory in
/// the daemon beyond hyper's write buffer.
pub struct PingBody {
    remaining: u64,
    /// The place among the bulk responses in flight, given back when the body is done or dropped.
    _bulk: Option<OwnedSemaphorePermit>,
}

impl PingBody {
    pub fn new(bytes: u64, bulk: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            remaining: bytes,
            _bulk: bulk,
        }
    }
}

impl Body for PingBody {
    type Data = hyper::body::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining).map_or(PATTERN_LEN, |r| r.min(PATTERN_LEN));
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(hyper::body::Bytes::from_static(
            &PATTERN[..n],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
