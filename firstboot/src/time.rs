//! The time phase: SNTP samples from the seed, best by delay, step the clock, check again.
//!
//! Time comes before TLS: certificate validity depends on it. The packets are `cluster::ntp`'s;
//! this module only sends, receives and decides.

use crate::journal::TimeRecord;
use crate::os::{Os, OsError};
use cluster::ntp::{self, NtpTimestamp, Sample};
use std::net::{ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

/// Samples asked for each round.
pub const SAMPLES_PER_ROUND: usize = 4;
const REPLY_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    #[error("resolving the ntp server {0}")]
    Resolve(String, #[source] std::io::Error),
    #[error("opening a udp socket for ntp")]
    Socket(#[source] std::io::Error),
    #[error(
        "no usable answer from the ntp server {server} in {waited_secs} s ({requests} requests; last problem: {last}); check that the seed is running and that udp port {port} on it is reachable"
    )]
    Silent {
        server: String,
        port: String,
        waited_secs: u64,
        requests: usize,
        last: String,
    },
    #[error(
        "the clock is still {offset_ms} ms off the ntp server {server} after stepping it (bound {bound_ms} ms); refusing to go on: check that nothing else (an rtc, another time daemon) keeps resetting the clock"
    )]
    StillSkewed {
        server: String,
        offset_ms: i64,
        bound_ms: u128,
    },
    #[error(transparent)]
    Os(#[from] OsError),
}

fn now_ts(os: &dyn Os) -> NtpTimestamp {
    NtpTimestamp::from_unix_nanos(os.now_unix_nanos())
}

/// One request and its answer, or why there is none.
fn one_sample(os: &dyn Os, sock: &UdpSocket) -> Result<Sample, String> {
    let t1 = now_ts(os);
    sock.send(&ntp::request(t1))
        .map_err(|e| format!("sending: {e}"))?;
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no reply".into());
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no reply".into());
            }
            Err(e) => return Err(format!("receiving: {e}")),
        };
        let t4 = now_ts(os);
        match Sample::from_reply(&buf[..n], t1, t4) {
            // A late answer to an earlier request: keep waiting for ours.
            Err(ntp::NtpError::OriginMismatch) => continue,
            other => return other.map_err(|e| e.to_string()),
        }
    }
}

/// A round of samples: the best by delay, or the last problem seen.
fn best_of_round(os: &dyn Os, sock: &UdpSocket, sent: &mut usize) -> Result<Sample, String> {
    let mut samples = Vec::new();
    let mut last = String::from("no reply");
    for _ in 0..SAMPLES_PER_ROUND {
        *sent += 1;
        match one_sample(os, sock) {
            Ok(s) => samples.push(s),
            Err(e) => last = e,
        }
    }
    ntp::best_by_delay(&samples).copied().ok_or(last)
}

/// Brings the host clock within `bound` of the server at `server` (`host:port`), stepping it
/// when it is off by more than a quarter of the bound. Keeps asking a silent server for `wait`.
pub fn sync(
    os: &dyn Os,
    server: &str,
    bound: Duration,
    wait: Duration,
) -> Result<TimeRecord, TimeError> {
    let addr = server
        .to_socket_addrs()
        .map_err(|e| TimeError::Resolve(server.to_string(), e))?
        .next()
        .ok_or_else(|| {
            TimeError::Resolve(server.to_string(), std::io::ErrorKind::NotFound.into())
        })?;
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(local).map_err(TimeError::Socket)?;
    sock.connect(addr).map_err(TimeError::Socket)?;

    let start = Instant::now();
    let mut sent = 0;
    let mut pause = Duration::from_millis(250);
    let mut first: Option<i64> = None;
    let mut stepped = false;
    loop {
        match best_of_round(os, &sock, &mut sent) {
            Ok(sample) => {
                let off_ms = sample.offset_nanos / 1_000_000;
                let before = *first.get_or_insert(off_ms);
                let abs = u128::from(sample.offset_nanos.unsigned_abs());
                if abs <= bound.as_nanos() / 4 || (stepped && abs <= bound.as_nanos()) {
                    tracing::info!(offset_ms = off_ms, stepped, "clock agrees with {server}");
                    return Ok(TimeRecord {
                        offset_before_ms: before,
                        offset_after_ms: off_ms,
                        stepped,
                    });
                }
                if stepped && start.elapsed() >= wait {
                    return Err(TimeError::StillSkewed {
                        server: server.to_string(),
                        offset_ms: off_ms,
                        bound_ms: bound.as_millis(),
                    });
                }
                tracing::info!(offset_ms = off_ms, "stepping the clock to {server}'s time");
                os.step_clock(os.now_unix_nanos() + i128::from(sample.offset_nanos))?;
                stepped = true;
            }
            Err(last) => {
                if start.elapsed() >= wait {
                    return Err(TimeError::Silent {
                        server: server.to_string(),
                        port: addr.port().to_string(),
                        waited_secs: start.elapsed().as_secs(),
                        requests: sent,
                        last,
                    });
                }
                tracing::warn!("no usable ntp answer from {server} yet ({last}); retrying");
                os.sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
