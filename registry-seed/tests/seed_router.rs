//! In-process tests of every route of the seed's API and every error code it answers.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cluster::api::{self, EnrollResponse, codes};
use registry_seed::store::records::TokenRecord;
use registry_seed::store::{Table, put_json, write_with};
use serde_json::{Value, json};
use support::seed::*;

#[tokio::test]
async fn health_and_metrics_answer() {
    let (_dir, _seed, app) = open(&one_master());
    let health = send(&app, request("GET", "/healthz", None, None)).await;
    assert_eq!(
        (health.status, health.text.as_str()),
        (StatusCode::OK, "ok\n")
    );
    enroll(&app, "52:54:00:00:00:99", None).await;
    let metrics = send(&app, request("GET", "/metrics", None, None)).await;
    assert_eq!(metrics.status, StatusCode::OK);
    for line in [
        "launcher_seed_enrollments_total{result=\"pending\"} 1",
        "launcher_seed_request_duration_seconds_count",
        "# TYPE launcher_seed_errors_total counter",
    ] {
        assert!(
            metrics.text.contains(line),
            "{line} missing from\n{}",
            metrics.text
        );
    }
}

#[tokio::test]
async fn an_inventory_master_gets_a_sealed_plan_with_the_ca() {
    let (_dir, _seed, app) = open(&one_master());
    let answer = enroll(&app, "52:54:00:00:00:01", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let EnrollResponse::Enrolled(plan) = serde_json::from_value(answer.json.clone()).unwrap()
    else {
        panic!("not enrolled: {}", answer.text)
    };
    assert!(plan.verify());
    assert_eq!(
        (plan.hostname.as_str(), plan.role),
        ("lab-m1", api::Role::Master)
    );
    assert!(matches!(plan.install, api::InstallAction::Init { .. }));
    let etcd = plan.etcd.as_ref().unwrap();
    assert_eq!(
        (etcd.initial_cluster_state.as_str(), etcd.learner),
        ("new", false)
    );
    assert!(plan_paths(&answer).contains(&"/etc/kubernetes/pki/ca.key".to_string()));
}

#[tokio::test]
async fn enrolling_again_gives_the_same_host_role_and_name() {
    let (_dir, _seed, app) = open(&one_master());
    let first = enroll(&app, "52:54:00:00:00:04", None).await;
    let again = enroll(&app, "52:54:00:00:00:04", None).await;
    for key in ["host_id", "hostname", "role", "ip"] {
        assert_eq!(first.json[key], again.json[key], "{key}");
    }
    assert_eq!(first.json["hostname"], "lab-w1");
}

/// Every error code a host or an operator can meet, each with its status.
#[tokio::test]
async fn every_error_code_has_its_status_and_shape() {
    let (_dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    // Fixtures: a used token, an expired one, two enrolled hosts for a conflict.
    let used = make_token(&app, &admin, json!({"ttl_secs": 600})).await;
    assert_eq!(
        enroll(&app, "52:54:00:00:00:51", Some(&used)).await.status,
        StatusCode::OK
    );
    write_with(&*seed.store, |tx| {
        let record = TokenRecord {
            id: "expire".into(),
            secret_sha256: registry_seed::enroll::apply::token_hash("expire.0123456789abcdef"),
            created_ms: 0,
            expires_ms: 1,
            role: None,
            used_by: None,
        };
        put_json(tx, Table::Tokens, "expire", &record)
    })
    .unwrap();
    let master_token = make_token(&app, &admin, json!({"ttl_secs": 600, "role": "master"})).await;
    let huge = "x".repeat(api::MAX_REQUEST_BYTES + 1);
    let mut with_csr = enroll_body("52:54:00:00:00:04", None);
    with_csr["csrs"] = json!({"kubelet-client": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"});
    let mut unknown_csr = enroll_body("52:54:00:00:00:04", None);
    unknown_csr["csrs"] = json!({"root-ca": csr("x")});
    // A new machine claiming the MACs of two hosts; another claiming the master's MAC.
    let conflict = json!({"identity": {"macs": ["52:54:00:00:00:99", "52:54:00:00:00:01", "52:54:00:00:00:51"]}});
    let taken = json!({"identity": {"macs": ["52:54:00:00:00:98", "52:54:00:00:00:01"]}});
    assert_eq!(
        enroll(&app, "52:54:00:00:00:01", None).await.status,
        StatusCode::OK
    );

    let progress = json!({"phase": "time", "state": "started", "at_unix_ms": 1});
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<serde_json::Value>,
        Option<&'a str>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/enroll",
            Some(json!({"identity": {"macs": ["zz"]}})),
            None,
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(json!({"identity": {"macs": []}, "extra": 1})),
            None,
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(json!({"identity": {"macs": []}})),
            None,
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(json!(huge)),
            None,
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::BODY_TOO_LARGE,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(enroll_body(
                "52:54:00:00:00:61",
                Some("nosuch.0123456789abcdef"),
            )),
            None,
            StatusCode::UNAUTHORIZED,
            codes::TOKEN_INVALID,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(enroll_body(
                "52:54:00:00:00:61",
                Some(&format!("{}x", &used)),
            )),
            None,
            StatusCode::UNAUTHORIZED,
            codes::TOKEN_INVALID,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(enroll_body(
                "52:54:00:00:00:61",
                Some("expire.0123456789abcdef"),
            )),
            None,
            StatusCode::UNAUTHORIZED,
            codes::TOKEN_EXPIRED,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(enroll_body("52:54:00:00:00:61", Some(&used))),
            None,
            StatusCode::CONFLICT,
            codes::TOKEN_USED,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(conflict),
            None,
            StatusCode::CONFLICT,
            codes::IDENTITY_CONFLICT,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(taken),
            None,
            StatusCode::FORBIDDEN,
            codes::IDENTITY_TAKEN,
        ),
        // Progress is sent below with the master's key: h-0001 is the token host.
        (
            "POST",
            "/v1/hosts/h-0001/progress",
            Some(progress.clone()),
            None,
            StatusCode::FORBIDDEN,
            codes::IDENTITY_TAKEN,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(with_csr),
            None,
            StatusCode::BAD_REQUEST,
            codes::BAD_CSR,
        ),
        (
            "POST",
            "/v1/enroll",
            Some(unknown_csr),
            None,
            StatusCode::BAD_REQUEST,
            codes::BAD_CSR,
        ),
        // A second master joins a running etcd; while etcd cannot be reached the seed says busy.
        (
            "POST",
            "/v1/enroll",
            Some(enroll_body("52:54:00:00:00:71", Some(&master_token))),
            None,
            StatusCode::SERVICE_UNAVAILABLE,
            codes::BUSY,
        ),
        (
            "POST",
            "/v1/hosts/h-9999/progress",
            Some(progress.clone()),
            None,
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
        ),
        (
            "POST",
            "/v1/hosts/h-0001/progress",
            Some(json!({"phase": "warp"})),
            None,
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/enroll",
            None,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            codes::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/nothing",
            None,
            None,
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
        ),
        (
            "GET",
            "/v1/admin/hosts",
            None,
            None,
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
        ),
        (
            "GET",
            "/v1/admin/hosts",
            None,
            Some("not-the-token"),
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
        ),
        (
            "POST",
            "/v1/admin/hosts/h-9999/approve",
            None,
            Some(admin.as_str()),
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
        ),
        (
            "DELETE",
            "/v1/admin/hosts/h-9999",
            None,
            Some(admin.as_str()),
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
        ),
        (
            "GET",
            "/v1/admin/jobs/j-9999",
            None,
            Some(admin.as_str()),
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
        ),
        (
            "GET",
            "/v1/admin/jobs?state=done",
            None,
            Some(admin.as_str()),
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/admin/jobs?kind=remove_host",
            None,
            Some(admin.as_str()),
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/admin/tokens",
            Some(json!({"ttl_secs": 0})),
            Some(admin.as_str()),
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/admin/tokens",
            Some(json!({"ttl": 5})),
            Some(admin.as_str()),
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
        ),
        (
            "POST",
            "/v1/admin/clusters",
            Some(json!({})),
            Some(admin.as_str()),
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
        ),
    ];
    for (method, path, body, bearer, status, code) in cases {
        let mut req = request(method, path, body.as_ref(), bearer);
        if path.ends_with("/progress") {
            req = as_host(req, "52:54:00:00:00:01");
        }
        let answer = send(&app, req).await;
        let what = format!(
            "{method} {path} {}",
            body.map(|b| b.to_string().chars().take(120).collect::<String>())
                .unwrap_or_default()
        );
        assert_eq!(answer.status, status, "{what}: {}", answer.text);
        assert_eq!(answer.code(), code, "{what}: {}", answer.text);
        assert!(
            !answer.json["message"].as_str().unwrap_or("").is_empty(),
            "{what}"
        );
    }
    // A full waiting room: an unknown host is refused rather than recorded.
    write_with(&*seed.store, |tx| {
        let mut counters = registry_seed::enroll::apply::counters(&*tx)?;
        counters.waiting = registry_seed::enroll::decide::MAX_WAITING;
        put_json(tx, Table::Meta, "counters", &counters)
    })
    .unwrap();
    let full = enroll(&app, "52:54:00:00:00:91", None).await;
    assert_eq!(
        (full.status, full.code()),
        (StatusCode::CONFLICT, codes::NO_CAPACITY),
        "{}",
        full.text
    );

    let metrics = send(&app, request("GET", "/metrics", None, None)).await;
    assert!(
        metrics
            .text
            .contains("launcher_seed_errors_total{code=\"token_used\"} 1"),
        "{}",
        metrics.text
    );
}

#[tokio::test]
async fn refused_enrollments_write_nothing() {
    let (_dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    for token in ["nosuch.0123456789abcdef", "no-dot"] {
        let answer = enroll(&app, "52:54:00:00:00:61", Some(token)).await;
        assert_eq!(answer.code(), codes::TOKEN_INVALID);
    }
    let hosts = send(&app, request("GET", "/v1/admin/hosts", None, Some(&admin))).await;
    assert_eq!(hosts.json["hosts"], json!([]), "{}", hosts.text);
}

/// Enrolls the worker, posts `report` as its progress, and returns the worker's id and its row
/// of the admin host list.
async fn report_and_list(report: Value) -> (String, Value) {
    let (_dir, seed, app) = open(&one_master());
    let enrolled = enroll(&app, "52:54:00:00:00:04", None).await;
    let id = enrolled.json["host_id"].as_str().unwrap().to_string();
    let path = format!("/v1/hosts/{id}/progress");
    let post = request("POST", &path, Some(&report), None);
    let answer = send(&app, as_host(post, "52:54:00:00:00:04")).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    let hosts = send(
        &app,
        request("GET", "/v1/admin/hosts", None, Some(&seed.admin_token)),
    )
    .await;
    (id, hosts.json["hosts"][0].clone())
}

#[tokio::test]
async fn progress_is_stored_and_shown_in_the_host_list() {
    let report = json!({"phase": "preload", "state": "failed", "message": "ctr import failed", "at_unix_ms": 5});
    let (id, host) = report_and_list(report).await;
    assert_eq!(host["id"], id);
    assert_eq!(host["hostname"], "lab-w1");
    assert_eq!(host["phase"], "preload");
    assert_eq!(host["state"], "failed");
    assert_eq!(host["message"], "ctr import failed");
    assert_eq!(host["mac"], "52:54:00:00:00:04");
}

#[tokio::test]
async fn progress_text_reaches_the_operator_without_terminal_controls() {
    // Clear the screen, set the window title, ring the bell: none of it may reach `status`.
    let message = "\u{1b}[2J\u{1b}]0;owned\u{7}etcd down\r\nsee journal";
    let report = json!({"phase": "etcd", "state": "failed", "message": message, "at_unix_ms": 5});
    let (_, host) = report_and_list(report).await;
    assert_eq!(host["message"], "[2J]0;ownedetcd down\nsee journal");
}

#[tokio::test]
async fn a_pending_host_is_let_in_after_approval() {
    let (_dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    let first = enroll(&app, "52:54:00:00:00:77", None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.json["status"], "pending");
    let id = first.json["host_id"].as_str().unwrap().to_string();
    let again = enroll(&app, "52:54:00:00:00:77", None).await;
    assert_eq!(
        again.json["host_id"],
        id.as_str(),
        "a pending host keeps its id"
    );
    let accepted = send(
        &app,
        request(
            "POST",
            &format!("/v1/admin/hosts/{id}/approve"),
            None,
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let job = wait_job(&app, &admin, &accepted).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let enrolled = enroll(&app, "52:54:00:00:00:77", None).await;
    assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.text);
    assert_eq!(
        (
            enrolled.json["host_id"].as_str(),
            enrolled.json["role"].as_str()
        ),
        (Some(id.as_str()), Some("worker"))
    );
    assert_eq!(
        enrolled.json["ip"],
        host_addr("52:54:00:00:00:77").ip().to_string(),
        "a host outside the inventory gets its address"
    );
}

#[tokio::test]
async fn removing_a_worker_forgets_it() {
    let (_dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    let token = make_token(&app, &admin, json!({"ttl_secs": 60})).await;
    let enrolled = enroll(&app, "52:54:00:00:00:81", Some(&token)).await;
    let id = enrolled.json["host_id"].as_str().unwrap().to_string();
    let accepted = send(
        &app,
        request(
            "DELETE",
            &format!("/v1/admin/hosts/{id}"),
            None,
            Some(&admin),
        ),
    )
    .await;
    let job = wait_job(&app, &admin, &accepted).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let hosts = send(&app, request("GET", "/v1/admin/hosts", None, Some(&admin))).await;
    assert_eq!(hosts.json["hosts"], json!([]));
    // The same machine, by its old identity key, is refused, and nothing is recorded.
    let before = dump(&seed);
    let back = enroll(&app, "52:54:00:00:00:81", Some(&token)).await;
    assert_eq!(
        (back.status, back.code()),
        (StatusCode::FORBIDDEN, codes::HOST_REMOVED),
        "{}",
        back.text
    );
    assert_eq!(
        back.json["message"],
        format!(
            "this machine's identity key belonged to host {id}, which an operator removed from the cluster: it comes back only as a new machine, with a new key (its data disk wiped, e.g. booted once with launcher.wipe=1)"
        )
    );
    assert_eq!(dump(&seed), before);
    // Wiped, with a new key, it is unknown again: without a token or approval only pending.
    let wiped = as_host(
        request(
            "POST",
            "/v1/enroll",
            Some(&enroll_body("52:54:00:00:00:81", None)),
            None,
        ),
        "the same machine, wiped",
    );
    let back = send(&app, wiped).await;
    assert_eq!(back.json["status"], "pending", "{}", back.text);
    assert_ne!(back.json["host_id"], id.as_str());
}

#[tokio::test]
async fn removing_an_etcd_master_while_etcd_is_unreachable_fails_and_keeps_it() {
    let (_dir, seed, app) = open(&auto_cluster(2));
    let admin = seed.admin_token.clone();
    put_tokens(&seed, &[numbered_token(0), numbered_token(1)], None);
    // The two bootstrap masters are told to come back until both are known.
    let mut ids = [String::new(), String::new()];
    for _round in 0..3 {
        for (i, id) in ids.iter_mut().enumerate() {
            let answer = enroll(&app, &numbered_mac(i), Some(&numbered_token(i))).await;
            if answer.status == StatusCode::OK {
                *id = answer.json["host_id"].as_str().unwrap().to_string();
            }
        }
    }
    assert!(ids.iter().all(|id| !id.is_empty()), "{ids:?}");
    let id = &ids[0];
    // Nothing the host reports matters: the seed gave it a master's plan.
    let accepted = send(
        &app,
        request(
            "DELETE",
            &format!("/v1/admin/hosts/{id}?force=true"),
            None,
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let job = wait_job(&app, &admin, &accepted).await;
    assert_eq!(job["state"], "failed", "{job}");
    let message = job["message"].as_str().unwrap();
    assert!(
        message.starts_with("step leave_etcd: removing etcd member auto-m1: "),
        "{job}"
    );
    assert_eq!(job["steps"][0]["state"], "failed", "{job}");
    assert_eq!(job["steps"][1]["state"], "pending", "{job}");
    let hosts = send(&app, request("GET", "/v1/admin/hosts", None, Some(&admin))).await;
    assert_eq!(hosts.json["hosts"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_body_declared_too_large_is_refused_before_reading() {
    let (_dir, _seed, app) = open(&one_master());
    let request = Request::builder()
        .method("POST")
        .uri("/v1/enroll")
        .header("content-length", (api::MAX_REQUEST_BYTES + 10).to_string())
        .body(Body::from(vec![b' '; api::MAX_REQUEST_BYTES + 10]))
        .unwrap();
    let answer = send(&app, request).await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, codes::BODY_TOO_LARGE)
    );
}

/// Posts a progress report for host `id` from `machine`'s key.
async fn report(app: &axum::Router, id: &str, machine: &str, phase: &str) -> Answer {
    let body = json!({"phase": phase, "state": "started", "message": phase, "at_unix_ms": 5});
    let path = format!("/v1/hosts/{id}/progress");
    send(
        app,
        as_host(request("POST", &path, Some(&body), None), machine),
    )
    .await
}

#[tokio::test]
async fn a_request_without_an_identity_key_is_refused_and_writes_nothing() {
    let (_dir, seed, app) = open(&one_master());
    let before = dump(&seed);
    let mut req = request(
        "POST",
        "/v1/enroll",
        Some(&enroll_body("52:54:00:00:00:01", None)),
        None,
    );
    req.extensions_mut()
        .remove::<registry_seed::http::ClientKey>();
    let answer = send(&app, req).await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::UNAUTHORIZED, codes::IDENTITY_REQUIRED),
        "{}",
        answer.text
    );
    let body = json!({"phase": "time", "state": "started", "at_unix_ms": 1});
    let answer = send(
        &app,
        request("POST", "/v1/hosts/h-0001/progress", Some(&body), None),
    )
    .await;
    assert_eq!(answer.code(), codes::IDENTITY_REQUIRED, "{}", answer.text);
    assert_eq!(dump(&seed), before);
}

#[tokio::test]
async fn a_bound_host_is_refused_to_other_keys_until_an_operator_resets_it() {
    let (_dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    let first = enroll(&app, "52:54:00:00:00:01", None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let id = first.json["host_id"].as_str().unwrap().to_string();
    assert_eq!(
        report(&app, &id, "52:54:00:00:00:01", "materialize")
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    // The same machine with a new key (a blanked disk): refused, and its record unchanged.
    let before = dump(&seed);
    let blank = as_host(
        request(
            "POST",
            "/v1/enroll",
            Some(&enroll_body("52:54:00:00:00:01", None)),
            None,
        ),
        "a blanked disk",
    );
    let refused = send(&app, blank).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, codes::IDENTITY_TAKEN),
        "{}",
        refused.text
    );
    assert!(
        refused.json["message"]
            .as_str()
            .unwrap()
            .contains(&format!("hosts reset {id}"))
    );
    let forged = report(&app, &id, "a blanked disk", "identify").await;
    assert_eq!(forged.code(), codes::IDENTITY_TAKEN);
    assert_eq!(dump(&seed), before);

    // Reset: the next key that claims the machine is bound to it, with the same role and name.
    let reset = send(
        &app,
        request(
            "POST",
            &format!("/v1/admin/hosts/{id}/reset"),
            Some(&json!({})),
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text);
    assert!(
        reset.json["unbound_key"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let again = send(
        &app,
        as_host(
            request(
                "POST",
                "/v1/enroll",
                Some(&enroll_body("52:54:00:00:00:01", None)),
                None,
            ),
            "a blanked disk",
        ),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json["host_id"], id.as_str());
    assert_eq!(again.json["hostname"], first.json["hostname"]);
    // And the old key is now the stranger.
    let old = report(&app, &id, "52:54:00:00:00:01", "done").await;
    assert_eq!(old.code(), codes::IDENTITY_TAKEN);
}

#[tokio::test]
async fn strangers_waiting_for_approval_do_not_block_a_real_host() {
    let (_dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    // Two strangers claim the worker's UUID and serial (and MACs of their own): both wait.
    for (machine, field, value) in [
        (
            "52:54:00:00:07:01",
            "product_uuid",
            "3333cccc-0000-0000-0000-000000000001",
        ),
        ("52:54:00:00:07:02", "serial", "SN-REAL"),
    ] {
        let mut body = enroll_body(machine, None);
        body["identity"][field] = json!(value);
        let answer = send(&app, request("POST", "/v1/enroll", Some(&body), None)).await;
        assert_eq!(answer.json["status"], "pending", "{}", answer.text);
    }
    // The real machine with a token is let in: pending claims own no identifier.
    let token = make_token(&app, &admin, json!({"ttl_secs": 600})).await;
    let mut body = enroll_body("52:54:00:00:07:03", Some(&token));
    body["identity"]["product_uuid"] = json!("3333cccc-0000-0000-0000-000000000001");
    body["identity"]["serial"] = json!("SN-REAL");
    let answer = send(&app, request("POST", "/v1/enroll", Some(&body), None)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    // And the inventory master is let in whatever waits.
    let master = enroll(&app, "52:54:00:00:00:01", None).await;
    assert_eq!(master.status, StatusCode::OK, "{}", master.text);
}

#[tokio::test]
async fn a_token_is_answered_once_and_stored_only_as_its_hash() {
    let (_dir, seed, app) = open(&one_master());
    let token = make_token(&app, &seed.admin_token, json!({"ttl_secs": 600})).await;
    let (_, secret) = token.split_once('.').unwrap();
    let dump = format!("{:?}", dump(&seed));
    assert!(!dump.contains(secret), "the token's secret is in the store");
}

#[tokio::test]
async fn pending_hosts_that_stop_asking_expire_and_leave_the_waiting_room() {
    let (_dir, seed, app) = open(&one_master());
    let first = enroll(&app, "52:54:00:00:00:77", None).await;
    let id = first.json["host_id"].as_str().unwrap().to_string();
    let waiting = |seed: &registry_seed::seed::Seed| {
        registry_seed::store::read_with(&*seed.store, |tx| {
            registry_seed::enroll::apply::counters(tx)
        })
        .unwrap()
        .waiting
    };
    assert_eq!(waiting(&seed), 1);
    let before = dump(&seed);
    let none = registry_seed::enroll::apply::expire_pending(&*seed.store, 0).unwrap();
    assert!(none.is_empty());
    assert_eq!(dump(&seed), before, "nothing expired, nothing written");
    let far = i64::MAX;
    let gone = registry_seed::enroll::apply::expire_pending(&*seed.store, far).unwrap();
    assert_eq!(gone, [id]);
    assert_eq!(waiting(&seed), 0);
    // Enrolled hosts never expire.
    assert_eq!(
        enroll(&app, "52:54:00:00:00:04", None).await.status,
        StatusCode::OK
    );
    assert!(
        registry_seed::enroll::apply::expire_pending(&*seed.store, far)
            .unwrap()
            .is_empty()
    );
}

/// `GET /v1/admin/jobs`: every job newest first, or those of one state; a state that is not one
/// and any other parameter are refused with what was wrong.
#[tokio::test]
async fn jobs_are_listed_newest_first_and_by_state() {
    use registry_seed::store::records::{JobRecord, JobState};
    let (_dir, seed, app) = open(&one_master());
    let job = |id: &str, state: JobState, created_ms: i64| JobRecord {
        id: id.into(),
        kind: "remove_host".into(),
        request: json!({"host": "h-0001"}),
        state,
        message: String::new(),
        result: Value::Null,
        created_ms,
        updated_ms: created_ms + 5,
        steps: vec![],
        cancel_requested: false,
        changes_membership: true,
        run: 0,
    };
    write_with(&*seed.store, |tx| {
        put_json(
            tx,
            Table::Jobs,
            "j-0001",
            &job("j-0001", JobState::Succeeded, 1_000),
        )?;
        put_json(
            tx,
            Table::Jobs,
            "j-0002",
            &job("j-0002", JobState::Failed, 3_000),
        )?;
        put_json(
            tx,
            Table::Jobs,
            "j-0003",
            &job("j-0003", JobState::Queued, 2_000),
        )
    })
    .unwrap();
    let ids = |answer: &Answer| -> Vec<String> {
        answer.json["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    let admin = Some(seed.admin_token.as_str());
    let all = send(&app, request("GET", "/v1/admin/jobs", None, admin)).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(ids(&all), ["j-0002", "j-0003", "j-0001"]);
    let failed = send(
        &app,
        request("GET", "/v1/admin/jobs?state=failed", None, admin),
    )
    .await;
    assert_eq!(ids(&failed), ["j-0002"]);
    let running = send(
        &app,
        request("GET", "/v1/admin/jobs?state=running", None, admin),
    )
    .await;
    assert_eq!(ids(&running), Vec::<String>::new());
    for (query, message) in [
        (
            "state=done",
            "state \"done\" is not one of queued, running, succeeded, failed, cancelled",
        ),
        (
            "state=Failed",
            "state \"Failed\" is not one of queued, running, succeeded, failed, cancelled",
        ),
        (
            "kind=remove_host",
            "unknown query parameter \"kind=remove_host\": jobs are listed whole or by state=…",
        ),
        (
            "state",
            "unknown query parameter \"state\": jobs are listed whole or by state=…",
        ),
    ] {
        let path = format!("/v1/admin/jobs?{query}");
        let answer = send(&app, request("GET", &path, None, admin)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.json["message"], message, "{query}");
    }
}

/// What `openssl x509` reads in a PEM certificate: (serial in lowercase hex, notAfter).
fn openssl_serial_and_end(pem: &str) -> (String, String) {
    let mut child = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-enddate"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .to_string()
    };
    (field("serial=").to_lowercase(), field("notAfter="))
}

/// notAfter as openssl prints it (`Dec  2 11:03:33 2027 GMT`) of Unix seconds.
fn openssl_date(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    let format = time::format_description::parse_borrowed::<2>(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT",
    )
    .unwrap();
    t.format(&format).unwrap()
}

#[tokio::test]
async fn the_certificates_each_host_was_given_are_listed_soonest_first() {
    if !testkit::require(&["openssl"]) {
        return;
    }
    let (_dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    let master = enroll(&app, "52:54:00:00:00:01", None).await;
    let worker = enroll(&app, "52:54:00:00:00:04", None).await;
    let listed = send(&app, request("GET", "/v1/admin/certs", None, Some(&admin))).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let rows = listed.json["certs"].as_array().unwrap();

    // Each certificate file of each plan, CAs aside, as openssl reads it.
    let mut want = Vec::new();
    for answer in [&master, &worker] {
        let EnrollResponse::Enrolled(plan) = serde_json::from_value(answer.json.clone()).unwrap()
        else {
            panic!("not enrolled: {}", answer.text)
        };
        for file in &plan.files {
            let api::FileSource::Text { text } = &file.source else {
                continue;
            };
            if file.path.ends_with(".crt") && !file.path.ends_with("ca.crt") {
                let (serial, end) = openssl_serial_and_end(text);
                want.push((plan.host_id.clone(), file.path.clone(), serial, end));
            }
        }
    }
    let mut got: Vec<(String, String, String, String)> = rows
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with(".crt"))
        .map(|r| {
            (
                r["host"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
                r["serial"].as_str().unwrap().to_string(),
                openssl_date(r["not_after"].as_i64().unwrap()),
            )
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // The client certificates the master's kubeconfigs embed are listed too.
    let confs: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with(".conf"))
        .map(|r| (r["path"].as_str().unwrap(), r["subject"].as_str().unwrap()))
        .collect();
    for (path, subject) in [
        ("/etc/kubernetes/admin.conf", "kubernetes-admin"),
        ("/etc/kubernetes/super-admin.conf", "kubernetes-super-admin"),
        (
            "/etc/kubernetes/controller-manager.conf",
            "system:kube-controller-manager",
        ),
        ("/etc/kubernetes/scheduler.conf", "system:kube-scheduler"),
    ] {
        assert!(
            confs.contains(&(path, subject)),
            "{path} {subject}: {confs:?}"
        );
    }
    let worker_id = worker.json["host_id"].as_str().unwrap();
    // The worker sent no CSR, so its kubelet's client certificate is in its kubelet.conf.
    let worker_rows: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r["host"] == worker_id)
        .map(|r| {
            (
                r["path"].as_str().unwrap(),
                r["hostname"].as_str().unwrap(),
                r["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        worker_rows,
        [(
            "/etc/kubernetes/kubelet.conf",
            "lab-w1",
            "system:node:lab-w1"
        )]
    );
    let ends: Vec<i64> = rows
        .iter()
        .map(|r| r["not_after"].as_i64().unwrap())
        .collect();
    assert!(ends.is_sorted(), "{ends:?}");

    // A removed host's certificates are no longer listed.
    let accepted = send(
        &app,
        request(
            "DELETE",
            &format!("/v1/admin/hosts/{worker_id}"),
            None,
            Some(&admin),
        ),
    )
    .await;
    let job = wait_job(&app, &admin, &accepted).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let listed = send(&app, request("GET", "/v1/admin/certs", None, Some(&admin))).await;
    let rows = listed.json["certs"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r["host"] != worker_id),
        "{}",
        listed.text
    );
}

/// `request` sent by the machine with this MAC (its identity key), with no body of its own.
fn from_machine(method: &str, path: &str, body: Option<&Value>, mac: &str) -> Request<Body> {
    as_host(request(method, path, body, None), mac)
}

/// `POST /v1/admin/hosts/{id}/commands` of a command of this kind, as the operator.
async fn queue_command(app: &axum::Router, admin: &str, id: &str, kind: &str) -> Answer {
    send(
        app,
        request(
            "POST",
            &format!("/v1/admin/hosts/{id}/commands"),
            Some(&json!({ "kind": kind })),
            Some(admin),
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_its_hosts_agent_and_its_answer_is_kept() {
    let (_dir, seed, app) = open(&one_master());
    let admin = seed.admin_token.clone();
    let worker = enroll(&app, "52:54:00:00:00:04", None).await;
    let id = worker.json["host_id"].as_str().unwrap().to_string();
    enroll(&app, "52:54:00:00:00:01", None).await;
    let mac = "52:54:00:00:00:04";
    let polled = |wait: u64| {
        from_machine(
            "GET",
            &format!("/v1/hosts/{id}/commands?wait={wait}"),
            None,
            mac,
        )
    };
    let empty = send(&app, polled(0)).await;
    assert_eq!(empty.json, json!({"commands": []}), "{}", empty.text);

    // A held poll answers as soon as a command is queued, long before its 30 s.
    let (app2, held_poll) = (app.clone(), polled(30));
    let held = tokio::spawn(async move { send(&app2, held_poll).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let queued = queue_command(&app, &admin, &id, "health").await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.text);
    assert_eq!(
        (&queued.json["id"], &queued.json["state"]),
        (&json!("c-0001"), &json!("queued"))
    );
    let got = held.await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(
        got.json,
        json!({"commands": [{"id": "c-0001", "kind": "health"}]})
    );
    // Taken, not answered: handed out again (an agent that restarted gets it back).
    assert_eq!(send(&app, polled(0)).await.json, got.json);

    let answer_path = format!("/v1/hosts/{id}/commands/c-0001");
    let said = json!({"ok": true, "message": "up 42 s"});
    let answered = send(&app, from_machine("POST", &answer_path, Some(&said), mac)).await;
    assert_eq!(answered.status, StatusCode::NO_CONTENT, "{}", answered.text);
    let shown = send(
        &app,
        request(
            "GET",
            &format!("/v1/admin/hosts/{id}/commands/c-0001"),
            None,
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(
        (&shown.json["state"], &shown.json["message"]),
        (&json!("succeeded"), &json!("up 42 s")),
        "{}",
        shown.text
    );
    assert_eq!(send(&app, polled(0)).await.json, json!({"commands": []}));
    // The same answer again is taken; a different one is refused.
    let again = send(&app, from_machine("POST", &answer_path, Some(&said), mac)).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);

    // Bad asks: each refused with its code and message, nothing changed.
    let long = "x".repeat(4097);
    let cases: Vec<(Request<Body>, StatusCode, &str, String)> = vec![
        (
            from_machine("POST", &answer_path, Some(&json!({"ok": false})), mac),
            StatusCode::CONFLICT,
            codes::COMMAND_REFUSED,
            format!("command c-0001 of host {id} was already answered: succeeded"),
        ),
        (
            from_machine(
                "GET",
                &format!("/v1/hosts/{id}/commands"),
                None,
                "52:54:00:00:00:01",
            ),
            StatusCode::FORBIDDEN,
            codes::IDENTITY_TAKEN,
            format!("host {id} is bound to another identity key"),
        ),
        (
            request("GET", &format!("/v1/hosts/{id}/commands"), None, None),
            StatusCode::UNAUTHORIZED,
            codes::IDENTITY_REQUIRED,
            "asking for commands needs the host's identity key, presented as its TLS client certificate".into(),
        ),
        (
            from_machine(
                "POST",
                &format!("/v1/hosts/{id}/commands/c-0001"),
                Some(&said),
                "52:54:00:00:00:01",
            ),
            StatusCode::FORBIDDEN,
            codes::IDENTITY_TAKEN,
            format!("host {id} is bound to another identity key"),
        ),
        (
            from_machine(
                "POST",
                &format!("/v1/hosts/{id}/commands/c-0099"),
                Some(&said),
                mac,
            ),
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("host {id} has no command c-0099"),
        ),
        (
            from_machine(
                "POST",
                &answer_path,
                Some(&json!({"ok": true, "message": long})),
                mac,
            ),
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "command outcomes are limited to 4096 bytes".into(),
        ),
        (
            from_machine(
                "GET",
                &format!("/v1/hosts/{id}/commands?wait=31"),
                None,
                mac,
            ),
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "\"wait=31\": commands are asked for with wait=SECONDS, at most 30".into(),
        ),
        (
            from_machine(
                "GET",
                &format!("/v1/hosts/{id}/commands?since=1"),
                None,
                mac,
            ),
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "\"since=1\": commands are asked for with wait=SECONDS, at most 30".into(),
        ),
        (
            from_machine("GET", "/v1/hosts/h-9999/commands", None, mac),
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "no host with id h-9999".into(),
        ),
        (
            request(
                "POST",
                "/v1/admin/hosts/h-9999/commands",
                Some(&json!({"kind": "health"})),
                Some(&admin),
            ),
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "no host with id h-9999".into(),
        ),
    ];
    let before = dump(&seed);
    for (i, (req, status, code, message)) in cases.into_iter().enumerate() {
        let answer = send(&app, req).await;
        assert_eq!(
            (
                answer.status,
                answer.code(),
                answer.json["message"].as_str()
            ),
            (status, code, Some(message.as_str())),
            "case {i}: {}",
            answer.text
        );
    }
    let unknown_kind = queue_command(&app, &admin, &id, "format").await;
    assert_eq!(
        (unknown_kind.status, unknown_kind.code()),
        (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
        "{}",
        unknown_kind.text
    );
    assert_eq!(dump(&seed), before);

    // At most 8 unanswered commands per host; the 9th is refused, naming the oldest.
    for n in 2..=9 {
        let queued = queue_command(&app, &admin, &id, "reboot").await;
        assert_eq!(queued.status, StatusCode::ACCEPTED, "{n}: {}", queued.text);
    }
    let before = dump(&seed);
    let refused = queue_command(&app, &admin, &id, "reboot").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, codes::COMMAND_REFUSED)
    );
    assert_eq!(
        refused.json["message"],
        format!(
            "host {id} already has 8 commands it has not answered (the oldest c-0002): its agent may not be running; wait, or look at `launcher-seed hosts commands {id}`"
        )
    );
    assert_eq!(dump(&seed), before);
    let listed = send(
        &app,
        request(
            "GET",
            &format!("/v1/admin/hosts/{id}/commands"),
            None,
            Some(&admin),
        ),
    )
    .await;
    let ids: Vec<&str> = listed.json["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 9);
    assert_eq!((ids[0], ids[8]), ("c-0009", "c-0001"));
}
