//! Files served with HTTP `Range`: the one responder behind boot files and registry blobs.
//!
//! It answers a single byte range with 206, anything it does not serve partially (no header,
//! several ranges, bad syntax) with the whole file, and leaves the shape of a 416 to the caller
//! (boot files and the registry answer errors differently).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The read size of a streamed body: large enough that a multi-GiB initrd is few syscalls (at
/// 64 KiB a boot storm's downloads ran at two thirds of the rate they reach with this).
const CHUNK: usize = 256 * 1024;

/// Bodies streamed at once, over every listener. Each holds a chunk or two in flight, so this
/// bounds the memory of a boot storm (a thousand machines downloading at once took 623 MiB
/// unbounded); a response past it waits for a slot before its headers are sent. Two cores are
/// kept busy by far fewer streams than this.
const MAX_STREAMS: usize = 128;

static STREAMS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_STREAMS);

/// Bodies one source address may stream at once (`serve --downloads-per-source`; 0: no cap). A
/// machine fetches a file or two at a time, containerd three layers; a client holding many more
/// would be taking the places of [`MAX_STREAMS`] from everyone else.
pub const DEFAULT_PER_SOURCE: usize = 16;

static PER_SOURCE_MAX: AtomicUsize = AtomicUsize::new(DEFAULT_PER_SOURCE);
/// Bodies streaming per source address; an address is in it only while it has one, so it holds
/// at most [`MAX_STREAMS`] entries plus those waiting for a place.
static PER_SOURCE: Mutex<BTreeMap<IpAddr, usize>> = Mutex::new(BTreeMap::new());

/// The address a request came from, put in its extensions by the server for each connection:
/// what a body is counted against.
#[derive(Debug, Clone, Copy)]
pub struct Source(pub IpAddr);

/// Sets the per-source cap, from `serve`'s flag; 0 lifts it.
pub fn set_downloads_per_source(max: usize) {
    PER_SOURCE_MAX.store(max, Ordering::Relaxed);
}

fn per_source() -> std::sync::MutexGuard<'static, BTreeMap<IpAddr, usize>> {
    PER_SOURCE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One body counted against its source address until it is dropped.
struct SourceCount(Option<IpAddr>);

impl SourceCount {
    /// Counts a body for `source`, or refuses it when the source has its cap's worth.
    fn take(source: Option<IpAddr>) -> Result<SourceCount, RangeError> {
        let (Some(ip), max) = (source, PER_SOURCE_MAX.load(Ordering::Relaxed)) else {
            return Ok(SourceCount(None));
        };
        if max == 0 {
            return Ok(SourceCount(None));
        }
        let mut counts = per_source();
        let count = counts.entry(ip).or_default();
        if *count >= max {
            return Err(RangeError::Busy { max });
        }
        *count += 1;
        Ok(SourceCount(Some(ip)))
    }
}

impl Drop for SourceCount {
    fn drop(&mut self) {
        let Some(ip) = self.0 else { return };
        let mut counts = per_source();
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// A reader that holds one of [`STREAMS`]'s slots and its source's count until it is dropped:
/// when its body is done, or its connection gone.
struct Slotted<R> {
    inner: R,
    _slot: tokio::sync::SemaphorePermit<'static>,
    _source: SourceCount,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Slotted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No range, or one this server ignores (several ranges, bad syntax): the whole file.
    Full,
    /// Bytes `start..=end`.
    Partial(u64, u64),
    Unsatisfiable,
}

pub fn parse_range(header: &str, len: u64) -> RangeAnswer {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), num(a), num(b)) {
        (true, _, Some(0)) => RangeAnswer::Unsatisfiable,
        (true, _, Some(suffix)) if len > 0 => {
            RangeAnswer::Partial(len.saturating_sub(suffix), len - 1)
        }
        (true, _, _) => RangeAnswer::Unsatisfiable,
        (false, Some(start), _) if start >= len => RangeAnswer::Unsatisfiable,
        (false, Some(start), None) if b.trim().is_empty() => RangeAnswer::Partial(start, len - 1),
        (false, Some(start), Some(end)) if end >= start => {
            RangeAnswer::Partial(start, end.min(len - 1))
        }
        _ => RangeAnswer::Full,
    }
}

/// Why a file could not be served.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// The caller answers 416 in its own shape, with [`RangeError::content_range`].
    #[error("range not satisfiable for a file of {len} bytes")]
    Unsatisfiable { len: u64 },
    #[error("reading the file")]
    Io(#[from] std::io::Error),
    /// The caller answers 429 with `Retry-After`.
    #[error(
        "this address already has {max} downloads streaming, the most one address may have at once"
    )]
    Busy { max: usize },
}

impl RangeError {
    /// The `Content-Range` a 416 carries: `bytes */LEN`.
    pub fn content_range(len: u64) -> HeaderValue {
        HeaderValue::from_str(&format!("bytes */{len}")).expect("ASCII")
    }
}

/// Answers `headers`' range of `file` (200 or 206, `Content-Length`, `Accept-Ranges`,
/// `Content-Range`, `application/octet-stream`); `head` sends the headers alone.
pub async fn respond(
    mut file: tokio::fs::File,
    headers: &HeaderMap,
    head: bool,
    source: Option<IpAddr>,
) -> Result<Response, RangeError> {
    let len = file.metadata().await?.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeAnswer::Full, |r| parse_range(r, len));
    let (status, start, count) = match range {
        RangeAnswer::Full => (StatusCode::OK, 0, len),
        RangeAnswer::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        RangeAnswer::Unsatisfiable => return Err(RangeError::Unsatisfiable { len }),
    };
    let body = if head {
        Body::empty()
    } else {
        file.seek(std::io::SeekFrom::Start(start)).await?;
        let counted = SourceCount::take(source)?;
        let slot = STREAMS
            .acquire()
            .await
            .expect("the stream semaphore is never closed");
        let reader = Slotted {
            inner: file.take(count),
            _slot: slot,
            _source: counted,
        };
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, CHUNK))
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        let v = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).expect("ASCII");
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAnswer::*;
        let cases = [
            ("bytes=0-0", Partial(0, 0)),
            ("bytes=3-5", Partial(3, 5)),
            ("bytes=9-", Partial(9, 9)),
            ("bytes=5-100", Partial(5, 9)),
            ("bytes=-3", Partial(7, 9)),
            ("bytes=-30", Partial(0, 9)),
            ("bytes=10-", Unsatisfiable),
            ("bytes=10-20", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=5-3", Full),
            ("bytes=0-1,3-4", Full),
            ("items=0-1", Full),
            ("bytes=x-1", Full),
        ];
        for (header, want) in cases {
            assert_eq!(parse_range(header, 10), want, "{header}");
        }
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
    }

    async fn answer(
        range: Option<&str>,
        head: bool,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), RangeError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut headers = HeaderMap::new();
        if let Some(r) = range {
            headers.insert(header::RANGE, HeaderValue::from_str(r).unwrap());
        }
        let res = respond(
            tokio::fs::File::open(&path).await.unwrap(),
            &headers,
            head,
            None,
        )
        .await?;
        let (parts, body) = res.into_parts();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        Ok((parts.status, parts.headers, bytes.to_vec()))
    }

    /// At most [`MAX_STREAMS`] bodies stream at once: one more waits, and gets its slot as soon
    /// as a body is dropped (its connection gone) without being read to the end.
    /// The tests that take many of the process's places run one at a time.
    static PLACES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn bodies_past_the_limit_wait_for_a_slot() {
        let _alone = PLACES.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 1024]).unwrap();
        let open = || async { tokio::fs::File::open(&path).await.unwrap() };
        let headers = HeaderMap::new();
        let mut held = Vec::new();
        for _ in 0..MAX_STREAMS {
            held.push(respond(open().await, &headers, false, None).await.unwrap());
        }
        let mut next = Box::pin(respond(open().await, &headers, false, None));
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), next.as_mut()).await;
        assert!(waited.is_err(), "a body past the limit started at once");
        // HEAD answers stream nothing and never wait.
        let head = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            respond(open().await, &headers, true, None),
        )
        .await;
        assert!(matches!(head, Ok(Ok(_))));
        drop(held.pop());
        let res = tokio::time::timeout(std::time::Duration::from_secs(5), next)
            .await
            .expect("a slot freed by a dropped body")
            .unwrap();
        let bytes = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(bytes.len(), 1024);
    }

    /// One address streams at most [`DEFAULT_PER_SOURCE`] bodies at once: one more is refused
    /// with why, another address is not, and a body dropped gives its count back.
    #[tokio::test]
    async fn one_address_streams_at_most_its_share() {
        let _alone = PLACES.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 1024]).unwrap();
        let headers = HeaderMap::new();
        let ask = |ip: &str| {
            let (path, headers, ip) = (path.clone(), headers.clone(), ip.parse().ok());
            async move {
                let file = tokio::fs::File::open(&path).await.unwrap();
                respond(file, &headers, false, ip).await
            }
        };
        let mut held = Vec::new();
        for _ in 0..DEFAULT_PER_SOURCE {
            held.push(ask("10.0.0.1").await.unwrap());
        }
        let refused = ask("10.0.0.1").await.unwrap_err();
        assert_eq!(
            refused.to_string(),
            "this address already has 16 downloads streaming, the most one address may have at once"
        );
        assert!(ask("10.0.0.2").await.is_ok());
        // HEAD streams nothing and is not counted.
        let file = tokio::fs::File::open(&path).await.unwrap();
        let ip = "10.0.0.1".parse().ok();
        assert!(respond(file, &headers, true, ip).await.is_ok());
        drop(held.pop());
        assert!(ask("10.0.0.1").await.is_ok());
        drop(held);
        assert!(per_source().get(&"10.0.0.1".parse().unwrap()).is_none());
    }

    #[tokio::test]
    async fn responses_carry_the_range_they_answer() {
        let (status, h, body) = answer(None, false).await.unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::OK, &b"0123456789"[..])
        );
        assert_eq!(h[header::CONTENT_LENGTH], "10");
        assert_eq!(h[header::ACCEPT_RANGES], "bytes");
        assert!(h.get(header::CONTENT_RANGE).is_none());

        let (status, h, body) = answer(Some("bytes=2-4"), false).await.unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::PARTIAL_CONTENT, &b"234"[..])
        );
        assert_eq!(h[header::CONTENT_RANGE], "bytes 2-4/10");
        assert_eq!(h[header::CONTENT_LENGTH], "3");

        let (status, h, body) = answer(Some("bytes=-2"), true).await.unwrap();
        assert_eq!((status, body.len()), (StatusCode::PARTIAL_CONTENT, 0));
        assert_eq!(h[header::CONTENT_LENGTH], "2");

        match answer(Some("bytes=10-"), false).await {
            Err(RangeError::Unsatisfiable { len: 10 }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(RangeError::content_range(10), "bytes */10");
    }
}
