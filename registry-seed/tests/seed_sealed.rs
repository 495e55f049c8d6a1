//! The cluster's CA keys are sealed at rest: a copy of `state.redb` holds no private key, the
//! seal key lives apart in `seal.key`, a seed without it refuses to start and changes nothing,
//! and a store an older seed left unsealed is sealed at the next start.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use registry_seed::seed::{STORE_FILE, Seed, read_admin_token};
use registry_seed::store::records::meta;
use registry_seed::store::{RedbStore, Table, put_json, write_with};
use serde_json::{Value, json};
use support::seed::{Server, cluster_file, one_master, spec};
use support::snapshot;

const MASTER_MAC: &str = "52:54:00:00:00:01";

/// Stops the seed as an operator's service manager would (SIGTERM) and waits for it.
fn stop(mut server: Server) {
    let pid = nix::unistd::Pid::from_raw(server.guard.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    testkit::wait_for("the seed to stop", Duration::from_secs(30), || {
        (!server.guard.running()).then_some(())
    });
}

fn enroll_master(server: &Server) -> Value {
    let answer = server
        .host_client(MASTER_MAC)
        .post(format!("{}/v1/enroll", server.url()))
        .json(&json!({"identity": {"macs": [MASTER_MAC]}}))
        .send()
        .unwrap();
    assert!(answer.status().is_success(), "{:?}", answer.status());
    let plan: Value = answer.json().unwrap();
    assert_eq!(plan["role"], "master", "{plan}");
    plan
}

fn file_text<'a>(plan: &'a Value, path: &str) -> &'a str {
    plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .and_then(|f| f["source"]["text"].as_str())
        .unwrap_or_else(|| panic!("the plan has no {path}"))
}

/// A one-time join token made through the admin API (answered once, stored as its hash).
fn make_token(server: &Server) -> String {
    let admin = read_admin_token(&server.state_dir).unwrap();
    let created: Value = server
        .client()
        .post(format!("{}/v1/admin/tokens", server.url()))
        .bearer_auth(&admin)
        .json(&json!({"ttl_secs": 3600}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    created["token"].as_str().unwrap().to_string()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Fails if `store` holds `key_pem` in any form: PEM, a line of its base64 body, or its DER.
fn assert_not_held(store: &[u8], what: &str, key_pem: &str) {
    let der = pem::parse(key_pem).unwrap().into_contents();
    assert!(!contains(store, &der), "the store holds {what} (DER)");
    let body = key_pem.lines().nth(1).unwrap();
    assert!(
        !contains(store, body.as_bytes()),
        "the store holds {what} (base64)"
    );
}

#[test]
fn a_copy_of_the_store_yields_no_private_key_and_the_seal_key_is_needed_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cluster = cluster_file(dir.path(), &one_master());
    let server = Server::start(&cluster, &state, "127.0.0.1:0");
    let plan = enroll_master(&server);
    let token = make_token(&server);
    stop(server);

    let store = std::fs::read(state.join(STORE_FILE)).unwrap();
    assert!(
        !contains(&store, b"PRIVATE KEY"),
        "the store holds a PEM key"
    );
    assert!(
        !contains(&store, token.as_bytes()),
        "the store holds the join token"
    );
    // Every key the seed handed the master, and every key of the CA set.
    for file in plan["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        if let (true, Some(text)) = (path.ends_with(".key"), file["source"]["text"].as_str()) {
            assert_not_held(&store, path, text);
        }
    }
    let seed = Seed::open(spec(&one_master()), &state).unwrap();
    assert_eq!(
        file_text(&plan, "/etc/kubernetes/pki/ca.key"),
        seed.cas.ca.key().pem()
    );
    for (name, pem) in seed.cas.to_files() {
        if name.ends_with(".key") {
            assert_not_held(&store, &name, &pem);
        }
    }
    drop(seed);

    let seal_key = state.join("seal.key");
    let meta = std::fs::metadata(&seal_key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);

    // Without seal.key the seed refuses to start, and leaves the state as it was.
    let backup = dir.path().join("seal.key.backup");
    std::fs::rename(&seal_key, &backup).unwrap();
    let before = snapshot(&state);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
        .args(["serve", "--cluster"])
        .arg(&cluster)
        .arg("--state-dir")
        .arg(&state)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "the store's CA keys are sealed with {}, which is missing; restore it from the backup \
         of this state directory",
        seal_key.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert_eq!(
        snapshot(&state),
        before,
        "a refused start changed the state"
    );

    // With the key restored, the seed starts with the same CA.
    std::fs::rename(&backup, &seal_key).unwrap();
    let server = Server::start(&cluster, &state, "127.0.0.1:0");
    let again = enroll_master(&server);
    assert_eq!(
        file_text(&again, "/etc/kubernetes/pki/ca.crt"),
        file_text(&plan, "/etc/kubernetes/pki/ca.crt")
    );
    stop(server);
}

#[test]
fn a_store_an_older_seed_left_unsealed_is_sealed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let algorithm = spec(&one_master()).key_algorithm;
    let old = cluster::pki::CaSet::generate(algorithm, time::OffsetDateTime::now_utc()).unwrap();
    {
        // What a seed before sealing kept: every file of the CA set in the clear.
        let store = RedbStore::open(&state.join(STORE_FILE)).unwrap();
        write_with(&store, |tx| {
            put_json(tx, Table::Meta, meta::CA_SET, &old.to_files())
        })
        .unwrap();
    }
    let held = |path: &Path| contains(&std::fs::read(path).unwrap(), b"PRIVATE KEY");
    assert!(held(&state.join(STORE_FILE)));

    let server = Server::start(&cluster, &state, "127.0.0.1:0");
    let plan = enroll_master(&server);
    stop(server);
    assert_eq!(
        file_text(&plan, "/etc/kubernetes/pki/ca.crt"),
        old.ca.cert_pem()
    );
    assert_eq!(
        file_text(&plan, "/etc/kubernetes/pki/ca.key"),
        old.ca.key().pem()
    );
    assert!(state.join("seal.key").is_file());
    assert!(
        !held(&state.join(STORE_FILE)),
        "the unsealed keys are still in the file"
    );
    let store = std::fs::read(state.join(STORE_FILE)).unwrap();
    for (name, pem) in old.to_files() {
        if name.ends_with(".key") {
            assert_not_held(&store, &name, &pem);
        }
    }
}
