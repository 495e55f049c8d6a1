//! Unit tests of the limits, with instants made up rather than waited for.

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn rate(per_second: f64, burst: u32) -> Rate {
    Rate::new(per_second, burst).unwrap()
}

#[test]
fn a_source_gets_its_burst_then_one_request_per_interval() {
    let limiter = SourceLimiter::new(rate(2.0, 3), 64);
    let t0 = Instant::now();
    for _ in 0..3 {
        assert_eq!(limiter.check(ip("10.0.0.1"), t0), Ok(()));
    }
    let wait = limiter.check(ip("10.0.0.1"), t0).unwrap_err();
    assert_eq!(wait, Duration::from_millis(500));
    // Another source is not affected.
    assert_eq!(limiter.check(ip("10.0.0.2"), t0), Ok(()));
    // Half a second later one more is let through, and only one.
    let t1 = t0 + Duration::from_millis(500);
    assert_eq!(limiter.check(ip("10.0.0.1"), t1), Ok(()));
    assert!(limiter.check(ip("10.0.0.1"), t1).is_err());
    // A long quiet time refills the burst, never beyond it.
    let t2 = t1 + Duration::from_secs(3600);
    for _ in 0..3 {
        assert_eq!(limiter.check(ip("10.0.0.1"), t2), Ok(()));
    }
    assert!(limiter.check(ip("10.0.0.1"), t2).is_err());
}

#[test]
fn an_ipv4_mapped_address_is_the_same_source_as_its_ipv4_address() {
    let limiter = SourceLimiter::new(rate(1.0, 1), 64);
    let t0 = Instant::now();
    assert_eq!(limiter.check(ip("10.0.0.1"), t0), Ok(()));
    assert!(limiter.check(ip("::ffff:10.0.0.1"), t0).is_err());
}

#[test]
fn the_source_table_stays_bounded_and_keeps_who_keeps_asking() {
    // One set of WAYS entries: every source lands in it.
    let limiter = SourceLimiter::new(rate(0.001, 1), 1);
    let t0 = Instant::now();
    let flooder = ip("192.0.2.1");
    assert_eq!(limiter.check(flooder, t0), Ok(()));
    for i in 0..10_000u32 {
        let now = t0 + Duration::from_millis(u64::from(i) + 1);
        let source = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        assert_eq!(limiter.check(source, now), Ok(()), "new source {source}");
        // The flooder asks between every two newcomers: it stays the most recent entry and
        // keeps its empty bucket.
        assert!(limiter.check(flooder, now).is_err(), "after {i} others");
    }
    assert_eq!(limiter.table.lock().unwrap().len(), WAYS);
}

#[test]
fn a_source_pushed_out_of_a_full_set_comes_back_with_a_full_bucket() {
    let limiter = SourceLimiter::new(rate(0.001, 1), 1);
    let t0 = Instant::now();
    assert_eq!(limiter.check(ip("192.0.2.1"), t0), Ok(()));
    for i in 0..WAYS as u32 {
        let source = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        assert_eq!(limiter.check(source, t0 + Duration::from_secs(1)), Ok(()));
    }
    assert_eq!(
        limiter.check(ip("192.0.2.1"), t0 + Duration::from_secs(2)),
        Ok(())
    );
}

#[test]
fn rates_are_zero_or_within_bounds() {
    for (text, expected) in [
        ("0", Ok(0.0)),
        ("2", Ok(2.0)),
        ("0.125", Ok(0.125)),
        ("0.0001", Err(())),
        ("-1", Err(())),
        ("inf", Err(())),
        ("NaN", Err(())),
        ("2/s", Err(())),
    ] {
        assert_eq!(parse_rate(text).map_err(|_| ()), expected, "{text}");
    }
    assert!(Rate::new(0.0, 10).is_none());
    assert!(Rate::new(2.0, 0).is_none());
    assert!(Rate::new(2.0, 10).is_some());
}

#[test]
fn the_connection_cap_stays_within_the_descriptor_limit() {
    for (asked, nofile, listeners, expected) in [
        (None, 65_536, 2, Ok(DEFAULT_MAX_CONNECTIONS)),
        (None, 1024, 2, Ok(192)),
        (None, 1024, 1, Ok(384)),
        (Some(100), 1024, 2, Ok(100)),
        (Some(1000), 1024, 2, Err(192)),
        (None, 100, 2, Ok(1)),
    ] {
        assert_eq!(
            connection_cap(asked, nofile, listeners),
            expected,
            "{asked:?} {nofile} {listeners}"
        );
    }
}

fn table(cap: usize) -> Arc<ConnTable> {
    ConnTable::new(ConnLimits {
        cap,
        first_request: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(60),
    })
}

async fn told_to_close(conn: &Admitted) -> bool {
    tokio::time::timeout(Duration::from_millis(10), conn.closing())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_connection_without_a_request_is_closed_at_the_first_request_deadline() {
    let table = table(4);
    let t0 = Instant::now();
    let conn = table.admit(t0).unwrap();
    assert_eq!(table.sweep(t0 + Duration::from_secs(9)), 0);
    assert!(!told_to_close(&conn).await);
    assert_eq!(table.sweep(t0 + Duration::from_secs(10)), 1);
    assert!(told_to_close(&conn).await);
    assert_eq!(table.open(), 0);
    drop(conn);
    assert_eq!(table.open(), 0);
}

#[tokio::test]
async fn a_request_in_flight_keeps_its_connection_and_the_idle_clock_starts_after_it() {
    let table = table(4);
    let t0 = Instant::now();
    let conn = table.admit(t0).unwrap();
    let in_flight = conn.tracker().start();
    assert_eq!(table.sweep(t0 + Duration::from_secs(3600)), 0);
    let finished = Instant::now();
    drop(in_flight);
    assert_eq!(table.sweep(finished + Duration::from_secs(59)), 0);
    assert_eq!(table.sweep(finished + Duration::from_secs(61)), 1);
    assert!(told_to_close(&conn).await);
}

#[tokio::test]
async fn a_full_table_evicts_the_connection_idle_the_longest_or_refuses_when_all_are_busy() {
    let table = table(2);
    let t0 = Instant::now();
    let older = table.admit(t0).unwrap();
    let newer = table.admit(t0 + Duration::from_secs(1)).unwrap();
    let third = table.admit(t0 + Duration::from_secs(2)).unwrap();
    assert!(told_to_close(&older).await);
    assert!(!told_to_close(&newer).await);
    assert_eq!(table.open(), 2);
    // Both left are busy: a new connection is refused and nobody is evicted.
    let _busy = (newer.tracker().start(), third.tracker().start());
    assert!(table.admit(t0 + Duration::from_secs(3)).is_none());
    assert!(!told_to_close(&newer).await && !told_to_close(&third).await);
    // The evicted connection going away later changes nothing.
    drop(older);
    assert_eq!(table.open(), 2);
}

/// A body that sends one byte and then nothing more.
struct Stalled(bool);

impl HttpBody for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if std::mem::replace(&mut self.get_mut().0, true) {
            Poll::Pending
        } else {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{")))))
        }
    }
}

#[tokio::test]
async fn a_body_slower_than_its_deadline_fails_with_body_timed_out() {
    use http_body_util::BodyExt;
    let body = with_deadline(Stalled(false), Duration::from_millis(100));
    // Read the way a handler reads it, through a length limit.
    let err = axum::body::to_bytes(body, 1024).await.unwrap_err();
    assert!(body_timed_out(&err).is_some(), "{err}");

    let whole = with_deadline(Body::from("{}"), Duration::from_millis(100));
    assert_eq!(whole.size_hint().exact(), Some(2));
    assert_eq!(whole.collect().await.unwrap().to_bytes(), "{}");
}

/// A client that stops reading: the write that cannot go through fails with `TimedOut` once it
/// has waited the limit; a client that keeps reading, however slowly, never meets it.
#[tokio::test(start_paused = true)]
async fn a_write_the_client_never_takes_times_out_and_a_slow_one_does_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limit = Duration::from_secs(60);
    let (server, mut client) = tokio::io::duplex(1024);
    let mut server = WriteDeadline::new(server, limit);
    let started = tokio::time::Instant::now();
    // 1 KiB fits the pipe; the next write waits for a reader that never comes.
    server.write_all(&[1u8; 1024]).await.unwrap();
    let err = server.write_all(&[2u8; 1024]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(
        err.to_string(),
        "the client took nothing of the answer for 60s"
    );
    assert!(started.elapsed() >= limit, "{:?}", started.elapsed());

    // A reader taking 512 bytes every 50 s: each write waits less than the limit.
    let (server, mut client2) = tokio::io::duplex(1024);
    let mut server = WriteDeadline::new(server, limit);
    let reader = tokio::spawn(async move {
        let mut got = 0;
        let mut buf = [0u8; 512];
        while got < 8 * 1024 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            got += client2.read(&mut buf).await.unwrap();
        }
        got
    });
    server.write_all(&[3u8; 8 * 1024]).await.unwrap();
    server.shutdown().await.unwrap();
    assert_eq!(reader.await.unwrap(), 8 * 1024);
    drop(client.read(&mut [0u8; 1]).await);
}
