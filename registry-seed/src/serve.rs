//! `launcher-seed serve`: the seed server. HTTPS (the API) with the seed CA's certificate, NTP
//! over UDP, and optionally plain HTTP for boot files and image pulls by tools.
//!
//! Each listener keeps its connections in a [`ConnTable`]: at most `--max-connections`, each
//! closed when it has sent no request within `--first-request-timeout` of its accept, or has had
//! none in flight for `--idle-timeout`; a request body must arrive within `--body-timeout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::http::{self, ClientKey, PeerAddr, Scheme};
use crate::limits::{self, Admitted, ConnLimits, ConnTable, Rate, SourceLimiter};
use crate::seed::{ADDR_FILE, Seed};
use crate::tls::{SeedCa, server_config, server_names};
use durable::write_atomic;

/// File in the state directory holding the NTP server's bound address.
pub const NTP_ADDR_FILE: &str = "ntp.addr";
/// File in the state directory holding the plain HTTP server's bound address.
pub const HTTP_ADDR_FILE: &str = "http.addr";
/// Sources each rate limiter (enrollment, NTP) keeps a bucket for: about 0.8 MB each.
const TRACKED_SOURCES: usize = 16_384;
/// How often an HTTP/2 connection is pinged, and how long its answer may take: a peer gone
/// without a word is found out even while a long response waits on it.
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests one HTTP/2 connection may have in flight at once.
const H2_MAX_STREAMS: u32 = 64;
/// How long a connection told to close may take to finish doing so.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The cluster definition (TOML) this seed serves.
    #[arg(long)]
    pub cluster: PathBuf,
    /// Where the seed keeps its state (store, seed CA, admin token); made on first start.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// HTTPS address of the API. Port 0 picks a free port; the bound address is written to
    /// `<state-dir>/serve.addr` and printed.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// UDP address of the NTP server (bound address in `<state-dir>/ntp.addr`); none if unset.
    #[arg(long)]
    pub ntp_listen: Option<SocketAddr>,
    /// Plain HTTP address for tools that cannot pin (health, boot files); none if unset.
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Directory holding `vmlinuz` and `initrd.img` for network boot (`/boot.ipxe`).
    #[arg(long)]
    pub boot_dir: Option<PathBuf>,
    /// Extra kernel argument for network-booted machines (repeatable), e.g. `console=ttyS0`.
    #[arg(long = "kernel-arg")]
    pub kernel_args: Vec<String>,
    /// Extra DNS name or IP for the server certificate (repeatable). The listen address and the
    /// host of the spec's seed URL are always included.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Connections each listener (HTTPS, plain HTTP) holds open at once. When it is full, a new
    /// connection takes the place of the one idle the longest, or is closed at once if every
    /// connection is busy. Default: 8192, lowered to what the open-file limit leaves room for
    /// (the seed raises its soft limit to the hard one at start; a larger value is lowered too).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Seconds a new connection has to send its first request's headers, TLS handshake included;
    /// one that sends nothing, or stalls in its handshake, is closed after them.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub first_request_timeout: u64,
    /// Seconds an HTTP/1 keep-alive or HTTP/2 connection stays open with no request in flight.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,
    /// Seconds a request has, from its headers on, to send its whole body; a slower one is
    /// answered 408 and its HTTP/1 connection closed. The seed's request bodies are small JSON.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout: u64,
    /// Seconds an answer may wait for its client to take more of it; a client that takes
    /// nothing for that long is disconnected. This frees its place among the file downloads
    /// (boot files, image layers) streamed at once, at most 128, the rest waiting for a place.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub send_timeout: u64,
    /// File downloads (boot files, image layers) one source address may have streaming at
    /// once; past it the seed answers 429 with `Retry-After`. 0 for no cap (benchmarks that
    /// send everything from one address).
    #[arg(long, value_name = "N", default_value_t = crate::range::DEFAULT_PER_SOURCE)]
    pub downloads_per_source: usize,
    /// Enrollments (`POST /v1/enroll`) each source address may make a second, on average; 0 for
    /// no limit. Past it (and its burst) the seed answers 429 `rate_limited` with `Retry-After`.
    /// A host enrolls a few times per boot, so a boot storm of distinct hosts never meets it.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 2.0, value_parser = limits::parse_rate)]
    pub enroll_rate: f64,
    /// Enrollments a source address may make back to back after a quiet time.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub enroll_burst: u32,
    /// NTP answers each source address gets a second, on average; 0 for no limit. Requests past
    /// it (and its burst) are dropped and counted as `rate_limited` in `/metrics`. Twice chrony's
    /// `ratelimit` default (interval 3, burst 8): firstboot asks four samples a round, and two
    /// or three rounds a boot.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 0.25, value_parser = limits::parse_rate)]
    pub ntp_rate: f64,
    /// NTP answers a source address gets back to back after a quiet time.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub ntp_burst: u32,
    /// Let hosts enroll and install while the seed's registry lacks images the cluster pulls
    /// (`launcher-seed images required --state-dir` lists them). By default a host asking to
    /// enroll then waits, told which images are missing, so that no install stalls halfway on
    /// a pull; this is for hosts that pull from a registry of their own.
    #[arg(long)]
    pub allow_missing_images: bool,
}

impl ServeArgs {
    /// Each listener's connection limits, within an open-file limit of `nofile`.
    fn conn_limits(&self, nofile: u64) -> ConnLimits {
        let listeners = 1 + usize::from(self.http_listen.is_some());
        let asked = self.max_connections.map(|n| n as usize);
        let cap = limits::connection_cap(asked, nofile, listeners).unwrap_or_else(|fits| {
            tracing::warn!(
                asked = ?asked,
                nofile,
                "--max-connections lowered to {fits}: the open-file limit leaves room for no more"
            );
            fits
        });
        ConnLimits {
            cap,
            first_request: Duration::from_secs(self.first_request_timeout),
            idle: Duration::from_secs(self.idle_timeout),
            send: Duration::from_secs(self.send_timeout),
        }
    }

    /// A limiter at `rate` per second and `burst`; none when `rate` is 0.
    fn limiter(rate: f64, burst: u32) -> Option<SourceLimiter> {
        Rate::new(rate, burst).map(|rate| SourceLimiter::new(rate, TRACKED_SOURCES))
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::seed::private_umask();
    let nofile = limits::raise_nofile().unwrap_or_else(|err| {
        tracing::warn!(error = %err, "cannot raise the open-file limit; assuming 1024");
        1024
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, nofile))
}

async fn serve(args: ServeArgs, nofile: u64) -> anyhow::Result<()> {
    let spec = crate::cluster_file::load_spec(&args.cluster)?;
    let url_host = spec.seed.url.endpoint().host().to_string();
    let state_dir = args.state_dir.clone();
    let mut seed = tokio::task::spawn_blocking(move || Seed::open(spec, &state_dir))
        .await
        .context("opening the seed's state")??;
    let ca = SeedCa::load_or_create(&args.state_dir)?;
    let names = server_names(&[args.listen.ip()], Some(&url_host), &args.sans);
    let (cert, key) = ca.server_cert(&names)?;
    // The CA follows the server certificate: firstboot finds the certificate whose key matches
    // its pin in the presented chain and makes it the only trust anchor.
    let chain = format!("{}\n{}", cert.trim_end(), ca.ca.cert_pem());
    let tls = tokio_rustls::TlsAcceptor::from(server_config(&chain, &key)?);

    let mut ntp_public = None;
    if let Some(addr) = args.ntp_listen {
        let socket = crate::ntp::bind(addr).await?;
        let bound = socket.local_addr().context("reading the NTP address")?;
        ntp_public = Some(if bound.ip().is_unspecified() {
            format!("{url_host}:{}", bound.port())
        } else {
            bound.to_string()
        });
        write_atomic(
            &args.state_dir.join(NTP_ADDR_FILE),
            bound.to_string().as_bytes(),
            0o600,
        )?;
        let stats = crate::ntp::NtpStats::new();
        seed.ntp_stats = Some(stats.clone());
        crate::ntp::spawn_limited(
            socket,
            stats,
            ServeArgs::limiter(args.ntp_rate, args.ntp_burst),
        )
        .context("starting the NTP server's thread")?;
        tracing::info!(%bound, rate = args.ntp_rate, burst = args.ntp_burst, "serving NTP");
    }
    seed.boot = Some(crate::boot::BootConfig {
        dir: args.boot_dir.clone(),
        seed_url: seed.spec.seed.url.to_string(),
        pin: ca.pin(),
        ntp: ntp_public,
        extra_args: args.kernel_args.clone(),
    });
    seed.enroll_limit = ServeArgs::limiter(args.enroll_rate, args.enroll_burst);
    let conn_limits = args.conn_limits(nofile);
    let body_timeout = Duration::from_secs(args.body_timeout);
    crate::range::set_downloads_per_source(args.downloads_per_source);
    tracing::info!(
        nofile,
        max_connections = conn_limits.cap,
        first_request_timeout = ?conn_limits.first_request,
        idle_timeout = ?conn_limits.idle,
        ?body_timeout,
        send_timeout = ?conn_limits.send,
        downloads_per_source = args.downloads_per_source,
        enroll_rate = args.enroll_rate,
        enroll_burst = args.enroll_burst,
        "connection and rate limits"
    );
    let images = Arc::new(crate::oci::Store::open(&args.state_dir)?);
    if !args.allow_missing_images {
        let (images, spec) = (images.clone(), seed.spec.clone());
        let missing: crate::seed::MissingImages =
            Arc::new(move || Ok(crate::oci::required::required(&spec, Some(&images))?.missing));
        let now = missing()?;
        if !now.is_empty() {
            println!(
                "launcher-seed: the registry lacks {} image(s) the cluster pulls; hosts wait until they are imported: {}",
                now.len(),
                now.join(", ")
            );
        }
        seed.missing_images = Some(missing);
    }
    let registry = crate::oci::router(images);
    let seed = Arc::new(seed);
    crate::jobs::recover(&seed)?;
    crate::jobs::spawn_pending_expiry(seed.clone());
    if let Err(err) = seed.membership.resume_promotions().await {
        tracing::warn!(error = %err, "cannot resume the etcd learners' promotions");
    }
    if let Some(addr) = args.http_listen {
        let listener = bind(addr, &args.state_dir, HTTP_ADDR_FILE).await?;
        let app = http::plain_app(seed.clone()).merge(registry.clone());
        let policy = Policy::new(conn_limits, body_timeout);
        tokio::spawn(accept_plain(listener, app, policy));
    }
    let listener = bind(args.listen, &args.state_dir, ADDR_FILE).await?;
    let bound = listener.local_addr()?;
    println!(
        "launcher-seed: serving https://{bound} (seed CA pin {})",
        ca.pin()
    );
    tracing::info!(%bound, cluster = %seed.facts.name, "serving the API");
    let app = http::app(seed).merge(registry);
    let policy = Policy::new(conn_limits, body_timeout);
    tokio::select! {
        () = accept_tls(listener, tls, app, policy) => Ok(()),
        () = shutdown_signal() => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}

/// Connections the kernel queues for a listener before the seed accepts them: a rack powered on
/// at once connects in the same instant, and with tokio's 1,024 a storm of a thousand machines
/// saw connections dropped and retried a second later. The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr, state_dir: &Path, file: &str) -> anyhow::Result<TcpListener> {
    let listening = || -> std::io::Result<TcpListener> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    let listener = listening().with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    write_atomic(&state_dir.join(file), bound.to_string().as_bytes(), 0o600)?;
    Ok(listener)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// What each connection of one listener is held to: its table and the request-body deadline.
#[derive(Debug, Clone)]
struct Policy {
    table: Arc<ConnTable>,
    body_timeout: Duration,
}

impl Policy {
    /// A listener's policy; its table is swept for idle connections until the runtime stops.
    fn new(limits: ConnLimits, body_timeout: Duration) -> Policy {
        let table = ConnTable::new(limits);
        tokio::spawn(sweep(table.clone()));
        Policy {
            table,
            body_timeout,
        }
    }
}

async fn sweep(table: Arc<ConnTable>) {
    let mut every = tokio::time::interval(table.sweep_every());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        table.sweep(Instant::now());
    }
}

/// The next connection `table` lets in; one it has no room for is closed at once.
async fn accept(
    listener: &TcpListener,
    table: &Arc<ConnTable>,
) -> (TcpStream, SocketAddr, Admitted) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match table.admit(Instant::now()) {
            Some(admitted) => return (tcp, peer, admitted),
            None => tracing::debug!(%peer, "every connection is busy; closing a new one"),
        }
    }
}

async fn accept_tls(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    app: Router,
    policy: Policy,
) {
    loop {
        let (tcp, peer, conn) = accept(&listener, &policy.table).await;
        let (tls, app, policy) = (tls.clone(), app.clone(), policy.clone());
        tokio::spawn(async move {
            let stream = tokio::select! {
                accepted = tls.accept(tcp) => match accepted {
                    Ok(stream) => stream,
                    Err(err) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        return;
                    }
                },
                () = conn.closing() => return,
            };
            let client_key = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| cluster::pki::HostKeyId::of_cert_der(cert).ok())
                .map(ClientKey);
            let send = policy.table.limits().send;
            let io = TokioIo::new(limits::WriteDeadline::new(stream, send));
            serve_connection(io, peer, "https", client_key, app, conn, &policy).await;
        });
    }
}

async fn accept_plain(listener: TcpListener, app: Router, policy: Policy) {
    loop {
        let (tcp, peer, conn) = accept(&listener, &policy.table).await;
        let (app, policy) = (app.clone(), policy.clone());
        tokio::spawn(async move {
            let io = TokioIo::new(limits::WriteDeadline::new(tcp, policy.table.limits().send));
            serve_connection(io, peer, "http", None, app, conn, &policy).await;
        });
    }
}

/// HTTP/1 or HTTP/2, whichever the client speaks: requests are marked in flight in the
/// connection's table until their response is sent, and the connection is shut down when the
/// table says so.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    scheme: &'static str,
    client_key: Option<ClientKey>,
    app: Router,
    conn: Admitted,
    policy: &Policy,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (tracker, body_timeout) = (conn.tracker(), policy.body_timeout);
    let service = tower::service_fn(move |mut request: Request<Incoming>| {
        let in_flight = tracker.start();
        request.extensions_mut().insert(PeerAddr(peer));
        request
            .extensions_mut()
            .insert(crate::range::Source(peer.ip()));
        request.extensions_mut().insert(Scheme(scheme));
        if let Some(key) = client_key {
            request.extensions_mut().insert(key);
        }
        let request = request.map(|body| limits::with_deadline(body, body_timeout));
        let answer = app.clone().oneshot(request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| limits::hold_until_sent(body, in_flight)))
        }
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let builder = http_builder(policy.table.limits().idle);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = conn.closing() => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(SHUTDOWN_GRACE, connection).await.unwrap_or(Ok(()))
        }
    };
    if let Err(err) = ended {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// The HTTP/1 and HTTP/2 settings of every connection: a header deadline and pings, on top of
/// what the connection table closes.
fn http_builder(idle: Duration) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A keep-alive connection waiting for, or halfway through, its next headers.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_EVERY)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(H2_MAX_STREAMS);
    builder
}
