//! The seed's NTP server against chrony as a real client, and against malformed datagrams.

use cluster::ntp::{self, NtpTimestamp, Packet, Sample};
use registry_seed::ntp::{NtpStats, bind, spawn};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Starts the server on 127.0.0.1:0 in a runtime of its own; the runtime lives as long as the
/// returned value.
fn start_server() -> (tokio::runtime::Runtime, SocketAddr, Arc<NtpStats>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stats = NtpStats::new();
    let socket = rt.block_on(bind("127.0.0.1:0".parse().unwrap())).unwrap();
    let addr = socket.local_addr().unwrap();
    let _guard = rt.enter();
    spawn(socket, stats.clone()).unwrap();
    (rt, addr, stats)
}

fn now() -> NtpTimestamp {
    NtpTimestamp::from_unix_duration(SystemTime::now().duration_since(UNIX_EPOCH).unwrap())
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
}

/// Parses chronyd's "System clock wrong by X seconds" line.
fn clock_wrong_by(output: &str) -> Option<f64> {
    let rest = output.split("System clock wrong by ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn chrony_sees_the_seed_clock_within_a_millisecond() {
    if !testkit::require(&["chronyd"]) {
        return;
    }
    let (_rt, addr, stats) = start_server();
    let out = Command::new(testkit::which("chronyd").unwrap())
        .args(["-x", "-Q", "-t", "10", "-f", "/dev/null"])
        .arg(format!(
            "server 127.0.0.1 port {} iburst maxsamples 2",
            addr.port()
        ))
        .output()
        .expect("running chronyd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let offset =
        clock_wrong_by(&text).unwrap_or_else(|| panic!("chronyd printed no offset:\n{text}"));
    assert!(offset.abs() < 0.001, "offset {offset} s:\n{text}");
    testkit::wait_for(
        "chrony's requests to be counted",
        Duration::from_secs(5),
        || (stats.answered() >= 2).then_some(()),
    );
    assert_eq!(stats.refused(), 0);
}

/// Sends `bad`, then a good probe: the first datagram back must answer the probe, which proves
/// `bad` got no answer (the server handles datagrams in order, one at a time).
fn assert_unanswered(socket: &UdpSocket, server: SocketAddr, name: &str, bad: &[u8]) {
    socket.send_to(bad, server).unwrap();
    let t1 = now();
    socket.send_to(&ntp::request(t1), server).unwrap();
    let mut buf = [0u8; 2048];
    let (len, _) = socket.recv_from(&mut buf).expect("answer to the probe");
    let reply = Packet::decode(&buf[..len]).unwrap();
    assert_eq!(reply.origin, t1, "{name} was answered");
}

fn with_first_byte(byte: u8) -> Vec<u8> {
    let mut b = ntp::request(now()).to_vec();
    b[0] = byte;
    b
}

#[test]
fn malformed_and_control_datagrams_get_no_answer() {
    let (_rt, server, stats) = start_server();
    let socket = client();
    let mut with_zeros = ntp::request(now()).to_vec();
    with_zeros.extend_from_slice(&[0; 952]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![0x23]),
        ("47 bytes", ntp::request(now())[..47].to_vec()),
        ("mode 0", with_first_byte(0x20)),
        ("mode 1", with_first_byte(0x21)),
        ("mode 2", with_first_byte(0x22)),
        ("mode 4", with_first_byte(0x24)),
        ("mode 5", with_first_byte(0x25)),
        ("mode 6 (control)", with_first_byte(0x26)),
        ("mode 7 (private)", with_first_byte(0x27)),
        (
            "mode 6, v2 readvar",
            [0x16, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0].to_vec(),
        ),
        (
            "mode 7, monlist",
            [0x17, 0x00, 0x03, 0x2a]
                .iter()
                .copied()
                .chain([0; 44])
                .collect(),
        ),
        ("version 0", with_first_byte(0x03)),
        ("version 1", with_first_byte(0x0b)),
        ("version 2", with_first_byte(0x13)),
        ("version 5", with_first_byte(0x2b)),
        ("version 7", with_first_byte(0x3b)),
        ("952 zero bytes after the header", with_zeros),
        ("zero transmit", ntp::request(NtpTimestamp::ZERO).to_vec()),
    ];
    for (i, (name, bad)) in cases.iter().enumerate() {
        assert_unanswered(&socket, server, name, bad);
        assert_eq!(
            stats.refused(),
            i as u64 + 1,
            "{name} not counted as refused"
        );
    }
    // The answer can arrive before the server counted it.
    testkit::wait_for("the probes to be counted", Duration::from_secs(5), || {
        (stats.answered() == cases.len() as u64).then_some(())
    });
    assert_eq!(stats.refused(), cases.len() as u64);
}

#[test]
fn answers_version_3_and_4_with_48_bytes_and_server_identity() {
    let (_rt, server, stats) = start_server();
    let socket = client();
    for version in [3u8, 4] {
        let t1 = now();
        let mut req = ntp::request(t1).to_vec();
        req[0] = (req[0] & !0x38) | (version << 3);
        // A well-formed 28-byte extension field: answered, and the answer stays 48 bytes.
        req.extend_from_slice(&[0x01, 0x04, 0, 28]);
        req.extend_from_slice(&[0; 24]);
        socket.send_to(&req, server).unwrap();
        let mut buf = [0u8; 2048];
        let (len, _) = socket.recv_from(&mut buf).unwrap();
        let t4 = now();
        assert_eq!(len, 48);
        let reply = Packet::decode(&buf[..len]).unwrap();
        assert_eq!(
            (reply.version, reply.stratum, &reply.reference_id),
            (version, 8, b"LOCL")
        );
        assert!(reply.reference_time <= reply.receive && reply.receive <= reply.transmit);
        let sample = Sample::from_reply(&buf[..len], t1, t4).unwrap();
        // Same clock on both ends: the measured offset is only path asymmetry, at most half the
        // round trip.
        assert!(
            sample.offset_nanos.abs() <= sample.delay_nanos / 2 + 2,
            "{sample:?}"
        );
    }
    testkit::wait_for("both answers to be counted", Duration::from_secs(5), || {
        (stats.answered() == 2).then_some(())
    });
    assert!(
        stats
            .render_prometheus()
            .contains("launcher_seed_ntp_requests_total{result=\"answered\"} 2\n")
    );
}

/// Bursts from several clients, good and bad requests mixed, read in batches by the server:
/// each good request gets exactly one answer, to its own sender, carrying its own transmit time
/// as the origin; each bad one none. A burst stays well inside the server's receive buffer.
#[test]
fn a_burst_is_answered_request_by_request() {
    let (_rt, server, stats) = start_server();
    let clients: Vec<UdpSocket> = (0..4).map(|_| client()).collect();
    const BURSTS: u64 = 15;
    const GOOD: u64 = 10;
    let mut buf = [0u8; 2048];
    for burst in 0..BURSTS {
        let mut sent: Vec<Vec<NtpTimestamp>> = vec![Vec::new(); clients.len()];
        for n in 0..GOOD {
            for (i, c) in clients.iter().enumerate() {
                // distinct transmit times, as a client's are
                let t = NtpTimestamp(now().0.wrapping_add((burst * GOOD + n) * 16 + i as u64));
                c.send_to(&ntp::request(t), server).unwrap();
                sent[i].push(t);
                if n % 5 == 0 {
                    c.send_to(&with_first_byte(0x26), server).unwrap();
                }
            }
        }
        for (i, c) in clients.iter().enumerate() {
            let mut origins = Vec::new();
            while origins.len() < sent[i].len() {
                let (len, from) = c
                    .recv_from(&mut buf)
                    .expect("an answer to every good request");
                assert_eq!(from, server);
                origins.push(Packet::decode(&buf[..len]).unwrap().origin);
            }
            origins.sort();
            sent[i].sort();
            assert_eq!(origins, sent[i], "burst {burst}, client {i}");
        }
    }
    for (i, c) in clients.iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            c.recv_from(&mut buf).is_err(),
            "client {i}: an extra answer"
        );
    }
    let good = BURSTS * GOOD * clients.len() as u64;
    let bad = BURSTS * GOOD.div_ceil(5) * clients.len() as u64;
    testkit::wait_for("the bursts to be counted", Duration::from_secs(5), || {
        (stats.answered() == good && stats.refused() == bad).then_some(())
    });
}
