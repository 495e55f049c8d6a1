//! A bounded SNTP load generator: a few UDP sockets, each keeping a fixed window of client
//! requests in flight, for a fixed time or request count, counting well-formed server answers.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cluster::ntp::{self, Mode, NtpTimestamp, Packet};
use serde::Serialize;

/// How hard and how long to load a server.
#[derive(Debug, Clone)]
pub struct NtpLoad {
    pub target: SocketAddr,
    /// Stop sending after this long.
    pub duration: Duration,
    /// Stop sending after this many requests in all.
    pub max_requests: u64,
    /// Sockets, one thread each.
    pub sockets: usize,
    /// Requests each socket keeps in flight.
    pub window: usize,
    /// A window with no answer for this long is counted lost and sent again.
    pub loss_timeout: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NtpLoadResult {
    pub sent: u64,
    pub answered: u64,
    /// Datagrams back that were not a server answer to a request still in flight.
    pub bad: u64,
    /// Requests given up on after `loss_timeout`.
    pub lost: u64,
    pub elapsed_secs: f64,
    /// Answers per second.
    pub rate: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum NtpLoadError {
    #[error("opening a udp socket towards {target}")]
    Socket {
        target: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("a load thread panicked")]
    Thread,
}

/// Per-socket counters, summed at the end.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    sent: u64,
    answered: u64,
    bad: u64,
    lost: u64,
}

fn now() -> NtpTimestamp {
    NtpTimestamp::from_unix_duration(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO),
    )
}

/// Whether `datagram` is a server's answer to some request (mode 4, a stratum, an origin).
pub fn is_answer(datagram: &[u8]) -> bool {
    answer_origin(datagram).is_some()
}

fn open(target: SocketAddr, timeout: Duration) -> Result<UdpSocket, NtpLoadError> {
    let wrap = |source| NtpLoadError::Socket { target, source };
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(wrap)?;
    socket.connect(target).map_err(wrap)?;
    socket.set_read_timeout(Some(timeout)).map_err(wrap)?;
    Ok(socket)
}

/// The origin timestamp of a server answer, when `datagram` is one (mode 4, a stratum).
fn answer_origin(datagram: &[u8]) -> Option<NtpTimestamp> {
    let p = Packet::decode(datagram).ok()?;
    (p.mode == Mode::Server && p.stratum != 0 && p.origin != NtpTimestamp::ZERO).then_some(p.origin)
}

/// A transmit timestamp no earlier request of this socket used, so answers match requests.
fn fresh_stamp(last: &mut NtpTimestamp) -> NtpTimestamp {
    let mut t = now();
    if t.0 <= last.0 {
        t = NtpTimestamp(last.0 + 1);
    }
    *last = t;
    t
}

/// One socket's loop; `budget` is its share of `max_requests`.
fn drive(socket: &UdpSocket, load: &NtpLoad, budget: u64, deadline: Instant) -> Counts {
    let mut c = Counts::default();
    let mut in_flight: Vec<NtpTimestamp> = Vec::with_capacity(load.window);
    let mut last = NtpTimestamp::ZERO;
    let mut buf = [0u8; 512];
    loop {
        while Instant::now() < deadline && in_flight.len() < load.window && c.sent < budget {
            let stamp = fresh_stamp(&mut last);
            if socket.send(&ntp::request(stamp)).is_err() {
                break;
            }
            c.sent += 1;
            in_flight.push(stamp);
        }
        if in_flight.is_empty() {
            return c;
        }
        match socket.recv(&mut buf) {
            Ok(len) => match answer_origin(&buf[..len]) {
                Some(origin) => match in_flight.iter().position(|t| *t == origin) {
                    Some(i) => {
                        in_flight.swap_remove(i);
                        c.answered += 1;
                    }
                    // A late answer to a request already counted lost.
                    None => c.bad += 1,
                },
                None => c.bad += 1,
            },
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                c.lost += in_flight.len() as u64;
                in_flight.clear();
            }
            // An ICMP "port unreachable" for an earlier datagram: give up on the oldest request.
            Err(_) => {
                c.lost += 1;
                in_flight.remove(0);
            }
        }
    }
}

/// Runs the load and waits for the last answers (at most `loss_timeout` after the deadline).
pub fn run(load: &NtpLoad) -> Result<NtpLoadResult, NtpLoadError> {
    let sockets = load.sockets.max(1);
    let opened: Vec<UdpSocket> = (0..sockets)
        .map(|_| open(load.target, load.loss_timeout))
        .collect::<Result<_, _>>()?;
    let budget = load.max_requests.div_ceil(sockets as u64);
    let start = Instant::now();
    let deadline = start + load.duration;
    let counts = std::thread::scope(|scope| {
        let handles: Vec<_> = opened
            .iter()
            .map(|s| scope.spawn(move || drive(s, load, budget, deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| NtpLoadError::Thread))
            .collect::<Result<Vec<Counts>, _>>()
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let mut r = NtpLoadResult {
        elapsed_secs: elapsed,
        ..NtpLoadResult::default()
    };
    for c in counts {
        r.sent += c.sent;
        r.answered += c.answered;
        r.bad += c.bad;
        r.lost += c.lost;
    }
    r.rate = if elapsed > 0.0 {
        r.answered as f64 / elapsed
    } else {
        0.0
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_answers_with_an_origin_count() {
        let request = ntp::request(now());
        assert!(!is_answer(&request), "a client request is not an answer");
        assert!(!is_answer(&[0u8; 10]), "a short datagram is not an answer");
        let clock = ntp::ServerClock {
            reference: now(),
            receive: now(),
            transmit: now(),
        };
        let reply = ntp::answer(&request, &ntp::ServerParams::local(), clock).unwrap();
        assert!(is_answer(&reply));
    }

    /// A tiny echo-style server answering every request, so the loop's accounting is checked
    /// without timing: every request sent is answered or lost, never both.
    #[test]
    fn every_request_is_answered_or_lost_and_the_budget_bounds_sending() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let target = server.local_addr().unwrap();
        let answering = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let params = ntp::ServerParams::local();
            while let Ok((len, peer)) = server.recv_from(&mut buf) {
                let clock = ntp::ServerClock {
                    reference: now(),
                    receive: now(),
                    transmit: now(),
                };
                if let Ok(reply) = ntp::answer(&buf[..len], &params, clock) {
                    server.send_to(&reply, peer).unwrap();
                }
            }
        });
        let load = NtpLoad {
            target,
            duration: Duration::from_secs(30),
            max_requests: 500,
            sockets: 2,
            window: 4,
            loss_timeout: Duration::from_millis(200),
        };
        let r = run(&load).unwrap();
        answering.join().unwrap();
        assert_eq!(r.sent, 500);
        assert_eq!(r.answered + r.lost, r.sent, "{r:?}");
        assert!(r.answered > 0, "{r:?}");
        assert_eq!(r.bad, 0);
    }
}
