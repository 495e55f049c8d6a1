//! What an attacker on the LAN can try against a real `launcher-seed serve`, one case per
//! finding: each gets its exact refusal or limit, the store is byte for byte unchanged, and the
//! seed still answers `/healthz` and a legitimate host's enrollment afterwards.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::seed::*;

const MASTER: &str = "52:54:00:00:00:01";
const WORKER: &str = "52:54:00:00:00:04";

/// An HTTPS client trusting the seed CA and presenting no identity key.
fn anonymous(state: &Path) -> reqwest::blocking::Client {
    let ca = std::fs::read(state.join("seed-ca.crt")).unwrap();
    reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The SHA-256 of the store file: equal before and after means nothing was written.
fn store_hash(state: &Path) -> String {
    support::images::sha256(&std::fs::read(state.join("state.redb")).unwrap())
}

/// Status and error code of an answer.
fn outcome(answer: reqwest::blocking::Response) -> (u16, String) {
    let status = answer.status().as_u16();
    let json: Value = answer.json().unwrap_or(Value::Null);
    (status, json["code"].as_str().unwrap_or("").to_string())
}

fn post(client: &reqwest::blocking::Client, url: &str, body: &Value) -> (u16, String) {
    outcome(client.post(url).json(body).send().unwrap())
}

/// One abuse: what is sent, and the status and code it must get.
struct Case {
    name: &'static str,
    send: Box<dyn Fn() -> (u16, String)>,
    status: u16,
    code: &'static str,
}

#[test]
fn every_abuse_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let state = dir.path().join("state");
    let server = Server::start(&cluster, &state, "127.0.0.1:0");
    let url = server.url();
    let enroll_url = format!("{url}/v1/enroll");

    // The legitimate hosts: the inventory master and worker, and a token host.
    let master = server.host_client(MASTER);
    let (status, _) = post(&master, &enroll_url, &enroll_body(MASTER, None));
    assert_eq!(status, 200);
    let worker = server.host_client(WORKER);
    assert_eq!(
        post(&worker, &enroll_url, &enroll_body(WORKER, None)).0,
        200
    );
    let state_dir = state.to_str().unwrap().to_string();
    let token = cli(&["tokens", "create", "--ttl", "1h", "--state-dir", &state_dir]);
    let tokened = server.host_client("52:54:00:00:00:31");
    let answer: Value = tokened
        .post(&enroll_url)
        .json(&enroll_body("52:54:00:00:00:31", Some(token.trim())))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["status"], "enrolled", "{answer}");
    let master_id = "h-0001";

    let stranger = server.host_client("an attacker");
    let anon = anonymous(&state);
    let progress = |id: &str| format!("{url}/v1/hosts/{id}/progress");
    let report = json!({"phase": "identify", "state": "started", "at_unix_ms": 1});
    let many_macs: Vec<String> = (0..31).map(|i| format!("52:54:00:aa:00:{i:02x}")).collect();
    let too_many: Vec<String> = (0..33).map(|i| format!("52:54:00:bb:00:{i:02x}")).collect();

    let cases: Vec<Case> = vec![
        Case {
            name: "a master's MAC without an identity key",
            send: Box::new({
                let (anon, u) = (anon.clone(), enroll_url.clone());
                move || post(&anon, &u, &enroll_body(MASTER, None))
            }),
            status: 401,
            code: "identity_required",
        },
        Case {
            name: "a master's MAC with another key",
            send: Box::new({
                let (c, u) = (stranger.clone(), enroll_url.clone());
                move || post(&c, &u, &enroll_body(MASTER, None))
            }),
            status: 403,
            code: "identity_taken",
        },
        Case {
            name: "the same, again",
            send: Box::new({
                let (c, u) = (stranger.clone(), enroll_url.clone());
                move || post(&c, &u, &enroll_body(MASTER, None))
            }),
            status: 403,
            code: "identity_taken",
        },
        Case {
            name: "a master's MAC in upper case with spaces, another key",
            send: Box::new({
                let (c, u) = (stranger.clone(), enroll_url.clone());
                move || {
                    post(
                        &c,
                        &u,
                        &enroll_body(" 52:54:00:00:00:01 ".to_uppercase().as_str(), None),
                    )
                }
            }),
            status: 403,
            code: "identity_taken",
        },
        Case {
            name: "31 new MACs merged into a master's record by another key",
            send: Box::new({
                let (c, u, macs) = (stranger.clone(), enroll_url.clone(), many_macs.clone());
                move || {
                    let mut all = vec![MASTER.to_string()];
                    all.extend(macs.iter().cloned());
                    post(&c, &u, &json!({"identity": {"macs": all}}))
                }
            }),
            status: 403,
            code: "identity_taken",
        },
        Case {
            name: "more identifiers than a host may have, from the host itself",
            send: Box::new({
                let (c, u, macs) = (worker.clone(), enroll_url.clone(), too_many.clone());
                move || post(&c, &u, &json!({"identity": {"macs": macs}}))
            }),
            status: 400,
            code: "bad_request",
        },
        Case {
            name: "a token host's MAC, another key, no token",
            send: Box::new({
                let (c, u) = (stranger.clone(), enroll_url.clone());
                move || post(&c, &u, &enroll_body("52:54:00:00:00:31", None))
            }),
            status: 403,
            code: "identity_taken",
        },
        Case {
            name: "a forged progress report without a key",
            send: Box::new({
                let (c, u, r) = (anon.clone(), progress(master_id), report.clone());
                move || post(&c, &u, &r)
            }),
            status: 401,
            code: "identity_required",
        },
        Case {
            name: "a forged \"identify\" report for a master from another key",
            send: Box::new({
                let (c, u, r) = (stranger.clone(), progress(master_id), report.clone());
                move || post(&c, &u, &r)
            }),
            status: 403,
            code: "identity_taken",
        },
        Case {
            name: "a worker reporting as the master",
            send: Box::new({
                let (c, u, r) = (worker.clone(), progress(master_id), report.clone());
                move || post(&c, &u, &r)
            }),
            status: 403,
            code: "identity_taken",
        },
        Case {
            name: "progress for a host that does not exist",
            send: Box::new({
                let (c, u, r) = (stranger.clone(), progress("h-9999"), report.clone());
                move || post(&c, &u, &r)
            }),
            status: 404,
            code: "not_found",
        },
        Case {
            name: "an enrollment with an unknown field",
            send: Box::new({
                let (c, u) = (stranger.clone(), enroll_url.clone());
                move || {
                    post(
                        &c,
                        &u,
                        &json!({"identity": {"macs": [MASTER]}, "role": "master"}),
                    )
                }
            }),
            status: 400,
            code: "bad_request",
        },
        Case {
            name: "an enrollment body over the limit",
            send: Box::new({
                let (c, u) = (stranger.clone(), enroll_url.clone());
                move || {
                    let pad = "x".repeat(cluster::api::MAX_REQUEST_BYTES + 1);
                    post(&c, &u, &json!({"identity": {"macs": [pad]}}))
                }
            }),
            status: 413,
            code: "body_too_large",
        },
        Case {
            name: "an admin route with a host's key",
            send: Box::new({
                let (c, u) = (master.clone(), format!("{url}/v1/admin/hosts"));
                move || outcome(c.get(&u).send().unwrap())
            }),
            status: 401,
            code: "unauthorized",
        },
        Case {
            name: "a join token minted with a host's key",
            send: Box::new({
                let (c, u) = (master.clone(), format!("{url}/v1/admin/tokens"));
                move || post(&c, &u, &json!({"ttl_secs": 60}))
            }),
            status: 401,
            code: "unauthorized",
        },
    ];

    let tokens: Vec<String> = (0..cases.len())
        .map(|_| {
            let token = cli(&["tokens", "create", "--ttl", "1h", "--state-dir", &state_dir]);
            token.trim().to_string()
        })
        .collect();
    let hosts_before = cases.len();
    for (n, case) in cases.into_iter().enumerate() {
        let before = store_hash(&state);
        let (status, code) = (case.send)();
        assert_eq!(
            (status, code.as_str()),
            (case.status, case.code),
            "{}",
            case.name
        );
        assert_eq!(
            store_hash(&state),
            before,
            "{}: the store changed",
            case.name
        );
        let health = anon.get(format!("{url}/healthz")).send().unwrap();
        assert_eq!(health.status(), 200, "{}: /healthz", case.name);
        // A new machine with its join token is let in.
        let machine = format!("52:54:00:cc:00:{n:02x}");
        let legit = server.host_client(&machine);
        let (status, _) = post(
            &legit,
            &enroll_url,
            &enroll_body(&machine, Some(&tokens[n])),
        );
        assert_eq!(
            status, 200,
            "{}: a legitimate enrollment after it",
            case.name
        );
    }

    // A flood from one source: past the burst, 429 with Retry-After, and nothing written.
    let flooder = server.host_client("a flooder");
    let mut answers = Vec::new();
    for i in 0..12 {
        let before = store_hash(&state);
        let answer = flooder
            .post(&enroll_url)
            .json(&enroll_body(&format!("52:54:00:dd:00:{i:02x}"), None))
            .send()
            .unwrap();
        let retry_after = answer.headers().get("retry-after").cloned();
        let (status, code) = outcome(answer);
        if status == 429 {
            assert_eq!(code, "rate_limited");
            let secs: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&secs), "Retry-After {secs}");
            assert_eq!(store_hash(&state), before, "a refused flood request wrote");
        }
        answers.push(status);
    }
    assert_eq!(
        answers[..10],
        [202; 10],
        "the burst is answered: {answers:?}"
    );
    assert_eq!(answers[10..], [429, 429], "{answers:?}");
    let (status, _) = post(&master, &enroll_url, &enroll_body(MASTER, None));
    assert_eq!(status, 200, "the master is let in during the flood");

    // The operator sees every host once, each bound to its own key: the three, the machine
    // let in after each case, and the flooder's one pending record.
    let table = cli(&["hosts", "ls", "--json", "--state-dir", &state_dir]);
    let view: Value = serde_json::from_str(&table).unwrap();
    let hosts = view["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3 + hosts_before + 1, "{table}");
    for host in hosts {
        assert!(
            host["key"].as_str().unwrap().starts_with("sha256:"),
            "{host}"
        );
    }
    assert_eq!(hosts[0]["mac"], MASTER);
}
