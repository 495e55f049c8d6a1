//! The seed's security rules: what workers never get, what unknown hosts get, who reaches admin
//! routes, and whose decision names a certificate.

mod support;

use axum::http::StatusCode;
use serde_json::json;
use support::seed::*;

/// CA keys and admin credentials, by path and by content.
fn assert_no_cluster_secrets(answer: &Answer, ca_keys: &[String]) {
    for file in answer.json["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        for forbidden in [
            "ca.key",
            "sa.key",
            "admin.conf",
            "super-admin.conf",
            "controller-manager.conf",
            "scheduler.conf",
        ] {
            assert!(!path.ends_with(forbidden), "a worker got {path}");
        }
        let text = file["source"]["text"].as_str().unwrap_or("");
        for key in ca_keys {
            assert!(
                !text.contains(key.trim()),
                "a worker got a CA key inside {path}"
            );
        }
        assert!(
            !text.contains("system:masters"),
            "a worker got an admin credential in {path}"
        );
    }
}

#[tokio::test]
async fn a_worker_never_holds_a_ca_key_or_admin_kubeconfig() {
    let (_dir, seed, app) = open(&one_master());
    let ca_keys: Vec<String> = seed
        .cas
        .to_files()
        .into_iter()
        .filter(|(name, _)| name.ends_with(".key"))
        .map(|(_, pem)| pem)
        .collect();
    assert_eq!(ca_keys.len(), 4);
    let token = make_token(&app, &seed.admin_token, json!({"ttl_secs": 60})).await;
    let inventory_worker = enroll(&app, "52:54:00:00:00:04", None).await;
    let token_worker = enroll(&app, "52:54:00:00:00:44", Some(&token)).await;
    for worker in [&inventory_worker, &token_worker] {
        assert_eq!(worker.status, StatusCode::OK, "{}", worker.text);
        assert_eq!(worker.json["role"], "worker");
        assert_no_cluster_secrets(worker, &ca_keys);
    }
    // The master does get them: the check above is not vacuous.
    let master = enroll(&app, "52:54:00:00:00:01", None).await;
    let paths = plan_paths(&master);
    assert!(
        paths.iter().any(|p| p.ends_with("/pki/ca.key")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.ends_with("/admin.conf")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn an_unknown_host_gets_only_pending() {
    let (_dir, seed, app) = open(&one_master());
    let mut body = enroll_body("52:54:00:00:00:66", None);
    body["csrs"] = json!({"kubelet-client": csr("system:node:evil")});
    // The admin credential is no host credential: offered on a host route, it changes nothing.
    let answer = send(
        &app,
        request("POST", "/v1/enroll", Some(&body), Some(&seed.admin_token)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let mut keys: Vec<&str> = answer
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["host_id", "message", "retry_after_secs", "status"],
        "{}",
        answer.text
    );
    assert_eq!(answer.json["status"], "pending");
}

#[tokio::test]
async fn hosts_cannot_reach_admin_routes() {
    let (_dir, seed, app) = open(&one_master());
    let token = make_token(&app, &seed.admin_token, json!({"ttl_secs": 60})).await;
    let enrolled = enroll(&app, "52:54:00:00:00:44", Some(&token)).await;
    let id = enrolled.json["host_id"].as_str().unwrap().to_string();
    let routes = [
        ("GET", "/v1/admin/hosts".to_string()),
        ("POST", format!("/v1/admin/hosts/{id}/approve")),
        ("DELETE", format!("/v1/admin/hosts/{id}")),
        ("POST", "/v1/admin/tokens".to_string()),
        ("GET", "/v1/admin/jobs/j-0001".to_string()),
        ("GET", "/v1/admin/jobs".to_string()),
        ("GET", "/v1/admin/certs".to_string()),
        ("POST", format!("/v1/admin/hosts/{id}/commands")),
        ("GET", format!("/v1/admin/hosts/{id}/commands")),
        ("GET", format!("/v1/admin/hosts/{id}/commands/c-0001")),
        ("POST", "/v1/admin/jobs/j-0001/cancel".to_string()),
        ("POST", "/v1/admin/jobs/j-0001/resume".to_string()),
    ];
    for (method, path) in &routes {
        // No credential, the host's join token, or a made-up one.
        for (bearer, code) in [
            (None, "unauthorized"),
            (Some(token.as_str()), "forbidden"),
            (Some("x"), "forbidden"),
        ] {
            let answer = send(
                &app,
                request(method, path, Some(&json!({"ttl_secs": 60})), bearer),
            )
            .await;
            assert_eq!(
                answer.code(),
                code,
                "{method} {path} with {bearer:?}: {}",
                answer.text
            );
        }
    }
    let hosts = send(
        &app,
        request("GET", "/v1/admin/hosts", None, Some(&seed.admin_token)),
    )
    .await;
    assert_eq!(
        hosts.json["hosts"].as_array().unwrap().len(),
        1,
        "the host is still there"
    );
}

#[tokio::test]
async fn a_certificate_is_named_by_the_seed_not_the_csr() {
    let (_dir, _seed, app) = open(&one_master());
    let mut body = enroll_body("52:54:00:00:00:04", None);
    body["csrs"] = json!({"kubelet-client": csr("system:admin")});
    let answer = send(&app, request("POST", "/v1/enroll", Some(&body), None)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let files = answer.json["files"].as_array().unwrap();
    let cert = files
        .iter()
        .find(|f| f["path"] == "/var/lib/kubelet/pki/kubelet-client.crt")
        .expect("the kubelet's certificate");
    let key = files
        .iter()
        .find(|f| f["path"] == "/var/lib/kubelet/pki/kubelet-client.key")
        .expect("the kubelet's key file");
    assert_eq!(
        key["source"],
        json!({"kind": "host_key", "name": "kubelet-client"})
    );
    let pem = cert["source"]["text"].as_str().unwrap();
    let der = ::pem::parse(pem).unwrap().into_contents();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let subject = parsed.subject().to_string();
    assert!(subject.contains("CN=system:node:lab-w1"), "{subject}");
    assert!(subject.contains("O=system:nodes"), "{subject}");
    assert!(
        !subject.contains("system:admin") && !subject.contains("system:masters"),
        "{subject}"
    );
    let sans = parsed.subject_alternative_name().unwrap();
    assert!(sans.is_none_or(|s| !format!("{:?}", s.value).contains("evil.example")));
}
