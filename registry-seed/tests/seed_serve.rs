//! The real `launcher-seed serve` process: HTTPS with its own CA, the pin, curl as a host, and
//! the admin CLI.

mod support;

use std::process::Command;

use support::seed::*;

#[test]
fn curl_enrolls_against_the_real_seed_trusting_only_its_ca() {
    if !testkit::require(&["curl", "openssl", "ss"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let state = dir.path().join("state");
    let server = Server::start(&cluster, &state, "127.0.0.1:0");
    let ca = state.join("seed-ca.crt");
    let ca = ca.to_str().unwrap();

    let (health, _) = curl(&["--cacert", ca, &format!("{}/healthz", server.url())]);
    assert_eq!(health, "ok\n");
    // The kernel queues a boot storm's connections: the listener's backlog (ss's Send-Q) is
    // 4096, as far as net.core.somaxconn allows.
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let port = server.url().rsplit(':').next().unwrap().to_string();
    let ss = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .unwrap();
    let listening = String::from_utf8_lossy(&ss.stdout).into_owned();
    let backlog: Vec<&str> = listening.split_whitespace().collect();
    assert_eq!(
        backlog.get(2).copied(),
        Some(somaxconn.min(4096).to_string().as_str()),
        "{listening}"
    );
    // Without the seed's CA, curl refuses the server.
    let refused = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            &format!("{}/healthz", server.url()),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    let body = r#"{"identity":{"macs":["52:54:00:00:00:04"]}}"#;
    let (cert, key) = identity_files(dir.path(), "52:54:00:00:00:04");
    let (answer, _) = curl(&[
        "--cacert",
        ca,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "-H",
        "content-type: application/json",
        "--data",
        body,
        &format!("{}/v1/enroll", server.url()),
    ]);
    let plan: cluster::api::EnrollResponse = serde_json::from_str(&answer).unwrap();
    let cluster::api::EnrollResponse::Enrolled(plan) = plan else {
        panic!("not enrolled: {answer}")
    };
    assert!(plan.verify());
    assert_eq!(plan.hostname, "lab-w1");

    // The real NTP server answers an SNTP client packet, and /metrics counts it.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut packet = [0u8; 48];
    packet[0] = 0x23; // LI 0, version 4, mode 3 (client)
    packet[40..48].copy_from_slice(&[0xeb, 0, 0, 0, 0, 0, 0, 1]); // transmit timestamp
    socket.send_to(&packet, server.ntp_addr.unwrap()).unwrap();
    let mut answer = [0u8; 64];
    let (n, _) = socket.recv_from(&mut answer).unwrap();
    assert_eq!((n, answer[0] & 0x7), (48, 4), "a mode 4 answer");
    let (metrics, _) = curl(&["--cacert", ca, &format!("{}/metrics", server.url())]);
    for line in [
        "launcher_seed_ntp_requests_total{result=\"answered\"} 1",
        "launcher_seed_enrollments_total{result=\"enrolled\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }

    // The image registry is served on the same listener.
    let (code, _) = curl(&[
        "--cacert",
        ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{}/v2/", server.url()),
    ]);
    assert_eq!(code, "200");

    // The pin is the SHA-256 of the CA's SubjectPublicKeyInfo, as openssl computes it.
    let pin = cli(&["pin", "--state-dir", state.to_str().unwrap()]);
    let openssl = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {ca} -pubkey -noout | openssl pkey -pubin -outform der | sha256sum"
        ))
        .output()
        .unwrap();
    let digest = String::from_utf8(openssl.stdout).unwrap();
    assert_eq!(
        pin.trim(),
        format!("sha256:{}", digest.split_whitespace().next().unwrap())
    );

    // The CA is kept across restarts.
    let before = std::fs::read(state.join("seed-ca.crt")).unwrap();
    drop(server);
    let _again = Server::start(&cluster, &state, "127.0.0.1:0");
    assert_eq!(std::fs::read(state.join("seed-ca.crt")).unwrap(), before);
    assert_eq!(cli(&["pin", "--state-dir", state.to_str().unwrap()]), pin);
}

/// Baking an image for a seed that has not run yet: `pin` alone refuses a directory without a
/// CA and writes nothing; `pin --init` makes the CA there, private, and the seed started on that
/// directory later presents it.
#[test]
fn pin_init_makes_the_ca_a_seed_then_presents() {
    if !testkit::require(&["curl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
        .args(["pin", "--state-dir", state_arg])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        format!(
            "launcher-seed: {state_arg} holds no seed CA: start the seed there once, or pass --init to \
             make it now"
        )
    );
    assert!(!state.exists(), "nothing written");

    let pin = cli(&["pin", "--init", "--state-dir", state_arg]);
    assert!(pin.trim().starts_with("sha256:"), "{pin}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("seed-ca.key")), 0o600);
    assert_eq!(cli(&["pin", "--init", "--state-dir", state_arg]), pin);
    assert_eq!(cli(&["pin", "--state-dir", state_arg]), pin);

    let made = std::fs::read(state.join("seed-ca.crt")).unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let server = Server::start(&cluster, &state, "127.0.0.1:0");
    assert_eq!(std::fs::read(state.join("seed-ca.crt")).unwrap(), made);
    let ca = state.join("seed-ca.crt");
    let (health, _) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        &format!("{}/healthz", server.url()),
    ]);
    assert_eq!(health, "ok\n");
    assert_eq!(cli(&["pin", "--state-dir", state_arg]), pin);
}

#[test]
fn the_admin_cli_makes_tokens_approves_lists_and_removes() {
    if !testkit::require(&["curl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let state = dir.path().join("state");
    let server = Server::start(&cluster, &state, "127.0.0.1:0");
    let sd = state.to_str().unwrap();
    let mode = std::fs::metadata(state.join("admin.token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let token = cli(&["tokens", "create", "--ttl", "1h", "--state-dir", sd]);
    let token = token.trim();
    assert!(token.len() == 23 && token.as_bytes()[6] == b'.', "{token}");
    let enroll = |mac: &str, token: Option<&str>| -> serde_json::Value {
        let mut body = enroll_body(mac, token);
        if token.is_none() {
            body.as_object_mut().unwrap().remove("token");
        }
        server
            .host_client(mac)
            .post(format!("{}/v1/enroll", server.url()))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let first = enroll("52:54:00:00:00:31", Some(token));
    assert_eq!(first["role"], "worker", "{first}");
    let first_worker = first["host_id"].as_str().unwrap().to_string();
    assert_eq!(
        enroll("52:54:00:00:00:32", Some(token))["code"],
        "token_used"
    );

    let pending = enroll("52:54:00:00:00:33", None);
    let id = pending["host_id"].as_str().unwrap();
    let approved = cli(&["hosts", "approve", id, "--state-dir", sd]);
    assert!(approved.contains("approved"), "{approved}");
    assert_eq!(enroll("52:54:00:00:00:33", None)["host_id"], id);

    let report = serde_json::json!({"phase": "install", "state": "started", "message": "kubeadm join", "at_unix_ms": 1});
    let status = server
        .host_client("52:54:00:00:00:33")
        .post(format!("{}/v1/hosts/{id}/progress", server.url()))
        .json(&report)
        .send()
        .unwrap();
    assert_eq!(status.status(), 204);

    let table = cli(&["status", "--state-dir", sd]);
    let row = table
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{table}"));
    for cell in [
        "lab-w3",
        "worker",
        "52:54:00:00:00:33",
        "install",
        "started",
        "kubeadm join",
    ] {
        assert!(row.contains(cell), "{cell} missing from {row}");
    }
    let json: serde_json::Value = serde_json::from_str(&cli(&[
        "status",
        "--json",
        "--seed",
        &server.url(),
        "--state-dir",
        sd,
    ]))
    .unwrap();
    assert_eq!(json["hosts"].as_array().unwrap().len(), 2);

    // The two workers' kubelet client certificates, a year each, soonest to expire first.
    let certs = cli(&["certs", "--state-dir", sd]);
    let rows: Vec<Vec<&str>> = certs
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "HOST", "HOSTNAME", "FILE", "SUBJECT", "ISSUER", "EXPIRES", "LEFT"
        ],
        "{certs}"
    );
    let mut hosts: Vec<&str> = rows[1..].iter().map(|r| r[0]).collect();
    hosts.sort();
    let mut enrolled = vec![id, first_worker.as_str()];
    enrolled.sort();
    assert_eq!(hosts, enrolled, "{certs}");
    for row in &rows[1..] {
        // They sent no CSR: the certificate is embedded in the kubelet's kubeconfig.
        assert_eq!(row[2], "/etc/kubernetes/kubelet.conf", "{certs}");
        assert_eq!(row[3], format!("system:node:{}", row[1]), "{certs}");
        assert_eq!((row[4], row[6]), ("kubernetes", "364d"), "{certs}");
    }
    let soon = cli(&["certs", "--within", "30d", "--json", "--state-dir", sd]);
    let soon: serde_json::Value = serde_json::from_str(&soon).unwrap();
    assert_eq!(soon["certs"], serde_json::json!([]), "{soon}");

    let removed = cli(&["hosts", "rm", id, "--state-dir", sd]);
    assert!(removed.contains("removed"), "{removed}");
    let listed = cli(&["hosts", "ls", "--json", "--state-dir", sd]);
    assert!(!listed.contains(id), "{listed}");

    // Both jobs are listed, newest first, each succeeded; none failed.
    let jobs = cli(&["jobs", "ls", "--state-dir", sd]);
    let rows: Vec<Vec<&str>> = jobs
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..5],
        ["JOB", "KIND", "STATE", "AGE", "TOOK"],
        "{jobs}"
    );
    let kinds: Vec<(&str, &str)> = rows[1..].iter().map(|r| (r[1], r[2])).collect();
    assert_eq!(
        kinds,
        [("remove_host", "succeeded"), ("approve_host", "succeeded")],
        "{jobs}"
    );
    let failed = cli(&[
        "jobs",
        "ls",
        "--state",
        "failed",
        "--json",
        "--state-dir",
        sd,
    ]);
    let failed: serde_json::Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(failed["jobs"], serde_json::json!([]));
    let done = cli(&[
        "jobs",
        "ls",
        "--state",
        "succeeded",
        "--json",
        "--state-dir",
        sd,
    ]);
    let done: serde_json::Value = serde_json::from_str(&done).unwrap();
    assert_eq!(done["jobs"].as_array().unwrap().len(), 2, "{done}");

    // One job, step by step: a worker's removal skips the etcd step.
    let removal = rows[1][0];
    let shown = cli(&["jobs", "show", removal, "--state-dir", sd]);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "job {removal}: remove_host {{\"force\":false,\"host\":\"{id}\",\"kind\":\"remove_host\"}}"
        ),
        "{shown}"
    );
    assert!(lines[1].starts_with("state: succeeded, asked "), "{shown}");
    assert_eq!(lines[2], format!("message: host {id} removed"), "{shown}");
    let steps: Vec<(&str, &str)> = lines[4..]
        .iter()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words[0], words[1])
        })
        .collect();
    assert_eq!(
        steps,
        [("leave_etcd", "skipped"), ("forget", "done")],
        "{shown}"
    );
    // An ended job is neither cancelled nor resumed.
    for (verb, said) in [
        ("cancel", "already succeeded: there is nothing to cancel"),
        (
            "resume",
            "already succeeded: only a failed or cancelled job resumes",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
            .args(["jobs", verb, removal, "--state-dir", sd])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{verb}: {stderr}");
        assert!(
            stderr.contains(&format!("job {removal} {said}")),
            "{verb}: {stderr}"
        );
    }

    // With the seed stopped, status reads the state directory.
    drop(server);
    let offline = cli(&["status", "--state-dir", sd]);
    assert!(offline.contains("lab-w2"), "{offline}");
}
