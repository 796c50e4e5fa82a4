//! Bounded connections on the coordinator's HTTP and gRPC listeners (issue 22: 20,000 idle
//! connections exhausted the file descriptors, state writes and the lease renewal failed, and
//! the leader stepped down).
//!
//! Owns, per listener: the cap on open connections ([`Limiter`]), the choice of which
//! connection to close when a new one arrives at the cap, and the byte-level timers of each
//! accepted stream ([`Conn`]: a first-byte deadline and an idle deadline). For the process: the
//! file limit, raised to its hard limit once and split between the listeners with a reserve
//! kept free for the state store, Kafka and Druid clients and logs ([`file_limit`], [`cap`]).
//!
//! Never parses HTTP or gRPC (hyper and tonic do; `http.rs` and `grpc.rs` tell this module when
//! a request starts and ends, see [`Requests`] and [`TrackRequests`]), and never makes accept
//! wait behind a flood: at the cap, the idle connection used least recently is closed to make
//! room ([`Reason::Evicted`]), and only when every connection has a request in flight is the
//! new one closed instead ([`Reason::Refused`]).
//!
//! Caps are per listener rather than one pool, so a flood on the HTTP port cannot evict the
//! workers' gRPC connections (and the other way round).

use crate::metrics::Metrics;
use http_body::{Body, Frame, SizeHint};
use lockstep_config::Limits;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Descriptors kept free of connections, at least: the state store, Kafka and Druid clients,
/// log files, the listeners themselves.
pub const RESERVE_MIN: u64 = 64;
/// Listeners sharing the file limit (HTTP and gRPC).
pub const LISTENERS: u64 = 2;
/// Longest the server lets an HTTP/2 connection go silent before it pings. A live client
/// answers, so it reads at least this often; see [`keepalive_interval`].
pub const KEEPALIVE_MAX: Duration = Duration::from_secs(30);

/// The descriptors kept free of connections under a file limit: 1/8 of it, at least
/// [`RESERVE_MIN`].
pub fn reserve(file_limit: u64) -> u64 {
    (file_limit / 8).max(RESERVE_MIN)
}

/// A listener's connection cap: the configured one, lowered so that [`LISTENERS`] listeners
/// at their caps leave [`reserve`] descriptors free (never below 1). `file_limit` None: no
/// limit.
pub fn cap(configured: u32, file_limit: Option<u64>) -> usize {
    let configured = u64::from(configured);
    let fits = match file_limit {
        Some(limit) => (limit.saturating_sub(reserve(limit)) / LISTENERS).max(1),
        None => configured,
    };
    usize::try_from(configured.min(fits)).unwrap_or(usize::MAX)
}

/// The process's file limit (RLIMIT_NOFILE) after raising the soft limit to the hard one,
/// which happens once per process and is logged; None when unlimited.
pub fn file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let before = getrlimit(Resource::Nofile);
        if before.current != before.maximum {
            let raised = Rlimit {
                current: before.maximum,
                maximum: before.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::info!(
                    from = ?before.current,
                    to = ?before.maximum,
                    "raised the file limit (RLIMIT_NOFILE) to its hard limit"
                ),
                Err(e) => tracing::warn!(
                    soft = ?before.current,
                    hard = ?before.maximum,
                    error = %e,
                    "cannot raise the file limit (RLIMIT_NOFILE); connection caps fit the soft one"
                ),
            }
        }
        getrlimit(Resource::Nofile).current
    })
}

/// The HTTP/2 keep-alive ping interval for an idle timeout: at most [`KEEPALIVE_MAX`], and a
/// third of `idle`, so a live client answers a ping (a read) well before its connection would
/// count as idle.
pub fn keepalive_interval(idle: Duration) -> Duration {
    (idle / 3).min(KEEPALIVE_MAX)
}

/// Which listener, as metric labels and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Http,
    Grpc,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Grpc => "grpc",
        }
    }
}

/// Why the coordinator closed a connection on its own (`reason` of
/// `lockstep_coordinator_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The least recently used idle connection, closed to make room at the cap.
    Evicted,
    /// A new connection closed at once: at the cap, every connection had a request in flight.
    Refused,
    /// HTTP: no complete request headers within `header_read_timeout` of the connection's
    /// start or its previous answer. gRPC: no first byte within it.
    HeaderTimeout,
    /// No byte moved either way for `idle_timeout`, with no request in flight.
    Idle,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Evicted => "evicted",
            Reason::Refused => "refused",
            Reason::HeaderTimeout => "header_timeout",
            Reason::Idle => "idle",
        }
    }
}

/// Longest [`Limiter::accept`] waits for an evicted connection to be gone.
pub const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// How often, at most, reaching the cap is logged as a warning (each close is a debug line).
const CAP_WARN_EVERY: Duration = Duration::from_secs(60);

/// One listener's connections: the cap, the open connections, and the metrics.
#[derive(Clone)]
pub struct Limiter(Arc<Inner>);

struct Inner {
    listener: Listener,
    cap: usize,
    /// Before the first byte: gRPC gets `header_read_timeout`; HTTP leaves it to hyper.
    first_byte: Option<Duration>,
    idle: Duration,
    epoch: Instant,
    table: Mutex<Table>,
    metrics: Metrics,
    /// When reaching the cap was last logged as a warning.
    warned: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Arc<Slot>>,
    /// Remote address -> id, for gRPC requests, which know only their peer's address.
    by_peer: HashMap<SocketAddr, u64>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Arc<Slot>> {
        let slot = self.open.remove(&id)?;
        if self.by_peer.get(&slot.peer) == Some(&id) {
            self.by_peer.remove(&slot.peer);
        }
        Some(slot)
    }
}

/// One open connection as the limiter sees it.
struct Slot {
    id: u64,
    peer: SocketAddr,
    /// Milliseconds since the limiter's epoch.
    opened_ms: u64,
    in_flight: AtomicU32,
    /// Milliseconds since the epoch of the last request's start or end, plus one; 0: none yet.
    last_request: AtomicU64,
    /// Cancelled when the limiter evicts the connection.
    evict: CancellationToken,
    /// Cancelled when the connection is gone (its descriptor closed).
    gone: CancellationToken,
}

impl Slot {
    fn candidate(&self) -> Candidate {
        Candidate {
            id: self.id,
            busy: self.in_flight.load(Ordering::Acquire) > 0,
            last_request: match self.last_request.load(Ordering::Acquire) {
                0 => None,
                ms => Some(ms - 1),
            },
            opened: self.opened_ms,
        }
    }
}

/// What eviction looks at, for [`victim`].
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub id: u64,
    /// A request is in flight.
    pub busy: bool,
    /// Start or end of the last request (ms), None before any.
    pub last_request: Option<u64>,
    /// When it was accepted (ms).
    pub opened: u64,
}

/// The connection to close to make room, if any: among those with no request in flight, one
/// that never sent a request before any that did (floods of idle and half-sent connections
/// go first, real clients last), then the least recently used, then the oldest.
pub fn victim(candidates: impl IntoIterator<Item = Candidate>) -> Option<u64> {
    candidates
        .into_iter()
        .filter(|c| !c.busy)
        .min_by_key(|c| (c.last_request, c.opened, c.id))
        .map(|c| c.id)
}

impl Limiter {
    /// A listener's limiter, its cap from `limits.max_connections` and [`file_limit`]; logs a
    /// warning when the file limit lowered it.
    pub fn new(listener: Listener, limits: &Limits, metrics: Metrics) -> Self {
        let files = file_limit();
        let cap = cap(limits.max_connections, files);
        if cap < limits.max_connections as usize {
            tracing::warn!(
                listener = listener.as_str(),
                configured = limits.max_connections,
                cap,
                file_limit = ?files,
                reserve = files.map(reserve),
                "limits.max_connections lowered to fit the file limit (both listeners at their caps leave the reserve free)"
            );
        }
        tracing::info!(
            listener = listener.as_str(),
            cap,
            file_limit = ?files,
            header_read_timeout = %humantime::format_duration(limits.header_read_timeout),
            idle_timeout = %humantime::format_duration(limits.idle_timeout),
            "connection limits"
        );
        metrics
            .connections_limit
            .with_label_values(&[listener.as_str()])
            .set(i64::try_from(cap).unwrap_or(i64::MAX));
        Limiter(Arc::new(Inner {
            listener,
            cap,
            first_byte: match listener {
                Listener::Http => None,
                Listener::Grpc => Some(limits.header_read_timeout),
            },
            idle: limits.idle_timeout,
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
            metrics,
            warned: Mutex::new(None),
        }))
    }

    pub fn cap(&self) -> usize {
        self.0.cap
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table().open.len()
    }

    /// Accepts the next connection this listener admits. Accept errors (out of descriptors and
    /// the like) are logged and waited out briefly rather than spun on; refused connections
    /// are closed and counted. After an eviction it waits (at most [`EVICTION_WAIT`]) for the
    /// evicted connection to be gone, so a flood is accepted no faster than connections close
    /// and descriptors stay at the cap, not the cap plus a backlog of closing ones. Cancel-safe.
    pub async fn accept(&self, listener: &TcpListener) -> Conn<TcpStream> {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    // Best effort: small gRPC and HTTP answers should not wait for Nagle.
                    let _ = tcp.set_nodelay(true);
                    let (conn, evicted) = self.admit_evicting(tcp, peer);
                    if let Some(gone) = evicted {
                        // Past the wait, a stuck connection task costs a descriptor, not the
                        // listener.
                        let _ = tokio::time::timeout(EVICTION_WAIT, gone).await;
                    }
                    if let Some(conn) = conn {
                        return conn;
                    }
                }
                Err(e) => {
                    tracing::warn!(listener = self.0.listener.as_str(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Admits `io` from `peer`, evicting the least recently used idle connection at the cap;
    /// None (and `io` closed) when every connection has a request in flight.
    pub fn admit<IO>(&self, io: IO, peer: SocketAddr) -> Option<Conn<IO>> {
        self.admit_evicting(io, peer).0
    }

    /// [`Limiter::admit`], and when a connection was evicted for it, a future that is ready
    /// once that one is gone.
    fn admit_evicting<IO>(
        &self,
        io: IO,
        peer: SocketAddr,
    ) -> (Option<Conn<IO>>, Option<WaitForCancellationFutureOwned>) {
        let mut table = self.table();
        let mut gone = None;
        if table.open.len() >= self.0.cap {
            let chosen = victim(table.open.values().map(|s| s.candidate()));
            match chosen.and_then(|id| table.remove(id)) {
                Some(evicted) => {
                    // It closes at its next poll, woken by this; a request that began since
                    // it was chosen (a race of microseconds) is cut, as by any dropped
                    // connection.
                    evicted.evict.cancel();
                    gone = Some(evicted.gone.clone().cancelled_owned());
                    self.closed(Reason::Evicted, evicted.peer);
                }
                None => {
                    drop(table);
                    drop(io);
                    self.closed(Reason::Refused, peer);
                    return (None, None);
                }
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let slot = Arc::new(Slot {
            id,
            peer,
            opened_ms: self.now_ms(),
            in_flight: AtomicU32::new(0),
            last_request: AtomicU64::new(0),
            evict: CancellationToken::new(),
            gone: CancellationToken::new(),
        });
        table.open.insert(id, slot.clone());
        table.by_peer.insert(peer, id);
        self.set_gauge(table.open.len());
        drop(table);
        let conn = Conn::new(
            io,
            Admitted {
                limiter: self.clone(),
                slot,
            },
        );
        (Some(conn), gone)
    }

    /// A request from `peer` begins (gRPC: requests know their connection by its remote
    /// address); None when no open connection has that address.
    pub fn begin(&self, peer: SocketAddr) -> Option<Busy> {
        let table = self.table();
        let slot = table.by_peer.get(&peer).and_then(|id| table.open.get(id))?;
        Some(Busy::new(slot.clone(), self.0.epoch))
    }

    /// Counts and logs a connection the coordinator closed on its own.
    pub fn closed(&self, reason: Reason, peer: SocketAddr) {
        let listener = self.0.listener.as_str();
        self.0
            .metrics
            .connections_closed
            .with_label_values(&[listener, reason.as_str()])
            .inc();
        tracing::debug!(listener, %peer, reason = reason.as_str(), "connection closed");
        if matches!(reason, Reason::Evicted | Reason::Refused) {
            let mut warned = self.0.warned.lock().unwrap_or_else(|p| p.into_inner());
            if warned.is_none_or(|at| at.elapsed() >= CAP_WARN_EVERY) {
                *warned = Some(Instant::now());
                tracing::warn!(
                    listener,
                    cap = self.0.cap,
                    %peer,
                    reason = reason.as_str(),
                    "connection cap reached: closing idle connections to make room (logged at most once a minute; see lockstep_coordinator_connections_closed_total)"
                );
            }
        }
    }

    fn release(&self, id: u64) {
        let mut table = self.table();
        if table.remove(id).is_some() {
            self.set_gauge(table.open.len());
        }
    }

    fn set_gauge(&self, open: usize) {
        self.0
            .metrics
            .connections
            .with_label_values(&[self.0.listener.as_str()])
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A poisoned lock only means a thread panicked while holding it; the table is only
        // ever changed by complete inserts and removals.
        self.0.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        ms_since(self.0.epoch)
    }
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A connection's place under the cap, given back when dropped.
struct Admitted {
    limiter: Limiter,
    slot: Arc<Slot>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limiter.release(self.slot.id);
        self.slot.gone.cancel();
    }
}

/// A request in flight on a connection: the connection is not idle (neither evicted nor timed
/// out) until this is dropped.
pub struct Busy {
    slot: Arc<Slot>,
    epoch: Instant,
}

impl Busy {
    fn new(slot: Arc<Slot>, epoch: Instant) -> Self {
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        slot.last_request
            .store(ms_since(epoch) + 1, Ordering::Release);
        Busy { slot, epoch }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot
            .last_request
            .store(ms_since(self.epoch) + 1, Ordering::Release);
        self.slot.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts requests on one connection (HTTP, where the server loop holds the connection).
#[derive(Clone)]
pub struct Requests {
    slot: Arc<Slot>,
    epoch: Instant,
}

impl Requests {
    pub fn begin(&self) -> Busy {
        Busy::new(self.slot.clone(), self.epoch)
    }
}

/// An accepted stream under a [`Limiter`]: holds its place under the cap while open, and fails
/// its reads and writes (so the server drops it) when evicted, when no first byte arrived
/// within the first-byte timeout, or when no byte moved for the idle timeout with no request
/// in flight.
pub struct Conn<IO> {
    // Declared (so dropped) before `admitted`: the descriptor is closed when `gone` fires.
    io: IO,
    admitted: Admitted,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    timer: Pin<Box<Sleep>>,
    opened: Instant,
    last_io: Instant,
    read_any: bool,
}

impl<IO> Conn<IO> {
    fn new(io: IO, admitted: Admitted) -> Self {
        let now = Instant::now();
        let evicted = Box::pin(admitted.slot.evict.clone().cancelled_owned());
        let mut conn = Conn {
            io,
            admitted,
            evicted,
            timer: Box::pin(tokio::time::sleep_until(now)),
            opened: now,
            last_io: now,
            read_any: false,
        };
        let deadline = conn.deadline().0;
        conn.timer.as_mut().reset(deadline);
        conn
    }

    pub fn peer(&self) -> SocketAddr {
        self.admitted.slot.peer
    }

    /// Marks requests on this connection (HTTP).
    pub fn requests(&self) -> Requests {
        Requests {
            slot: self.admitted.slot.clone(),
            epoch: self.admitted.limiter.0.epoch,
        }
    }

    /// The next deadline and the reason it closes the connection.
    fn deadline(&self) -> (Instant, Reason) {
        let inner = &self.admitted.limiter.0;
        match inner.first_byte {
            Some(first) if !self.read_any => (self.opened + first, Reason::HeaderTimeout),
            _ => (self.last_io + inner.idle, Reason::Idle),
        }
    }

    /// Called when the stream has nothing to do (Pending): an error if the connection must
    /// close, with the wake-ups for eviction and the deadline registered otherwise.
    fn check(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        if self.evicted.as_mut().poll(cx).is_ready() {
            return Some(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "evicted to make room at the connection cap",
            ));
        }
        loop {
            let (deadline, reason) = self.deadline();
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            if self.admitted.slot.in_flight.load(Ordering::Acquire) > 0 {
                // A slow answer is not an idle connection: the request has its own timeout.
                self.last_io = Instant::now();
                self.read_any = true;
                continue;
            }
            self.admitted.limiter.closed(reason, self.peer());
            return Some(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connection closed: {}", reason.as_str()),
            ));
        }
    }

    fn refuse_if_evicted(&self) -> Option<std::io::Error> {
        self.admitted.slot.evict.is_cancelled().then(|| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "evicted to make room at the connection cap",
            )
        })
    }

    fn progress(&mut self) {
        self.last_io = Instant::now();
    }

    /// A write's answer: bytes written count as progress; while it waits, the deadlines are
    /// checked (one rule for `poll_write` and `poll_write_vectored`).
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.check(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.refuse_if_evicted() {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.read_any = true;
                    self.progress();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.check(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.refuse_if_evicted() {
            return Poll::Ready(Err(e));
        }
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.after_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.refuse_if_evicted() {
            return Poll::Ready(Err(e));
        }
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// tonic sees the TCP stream's addresses, so `Request::remote_addr()` works, and over TLS
/// `TlsStream<Conn<TcpStream>>` gives `TlsConnectInfo<TcpConnectInfo>`, which
/// `Request::peer_certs()` reads.
impl tonic::transport::server::Connected for Conn<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The plaintext gRPC listener's connections, for `serve_with_incoming_shutdown`.
pub fn incoming(
    listener: TcpListener,
    limiter: Limiter,
) -> impl futures::Stream<Item = std::io::Result<Conn<TcpStream>>> + Send + 'static {
    futures::stream::unfold((listener, limiter), |(listener, limiter)| async move {
        let conn = limiter.accept(&listener).await;
        Some((Ok(conn), (listener, limiter)))
    })
}

/// A response body that keeps its request [`Busy`] until it is sent (or dropped).
pub struct TrackedBody<B> {
    inner: Pin<Box<B>>,
    busy: Option<Busy>,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, busy: Option<Busy>) -> Self {
        TrackedBody {
            inner: Box::pin(inner),
            busy,
        }
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A tower layer for tonic's server: marks each gRPC request [`Busy`] on its connection (found
/// by the remote address tonic puts in the request's extensions, over TLS or not), so that a
/// connection with a call in flight is neither evicted nor closed as idle.
#[derive(Clone)]
pub struct TrackRequests(pub Limiter);

impl<S> tower::Layer<S> for TrackRequests {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            limiter: self.0.clone(),
        }
    }
}

/// See [`TrackRequests`].
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    limiter: Limiter,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower::Service<axum::http::Request<ReqBody>> for Tracked<S>
where
    S: tower::Service<axum::http::Request<ReqBody>, Response = axum::http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = axum::http::Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<ReqBody>) -> Self::Future {
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        let ext = req.extensions();
        let peer = ext
            .get::<TcpConnectInfo>()
            .or_else(|| {
                ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                    .map(|t| t.get_ref())
            })
            .and_then(TcpConnectInfo::remote_addr);
        let busy = peer.and_then(|p| self.limiter.begin(p));
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| TrackedBody::new(body, busy)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn c(id: u64, busy: bool, last_request: Option<u64>, opened: u64) -> Candidate {
        Candidate {
            id,
            busy,
            last_request,
            opened,
        }
    }

    #[test]
    fn caps_fit_the_file_limit_with_a_reserve() {
        assert_eq!(reserve(1024), 128);
        assert_eq!(reserve(100), RESERVE_MIN);
        assert_eq!(cap(1024, None), 1024);
        assert_eq!(cap(1024, Some(1_048_576)), 1024);
        // 1024 descriptors: 128 reserved, 896 for two listeners.
        assert_eq!(cap(1024, Some(1024)), 448);
        assert_eq!(cap(64, Some(1024)), 64);
        // Never zero, even under an absurd limit.
        assert_eq!(cap(1024, Some(10)), 1);
    }

    #[test]
    fn keepalive_pings_well_within_the_idle_timeout() {
        assert_eq!(keepalive_interval(Duration::from_secs(120)), KEEPALIVE_MAX);
        assert_eq!(
            keepalive_interval(Duration::from_secs(6)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn victims_are_idle_never_used_connections_first_then_least_recently_used() {
        assert_eq!(victim([]), None);
        assert_eq!(victim([c(1, true, Some(5), 0), c(2, true, None, 1)]), None);
        // A connection that never sent a request goes before any that did, the oldest first.
        assert_eq!(
            victim([
                c(1, false, Some(5), 0),
                c(2, false, None, 9),
                c(3, false, None, 4),
            ]),
            Some(3)
        );
        // Then the least recently used; busy ones never.
        assert_eq!(
            victim([
                c(1, true, Some(1), 0),
                c(2, false, Some(7), 1),
                c(3, false, Some(3), 2),
            ]),
            Some(3)
        );
    }

    /// Short timeouts (the config's minimum is 1 s; the limiter takes any), so the timing test
    /// runs in real time in about a second.
    fn limits(max: u32) -> Limits {
        Limits {
            max_connections: max,
            header_read_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        }
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn sample(m: &Metrics, series: &str) -> f64 {
        m.render()
            .lines()
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(f64::NAN)
    }

    #[tokio::test]
    async fn at_the_cap_the_idle_connection_goes_and_busy_ones_stay() {
        let metrics = Metrics::new();
        let limiter = Limiter::new(Listener::Http, &limits(2), metrics.clone());
        let (a, mut a_far) = tokio::io::duplex(64);
        let (b, _b_far) = tokio::io::duplex(64);
        let mut a = limiter.admit(a, peer(1)).expect("room");
        let b = limiter.admit(b, peer(2)).expect("room");
        let busy_b = b.requests().begin();
        assert_eq!(limiter.open(), 2);

        // Full: the idle one (a) is evicted for c, and a's next read fails.
        let (c3, _c_far) = tokio::io::duplex(64);
        let c3 = limiter.admit(c3, peer(3)).expect("room made");
        assert_eq!(limiter.open(), 2);
        a_far.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        let err = a.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
        drop(a);
        assert_eq!(
            limiter.open(),
            2,
            "an evicted connection is not counted twice"
        );

        // Full with b busy and c3 idle: c3 goes; with both busy, a newcomer is refused.
        let _busy_c = c3.requests().begin();
        let (d, _d_far) = tokio::io::duplex(64);
        assert!(limiter.admit(d, peer(4)).is_none());
        assert_eq!(
            sample(
                &metrics,
                "lockstep_coordinator_connections_closed_total{listener=\"http\",reason=\"evicted\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                &metrics,
                "lockstep_coordinator_connections_closed_total{listener=\"http\",reason=\"refused\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                &metrics,
                "lockstep_coordinator_connections{listener=\"http\"}"
            ),
            2.0
        );

        // Requests by peer address (gRPC) find their connection.
        assert!(limiter.begin(peer(2)).is_some());
        assert!(limiter.begin(peer(1)).is_none());
        drop(busy_b);
        drop(b);
        assert_eq!(limiter.open(), 1);
    }

    #[tokio::test]
    async fn silent_connections_time_out_unless_a_request_is_in_flight() {
        let metrics = Metrics::new();
        let limiter = Limiter::new(Listener::Grpc, &limits(8), metrics.clone());
        let mut buf = [0u8; 8];

        // No first byte within header_read_timeout.
        let (a, _a_far) = tokio::io::duplex(64);
        let mut a = limiter.admit(a, peer(1)).expect("room");
        let err = a.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

        // After a first byte, idle_timeout of silence.
        let (b, mut b_far) = tokio::io::duplex(64);
        let mut b = limiter.admit(b, peer(2)).expect("room");
        b_far.write_all(b"p").await.unwrap();
        assert_eq!(b.read(&mut buf).await.unwrap(), 1);
        let err = b.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

        // A request in flight keeps a silent connection open past the timeout.
        let (c3, mut c_far) = tokio::io::duplex(64);
        let mut c3 = limiter.admit(c3, peer(3)).expect("room");
        c_far.write_all(b"p").await.unwrap();
        assert_eq!(c3.read(&mut buf).await.unwrap(), 1);
        let busy = limiter.begin(peer(3)).expect("known peer");
        let read = tokio::time::timeout(Duration::from_millis(900), c3.read(&mut buf)).await;
        assert!(read.is_err(), "still open while busy: {read:?}");
        drop(busy);
        let err = c3.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

        for (reason, n) in [("header_timeout", 1.0), ("idle", 2.0)] {
            assert_eq!(
                sample(
                    &metrics,
                    &format!("lockstep_coordinator_connections_closed_total{{listener=\"grpc\",reason=\"{reason}\"}}")
                ),
                n,
                "{reason}"
            );
        }
    }
}
