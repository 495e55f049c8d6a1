//! The real `launcher-seed serve` under abuse, with small limits passed by flags: idle and
//! half-open connections are closed, a full listener still lets a client in, a slow body is cut
//! off, enrollment and NTP are limited per source, and NTP answers only datagrams of a valid
//! size. After each case the seed still answers `/healthz`.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cluster::ntp::{self, NtpTimestamp, Packet};
use support::seed::*;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let state = dir.path().join("state");
    let server = Server::start_with(&cluster, &state, "127.0.0.1:0", extra);
    (dir, server)
}

/// The plain HTTP listener's address (bound before the HTTPS one, so known once the seed is).
fn http_addr(server: &Server) -> SocketAddr {
    let text = std::fs::read_to_string(server.state_dir.join("http.addr")).unwrap();
    text.trim().parse().unwrap()
}

/// `/healthz` over HTTPS answers, and quickly.
fn assert_healthy(server: &Server) {
    let started = Instant::now();
    let answer = server
        .client()
        .get(format!("{}/healthz", server.url()))
        .send()
        .unwrap_or_else(|e| panic!("/healthz: {e}"));
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().unwrap(), "ok\n");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "/healthz took {took:?}");
}

fn metrics(server: &Server) -> String {
    let answer = server
        .client()
        .get(format!("{}/metrics", server.url()))
        .send()
        .unwrap();
    answer.text().unwrap()
}

fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.guard.pid()))
        .unwrap()
        .count()
}

/// Whether the peer has not closed `tcp` (nothing to read yet, or unread data).
fn still_open(tcp: &TcpStream) -> bool {
    tcp.set_nonblocking(true).unwrap();
    let open = match tcp.peek(&mut [0u8; 1]) {
        Ok(n) => n > 0,
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    };
    tcp.set_nonblocking(false).unwrap();
    open
}

/// Reads and drops whatever comes until the peer closes `stream`; how long that took from
/// `since`, or `None` if it was still open at `since + within`.
fn closed_within(
    stream: &mut impl Read,
    tcp: &TcpStream,
    since: Instant,
    within: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        let left = (since + within).saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        tcp.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => return Some(since.elapsed()),
        }
    }
}

/// A TLS connection to the seed's API, handshake done, offering `alpn`.
fn tls_connect(server: &Server, alpn: &[&[u8]]) -> Tls {
    let ca = std::fs::read(server.state_dir.join("seed-ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::IpAddress(server.addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(server.addr).unwrap());
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

#[test]
fn connections_that_send_no_request_are_closed_after_the_first_request_timeout() {
    let (_dir, server) = start(&[
        "--http-listen",
        "127.0.0.1:0",
        "--first-request-timeout",
        "2",
    ]);
    let opened = Instant::now();
    let mut plain: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(http_addr(&server)).unwrap())
        .collect();
    let mut https: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // A finished TLS handshake is not a request.
    let mut handshaken: Vec<Tls> = (0..3).map(|_| tls_connect(&server, &[])).collect();

    std::thread::sleep(Duration::from_secs(1).saturating_sub(opened.elapsed()));
    for tcp in plain
        .iter()
        .chain(&https)
        .chain(handshaken.iter().map(|t| &t.sock))
    {
        assert!(still_open(tcp), "closed before the timeout");
    }
    let within = Duration::from_secs(8);
    for tcp in plain.iter_mut().chain(&mut https) {
        let probe = tcp.try_clone().unwrap();
        let took =
            closed_within(tcp, &probe, opened, within).expect("an idle connection left open");
        assert!(took >= Duration::from_millis(1500), "closed after {took:?}");
    }
    for tls in &mut handshaken {
        let probe = tls.sock.try_clone().unwrap();
        let took =
            closed_within(tls, &probe, opened, within).expect("an idle TLS connection left open");
        assert!(took >= Duration::from_millis(1500), "closed after {took:?}");
    }
    assert_healthy(&server);
}

#[test]
fn a_listener_full_of_idle_connections_still_lets_a_client_in_and_holds_few_descriptors() {
    let cap = 8;
    let (_dir, server) = start(&[
        "--http-listen",
        "127.0.0.1:0",
        "--max-connections",
        "8",
        // Long: room is made by evicting the idlest, not by the timeout.
        "--first-request-timeout",
        "120",
    ]);
    let before = open_fds(&server);
    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.push(TcpStream::connect(server.addr).unwrap());
        flood.push(TcpStream::connect(http_addr(&server)).unwrap());
    }
    // Every connection beyond the caps is closed, and the seed holds at most `cap` a listener.
    testkit::wait_for(
        "the seed to close what is over its caps",
        Duration::from_secs(10),
        || (flood.iter().filter(|tcp| still_open(tcp)).count() <= 2 * cap).then_some(()),
    );
    let held = open_fds(&server);
    assert!(
        held <= before + 2 * cap,
        "{held} descriptors, {before} before"
    );
    assert_healthy(&server);
    let mut plain = TcpStream::connect(http_addr(&server)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.ends_with("ok\n"),
        "{answer}"
    );
    assert!(open_fds(&server) <= before + 2 * cap + 2);
    assert_healthy(&server);
}

#[test]
fn a_body_slower_than_the_body_timeout_is_cut_off() {
    let (_dir, server) = start(&["--body-timeout", "2"]);
    let mut tls = tls_connect(&server, &[b"http/1.1"]);
    tls.write_all(
        b"POST /v1/enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{",
    )
    .unwrap();
    let started = Instant::now();
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // A byte every 250 ms (the read timeout paces it), for at most 10 s.
    for _ in 0..40 {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if !answer.is_empty() || tls.write_all(b" ").and_then(|()| tls.flush()).is_err() {
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(6)).contains(&took),
        "cut off after {took:?}"
    );
    let probe = tls.sock.try_clone().unwrap();
    let closed = closed_within(&mut tls, &probe, Instant::now(), Duration::from_secs(5));
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"bad_request""#), "{text}");
    assert!(
        closed.is_some(),
        "the connection stayed open after a late body"
    );
    assert_healthy(&server);
}

/// One HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

const H2_DATA: u8 = 0;
const H2_HEADERS: u8 = 1;
const H2_SETTINGS: u8 = 4;
const H2_PING: u8 = 6;
const H2_GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const ACK: u8 = 1;

/// Reads one frame: (type, flags, stream, payload).
fn read_h2_frame(tls: &mut Tls) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tls.read_exact(&mut head)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload)?;
    Ok((head[3], head[4], stream, payload))
}

#[test]
fn idle_keep_alive_and_http2_connections_are_closed_after_the_idle_timeout() {
    let (_dir, server) = start(&["--idle-timeout", "2", "--first-request-timeout", "60"]);

    // HTTP/1.1 keep-alive: one request, then nothing.
    let mut h1 = tls_connect(&server, &[b"http/1.1"]);
    h1.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"ok\n") {
        let n = h1.read(&mut buf).unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    let probe = h1.sock.try_clone().unwrap();
    let took = closed_within(&mut h1, &probe, answered, Duration::from_secs(8))
        .expect("an idle HTTP/1.1 connection left open");
    assert!(took >= Duration::from_millis(1500), "closed after {took:?}");

    // HTTP/2: pings and settings acknowledged, one request, then nothing but acknowledgements.
    let mut h2 = tls_connect(&server, &[b"h2"]);
    assert_eq!(h2.conn.alpn_protocol(), Some(&b"h2"[..]));
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(H2_SETTINGS, 0, 0, &[]));
    // GET https://127.0.0.1/healthz in HPACK: indexed :method GET and :scheme https, literal
    // :path and :authority with indexed names.
    let mut request = vec![0x82, 0x87, 0x44, 8];
    request.extend(b"/healthz");
    request.extend([0x41, 9]);
    request.extend(b"127.0.0.1");
    hello.extend(h2_frame(H2_HEADERS, 0x4 | END_STREAM, 1, &request));
    h2.write_all(&hello).unwrap();
    let (mut status_ok, mut answered, mut closed) = (false, None, None);
    for _ in 0..100 {
        let (kind, flags, stream, payload) = match read_h2_frame(&mut h2) {
            Ok(frame) => frame,
            Err(e) => {
                assert!(
                    !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                    "still open: {e}"
                );
                closed = Some(Instant::now());
                break;
            }
        };
        match kind {
            H2_SETTINGS if flags & ACK == 0 => h2.write_all(&h2_frame(kind, ACK, 0, &[])).unwrap(),
            H2_PING if flags & ACK == 0 => h2.write_all(&h2_frame(kind, ACK, 0, &payload)).unwrap(),
            H2_HEADERS if stream == 1 => status_ok = payload.first() == Some(&0x88),
            H2_DATA if stream == 1 && flags & END_STREAM != 0 => answered = Some(Instant::now()),
            H2_GOAWAY => {
                // NO_ERROR: a shutdown, not a complaint about this client.
                assert_eq!(payload[4..8], [0, 0, 0, 0], "GOAWAY with an error");
                closed = Some(Instant::now());
                break;
            }
            _ => {}
        }
    }
    assert!(status_ok, "no 200 answer on HTTP/2");
    let (answered, closed) = (
        answered.expect("no whole answer"),
        closed.expect("never closed"),
    );
    let idle = closed - answered;
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(8)).contains(&idle),
        "closed after {idle:?} idle"
    );
    assert_healthy(&server);
}

fn enroll_status(server: &Server, i: usize) -> reqwest::blocking::Response {
    server
        .client()
        .post(format!("{}/v1/enroll", server.url()))
        .json(&enroll_body(&numbered_mac(i), None))
        .send()
        .unwrap()
}

#[test]
fn enrollment_past_the_burst_of_one_source_is_answered_429_with_retry_after() {
    let (_dir, server) = start(&["--enroll-rate", "0.5", "--enroll-burst", "3"]);
    for i in 0..3 {
        assert_ne!(enroll_status(&server, i).status(), 429, "enrollment {i}");
    }
    let refused = enroll_status(&server, 3);
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["code"], cluster::api::codes::RATE_LIMITED, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("127.0.0.1"),
        "{body}"
    );
    // Other routes are not limited, and Retry-After is when the source may come back.
    assert_healthy(&server);
    std::thread::sleep(Duration::from_secs(retry));
    assert_ne!(enroll_status(&server, 4).status(), 429);
    let text = metrics(&server);
    for line in [
        "launcher_seed_enrollments_total{result=\"rate_limited\"} 1\n",
        "launcher_seed_errors_total{code=\"rate_limited\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }

    let (_dir, unlimited) = start(&["--enroll-rate", "0"]);
    for i in 0..20 {
        assert_ne!(enroll_status(&unlimited, i).status(), 429, "enrollment {i}");
    }
    assert_healthy(&unlimited);
}

/// An RFC 7822 extension field of `len` bytes.
fn extension_field(len: usize) -> Vec<u8> {
    let mut field = vec![0u8; len];
    field[..2].copy_from_slice(&0x0104u16.to_be_bytes());
    field[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    field
}

fn ntp_now() -> NtpTimestamp {
    NtpTimestamp::from_unix_duration(SystemTime::now().duration_since(UNIX_EPOCH).unwrap())
}

/// The answer to a request sent with transmit timestamp `t1`, if one comes within `wait`.
fn ntp_answer(socket: &UdpSocket, t1: NtpTimestamp, wait: Duration) -> Option<Packet> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 2048];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    let reply = Packet::decode(&buf[..len]).unwrap();
    assert_eq!(reply.origin, t1, "an answer to another request");
    Some(reply)
}

#[test]
fn ntp_answers_valid_sizes_only_and_each_source_at_its_rate() {
    let (_dir, server) = start(&["--ntp-rate", "0.01", "--ntp-burst", "4"]);
    let target = server.ntp_addr.unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // A datagram refused is not answered: the first answer after it is the probe's. Refusals
    // cost the source nothing; each probe takes one of its 4 answers. The long ones are
    // well-formed up to their last byte, so only their length is wrong.
    let over = |len: usize| {
        let field = extension_field(len - 1 - ntp::HEADER_LEN);
        [&ntp::request(ntp_now())[..], &field, &[0]].concat()
    };
    for bad in [
        over(4097),
        over(ntp::MAX_REQUEST_LEN + 1),
        ntp::request(ntp_now())[..47].to_vec(),
    ] {
        socket.send_to(&bad, target).unwrap();
        let t1 = ntp_now();
        socket.send_to(&ntp::request(t1), target).unwrap();
        let reply = ntp_answer(&socket, t1, Duration::from_secs(5));
        assert!(
            reply.is_some(),
            "no answer to the probe after {} bytes",
            bad.len()
        );
    }
    // The longest request answered.
    let t1 = ntp_now();
    let longest = [&ntp::request(t1)[..], &extension_field(1024)].concat();
    assert_eq!(longest.len(), ntp::MAX_REQUEST_LEN);
    socket.send_to(&longest, target).unwrap();
    let reply = ntp_answer(&socket, t1, Duration::from_secs(5)).expect("an answer");
    assert_eq!(reply.stratum, 8);
    // The burst is spent: nothing more for this source.
    for _ in 0..3 {
        let t1 = ntp_now();
        socket.send_to(&ntp::request(t1), target).unwrap();
        assert!(ntp_answer(&socket, t1, Duration::from_millis(500)).is_none());
    }
    let text = metrics(&server);
    for line in [
        "launcher_seed_ntp_requests_total{result=\"answered\"} 4\n",
        "launcher_seed_ntp_requests_total{result=\"refused\"} 3\n",
        "launcher_seed_ntp_requests_total{result=\"rate_limited\"} 3\n",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // Another source still gets its answers.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    let t1 = ntp_now();
    other.send_to(&ntp::request(t1), target).unwrap();
    assert!(ntp_answer(&other, t1, Duration::from_secs(5)).is_some());
    assert_healthy(&server);
}
