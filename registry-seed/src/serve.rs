//! `launcher-seed serve`: the seed server. HTTPS (the API) with the seed CA's certificate, NTP
//! over UDP, and optionally plain HTTP for boot files and image pulls by tools.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use cluster::spec::ClusterSpec;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::http::{self, ClientKey, PeerAddr, Scheme};
use crate::seed::{ADDR_FILE, Seed};
use crate::tls::{SeedCa, server_config, server_names};
use durable::write_atomic;

/// File in the state directory holding the NTP server's bound address.
pub const NTP_ADDR_FILE: &str = "ntp.addr";
/// File in the state directory holding the plain HTTP server's bound address.
pub const HTTP_ADDR_FILE: &str = "http.addr";
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

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
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::seed::private_umask();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

/// Reads and validates a cluster file, printing its warnings.
pub fn load_spec(path: &Path) -> anyhow::Result<ClusterSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = ClusterSpec::parse(&path.display().to_string(), &text)?;
    for warning in &parsed.warnings {
        tracing::warn!("{warning}");
    }
    Ok(parsed.spec)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let spec = load_spec(&args.cluster)?;
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
        crate::ntp::spawn(socket, stats);
        tracing::info!(%bound, "serving NTP");
    }
    seed.boot = Some(crate::boot::BootConfig {
        dir: args.boot_dir.clone(),
        seed_url: seed.spec.seed.url.to_string(),
        pin: ca.pin(),
        ntp: ntp_public,
        extra_args: args.kernel_args.clone(),
    });
    let registry = crate::oci::router(Arc::new(crate::oci::Store::open(&args.state_dir)?));
    let seed = Arc::new(seed);
    crate::jobs::recover(&seed)?;
    crate::jobs::spawn_pending_expiry(seed.clone());
    if let Err(err) = seed.membership.resume_promotions().await {
        tracing::warn!(error = %err, "cannot resume the etcd learners' promotions");
    }
    if let Some(addr) = args.http_listen {
        let listener = bind(addr, &args.state_dir, HTTP_ADDR_FILE).await?;
        let app = http::plain_app(seed.clone()).merge(registry.clone());
        tokio::spawn(accept_plain(listener, app));
    }
    let listener = bind(args.listen, &args.state_dir, ADDR_FILE).await?;
    let bound = listener.local_addr()?;
    println!(
        "launcher-seed: serving https://{bound} (seed CA pin {})",
        ca.pin()
    );
    tracing::info!(%bound, cluster = %seed.facts.name, "serving the API");
    let app = http::app(seed).merge(registry);
    tokio::select! {
        () = accept_tls(listener, tls, app) => Ok(()),
        () = shutdown_signal() => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}

async fn bind(addr: SocketAddr, state_dir: &Path, file: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
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

async fn accept_tls(listener: TcpListener, tls: tokio_rustls::TlsAcceptor, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, app) = (tls.clone(), app.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let client_key = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| cluster::pki::HostKeyId::of_cert_der(cert).ok())
                .map(ClientKey);
            serve_connection(TokioIo::new(stream), peer, "https", client_key, app).await;
        });
    }
}

async fn accept_plain(listener: TcpListener, app: Router) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(serve_connection(
            TokioIo::new(tcp),
            peer,
            "http",
            None,
            app.clone(),
        ));
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    scheme: &'static str,
    client_key: Option<ClientKey>,
    app: Router,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        request.extensions_mut().insert(Scheme(scheme));
        if let Some(key) = client_key {
            request.extensions_mut().insert(key);
        }
        request
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A client that never finishes its headers does not hold a connection forever.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    if let Err(err) = builder.serve_connection(io, service).await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}
