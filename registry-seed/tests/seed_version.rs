//! A host says which Kubernetes release its image carries; the seed refuses one its role in
//! the cluster cannot run (a master: the cluster's exact release; a worker: the kubelet's
//! version-skew policy), naming both versions, with nothing recorded, and lets the same host
//! in once it comes with an image that fits.

mod support;

use axum::http::StatusCode;
use cluster::api::codes;
use support::seed::*;

const MASTER: &str = "52:54:00:00:00:01";
const WORKER: &str = "52:54:00:00:00:04";

async fn enroll_with(app: &axum::Router, mac: &str, version: &str) -> Answer {
    let mut body = enroll_body(mac, None);
    body["kubernetes_version"] = version.into();
    send(app, request("POST", "/v1/enroll", Some(&body), None)).await
}

#[tokio::test]
async fn an_image_of_another_release_is_refused_with_both_versions_and_nothing_recorded() {
    let (_dir, seed, app) = open(&one_master());
    let before = dump(&seed);
    let cases = [
        (
            MASTER,
            "v1.33.5",
            "lab-m1",
            "master",
            "this host's image carries Kubernetes v1.33.5, and a master of this cluster runs \
             exactly v1.33.4 (kubeadm and the control-plane images are of one release): boot it \
             from an image built for v1.33.4",
        ),
        (
            WORKER,
            "v1.34.0",
            "lab-w1",
            "worker",
            "this host's image carries Kubernetes v1.34.0, newer than the cluster's v1.33.4: a \
             kubelet may not be newer than the API server; boot it from an image for v1.33 or \
             older",
        ),
        (
            WORKER,
            "v1.29.12",
            "lab-w1",
            "worker",
            "this host's image carries Kubernetes v1.29.12, more than 3 minor versions older \
             than the cluster's v1.33.4: boot it from an image for v1.30 or newer",
        ),
    ];
    for (mac, version, hostname, role, why) in cases {
        let answer = enroll_with(&app, mac, version).await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text);
        assert_eq!(answer.code(), codes::VERSION_MISMATCH);
        let message = answer.json["message"].as_str().unwrap();
        let (id, rest) = message.split_once(' ').unwrap();
        assert!(id.starts_with("h-"), "{message}");
        assert_eq!(rest, format!("({role} {hostname}): {why}"));
        assert_eq!(
            dump(&seed),
            before,
            "nothing recorded for {mac} at {version}"
        );
    }

    // The seed keeps them, for `status`: nothing of them is in the store.
    let status = send(
        &app,
        request("GET", "/v1/admin/hosts", None, Some(&seed.admin_token)),
    )
    .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text);
    let refused = status.json["refused"].as_array().unwrap();
    let seen: Vec<(&str, u64)> = refused
        .iter()
        .map(|r| (r["macs"].as_str().unwrap(), r["times"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen, [(MASTER, 1), (WORKER, 2)]);
    assert!(
        refused[1]["message"]
            .as_str()
            .unwrap()
            .ends_with("boot it from an image for v1.30 or newer"),
        "{}",
        status.text
    );
    assert_eq!(status.json["hosts"], serde_json::json!([]));

    // A version that is not one is the request's fault, refused as such.
    let answer = enroll_with(&app, MASTER, "1.33").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_eq!(dump(&seed), before);

    // With images that fit, the same hosts are let in; a worker may trail by three minors.
    for (mac, version) in [(MASTER, "v1.33.4"), (WORKER, "v1.30.0")] {
        let answer = enroll_with(&app, mac, version).await;
        assert_eq!(answer.status, StatusCode::OK, "{mac}: {}", answer.text);
        assert_eq!(answer.json["status"], "enrolled", "{}", answer.text);
    }
    // let in, they leave the list
    let status = send(
        &app,
        request("GET", "/v1/admin/hosts", None, Some(&seed.admin_token)),
    )
    .await;
    assert_eq!(status.json.get("refused"), None, "{}", status.text);
}
