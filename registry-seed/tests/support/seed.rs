//! The seed's side of the test harness: cluster files, join tokens, an in-process seed and its
//! requests, and a `launcher-seed serve` process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use cluster::api::Role;
use cluster::pki::HostKeyId;
use cluster::spec::ClusterSpec;
use http_body_util::BodyExt;
use registry_seed::enroll::apply::token_hash;
use registry_seed::http::{ClientKey, PeerAddr};
use registry_seed::seed::Seed;
use registry_seed::store::records::TokenRecord;
use registry_seed::store::{Table, put_json, write_with};
use serde_json::{Value, json};
use sha2::Digest;
use testkit::fixtures::ClusterFile;
use tower::ServiceExt;

/// One inventory master (the first, with its address), one inventory worker; others come in by
/// token or approval.
pub fn one_master() -> String {
    ClusterFile {
        name: "lab".into(),
        schedulable_masters: true,
        ..ClusterFile::one_master("127.0.0.1:8443")
    }
    .render()
}

/// No inventory: `masters` hosts that come in first become masters.
pub fn auto_cluster(masters: u32) -> String {
    ClusterFile {
        name: "auto".into(),
        masters,
        schedulable_masters: true,
        seed: "127.0.0.1:8443".into(),
        ..ClusterFile::demo()
    }
    .render()
}

/// Puts join tokens straight into a seed's store, as `launcher-seed tokens create` would,
/// without expiry; each is `<id>.<secret>`.
pub fn put_tokens(seed: &Seed, tokens: &[String], role: Option<Role>) {
    write_with(&*seed.store, |tx| {
        for token in tokens {
            let record = TokenRecord {
                id: token.split_once('.').unwrap().0.to_string(),
                secret_sha256: token_hash(token),
                created_ms: 0,
                expires_ms: i64::MAX,
                role,
                used_by: None,
            };
            put_json(tx, Table::Tokens, &record.id, &record)?;
        }
        Ok(())
    })
    .unwrap();
}

pub fn spec(text: &str) -> ClusterSpec {
    ClusterSpec::parse("test.toml", text).unwrap().spec
}

/// A seed over a fresh state directory, and its router. Its etcd client is pointed at a
/// loopback port where no etcd listens, so that tests never send traffic to the spec's
/// addresses: etcd is simply unreachable.
pub fn open(text: &str) -> (tempfile::TempDir, Arc<Seed>, Router) {
    let dir = tempfile::tempdir().unwrap();
    let seed = Seed::open(spec(text), dir.path()).unwrap();
    let closed = format!("https://127.0.0.1:{}", testkit::free_tcp_port());
    let etcd = registry_seed::membership::EtcdApi::new(&seed.cas, vec![closed]).unwrap();
    let seed = Arc::new(seed.with_membership(Arc::new(etcd)));
    let app = registry_seed::http::app(seed.clone());
    (dir, seed, app)
}

/// An answer: status, JSON body (or `Value::Null`) and raw text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub json: Value,
    pub text: String,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

/// A request with an optional bearer token. An enrollment comes from its machine (named by its
/// first MAC, UUID or serial): that machine's identity key and address; anything else from
/// 10.77.0.99 with no key.
pub fn request(
    method: &str,
    path: &str,
    body: Option<&Value>,
    bearer: Option<&str>,
) -> Request<Body> {
    let json_body = body;
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = bearer {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(v) => {
            builder = builder.header("content-type", "application/json");
            Body::from(serde_json::to_vec(v).unwrap())
        }
        None => Body::empty(),
    };
    let machine = json_body.and_then(machine_of);
    let mut request = builder.body(body).unwrap();
    request
        .extensions_mut()
        .insert(PeerAddr("10.77.0.99:40000".parse().unwrap()));
    if let Some(machine) = machine {
        request
            .extensions_mut()
            .insert(ClientKey(host_key(&machine)));
        request
            .extensions_mut()
            .insert(PeerAddr(host_addr(&machine)));
    }
    request
}

/// The address the machine named `machine` sends from: one machine, one address.
pub fn host_addr(machine: &str) -> std::net::SocketAddr {
    let digest = sha2::Sha256::digest(machine.trim_matches('"').as_bytes());
    std::net::SocketAddr::from(([10, 200, digest[0], digest[1]], 40000))
}

/// What names the machine of an enrollment body: its first MAC, UUID or serial.
fn machine_of(body: &Value) -> Option<String> {
    let identity = body.get("identity")?;
    let first = identity["macs"]
        .get(0)
        .or(identity.get("product_uuid"))
        .or(identity.get("serial"));
    Some(first.map_or("none".to_string(), |v| v.to_string()))
}

/// The identity key of the machine named `machine` in these tests (as if its TLS client
/// certificate had proved it): one machine, one key.
pub fn host_key(machine: &str) -> HostKeyId {
    let digest = sha2::Sha256::digest(machine.trim_matches('"').as_bytes());
    format!("sha256:{}", hex::encode(digest)).parse().unwrap()
}

/// `request` sent by the machine `machine` (its identity key).
pub fn as_host(mut request: Request<Body>, machine: &str) -> Request<Body> {
    request
        .extensions_mut()
        .insert(ClientKey(host_key(machine)));
    request
}

pub fn enroll_body(mac: &str, token: Option<&str>) -> Value {
    let mut body = json!({"identity": {"macs": [mac]}});
    if let Some(token) = token {
        body["token"] = json!(token);
    }
    body
}

pub async fn enroll(app: &Router, mac: &str, token: Option<&str>) -> Answer {
    send(
        app,
        request("POST", "/v1/enroll", Some(&enroll_body(mac, token)), None),
    )
    .await
}

/// A PEM CSR for a fresh P-256 key asking for `cn`.
pub fn csr(cn: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// Polls an admin job until it ends; returns the job record.
pub async fn wait_job(app: &Router, admin: &str, accepted: &Answer) -> Value {
    let id = accepted.json["job"].as_str().expect("a job id").to_string();
    for _ in 0..200 {
        let job = send(
            app,
            request("GET", &format!("/v1/admin/jobs/{id}"), None, Some(admin)),
        )
        .await;
        let state = job.json["state"].as_str().unwrap_or("").to_string();
        if matches!(state.as_str(), "succeeded" | "failed" | "cancelled") {
            return job.json;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("job {id} did not end");
}

/// Makes a join token through the admin API.
pub async fn make_token(app: &Router, admin: &str, body: Value) -> String {
    let created = send(
        app,
        request("POST", "/v1/admin/tokens", Some(&body), Some(admin)),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    created.json["token"].as_str().unwrap().to_string()
}

/// Every file path of an enrolled answer's plan.
pub fn plan_paths(answer: &Answer) -> Vec<String> {
    answer.json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

/// A `launcher-seed serve` process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Server {
    pub guard: testkit::ChildGuard,
    pub addr: std::net::SocketAddr,
    pub ntp_addr: Option<std::net::SocketAddr>,
    pub state_dir: std::path::PathBuf,
}

impl Server {
    /// Starts the seed on `listen` (port 0 allowed) and waits until it serves.
    pub fn start(cluster: &std::path::Path, state_dir: &std::path::Path, listen: &str) -> Server {
        Server::start_with(cluster, state_dir, listen, &[])
    }

    /// Like [`Server::start`], with more `serve` arguments. These seeds' registries hold no
    /// images, so enrollment does not wait on them (`--allow-missing-images`).
    pub fn start_with(
        cluster: &std::path::Path,
        state_dir: &std::path::Path,
        listen: &str,
        extra: &[&str],
    ) -> Server {
        let args: Vec<&str> = ["--allow-missing-images"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Server::spawn(cluster, state_dir, listen, &args)
    }

    /// A seed as an operator starts it: enrollment waits while its registry lacks an image the
    /// cluster pulls.
    pub fn start_waiting_on_images(
        cluster: &std::path::Path,
        state_dir: &std::path::Path,
        listen: &str,
    ) -> Server {
        Server::spawn(cluster, state_dir, listen, &[])
    }

    fn spawn(
        cluster: &std::path::Path,
        state_dir: &std::path::Path,
        listen: &str,
        extra: &[&str],
    ) -> Server {
        let addr_file = state_dir.join("serve.addr");
        let _ = std::fs::remove_file(&addr_file);
        let _ = std::fs::remove_file(state_dir.join("ntp.addr"));
        std::fs::create_dir_all(state_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state_dir.join("seed.log"))
            .unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_launcher-seed"));
        cmd.args(["serve", "--cluster"])
            .arg(cluster)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--listen", listen, "--ntp-listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(log);
        let mut guard = testkit::ChildGuard::spawn("launcher-seed", &mut cmd);
        let addr = testkit::wait_for("the seed to listen", Duration::from_secs(60), || {
            assert!(
                guard.running(),
                "the seed exited; see {}",
                state_dir.join("seed.log").display()
            );
            std::fs::read_to_string(&addr_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        let ntp_addr = std::fs::read_to_string(state_dir.join("ntp.addr"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Server {
            guard,
            addr,
            ntp_addr,
            state_dir: state_dir.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A blocking HTTPS client of the machine named `machine`: it presents that machine's
    /// identity key and sends from that machine's own loopback address ([`loopback_of`]).
    pub fn host_client(&self, machine: &str) -> reqwest::blocking::Client {
        host_client(&self.state_dir, machine)
    }

    /// A blocking HTTPS client trusting only the seed's CA.
    pub fn client(&self) -> reqwest::blocking::Client {
        let ca = std::fs::read(self.state_dir.join("seed-ca.crt")).unwrap();
        reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }
}

/// Runs `launcher-seed ARGS` and returns its stdout, failing with its stderr.
pub fn cli(args: &[&str]) -> String {
    let out = super::succeed(Command::new(env!("CARGO_BIN_EXE_launcher-seed")).args(args));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `curl -sS --max-time 20 ARGS` and returns what it wrote to stdout and to stderr; a
/// transfer that fails fails the test (an HTTP error only with `--fail` among `args`).
pub fn curl(args: &[&str]) -> (String, String) {
    let out = super::succeed(
        Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args),
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` as `dir/cluster.toml` and returns its path.
pub fn cluster_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The MAC of the `i`th of many numbered hosts (up to 65536), in a block no lab machine uses.
pub fn numbered_mac(i: usize) -> String {
    format!("52:54:01:00:{:02x}:{:02x}", i / 256, i % 256)
}

/// A well-formed join token for the `i`th numbered host, distinct for each `i`.
pub fn numbered_token(i: usize) -> String {
    format!("t{i:05}.{:016x}", i * 7919)
}

/// Every entry of every table of a seed's store: what "nothing was written" is checked against.
pub fn dump(seed: &Seed) -> Vec<(String, String, Vec<u8>)> {
    registry_seed::store::read_with(&*seed.store, |tx| {
        let mut all = Vec::new();
        for table in Table::ALL {
            for (key, value) in tx.list(table)? {
                all.push((table.name().to_string(), key, value));
            }
        }
        Ok(all)
    })
    .unwrap()
}

/// The identity key of the machine named `machine`, made once per test process.
pub fn host_identity(machine: &str) -> cluster::pki::HostIdentityKey {
    static KEYS: std::sync::Mutex<
        Option<std::collections::HashMap<String, cluster::pki::HostIdentityKey>>,
    > = std::sync::Mutex::new(None);
    let mut keys = KEYS.lock().unwrap();
    keys.get_or_insert_with(Default::default)
        .entry(machine.to_string())
        .or_insert_with(|| cluster::pki::HostIdentityKey::generate().unwrap())
        .clone()
}

/// A loopback address of the machine's own (127.x.y.z), so that hosts outside the inventory,
/// which take the address they come from, each have theirs.
pub fn loopback_of(machine: &str) -> std::net::IpAddr {
    let digest = sha2::Sha256::digest(machine.as_bytes());
    std::net::IpAddr::from([127, digest[0] | 1, digest[1], digest[2] | 1])
}

/// Writes the machine's identity certificate and key into `dir` for curl's `--cert`/`--key`.
pub fn identity_files(dir: &Path, machine: &str) -> (PathBuf, PathBuf) {
    let identity = host_identity(machine);
    let (cert, key) = (dir.join("identity.crt"), dir.join("identity.key"));
    std::fs::write(&cert, identity.cert_pem).unwrap();
    std::fs::write(&key, identity.key_pem).unwrap();
    (cert, key)
}

/// [`Server::host_client`] for the seed whose state directory is `state_dir`.
pub fn host_client(state_dir: &Path, machine: &str) -> reqwest::blocking::Client {
    let ca = std::fs::read(state_dir.join("seed-ca.crt")).unwrap();
    let identity = host_identity(machine);
    let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
    reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .local_address(loopback_of(machine))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}
