//! An enrollment load generator: simulated hosts, each with its own identity key, keys and CSRs
//! (made before the clock starts) and its own TLS connection, POST `/v1/enroll` to one seed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster::api::{EnrollRequest, EnrollResponse, HostIdentity, cert_names};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::stats::{millis, percentile};

#[derive(Debug, thiserror::Error)]
pub enum EnrollLoadError {
    #[error("making a key or csr for host {index}: {reason}")]
    Csr { index: usize, reason: String },
    #[error("the seed ca certificate: {0}")]
    Ca(String),
    #[error("a csr thread panicked")]
    Thread,
}

/// The MAC of simulated host `index` (locally administered, `52:55:…`).
pub fn host_mac(index: usize) -> String {
    format!(
        "52:55:00:{:02x}:{:02x}:{:02x}",
        (index >> 16) & 0xff,
        (index >> 8) & 0xff,
        index & 0xff
    )
}

/// Which CSRs a simulated host sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CsrSet {
    /// Every certificate name, as firstboot sends before it knows its role.
    All,
    /// Only the kubelet client certificate, the one a worker uses.
    Kubelet,
}

fn csr_pem(name: &str) -> Result<String, rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.serialize_request(&key)?.pem()
}

/// One simulated host: its enrollment body and the identity key it presents.
#[derive(Debug, Clone)]
pub struct SimHost {
    pub body: Vec<u8>,
    pub identity: cluster::pki::HostIdentityKey,
}

/// Host `index`: its body and a fresh identity key.
pub fn sim_host(index: usize, csrs: CsrSet) -> Result<SimHost, EnrollLoadError> {
    let identity = cluster::pki::HostIdentityKey::generate().map_err(|e| EnrollLoadError::Csr {
        index,
        reason: e.to_string(),
    })?;
    Ok(SimHost {
        body: enroll_body(index, csrs)?,
        identity,
    })
}

/// The JSON body of host `index`'s enrollment, with fresh P-256 keys and CSRs.
pub fn enroll_body(index: usize, csrs: CsrSet) -> Result<Vec<u8>, EnrollLoadError> {
    let names: &[&str] = match csrs {
        CsrSet::All => &cert_names::ALL,
        CsrSet::Kubelet => &[cert_names::KUBELET_CLIENT],
    };
    let mut map = BTreeMap::new();
    for name in names {
        let pem = csr_pem(name).map_err(|e| EnrollLoadError::Csr {
            index,
            reason: e.to_string(),
        })?;
        map.insert((*name).to_string(), pem);
    }
    let request = EnrollRequest {
        identity: HostIdentity {
            macs: vec![host_mac(index)],
            ..HostIdentity::default()
        },
        token: None,
        csrs: map,
        kubernetes_version: None,
    };
    Ok(serde_json::to_vec(&request).expect("a request always serializes"))
}

/// Every host's body, made on `threads` threads.
pub fn pregenerate(
    hosts: usize,
    csrs: CsrSet,
    threads: usize,
) -> Result<Vec<SimHost>, EnrollLoadError> {
    let threads = threads.max(1);
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..hosts)
                        .step_by(threads)
                        .map(|i| sim_host(i, csrs).map(|b| (i, b)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| EnrollLoadError::Thread)?)
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut all: Vec<(usize, SimHost)> = parts.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, host)| host).collect())
}

/// The seed CA as the simulated hosts trust it.
#[derive(Debug, Clone)]
pub struct SeedTrust {
    roots: Arc<rustls::RootCertStore>,
}

/// Trust in the seed CA of `ca_pem` only.
pub fn seed_trust(ca_pem: &[u8]) -> Result<SeedTrust, EnrollLoadError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| EnrollLoadError::Ca(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| EnrollLoadError::Ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(EnrollLoadError::Ca("no certificate in the pem".into()));
    }
    Ok(SeedTrust {
        roots: Arc::new(roots),
    })
}

impl SeedTrust {
    /// A TLS client presenting `identity`, with session resumption off: every simulated host
    /// makes a full handshake, as a freshly booted machine does.
    fn connector(
        &self,
        identity: &cluster::pki::HostIdentityKey,
    ) -> Result<tokio_rustls::TlsConnector, String> {
        let cert = rustls_pemfile::certs(&mut identity.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let key = rustls_pemfile::private_key(&mut identity.key_pem.as_bytes())
            .map_err(|e| e.to_string())?
            .ok_or("no identity key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(cert, key)
            .map_err(|e| e.to_string())?;
        config.resumption = rustls::client::Resumption::disabled();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

/// How one simulated host fared.
#[derive(Debug)]
enum Outcome {
    Enrolled { latency: Duration, verified: bool },
    Answered { status: u16, code: String },
    Failed(String),
}

/// Sends `request` over `io`, an HTTP/1.1 connection of its own, and returns the answer.
pub(crate) async fn send_on<I, B>(
    io: I,
    request: hyper::Request<B>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("sending: {e}"))
}

async fn post(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    body: Vec<u8>,
) -> Result<(u16, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let request = hyper::Request::post("/v1/enroll")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let response = send_on(tls, request).await?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

async fn one_host(trust: &SeedTrust, addr: SocketAddr, host: SimHost) -> Outcome {
    let connector = match trust.connector(&host.identity) {
        Ok(connector) => connector,
        Err(why) => return Outcome::Failed(format!("identity: {why}")),
    };
    let start = Instant::now();
    let (status, bytes) = match post(&connector, addr, host.body).await {
        Ok(answer) => answer,
        Err(why) => return Outcome::Failed(why),
    };
    let latency = start.elapsed();
    if status != 200 {
        let code = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("code")
                    .or_else(|| v.get("status"))
                    .and_then(|c| c.as_str().map(str::to_string))
            })
            .unwrap_or_default();
        return Outcome::Answered { status, code };
    }
    let verified = matches!(
        serde_json::from_slice::<EnrollResponse>(&bytes),
        Ok(EnrollResponse::Enrolled(plan)) if plan.verify()
    );
    Outcome::Enrolled { latency, verified }
}

/// Enrolls one host on a connection of its own; an answer that is not an enrolled host's
/// verified plan is the error.
pub async fn enroll_once(trust: &SeedTrust, seed: SocketAddr, host: SimHost) -> Result<(), String> {
    match one_host(trust, seed, host).await {
        Outcome::Enrolled { verified: true, .. } => Ok(()),
        Outcome::Enrolled {
            verified: false, ..
        } => Err("plan: its digest did not check".into()),
        Outcome::Answered { status, code } => Err(format!("status {status} {code}")),
        Outcome::Failed(why) => Err(why),
    }
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct EnrollLoad {
    pub seed: SocketAddr,
    /// Connections open at once.
    pub concurrency: usize,
    /// No new host starts after this long.
    pub time_limit: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnrollLoadResult {
    pub hosts: usize,
    pub attempted: usize,
    pub enrolled: usize,
    /// Enrolled answers whose plan digest checked out.
    pub plans_verified: usize,
    /// Answers other than 200 and failures, by status and code or by error.
    pub not_enrolled: BTreeMap<String, usize>,
    pub elapsed_secs: f64,
    /// Enrolled hosts per second.
    pub rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub stopped_by_time_limit: bool,
}

#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    verified: usize,
    not_enrolled: BTreeMap<String, usize>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Enrolled { latency, verified } => {
                self.latencies.push(latency);
                self.verified += usize::from(verified);
            }
            Outcome::Answered { status, code } => {
                *self
                    .not_enrolled
                    .entry(format!("{status} {code}"))
                    .or_default() += 1;
            }
            Outcome::Failed(why) => {
                // Error texts carry addresses and numbers; keep the kind only.
                let kind = why.split(':').next().unwrap_or("error").to_string();
                *self.not_enrolled.entry(kind).or_default() += 1;
            }
        }
    }
}

/// Enrolls every host of `bodies` (each its own connection), `concurrency` at a time.
pub async fn run(load: &EnrollLoad, trust: SeedTrust, bodies: Vec<SimHost>) -> EnrollLoadResult {
    let hosts = bodies.len();
    let bodies = Arc::new(Mutex::new(bodies.into_iter().enumerate()));
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let deadline = start + load.time_limit;
    let mut workers = Vec::new();
    for _ in 0..load.concurrency.max(1) {
        let (bodies, next, tally, trust) =
            (bodies.clone(), next.clone(), tally.clone(), trust.clone());
        let seed = load.seed;
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let Some((_, body)) = bodies.lock().await.next() else {
                    break;
                };
                next.fetch_add(1, Ordering::Relaxed);
                let outcome = one_host(&trust, seed, body).await;
                tally.lock().await.add(outcome);
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *tally.lock().await);
    let attempted = next.load(Ordering::Relaxed);
    let enrolled = tally.latencies.len();
    let ms = |p| percentile(&tally.latencies, p).map(millis);
    EnrollLoadResult {
        hosts,
        attempted,
        enrolled,
        plans_verified: tally.verified,
        not_enrolled: tally.not_enrolled,
        elapsed_secs: elapsed,
        rate: if elapsed > 0.0 {
            enrolled as f64 / elapsed
        } else {
            0.0
        },
        p50_ms: ms(50.0),
        p99_ms: ms(99.0),
        max_ms: ms(100.0),
        stopped_by_time_limit: attempted < hosts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_distinct_and_well_formed() {
        let macs: std::collections::BTreeSet<String> = (0..70_000).map(host_mac).collect();
        assert_eq!(macs.len(), 70_000);
        assert_eq!(host_mac(0x01_02_03), "52:55:00:01:02:03");
    }

    #[test]
    fn bodies_are_enroll_requests_with_real_distinct_csrs() {
        let bodies = pregenerate(3, CsrSet::All, 2).unwrap();
        assert_eq!(bodies.len(), 3);
        let mut all = std::collections::BTreeSet::new();
        let keys: std::collections::BTreeSet<String> = bodies
            .iter()
            .map(|h| h.identity.id().unwrap().to_string())
            .collect();
        assert_eq!(keys.len(), 3, "each host has its own identity key");
        for (i, host) in bodies.iter().enumerate() {
            let request: EnrollRequest = serde_json::from_slice(&host.body).unwrap();
            assert_eq!(request.identity.macs, vec![host_mac(i)]);
            assert_eq!(request.csrs.len(), cert_names::ALL.len());
            for pem in request.csrs.values() {
                assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
                assert!(all.insert(pem.clone()), "a csr repeats");
            }
        }
        let one: EnrollRequest =
            serde_json::from_slice(&enroll_body(9, CsrSet::Kubelet).unwrap()).unwrap();
        assert_eq!(
            one.csrs.keys().collect::<Vec<_>>(),
            vec![cert_names::KUBELET_CLIENT]
        );
    }

    #[test]
    fn trust_needs_a_certificate() {
        assert!(matches!(
            seed_trust(b"not a pem"),
            Err(EnrollLoadError::Ca(_))
        ));
    }
}
