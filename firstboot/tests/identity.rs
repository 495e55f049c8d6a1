//! The host's identity key against a stand-in for the seed's HTTPS side that asks for a client
//! certificate as the seed does and records the key of each request's: the key is made once,
//! presented on every request and kept across runs; a key file that does not parse stops the
//! run; `identity_taken` and `rate_limited` are waited out, `identity_required` is not.

mod common;

use clap::Parser;
use cluster::api::{EnrollRequest, Phase, codes};
use cluster::pki::{HostIdentityKey, HostKeyId, KeyAlgorithm};
use cluster::spec::SeedUrl;
use common::Host;
use firstboot::journal::Journal;
use firstboot::os::{ClientTls, Cmd, Os, OsError, RecordingOs};
use firstboot::seed::{NotYet, SeedClient, SeedError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted answer: status, `Retry-After` if any, and the error code of its JSON body.
#[derive(Clone, Copy)]
struct Reply(u16, Option<u64>, &'static str);

const TAKEN: Reply = Reply(409, None, codes::IDENTITY_TAKEN);
/// Ends a run: a code after which firstboot stops asking.
const STOP: Reply = Reply(403, None, codes::TOKEN_INVALID);

/// What the stand-in saw of one request: its path and the key of its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    path: String,
    key: Option<HostKeyId>,
}

/// The seed's HTTPS side as far as identity goes: its client-certificate request is the seed's
/// (`registry-seed/src/tls.rs`, `HostKeyVerifier`), its answers come from a script and, once
/// that is used up, are [`STOP`].
struct FakeSeed {
    url: String,
    pin: String,
    script: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeSeed {
    fn start() -> FakeSeed {
        let now = time::OffsetDateTime::now_utc();
        let ca = cluster::pki::seed_ca(KeyAlgorithm::EcdsaP256, now).unwrap();
        let ip = "127.0.0.1".parse().unwrap();
        let issued = cluster::pki::seed_server_cert(&ca, &[ip], &[], now).unwrap();
        let chain = vec![
            CertificateDer::from(issued.cert_der.clone()),
            CertificateDer::from(ca.cert_der().to_vec()),
        ];
        let key = PrivateKeyDer::from_pem_slice(issued.key.unwrap().pem().as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(Arc::new(AnyHostKey { provider }))
            .with_single_cert(chain, key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let seed = FakeSeed {
            url: format!("https://{}", listener.local_addr().unwrap()),
            pin: ca.spki_pin(),
            script: Arc::default(),
            seen: Arc::default(),
        };
        let (script, seen, config) = (seed.script.clone(), seed.seen.clone(), Arc::new(config));
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let Some(path) = read_request(&mut tls) else {
                    continue;
                };
                let key = tls
                    .conn
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| HostKeyId::of_cert_der(cert).unwrap());
                seen.lock().unwrap().push(Seen { path, key });
                let reply = script.lock().unwrap().pop_front().unwrap_or(STOP);
                let _ = write_reply(&mut tls, reply);
            }
        });
        seed
    }

    fn answer(&self, replies: &[Reply]) {
        *self.script.lock().unwrap() = replies.iter().copied().collect();
        self.seen.lock().unwrap().clear();
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The request line's path, after reading the head and the body; None if the client left.
fn read_request(tls: &mut impl Read) -> Option<String> {
    let mut reader = BufReader::new(tls);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(path)
}

fn write_reply(
    tls: &mut rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
    reply: Reply,
) -> std::io::Result<()> {
    let Reply(status, retry_after, code) = reply;
    let body = format!(r#"{{"code":"{code}","message":"scripted {code}"}}"#);
    let mut head = format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(secs) = retry_after {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    tls.write_all(format!("{head}\r\n{body}").as_bytes())?;
    tls.conn.send_close_notify();
    tls.flush()
}

/// Accepts any client certificate whose key the handshake proves, as the seed does.
#[derive(Debug)]
struct AnyHostKey {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for AnyHostKey {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The recording `Os`, with every sleep written down instead of slept.
struct Sleeps {
    os: RecordingOs,
    slept: Mutex<Vec<Duration>>,
}

impl Sleeps {
    fn new() -> Sleeps {
        Sleeps {
            os: RecordingOs::new(Duration::ZERO, false),
            slept: Mutex::default(),
        }
    }

    fn secs(&self) -> Vec<u64> {
        self.slept
            .lock()
            .unwrap()
            .iter()
            .map(Duration::as_secs)
            .collect()
    }
}

impl Os for Sleeps {
    fn now_unix_nanos(&self) -> i128 {
        self.os.now_unix_nanos()
    }
    fn step_clock(&self, to: i128) -> Result<(), OsError> {
        self.os.step_clock(to)
    }
    fn set_hostname(&self, name: &str) -> Result<(), OsError> {
        self.os.set_hostname(name)
    }
    fn run(&self, cmd: &Cmd) -> Result<String, OsError> {
        self.os.run(cmd)
    }
    fn mount(&self, s: &str, t: &str, fstype: Option<&str>, bind: bool) -> Result<(), OsError> {
        self.os.mount(s, t, fstype, bind)
    }
    fn sleep(&self, d: Duration) {
        self.slept.lock().unwrap().push(d);
    }
    fn probe_https(&self, url: &str, tls: &ClientTls) -> Result<String, OsError> {
        self.os.probe_https(url, tls)
    }
    fn kube_get(&self, kubeconfig: &std::path::Path, path: &str) -> Result<String, OsError> {
        self.os.kube_get(kubeconfig, path)
    }
}

/// A host whose identify and time phases are done, so that a run starts at enrollment.
fn host_at_enroll() -> Host {
    let host = Host::new(4);
    let journal = Journal {
        done: vec![Phase::Identify, Phase::Time],
        identity: Some(firstboot::identify::identify(host.root(), "").unwrap()),
        ..Default::default()
    };
    journal.save(host.root()).unwrap();
    host
}

/// Runs firstboot on `host` against `seed`: its exit status and closing line.
fn run(host: &Host, seed: &FakeSeed, os: &Sleeps) -> (i32, String) {
    let root = host.root().display().to_string();
    let argv = [
        "launcher-firstboot",
        "--root",
        &root,
        "--seed",
        &seed.url,
        "--pin",
        &seed.pin,
    ];
    let cli = firstboot::cli::Cli::try_parse_from(argv).unwrap();
    let mut out = Vec::new();
    let status = firstboot::cli::run_with(&cli, os, &mut out);
    (status, String::from_utf8(out).unwrap())
}

fn key_file(host: &Host) -> std::path::PathBuf {
    firstboot::hostkey::key_path(host.root())
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_key_is_made_once_presented_on_every_request_and_kept_across_runs() {
    let seed = FakeSeed::start();
    let host = host_at_enroll();
    let rate = |secs| Reply(429, Some(secs), codes::RATE_LIMITED);
    seed.answer(&[TAKEN, TAKEN, rate(7), rate(3600)]);
    let os = Sleeps::new();
    let (status, out) = run(&host, &seed, &os);
    assert_eq!(status, 1, "{out}");
    assert!(
        out.contains(&format!(
            "the seed at {} refused the enrollment: token_invalid: scripted token_invalid",
            seed.url
        )),
        "{out}"
    );
    // 30 s while the identity is taken; Retry-After obeyed, at most a minute.
    assert_eq!(os.secs(), [30, 30, 7, 60]);

    let path = key_file(&host);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let pem = std::fs::read_to_string(&path).unwrap();
    let id = HostIdentityKey::from_key_pem(&pem).unwrap().id().unwrap();
    let enroll = Seen {
        path: "/v1/enroll".into(),
        key: Some(id),
    };
    assert_eq!(seed.seen(), vec![enroll.clone(); 5]);

    seed.answer(&[]);
    let (status, out) = run(&host, &seed, &Sleeps::new());
    assert_eq!(status, 1, "{out}");
    assert_eq!(seed.seen(), vec![enroll], "the same key on the next run");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), pem);
}

#[test]
fn a_key_file_that_does_not_parse_stops_the_run_before_any_request() {
    let seed = FakeSeed::start();
    let host = host_at_enroll();
    let path = key_file(&host);
    host.put("var/lib/launcher/identity/key.pem", "not a key\n");
    let (status, out) = run(&host, &seed, &Sleeps::new());
    assert_eq!(status, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "launcher-firstboot: firstboot phase `start` failed: the identity key {} does not parse \
             (not a PEM private key: PEM error: malformedframing); \
             firstboot does not make a new one, since the seed refuses this host under another key: \
             restore the file, or move it away and run `launcher-seed hosts reset <host id>` on the seed\n  \
             tried: reading or making the host's identity key\n  check: the message above\n",
            path.display()
        )
    );
    assert_eq!(seed.seen(), vec![]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key\n");
}

#[test]
fn identity_required_stops_the_run() {
    let seed = FakeSeed::start();
    let host = host_at_enroll();
    seed.answer(&[Reply(401, None, codes::IDENTITY_REQUIRED)]);
    let os = Sleeps::new();
    let (status, out) = run(&host, &seed, &os);
    assert_eq!(status, 1, "{out}");
    assert!(
        out.contains(&format!(
            "firstboot phase `enroll` failed: the seed at {} says the request came without this host's identity key (scripted identity_required), yet firstboot presents it on every connection: this is a bug",
            seed.url
        )),
        "{out}"
    );
    assert_eq!(os.secs(), Vec::<u64>::new());
    assert_eq!(seed.seen().len(), 1);
}

#[test]
fn the_operator_hears_why_once_per_change() {
    let seed = FakeSeed::start();
    let rate = Reply(429, Some(1), codes::RATE_LIMITED);
    seed.answer(&[TAKEN, TAKEN, TAKEN, rate, TAKEN, TAKEN]);
    let identity = HostIdentityKey::generate().unwrap();
    let client = SeedClient::new(seed.pin.parse().unwrap(), &identity).unwrap();
    let seeds: Vec<SeedUrl> = vec![seed.url.parse().unwrap()];
    let req = EnrollRequest {
        identity: Default::default(),
        token: None,
        csrs: Default::default(),
        kubernetes_version: None,
    };
    let mut heard = Vec::new();
    let err = client
        .enroll(&Sleeps::new(), &seeds, &req, None, |n| {
            heard.push(n.clone())
        })
        .unwrap_err();
    assert!(matches!(err, SeedError::Refused { .. }), "{err}");
    let taken = NotYet::IdentityTaken {
        message: "scripted identity_taken".into(),
    };
    let rated = NotYet::RateLimited {
        retry_after: Some(Duration::from_secs(1)),
    };
    assert_eq!(heard, [taken.clone(), rated, taken]);
    let id = identity.id().unwrap();
    assert!(
        seed.seen().iter().all(|s| s.key == Some(id)),
        "{:?}",
        seed.seen()
    );
}
