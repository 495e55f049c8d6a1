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
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;

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

/// How many datagrams one system call receives or sends at most: under load a wake-up answers a
/// batch, in two calls (`recvmmsg`, `sendmmsg`) instead of two per request.
const BATCH: usize = 64;

/// Answers requests on `socket` (blocking) for as long as the process runs. Every datagram
/// counts once in `stats`: answered, refused, rate_limited or send_failed. A request is checked
/// before it is counted against its source, so what is refused anyway costs a source nothing.
///
/// It runs on a thread of its own, as chronyd's loop does: a request wakes the thread straight
/// from the socket, with no event loop between (on the async runtime the seed answered at
/// 0.6-0.8x chronyd's rate).
pub fn serve(socket: std::net::UdpSocket, stats: Arc<NtpStats>, limiter: Option<SourceLimiter>) {
    let params = ServerParams::local();
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; RECEIVE_BUFFER]; BATCH];
    let mut replies: Vec<([u8; ntp::HEADER_LEN], SocketAddr)> = Vec::with_capacity(BATCH);
    loop {
        let received = match batch::receive(fd, &mut bufs) {
            Ok(received) => received,
            Err(e) => {
                // A UDP receive error (an ICMP echo of an earlier send) concerns one peer only.
                tracing::debug!(error = %e, "receiving ntp datagrams");
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
        replies.clear();
        for (buf, &(len, peer)) in bufs.iter().zip(&received) {
            let Some(peer) = peer else {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let reply = match ntp::answer(&buf[..len], &params, clock) {
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
            replies.push((reply, peer));
        }
        let transmit = now();
        for (reply, _) in replies.iter_mut() {
            ntp::stamp_transmit(reply, transmit);
        }
        let mut rest = &replies[..];
        while !rest.is_empty() {
            match batch::send(fd, rest) {
                Ok(sent) => {
                    stats.answered.fetch_add(sent as u64, Ordering::Relaxed);
                    rest = &rest[sent..];
                }
                Err(e) => {
                    // the first reply the kernel refused; the others are tried again
                    stats.send_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %rest[0].1, error = %e, "sending an ntp answer");
                    rest = &rest[1..];
                }
            }
        }
    }
}

/// `recvmmsg` and `sendmmsg` on a blocking socket's descriptor.
mod batch {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::RawFd;

    use nix::sys::socket::{
        ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
    };

    fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = addr.as_sockaddr_in() {
            return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
        }
        addr.as_sockaddr_in6()
            .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
    }

    /// Waits for a datagram, then receives those already queued behind it, up to `bufs.len()`:
    /// `(length, sender)` of each, in `bufs` order (the sender is always known for UDP over IP).
    /// A datagram longer than its buffer is cut to it.
    pub fn receive<const N: usize>(
        fd: RawFd,
        bufs: &mut [[u8; N]],
    ) -> io::Result<Vec<(usize, Option<SocketAddr>)>> {
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(bufs.len(), None);
        let mut slices: Vec<[IoSliceMut; 1]> =
            bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let results = recvmmsg(
            fd,
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        Ok(results
            .map(|r| (r.bytes, r.address.as_ref().and_then(socket_addr)))
            .collect())
    }

    /// Sends the first replies it can; how many were sent.
    pub fn send<const N: usize>(fd: RawFd, replies: &[([u8; N], SocketAddr)]) -> io::Result<usize> {
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(replies.len(), None);
        let slices: Vec<[IoSlice; 1]> = replies.iter().map(|(r, _)| [IoSlice::new(r)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = replies
            .iter()
            .map(|(_, a)| Some(SockaddrStorage::from(*a)))
            .collect();
        let no_control: Vec<ControlMessage> = Vec::new();
        let sent = sendmmsg(
            fd,
            &mut headers,
            &slices,
            addrs,
            no_control,
            MsgFlags::empty(),
        )?;
        Ok(sent.count())
    }
}

/// Runs [`serve`] without a rate limit on a thread of its own.
pub fn spawn(socket: UdpSocket, stats: Arc<NtpStats>) -> io::Result<std::thread::JoinHandle<()>> {
    spawn_limited(socket, stats, None)
}

/// Runs [`serve`] on a thread of its own, answering each source at most as often as `limiter`
/// allows.
pub fn spawn_limited(
    socket: UdpSocket,
    stats: Arc<NtpStats>,
    limiter: Option<SourceLimiter>,
) -> io::Result<std::thread::JoinHandle<()>> {
    if let Ok(addr) = socket.local_addr() {
        tracing::info!(%addr, "ntp server listening");
    }
    let socket = socket.into_std()?;
    socket.set_nonblocking(false)?;
    std::thread::Builder::new()
        .name("ntp".into())
        .spawn(move || serve(socket, stats, limiter))
}
