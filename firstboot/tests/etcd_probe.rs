//! firstboot's calls to a real etcd that requires client certificates: the etcd phase's health
//! probe (the healthcheck client's certificate gets `health: true`, a certificate from another
//! CA is refused), and keepalived's membership check (`check-member`) on a master before and
//! after the seed removes it.

mod common;

use common::pki::{Ca, ca, leaf};
use firstboot::os::{ClientTls, Os, RealOs};
use rcgen::ExtendedKeyUsagePurpose;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// etcd's CA (`d/ca.crt`), its server certificate and the healthcheck client's, in `d`.
fn etcd_pki(d: &Path) -> Ca {
    let etcd_ca = ca("etcd-ca");
    std::fs::write(d.join("ca.crt"), etcd_ca.cert.pem()).unwrap();
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    leaf(d, "server", &etcd_ca, vec![ServerAuth, ClientAuth]);
    leaf(d, "healthcheck-client", &etcd_ca, vec![ClientAuth]);
    etcd_ca
}

#[test]
fn the_health_probe_uses_the_client_certificate_against_a_real_etcd() {
    if !testkit::require(&["etcd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    etcd_pki(d);
    leaf(
        d,
        "stranger",
        &ca("other-ca"),
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );

    let peer = testkit::free_tcp_port();
    let initial = format!("probe=http://127.0.0.1:{peer}");
    let (_etcd, url) = member(d, "probe", "127.0.0.1", &initial, peer);
    let health = format!("{url}/health");
    let tls = |name: &str| ClientTls {
        ca: d.join("ca.crt"),
        cert: d.join(format!("{name}.crt")),
        key: d.join(format!("{name}.key")),
    };
    let body = testkit::wait_for("etcd's health", Duration::from_secs(30), || {
        RealOs.probe_https(&health, &tls("healthcheck-client")).ok()
    });
    assert!(body.contains(r#""health":"true""#), "{body}");

    let err = RealOs
        .probe_https(&health, &tls("stranger"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("probing {health}: ")), "{err}");
    let err = RealOs
        .probe_https(&health, &tls("missing"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reading ") && err.contains("missing.crt"),
        "{err}"
    );
}

/// An etcd member `name` at `ip` requiring client certificates from `d`'s CA, logging to
/// `d/<name>.log`; its client URL.
fn member(
    d: &Path,
    name: &str,
    ip: &str,
    initial_cluster: &str,
    peer_port: u16,
) -> (testkit::ChildGuard, String) {
    let url = format!("https://{ip}:{}", testkit::free_tcp_port());
    let peer_url = format!("http://{ip}:{peer_port}");
    let log = std::fs::File::create(d.join(format!("{name}.log"))).unwrap();
    let child = testkit::ChildGuard::spawn(
        "etcd",
        Command::new(testkit::which("etcd").unwrap())
            .args(["--name", name, "--data-dir"])
            .arg(d.join(format!("data-{name}")))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", initial_cluster])
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(d.join("ca.crt"))
            .arg("--cert-file")
            .arg(d.join("server.crt"))
            .arg("--key-file")
            .arg(d.join("server.key"))
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    (child, url)
}

/// `launcher-firstboot --root ROOT check-member`: its exit status and standard error.
fn check_member(root: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_launcher-firstboot"))
        .arg("--root")
        .arg(root)
        .arg("check-member")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_master_removed_from_etcd_fails_the_membership_check() {
    if !testkit::require(&["etcd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let etcd_ca = etcd_pki(d);

    let (peer_a, peer_b) = (testkit::free_tcp_port(), testkit::free_tcp_port());
    let initial = format!("a=http://127.0.0.1:{peer_a},b=http://127.0.0.2:{peer_b}");
    let (_a, url_a) = member(d, "a", "127.0.0.1", &initial, peer_a);
    let (_b, url_b) = member(d, "b", "127.0.0.2", &initial, peer_b);

    // Master b's root: the etcd CA and healthcheck client where kubeadm keeps them, the key
    // where firstboot keeps it, and a plan that makes it member b.
    let root = tempfile::tempdir().unwrap();
    let pki = root.path().join("etc/kubernetes/pki/etcd");
    std::fs::create_dir_all(&pki).unwrap();
    std::fs::copy(d.join("ca.crt"), pki.join("ca.crt")).unwrap();
    std::fs::copy(
        d.join("healthcheck-client.crt"),
        pki.join("healthcheck-client.crt"),
    )
    .unwrap();
    let key = firstboot::keys::key_path(root.path(), "etcd/healthcheck-client").unwrap();
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::copy(d.join("healthcheck-client.key"), &key).unwrap();
    let mut plan = common::plan::worker_plan("b", "v1.33.4", vec![]);
    plan.role = cluster::api::Role::Master;
    plan.ip = Some("127.0.0.2".into());
    plan.etcd = Some(cluster::api::EtcdInstructions {
        member_name: "b".into(),
        initial_cluster_state: "new".into(),
        learner: false,
        config_path: "/etc/etcd/etcd.yaml".into(),
        client_urls: vec![url_a.clone(), url_b.clone()],
    });
    let journal = firstboot::journal::Journal {
        plan: Some(plan.seal()),
        ..Default::default()
    };
    journal.save(root.path()).unwrap();

    let tls = ClientTls {
        ca: d.join("ca.crt"),
        cert: d.join("healthcheck-client.crt"),
        key: d.join("healthcheck-client.key"),
    };
    for url in [&url_a, &url_b] {
        testkit::wait_for("both members healthy", Duration::from_secs(30), || {
            let body = RealOs.probe_https(&format!("{url}/health"), &tls).ok()?;
            body.contains(r#""health":"true""#).then_some(())
        });
    }
    assert_eq!(
        firstboot::vip::check_member(root.path()).unwrap(),
        firstboot::vip::MemberCheck::Listed(url_a.clone())
    );
    assert_eq!(check_member(root.path()), (Some(0), String::new()));

    // The seed's remove job, as etcd sees it: member b removed through member a.
    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&etcd_ca.cert.pem().into_bytes()).unwrap(),
        )
        .identity(
            reqwest::Identity::from_pem(
                &[
                    std::fs::read(d.join("healthcheck-client.crt")).unwrap(),
                    std::fs::read(d.join("healthcheck-client.key")).unwrap(),
                ]
                .concat(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let list: serde_json::Value = client
        .post(format!("{url_a}/v3/cluster/member/list"))
        .body("{}")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "b")
        .unwrap()["ID"]
        .clone();
    // etcd refuses a removal ("unhealthy cluster") until its members have been connected 5 s.
    testkit::wait_for("etcd to remove member b", Duration::from_secs(30), || {
        let removed = client
            .post(format!("{url_a}/v3/cluster/member/remove"))
            .json(&serde_json::json!({ "ID": id }))
            .send()
            .ok()?;
        removed.status().is_success().then_some(())
    });

    let (code, stderr) = check_member(root.path());
    assert_eq!(
        (code, stderr),
        (
            Some(1),
            format!(
                "launcher-firstboot check-member: {url_a} lists no member b ({url_b}): this master was removed from the cluster's etcd\n"
            )
        )
    );
    // With no member answering, nothing says this master was removed: readiness decides.
    drop((_a, _b));
    let (code, stderr) = check_member(root.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.starts_with(
            "launcher-firstboot check-member: no etcd member answered, the API server's readiness decides: "
        ),
        "{stderr}"
    );
}
