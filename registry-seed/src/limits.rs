//! Limits that keep the seed answering under abuse: per-source token buckets in a bounded table
//! (enrollment, NTP), each listener's connection table (its cap and its idle deadlines), the
//! request-body deadline, and the descriptor budget the cap is derived from.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::sync::Notify;

/// A sustained rate and a burst: what one source may ask for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
    burst: u32,
}

/// Slowest rate accepted (one request in about 17 minutes), so a wait always fits a `Duration`.
pub const MIN_RATE: f64 = 0.001;
/// Fastest rate accepted; beyond it a limit limits nothing.
pub const MAX_RATE: f64 = 1_000_000.0;

impl Rate {
    /// `per_second` requests a second on average, `burst` at once after a quiet time; `None`
    /// when `per_second` is 0 (no limit) or outside [`MIN_RATE`]..=[`MAX_RATE`], or `burst` is 0.
    pub fn new(per_second: f64, burst: u32) -> Option<Rate> {
        ((MIN_RATE..=MAX_RATE).contains(&per_second) && burst > 0)
            .then_some(Rate { per_second, burst })
    }
}

/// Parses a rate flag: a number of requests a second, 0 for no limit.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if rate == 0.0 || (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "a rate is 0 (no limit) or between {MIN_RATE} and {MAX_RATE} a second"
        ))
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// When the source was last seen, refused or not.
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    /// Takes one token, or says how long until there is one.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        }
    }
}

/// Entries of a set of the source table: a new source replaces the one of its set seen longest
/// ago, so the table never grows and a source that keeps asking keeps its bucket.
const WAYS: usize = 8;

/// A token bucket per source address, in a table of fixed size.
///
/// The table is set-associative, as chrony's client log is: an address hashes (with a key chosen
/// at start, so a sender cannot aim at one set) to a set of [`WAYS`] entries. A source pushed out
/// comes back with a full bucket, which only ever lets more through. Addresses are keyed whole,
/// IPv6 included: hosts of one datacenter subnet share a /64, and a boot storm from one subnet
/// must not look like one source.
pub struct SourceLimiter {
    rate: Rate,
    hasher: RandomState,
    table: Mutex<Vec<Option<(IpAddr, Bucket)>>>,
}

impl std::fmt::Debug for SourceLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimiter")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl SourceLimiter {
    /// A limiter tracking at most `max_sources` sources (rounded up to a whole set).
    pub fn new(rate: Rate, max_sources: usize) -> SourceLimiter {
        let sets = max_sources.div_ceil(WAYS).max(1);
        SourceLimiter {
            rate,
            hasher: RandomState::new(),
            table: Mutex::new(vec![None; sets * WAYS]),
        }
    }

    /// Counts one request from `source`: `Err` says how long until it would be let through.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let source = source.to_canonical();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let sets = (table.len() / WAYS) as u64;
        let set = (self.hasher.hash_one(source) % sets) as usize;
        let slots = &mut table[set * WAYS..(set + 1) * WAYS];
        if let Some((_, bucket)) = slots.iter_mut().flatten().find(|(ip, _)| *ip == source) {
            return bucket.take(self.rate, now);
        }
        // A free entry sorts first (`None` < `Some`), then the one seen longest ago.
        let slot = slots
            .iter_mut()
            .min_by_key(|slot| slot.as_ref().map(|(_, bucket)| bucket.at))
            .expect("a set has entries");
        let mut bucket = Bucket::full(self.rate, now);
        let verdict = bucket.take(self.rate, now);
        *slot = Some((source, bucket));
        verdict
    }
}

/// Descriptors kept for everything but client connections: listeners, the store, the NTP
/// socket, the runtime, the etcd membership client, an admin import.
const RESERVED_FDS: u64 = 256;
/// Descriptors one connection may hold: its socket and a boot file or blob it is sent.
const FDS_PER_CONNECTION: u64 = 2;
/// The default cap of a listener when descriptors are plenty: a boot storm of thousands of
/// hosts fits, and each connection's buffers (TLS ones above all) stay well within memory.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

/// The largest cap `listeners` listeners can each have under a descriptor limit of `nofile`.
pub fn max_connections(nofile: u64, listeners: usize) -> usize {
    let per_listener =
        nofile.saturating_sub(RESERVED_FDS) / (FDS_PER_CONNECTION * listeners as u64);
    usize::try_from(per_listener).unwrap_or(usize::MAX).max(1)
}

/// The cap of each listener: the one `asked` for, or the default, never above what `nofile`
/// allows; `Err` carries the cap used when `asked` did not fit.
pub fn connection_cap(asked: Option<usize>, nofile: u64, listeners: usize) -> Result<usize, usize> {
    let fits = max_connections(nofile, listeners);
    match asked {
        Some(n) if n > fits => Err(fits),
        Some(n) => Ok(n),
        None => Ok(DEFAULT_MAX_CONNECTIONS.min(fits)),
    }
}

/// Raises this process's soft limit of open files to its hard limit and returns the soft limit
/// in force afterwards.
pub fn raise_nofile() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}

/// What one listener holds its connections to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once.
    pub cap: usize,
    /// From accept to the first request's headers (TCP, TLS handshake and all).
    pub first_request: Duration,
    /// After a response, until the next request's headers.
    pub idle: Duration,
    /// How long a write may wait for the client to take more of a response (see
    /// [`WriteDeadline`]).
    pub send: Duration,
}

/// One listener's open connections: at most `cap`, and those with nothing in flight ordered by
/// the time they are closed at. A connection is told to close through its [`Notify`].
pub struct ConnTable {
    limits: ConnLimits,
    inner: Mutex<Conns>,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    open: HashMap<u64, Conn>,
    /// (deadline, id) of every open connection with no request in flight.
    idle: BTreeSet<(Instant, u64)>,
}

struct Conn {
    in_flight: u32,
    /// Set while `in_flight` is 0: the key of this connection in `idle`.
    deadline: Option<Instant>,
    close: Arc<Notify>,
}

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("limits", &self.limits)
            .field("open", &self.open())
            .finish()
    }
}

impl ConnTable {
    pub fn new(limits: ConnLimits) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            limits,
            inner: Mutex::new(Conns::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Conns> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Lets a new connection in. When the table is full, the connection closest to its idle
    /// deadline is told to close and gives its place; when none is idle, `None`: the caller
    /// closes the new one.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Option<Admitted> {
        let mut conns = self.lock();
        if conns.open.len() >= self.limits.cap {
            let (_, evicted) = conns.idle.pop_first()?;
            if let Some(conn) = conns.open.remove(&evicted) {
                conn.close.notify_one();
            }
        }
        let id = conns.next_id;
        conns.next_id += 1;
        let deadline = now + self.limits.first_request;
        let close = Arc::new(Notify::new());
        let conn = Conn {
            in_flight: 0,
            deadline: Some(deadline),
            close: close.clone(),
        };
        conns.open.insert(id, conn);
        conns.idle.insert((deadline, id));
        Some(Admitted {
            tracker: RequestTracker {
                table: self.clone(),
                id,
            },
            close,
        })
    }

    fn request_started(&self, id: u64) {
        let mut conns = self.lock();
        let Some(conn) = conns.open.get_mut(&id) else {
            return;
        };
        conn.in_flight += 1;
        if let Some(deadline) = conn.deadline.take() {
            conns.idle.remove(&(deadline, id));
        }
    }

    fn request_finished(&self, id: u64, now: Instant) {
        let mut conns = self.lock();
        let Some(conn) = conns.open.get_mut(&id) else {
            return;
        };
        conn.in_flight = conn.in_flight.saturating_sub(1);
        if conn.in_flight == 0 {
            let deadline = now + self.limits.idle;
            conn.deadline = Some(deadline);
            conns.idle.insert((deadline, id));
        }
    }

    fn closed(&self, id: u64) {
        let mut conns = self.lock();
        if let Some(Conn {
            deadline: Some(deadline),
            ..
        }) = conns.open.remove(&id)
        {
            conns.idle.remove(&(deadline, id));
        }
    }

    /// Tells every connection idle past its deadline to close; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut conns = self.lock();
        let mut closed = 0;
        while let Some(&(deadline, id)) = conns.idle.first() {
            if deadline > now {
                break;
            }
            conns.idle.pop_first();
            if let Some(conn) = conns.open.remove(&id) {
                conn.close.notify_one();
                closed += 1;
            }
        }
        closed
    }

    /// How often [`ConnTable::sweep`] runs: a timeout is kept to within about an eighth of it.
    pub fn sweep_every(&self) -> Duration {
        (self.limits.first_request.min(self.limits.idle) / 8)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// A connection let in by [`ConnTable::admit`]; dropping it takes it out of the table.
#[derive(Debug)]
pub struct Admitted {
    tracker: RequestTracker,
    close: Arc<Notify>,
}

impl Admitted {
    /// Resolves when the table tells this connection to close (idle too long, or evicted).
    pub async fn closing(&self) {
        self.close.notified().await;
    }

    /// What a connection's service marks its requests with.
    pub fn tracker(&self) -> RequestTracker {
        self.tracker.clone()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.tracker.table.closed(self.tracker.id);
    }
}

/// Marks the requests of one connection in flight, so it is not idle while it serves them.
#[derive(Debug, Clone)]
pub struct RequestTracker {
    table: Arc<ConnTable>,
    id: u64,
}

impl RequestTracker {
    /// A request started; it is in flight until the returned guard is dropped.
    pub fn start(&self) -> InFlight {
        self.table.request_started(self.id);
        InFlight(self.clone())
    }
}

/// One request in flight; dropped with its response body, once that is sent or abandoned.
#[derive(Debug)]
pub struct InFlight(RequestTracker);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.table.request_finished(self.0.id, Instant::now());
    }
}

/// A response body that keeps its request in flight until it is sent.
pub fn hold_until_sent(body: Body, in_flight: InFlight) -> Body {
    Body::new(Held {
        inner: body,
        _in_flight: in_flight,
    })
}

struct Held {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail with `TimedOut` once one has waited `limit` for the client to
/// take anything: a client that stops reading a download is disconnected, and the response it
/// held (and its place among the bodies streaming at once) is given up, as nginx's
/// `send_timeout` does. Each write that goes through starts the wait afresh.
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> WriteDeadline<S> {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// What a write that returned `answer` comes to: through, it clears the wait; pending, it
    /// waits, until the deadline makes it an error.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        answer: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if answer.is_ready() {
            self.stalled = None;
            return answer;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took nothing of the answer for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, answer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, answer)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, answer)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The error of a request body that did not arrive within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// The [`BodyTimedOut`] somewhere in `err`'s chain of sources, if any.
pub fn body_timed_out<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimedOut> {
    std::iter::successors(Some(err), |e| e.source()).find_map(|e| e.downcast_ref())
}

/// A request body that fails with [`BodyTimedOut`] when it is not whole within `limit` of now.
pub fn with_deadline<B>(body: B, limit: Duration) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    Body::new(Deadline {
        inner: body,
        limit,
        timer: Box::pin(tokio::time::sleep(limit)),
    })
}

struct Deadline<B> {
    inner: B,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> HttpBody for Deadline<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut(this.limit).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
