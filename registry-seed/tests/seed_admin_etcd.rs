//! `POST /v1/admin/etcd-client` and `launcher-seed etcd-client`: only the admin token gets an etcd
//! client credential; it chains to the cluster's etcd CA, is for client authentication only,
//! expires when asked, is written nowhere by the seed, and a real etcd with client-certificate
//! authentication accepts it.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::http::StatusCode;
use cluster::pki::{Ca, CertProfile, KeyAlgorithm, SubjectKey};
use registry_seed::seed::Seed;
use serde_json::{Value, json};
use support::seed::*;
use testkit::ChildGuard;

const ROUTE: &str = "/v1/admin/etcd-client";

/// Runs `openssl ARGS` and returns (success, stdout + stderr).
fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Writes the credential of an answer as the CLI does, and returns the directory's files.
fn write_answer(dir: &Path, answer: &Value) -> (PathBuf, PathBuf, PathBuf) {
    let view = serde_json::from_value(answer.clone()).unwrap();
    let files = registry_seed::client::EtcdClientFiles::write(dir, &view).unwrap();
    (files.ca, files.cert, files.key)
}

/// The certificate chains to `ca`, is for client authentication only, matches `key`, and is
/// valid for about `ttl_secs` from now.
fn assert_client_credential(ca: &Path, cert: &Path, key: &Path, ttl_secs: u64) {
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let (ok, text) = openssl(&["verify", "-purpose", "sslclient", "-CAfile", ca, cert]);
    assert!(ok && text.contains(": OK"), "{text}");
    let (ok, text) = openssl(&["verify", "-purpose", "sslserver", "-CAfile", ca, cert]);
    assert!(!ok, "a client certificate must not serve: {text}");
    let (_, usage) = openssl(&["x509", "-in", cert, "-noout", "-ext", "extendedKeyUsage"]);
    assert!(usage.contains("TLS Web Client Authentication"), "{usage}");
    assert!(!usage.contains("Server"), "{usage}");
    let (_, from_cert) = openssl(&["x509", "-in", cert, "-noout", "-pubkey"]);
    let (_, from_key) = openssl(&["pkey", "-in", key, "-pubout"]);
    assert!(from_cert.contains("BEGIN PUBLIC KEY"), "{from_cert}");
    assert_eq!(
        from_cert, from_key,
        "the key does not match the certificate"
    );
    let still = (ttl_secs - 120).to_string();
    let (ok, text) = openssl(&["x509", "-in", cert, "-noout", "-checkend", &still]);
    assert!(ok, "expires before {still}s: {text}");
    let gone = (ttl_secs + 120).to_string();
    let (ok, text) = openssl(&["x509", "-in", cert, "-noout", "-checkend", &gone]);
    assert!(!ok, "still valid after {gone}s: {text}");
}

#[tokio::test]
async fn only_the_admin_token_gets_a_credential_and_bad_terms_are_refused() {
    let (_dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    let body = json!({});
    let cases: Vec<(Option<&str>, Value, StatusCode, &str, &str)> = vec![
        (
            None,
            body.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin routes need the seed's admin token (Authorization: Bearer …)",
        ),
        (
            Some("not-the-token"),
            body.clone(),
            StatusCode::FORBIDDEN,
            "forbidden",
            "this is not the admin token",
        ),
        (
            Some(&admin),
            json!({"ttl_secs": 604_801}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "ttl_secs must be between 1 and 604800",
        ),
        (
            Some(&admin),
            json!({"ttl_secs": 0}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "ttl_secs must be between 1 and 604800",
        ),
        (
            Some(&admin),
            json!({"holder": "a b"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "holder must be 1 to 64 ASCII letters, digits, '.', '_' or '-'",
        ),
        (
            Some(&admin),
            json!({"holder": ""}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "holder must be 1 to 64 ASCII letters, digits, '.', '_' or '-'",
        ),
        (
            Some(&admin),
            json!({"holder": "x".repeat(65)}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "holder must be 1 to 64 ASCII letters, digits, '.', '_' or '-'",
        ),
    ];
    for (bearer, body, status, code, message) in cases {
        let answer = send(&app, request("POST", ROUTE, Some(&body), bearer)).await;
        assert_eq!(
            (
                answer.status,
                answer.code(),
                answer.json["message"].as_str()
            ),
            (status, code, Some(message)),
            "{bearer:?} {body}: {answer:?}"
        );
        assert!(answer.json.get("key_pem").is_none(), "{answer:?}");
    }
    let unknown = send(
        &app,
        request("POST", ROUTE, Some(&json!({"ttl": 60})), Some(&admin)),
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    assert!(
        unknown.json["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `ttl`"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn a_good_call_answers_a_fresh_client_credential_and_writes_nothing() {
    if !testkit::require(&["openssl"]) {
        return;
    }
    let (dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    let before = support::snapshot(dir.path());

    let default = send(&app, request("POST", ROUTE, Some(&json!({})), Some(&admin))).await;
    assert_eq!(default.status, StatusCode::OK, "{default:?}");
    assert_eq!(default.json["common_name"], "admin-etcd-client:admin");
    assert_eq!(default.json["ca_pem"], seed.cas.etcd_ca.cert_pem());
    let out = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_answer(&out.path().join("default"), &default.json);
    assert_client_credential(&ca, &cert, &key, 24 * 3600);
    let (_, subject) = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-subject"]);
    assert!(
        subject.contains("CN = admin-etcd-client:admin"),
        "{subject}"
    );

    let asked = json!({"ttl_secs": 3600, "holder": "launcher-lab"});
    let short = send(&app, request("POST", ROUTE, Some(&asked), Some(&admin))).await;
    assert_eq!(short.status, StatusCode::OK, "{short:?}");
    assert_eq!(short.json["common_name"], "admin-etcd-client:launcher-lab");
    let (ca, cert, key) = write_answer(&out.path().join("short"), &short.json);
    assert_client_credential(&ca, &cert, &key, 3600);
    assert_ne!(
        default.json["key_pem"], short.json["key_pem"],
        "every answer has its own key"
    );

    assert_eq!(
        support::snapshot(dir.path()),
        before,
        "the seed's state directory changed"
    );
}

/// An etcd at 127.0.0.1 serving with a certificate of the cluster's etcd CA and asking every
/// client for a certificate of that CA.
fn start_etcd(seed: &Seed, dir: &Path) -> (ChildGuard, String) {
    let ip = "127.0.0.1".parse().unwrap();
    let issued = seed
        .cas
        .etcd_ca
        .issue(
            &CertProfile::etcd_server("m1", ip),
            SubjectKey::Fresh(seed.cas.key_algorithm()),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let path = |f: &str| dir.join(f).display().to_string();
    std::fs::write(dir.join("ca.crt"), seed.cas.etcd_ca.cert_pem()).unwrap();
    std::fs::write(dir.join("server.crt"), &issued.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), issued.key.unwrap().pem()).unwrap();
    let client = format!("https://127.0.0.1:{}", testkit::free_tcp_port());
    let peer = format!("http://127.0.0.1:{}", testkit::free_tcp_port());
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let mut cmd = Command::new(testkit::which("etcd").unwrap());
    cmd.arg("--name=m1")
        .arg(format!("--data-dir={}", path("data")))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=m1={peer}"))
        .arg("--client-cert-auth")
        .arg(format!("--trusted-ca-file={}", path("ca.crt")))
        .arg(format!("--cert-file={}", path("server.crt")))
        .arg(format!("--key-file={}", path("server.key")))
        .stdout(Stdio::null())
        .stderr(log);
    (ChildGuard::spawn("etcd", &mut cmd), client)
}

/// `etcdctl member list` against `endpoint` with the credential in `dir`.
fn member_list(endpoint: &str, dir: &Path) -> Result<String, String> {
    let out = Command::new(testkit::which("etcdctl").unwrap())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--cacert={}", dir.join("ca.crt").display()))
        .arg(format!("--cert={}", dir.join("client.crt").display()))
        .arg(format!("--key={}", dir.join("client.key").display()))
        .args(["--dial-timeout=3s", "--command-timeout=5s"])
        .args(["member", "list", "-w", "json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_cli_writes_a_credential_a_real_etcd_accepts() {
    if !testkit::require(&["etcd", "etcdctl", "openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let state = dir.path().join("state");
    let etcd_dir = dir.path().join("etcd");
    std::fs::create_dir_all(&etcd_dir).unwrap();
    // The test plays the masters: their etcd's certificate comes from the seed's etcd CA.
    let seed = Seed::open(spec(&one_master()), &state).unwrap();
    let (_etcd, endpoint) = start_etcd(&seed, &etcd_dir);
    drop(seed);
    let _server = Server::start(&cluster, &state, "127.0.0.1:0");

    let out = dir.path().join("client");
    let state_arg = state.to_str().unwrap();
    let printed = cli(&[
        "etcd-client",
        "--state-dir",
        state_arg,
        "--out",
        out.to_str().unwrap(),
        "--ttl",
        "2h",
        "--holder",
        "test",
    ]);
    assert!(printed.contains("CN admin-etcd-client:test"), "{printed}");
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join("client.key")), 0o600);
    assert_eq!(mode(&out.join("client.crt")), 0o644);
    assert_eq!(mode(&out.join("ca.crt")), 0o644);
    assert_client_credential(
        &out.join("ca.crt"),
        &out.join("client.crt"),
        &out.join("client.key"),
        2 * 3600,
    );

    let members = testkit::wait_for("etcd to answer", Duration::from_secs(60), || {
        member_list(&endpoint, &out).ok()
    });
    let json: Value = serde_json::from_str(&members).unwrap();
    assert_eq!(json["members"][0]["name"], "m1", "{members}");

    // A control: etcd does check client certificates, and refuses one of another CA.
    let stranger = dir.path().join("stranger");
    let other = Ca::generate(
        "other",
        KeyAlgorithm::EcdsaP256,
        time::OffsetDateTime::now_utc(),
    );
    let issued = other
        .unwrap()
        .issue(
            &registry_seed::membership::seed_client_profile(),
            SubjectKey::Fresh(KeyAlgorithm::EcdsaP256),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    std::fs::create_dir_all(&stranger).unwrap();
    std::fs::copy(out.join("ca.crt"), stranger.join("ca.crt")).unwrap();
    std::fs::write(stranger.join("client.crt"), &issued.cert_pem).unwrap();
    std::fs::write(stranger.join("client.key"), issued.key.unwrap().pem()).unwrap();
    assert!(member_list(&endpoint, &stranger).is_err());

    let long = Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
        .args([
            "etcd-client",
            "--state-dir",
            state_arg,
            "--ttl",
            "8d",
            "--out",
        ])
        .arg(dir.path().join("long"))
        .output()
        .unwrap();
    assert!(!long.status.success());
    let err = String::from_utf8_lossy(&long.stderr);
    assert!(
        err.contains("the seed refused: ttl_secs must be between 1 and 604800 (bad_request)"),
        "{err}"
    );
    assert!(!dir.path().join("long").exists());
}

#[test]
fn the_cli_explains_itself_and_needs_a_running_seed() {
    let help = cli(&["etcd-client", "--help"]);
    for words in [
        "--out",
        "--ttl",
        "client.key (0600)",
        "never stores",
        "at most 7d",
    ] {
        assert!(help.contains(words), "{words:?} missing from:\n{help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
        .args([
            "etcd-client",
            "--state-dir",
            "/nonexistent",
            "--out",
            "/tmp/x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/serve.addr"), "{err}");
}
