//! A seed whose registry lacks images the cluster pulls lets no host in to install: every
//! enrollment is answered `waiting` with the missing references and nothing is recorded;
//! `/metrics` and `launcher-seed status` say so; importing the images into the running seed's
//! state directory releases the host at its next request, without a restart.

mod support;

use std::path::Path;

use support::images::docker_save;
use support::seed::*;
use testkit::fixtures::ClusterFile;

const MASTER_MAC: &str = "52:54:00:00:00:01";

fn import(state: &Path, dir: &Path, upstream: &str) {
    let archive = dir.join(format!("{}.tar", upstream.replace(['/', ':'], "_")));
    docker_save(&archive, upstream);
    cli(&[
        "images",
        "import",
        "--state-dir",
        state.to_str().unwrap(),
        archive.to_str().unwrap(),
    ]);
}

/// `POST /v1/enroll` as the inventory master: the status code and the JSON answer.
fn enroll(server: &Server) -> (u16, serde_json::Value) {
    let answer = server
        .host_client(MASTER_MAC)
        .post(format!("{}/v1/enroll", server.url()))
        .json(&enroll_body(MASTER_MAC, None))
        .send()
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().unwrap())
}

fn waiting(missing: &[&str]) -> serde_json::Value {
    let n = missing.len();
    serde_json::json!({
        "status": "waiting",
        "retry_after_secs": 10,
        "message": format!(
            "the seed's registry lacks {n} image{} this cluster pulls: {}; no host installs until \
             they are imported (launcher-seed images import)",
            if n == 1 { "" } else { "s" },
            missing.join(", ")
        ),
        "missing_images": missing,
    })
}

#[test]
fn hosts_wait_for_missing_images_until_an_import_brings_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = ClusterFile {
        name: "lab".into(),
        schedulable_masters: true,
        extra_cluster: vec!["skip_phases = [\"addon\"]".into()],
        ..ClusterFile::one_master("127.0.0.1:8443")
    }
    .render();
    let cluster = cluster_file(dir.path(), &text);
    let state = dir.path().join("state");
    import(&state, dir.path(), "registry.k8s.io/kube-apiserver:v1.33.4");
    let server = Server::start_waiting_on_images(&cluster, &state, "127.0.0.1:0");
    let seed_log = std::fs::read_to_string(state.join("seed.log")).unwrap_or_default();

    let missing = [
        "127.0.0.1:8443/kube-controller-manager:v1.33.4",
        "127.0.0.1:8443/kube-scheduler:v1.33.4",
        "127.0.0.1:8443/pause:3.10",
    ];
    assert_eq!(enroll(&server), (202, waiting(&missing)), "{seed_log}");
    // Nothing recorded: the seed knows no host.
    let seed_dir = ["--state-dir", state.to_str().unwrap()];
    let status: serde_json::Value =
        serde_json::from_str(&cli(&[&["status", "--json"][..], &seed_dir].concat())).unwrap();
    assert_eq!(status["hosts"], serde_json::json!([]), "{status}");
    assert_eq!(status["missing_images"], serde_json::json!(missing));
    let table = cli(&[&["status"][..], &seed_dir].concat());
    assert_eq!(
        table.lines().last(),
        Some(
            format!(
                "hosts wait to enroll: the seed's registry lacks {}",
                missing.join(", ")
            )
            .as_str()
        ),
        "{table}"
    );
    let metrics = |server: &Server| {
        server
            .client()
            .get(format!("{}/metrics", server.url()))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    assert!(
        metrics(&server).contains("\nlauncher_seed_images_missing 3\n"),
        "{}",
        metrics(&server)
    );

    // Imported into the running seed's state directory: the next request sees them.
    import(
        &state,
        dir.path(),
        "registry.k8s.io/kube-controller-manager:v1.33.4",
    );
    import(&state, dir.path(), "registry.k8s.io/kube-scheduler:v1.33.4");
    assert_eq!(enroll(&server), (202, waiting(&missing[2..])));
    import(&state, dir.path(), "registry.k8s.io/pause:3.10");
    let (code, plan) = enroll(&server);
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["hostname"], "lab-m1", "{plan}");
    assert!(metrics(&server).contains("\nlauncher_seed_images_missing 0\n"));
    let status: serde_json::Value =
        serde_json::from_str(&cli(&[&["status", "--json"][..], &seed_dir].concat())).unwrap();
    assert_eq!(
        status["hosts"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(status.get("missing_images"), None, "{status}");
}

#[test]
fn a_seed_told_to_allow_missing_images_lets_hosts_in() {
    let dir = tempfile::tempdir().unwrap();
    let text = ClusterFile {
        name: "lab".into(),
        schedulable_masters: true,
        ..ClusterFile::one_master("127.0.0.1:8443")
    }
    .render();
    let cluster = cluster_file(dir.path(), &text);
    let state = dir.path().join("state");
    let server = Server::start(&cluster, &state, "127.0.0.1:0");
    let (code, plan) = enroll(&server);
    assert_eq!(code, 200, "{plan}");
    let metrics = server
        .client()
        .get(format!("{}/metrics", server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !metrics.contains("launcher_seed_images_missing"),
        "{metrics}"
    );
}
