//! The seed's SNTP server: a UDP loop answering clients from the seed's own clock.
//!
//! The seed is the LAN's time reference for hosts that boot before they can reach anything else,
//! so it answers as a local clock (stratum 8, reference id `LOCL`, see
//! [`cluster::ntp::LOCAL_STRATUM`]). What is answered and what is refused is decided in
//! [`cluster::ntp::answer`]; this module only reads the clock, moves datagrams and, when given a
//! [`SourceLimiter`], drops requests from a source that asks more often than it allows.

use cluster::ntp::{self, NtpTimestamp, ServerClock, ServerParams};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::limits::SourceLimiter;

/// One byte more than the longest request answered: a datagram that fills it was longer (the
/// kernel cuts the rest) and is refused as [`ntp::NtpError::TooLong`].
const RECEIVE_BUFFER: usize = ntp::MAX_REQUEST_LEN + 1;

/// Counters for `/metrics`, shared with the HTTP side.
#[derive(Debug, Default)]
pub struct NtpStats {
    answered: AtomicU64,
    refused: AtomicU64,
    rate_limited: AtomicU64,
    send_failed: AtomicU64,
}

impl NtpStats {
    pub fn new() -> Arc<NtpStats> {
        Arc::new(NtpStats::default())
    }

    /// Requests answered.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Datagrams dropped without an answer (malformed, not a client request, ...).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Valid requests dropped because their source asked too often.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Answers the socket failed to send.
    pub fn send_failed(&self) -> u64 {
        self.send_failed.load(Ordering::Relaxed)
    }

    /// The counters in Prometheus text format, one `launcher_seed_ntp_requests_total` series per
    /// result.
    pub fn render_prometheus(&self) -> String {
        format!(
            "# HELP launcher_seed_ntp_requests_total NTP datagrams received, by result.\n\
             # TYPE launcher_seed_ntp_requests_total counter\n\
             launcher_seed_ntp_requests_total{{result=\"answered\"}} {}\n\
             launcher_seed_ntp_requests_total{{result=\"refused\"}} {}\n\
             launcher_seed_ntp_requests_total{{result=\"rate_limited\"}} {}\n\
             launcher_seed_ntp_requests_total{{result=\"send_failed\"}} {}\n",
            self.answered(),
            self.refused(),
            self.rate_limited(),
            self.send_failed()
        )
    }
}

/// Errors of the NTP server.
#[derive(Debug, thiserror::Error)]
pub enum NtpServeError {
    #[error("binding the ntp socket on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Binds the UDP socket the server answers on (`0.0.0.0:123` in production, port 0 in tests).
pub async fn bind(addr: SocketAddr) -> Result<UdpSocket, NtpServeError> {
    UdpSocket::bind(addr)
        .await
        .map_err(|source| NtpServeError::Bind { addr, source })
}

/// The seed's clock as an NTP timestamp.
fn now() -> NtpTimestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    NtpTimestamp::from_unix_duration(since_epoch)
}

/// Answers requests on `socket` until the task is dropped. Every datagram counts once in
/// `stats`: answered, refused, rate_limited or send_failed. A request is checked before it is
/// counted against its source, so what is refused anyway costs a source nothing.
pub async fn serve(socket: UdpSocket, stats: Arc<NtpStats>, limiter: Option<SourceLimiter>) {
    let params = ServerParams::local();
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // A UDP receive error (an ICMP echo of an earlier send) concerns one peer only.
                tracing::debug!(error = %e, "receiving an ntp datagram");
                continue;
            }
        };
        let receive = now();
        let clock = ServerClock {
            // A local reference is "set" continuously: the last whole second before this request.
            reference: NtpTimestamp(receive.0 & !0xFFFF_FFFF),
            receive,
            transmit: receive,
        };
        let mut reply = match ntp::answer(&buf[..len], &params, clock) {
            Ok(reply) => reply,
            Err(reason) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, len, %reason, "ntp datagram refused");
                continue;
            }
        };
        if let Some(limiter) = &limiter
            && limiter.check(peer.ip(), std::time::Instant::now()).is_err()
        {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(%peer, "ntp request over its source's rate");
            continue;
        }
        ntp::stamp_transmit(&mut reply, now());
        match socket.send_to(&reply, peer).await {
            Ok(_) => {
                stats.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.send_failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, error = %e, "sending an ntp answer");
            }
        }
    }
}

/// Runs [`serve`] without a rate limit on the current tokio runtime; abort the handle to stop it.
pub fn spawn(socket: UdpSocket, stats: Arc<NtpStats>) -> JoinHandle<()> {
    spawn_limited(socket, stats, None)
}

/// Runs [`serve`] on the current tokio runtime, answering each source at most as often as
/// `limiter` allows; abort the handle to stop it.
pub fn spawn_limited(
    socket: UdpSocket,
    stats: Arc<NtpStats>,
    limiter: Option<SourceLimiter>,
) -> JoinHandle<()> {
    if let Ok(addr) = socket.local_addr() {
        tracing::info!(%addr, "ntp server listening");
    }
    tokio::spawn(serve(socket, stats, limiter))
}
