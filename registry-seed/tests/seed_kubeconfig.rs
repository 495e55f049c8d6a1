//! `POST /v1/admin/kubeconfig` and `launcher-seed kubeconfig`: only the admin token gets an
//! operator's kubeconfig; it is aimed at the control-plane endpoint, its certificate chains to
//! the cluster CA with the user as CN and the administrators' group as O, expires when asked,
//! and the real kubectl reads it.

mod support;

use std::process::Command;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::seed::*;

const ROUTE: &str = "/v1/admin/kubeconfig";

#[tokio::test]
async fn only_the_admin_token_gets_one_and_bad_terms_are_refused() {
    let (_dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    let name_rule = "user must be 1 to 64 ASCII letters, digits, '.', '_', '-' or ':'";
    let group_rule = "group must be 1 to 64 ASCII letters, digits, '.', '_', '-' or ':'";
    let cases: Vec<(Option<&str>, Value, StatusCode, &str, &str)> = vec![
        (
            None,
            json!({"user": "alice"}),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin routes need the seed's admin token (Authorization: Bearer …)",
        ),
        (
            Some(&admin),
            json!({"user": "alice", "ttl_secs": 0}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "ttl_secs must be between 1 and 604800",
        ),
        (
            Some(&admin),
            json!({"user": "alice", "ttl_secs": 604_801}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "ttl_secs must be between 1 and 604800",
        ),
        (
            Some(&admin),
            json!({"user": ""}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            name_rule,
        ),
        (
            Some(&admin),
            json!({"user": "alice smith"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            name_rule,
        ),
        (
            Some(&admin),
            json!({"user": "alice", "group": "system:masters"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "group system:masters is not given out: RBAC cannot limit it; leave the group unset for the cluster administrators'",
        ),
        (
            Some(&admin),
            json!({"user": "system:node:w1", "group": "nodes/all"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            group_rule,
        ),
        (
            Some(&admin),
            json!({"user": "x".repeat(65)}),
            StatusCode::BAD_REQUEST,
            "bad_request",
            name_rule,
        ),
    ];
    for (bearer, body, status, code, message) in cases {
        let before = dump(&seed);
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
        assert!(answer.json.get("kubeconfig").is_none(), "{answer:?}");
        assert_eq!(dump(&seed), before, "{body}: the store changed");
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_cli_writes_a_kubeconfig_kubectl_reads_for_the_endpoint() {
    if !testkit::require(&["kubectl", "openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let state = dir.path().join("state");
    let _server = Server::start(&cluster, &state, "127.0.0.1:0");
    let out = dir.path().join("alice.conf");
    let sd = state.to_str().unwrap();
    cli(&[
        "kubeconfig",
        "--user",
        "alice",
        "--ttl",
        "2h",
        "--out",
        out.to_str().unwrap(),
        "--state-dir",
        sd,
    ]);
    let mode = std::fs::metadata(&out).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // Another identity, to check what it may do: a node's name in the nodes' group.
    let node = cli(&[
        "kubeconfig",
        "--user",
        "system:node:w1",
        "--group",
        "system:nodes",
        "--state-dir",
        sd,
    ]);
    let node_cert = node
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate-data: "))
        .expect("an embedded certificate");
    let node_pem = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(node_cert)
            .unwrap()
    };
    let node_crt = dir.path().join("node.crt");
    std::fs::write(&node_crt, node_pem).unwrap();
    let (_, subject) = run(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&node_crt));
    assert!(
        subject.contains("O = system:nodes") && subject.contains("CN = system:node:w1"),
        "{subject}"
    );
    let printed = cli(&["kubeconfig", "--user", "bob", "--state-dir", sd]);
    assert!(
        printed.contains("user: bob") || printed.contains("name: bob"),
        "{printed}"
    );

    let kubectl = |args: &[&str]| {
        run(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&out)
            .args(args))
    };
    let (ok, server) = kubectl(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    assert!(ok, "{server}");
    let spec = cluster::spec::ClusterSpec::parse("c.toml", &one_master())
        .unwrap()
        .spec;
    assert_eq!(server, format!("https://{}", spec.control_plane_endpoint));
    let (ok, user) = kubectl(&[
        "config",
        "view",
        "-o",
        "jsonpath={.contexts[0].context.user}",
    ]);
    assert!(ok && user == "alice", "{user}");

    // The certificate: the cluster CA's, CN alice, the administrators' group, two hours.
    let raw = |path: &str| {
        let (ok, b64) = kubectl(&["config", "view", "--raw", "-o", &format!("jsonpath={path}")]);
        assert!(ok, "{b64}");
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap()
    };
    let (ca, cert) = (dir.path().join("ca.crt"), dir.path().join("alice.crt"));
    std::fs::write(
        &ca,
        raw("{.clusters[0].cluster.certificate-authority-data}"),
    )
    .unwrap();
    std::fs::write(&cert, raw("{.users[0].user.client-certificate-data}")).unwrap();
    let (ok, text) = run(Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&ca)
        .arg(&cert));
    assert!(ok, "{text}");
    let (_, subject) = run(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&cert));
    assert!(
        subject.contains("O = kubeadm:cluster-admins") && subject.contains("CN = alice"),
        "{subject}"
    );
    let (ok, _) = run(Command::new("openssl")
        .args(["x509", "-noout", "-checkend", "7000", "-in"])
        .arg(&cert));
    assert!(ok, "expires within 7000 s");
    let (ok, _) = run(Command::new("openssl")
        .args(["x509", "-noout", "-checkend", "7400", "-in"])
        .arg(&cert));
    assert!(!ok, "still valid after 7400 s");
    // Nothing of it stays with the seed.
    let store = std::fs::read(state.join("state.redb")).unwrap();
    let der = raw("{.users[0].user.client-certificate-data}");
    let text = String::from_utf8_lossy(&der);
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!String::from_utf8_lossy(&store).contains(&body[..40]));
}
