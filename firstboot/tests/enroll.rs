//! Enrollment against a real `launcher-seed serve`: a master and a worker end with the trees
//! their roles call for; a wrong pin and a tampered or truncated plan are refused; a host waits,
//! told which images the seed lacks, until they are imported.

mod common;

use common::{DECADE_SECS, Host, OTHER_PIN, Seed, run_to_the_end, run_with_seed, stderr};
use firstboot::os::Action;

fn commands(host: &Host) -> Vec<String> {
    host.actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Run { cmd } => Some(cmd.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_master_and_a_worker_get_what_their_roles_need() {
    let seed = Seed::start();
    let master = Host::new(1);
    let worker = Host::new(4);
    // The master's clock is a decade behind: it must enroll after the time phase steps it.
    run_to_the_end("master", &master, &seed, -DECADE_SECS);
    run_to_the_end("worker", &worker, &seed, 0);

    let m = master.journal();
    assert_eq!(m["plan"]["role"], "master");
    assert_eq!(m["time"]["stepped"], true);
    for f in [
        "etc/kubernetes/pki/ca.key",
        "etc/kubernetes/pki/ca.crt",
        "etc/kubernetes/admin.conf",
    ] {
        assert!(master.path(f).is_file(), "master lacks {f}");
    }
    assert!(
        master
            .path("etc/systemd/system/launcher-etcd.service")
            .is_file()
    );
    assert!(
        commands(&master)
            .iter()
            .any(|c| c.starts_with("kubeadm init --config "))
    );
    // The kubeadm stand-in accepts the config the seed rendered, with the files firstboot wrote
    // (in a copy of the master's tree, which it adds to): its certificate and manifest phases;
    // the phases that need a real host (its /proc, a running containerd, an API server)
    // skipped as an operator would with `skipPhases`.
    let copy = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(master.root().join("."))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let config = copy.path().join("etc/kubernetes/kubeadm.yaml");
    let rendered = std::fs::read_to_string(&config).unwrap();
    let skipping = rendered.replacen(
        "kind: InitConfiguration\n",
        "kind: InitConfiguration\nskipPhases: [preflight, upload-config, mark-control-plane]\n",
        1,
    );
    assert_ne!(skipping, rendered, "{rendered}");
    std::fs::write(
        copy.path().join("etc/kubernetes/kubeadm-check.yaml"),
        skipping,
    )
    .unwrap();
    let standin = std::process::Command::new(testkit::workspace_bin("kubeadm-standin"))
        .args(["init", "--config", "/etc/kubernetes/kubeadm-check.yaml"])
        .env("LAUNCHER_STANDIN_ROOT", copy.path())
        .output()
        .unwrap();
    assert!(standin.status.success(), "{}", stderr(&standin));

    let w = worker.journal();
    assert_eq!(w["plan"]["role"], "worker");
    for f in [
        "etc/kubernetes/pki/ca.key",
        "etc/kubernetes/admin.conf",
        "etc/kubernetes/super-admin.conf",
        "etc/kubernetes/pki/sa.key",
    ] {
        assert!(!worker.path(f).exists(), "worker has {f}");
    }
    assert!(
        !worker
            .path("etc/systemd/system/launcher-etcd.service")
            .exists()
    );
    assert!(worker.path("etc/systemd/system/kubelet.service").is_file());
    assert!(!commands(&worker).iter().any(|c| c.starts_with("kubeadm")));
    // The kubelet stand-in accepts the worker's config and kubeconfig as the unit passes them.
    let unit = std::fs::read_to_string(worker.path("etc/systemd/system/kubelet.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/bin/kubelet "))
        .unwrap();
    let standin = std::process::Command::new(testkit::workspace_bin("kubelet-standin"))
        .args(exec.split_whitespace())
        .arg("--exit-after-checks")
        .env("LAUNCHER_STANDIN_ROOT", worker.root())
        .output()
        .unwrap();
    assert!(standin.status.success(), "{}", stderr(&standin));

    // The seed saw every phase through to `done`.
    let status = std::process::Command::new(testkit::workspace_bin("launcher-seed"))
        .arg("status")
        .arg("--state-dir")
        .arg(seed.dir.path().join("state"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    for name in ["fbtest-m1", "fbtest-w1"] {
        let row = table
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not in:\n{table}"));
        assert!(row.contains(" done ") && row.contains("succeeded"), "{row}");
    }

    for host in [&master, &worker] {
        let plan: cluster::api::Plan =
            serde_json::from_value(host.journal()["plan"].clone()).unwrap();
        assert!(plan.verify());
        // Every plan file is on disk with its mode, and nothing else under /etc/kubernetes.
        let mut want: Vec<String> = plan
            .files
            .iter()
            .map(|f| f.path.trim_start_matches('/').to_string())
            .filter(|p| p.starts_with("etc/kubernetes/"))
            .collect();
        want.sort();
        let got: Vec<String> = common::tree(&host.path("etc/kubernetes"))
            .into_iter()
            .map(|p| format!("etc/kubernetes/{p}"))
            .collect();
        assert_eq!(got, want, "{}", plan.role);
        for f in &plan.files {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(host.path(&f.path))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, f.mode, "{}", f.path);
        }
        let containerd = std::fs::read_to_string(host.path("etc/containerd/config.toml")).unwrap();
        assert!(containerd.contains("config_path = \"/etc/containerd/certs.d\""));
        let hosts =
            std::fs::read_to_string(host.path("etc/containerd/certs.d/_default/hosts.toml"))
                .unwrap();
        assert!(
            hosts.contains(&format!("[host.\"{}\"]", seed.url)),
            "{hosts}"
        );
        let ca = std::fs::read_to_string(host.path("etc/launcher/seed-ca.crt")).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(host.path("var/lib/launcher/firstboot.done").is_file());
        assert!(host.actions().contains(&Action::SetHostname {
            name: plan.hostname.clone()
        }));
    }
}

#[test]
fn a_wrong_pin_is_refused_and_nothing_is_written() {
    let seed = Seed::start();
    let host = Host::new(4);
    let mut args = seed.args();
    let at = args.iter().position(|a| a == "--pin").unwrap();
    args[at + 1] = OTHER_PIN.to_string();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = host.run(0, &refs);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("firstboot phase `enroll` failed: the seed at {} did not present a certificate with the pinned key {OTHER_PIN}", seed.url)),
        "{err}"
    );
    assert!(
        err.contains(&seed.pin),
        "the message names the pin the seed has: {err}"
    );
    assert_eq!(host.done_phases(), vec!["identify", "time"]);
    assert!(!host.path("etc").exists());
}

#[test]
fn a_tampered_or_truncated_journaled_plan_is_refused_and_nothing_is_written() {
    type Damage = fn(&str) -> String;
    let cases: [(&str, Damage, &str); 2] = [
        (
            "tampered",
            |t| t.replace("fbtest-", "evil-"),
            "does not match its digest (tampered or truncated)",
        ),
        (
            "truncated",
            |t| t[..t.len() * 2 / 3].to_string(),
            "is not valid (truncated or edited)",
        ),
    ];
    for (name, damage, want) in cases {
        // Each case is a machine of its own seed: the seed binds a machine to its first key.
        let seed = Seed::start();
        let host = Host::new(4);
        let out = run_with_seed(&host, &seed, 0, &["--stop-after", "enroll"]);
        assert_eq!(out.status.code(), Some(75), "{name}: {}", stderr(&out));
        let path = host.path("var/lib/launcher/firstboot.json");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("fbtest-"),
            "the plan names the cluster's hosts"
        );
        std::fs::write(&path, damage(&text)).unwrap();
        let out = run_with_seed(&host, &seed, 0, &[]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{name}: {}", stderr(&out));
        assert!(!host.path("etc").exists(), "{name}: files were written");
        assert!(host.actions().is_empty(), "{name}: {:?}", host.actions());
    }
}

/// Runs firstboot on `host` against `seed`, its enrollment giving up after one answer.
fn enroll_once(host: &Host, seed: &Seed) -> common::Run {
    let mut args = seed.args();
    let at = args.iter().position(|a| a == "--enroll-wait-secs").unwrap();
    args[at + 1] = "0".to_string();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    host.run(0, &refs)
}

#[test]
fn a_host_waits_while_the_seed_lacks_images_and_goes_on_once_they_are_imported() {
    let seed = Seed::start_waiting_on_images();
    let host = Host::new(4);
    let out = enroll_once(&host, &seed);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let images = [
        ("kube-apiserver", "v1.33.4"),
        ("kube-controller-manager", "v1.33.4"),
        ("kube-scheduler", "v1.33.4"),
        ("kube-proxy", "v1.33.4"),
        ("coredns/coredns", "v1.12.0"),
        ("pause", "3.10"),
    ];
    let listed: Vec<String> = images
        .iter()
        .map(|(name, tag)| format!("127.0.0.1:8443/{name}:{tag}"))
        .collect();
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "waiting: the seed's registry lacks 6 images this cluster pulls: {}; no host installs until they are imported (launcher-seed images import)",
            listed.join(", ")
        )),
        "{err}"
    );
    assert_eq!(host.done_phases(), vec!["identify", "time"]);
    assert!(!host.path("etc").exists());

    let dir = tempfile::tempdir().unwrap();
    let archives: Vec<std::path::PathBuf> = images
        .iter()
        .zip(&listed)
        .map(|((name, tag), reference)| {
            let path = dir.path().join(format!("{}.tar", name.replace('/', "_")));
            common::oci_archive(&path, reference, tag);
            path
        })
        .collect();
    // Imported while the host waits: its next attempt, on the connection it kept open (no new
    // TLS handshake), enrolls it, and the seed CA it trusts from then on is the one it pinned.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(2));
            seed.import(&archives);
        });
        run_to_the_end("after the import", &host, &seed, 0);
    });
    assert!(host.path("var/lib/launcher/firstboot.done").is_file());
    let trusted = std::fs::read_to_string(host.path("etc/launcher/seed-ca.crt")).unwrap();
    let seed_ca = std::fs::read_to_string(seed.dir.path().join("state/seed-ca.crt")).unwrap();
    assert_eq!(trusted.trim(), seed_ca.trim());
}

/// The image says which Kubernetes release it carries; a worker's newer than the cluster's is
/// refused by the seed and the host waits, saying why, with nothing written; booted again with
/// an image that fits, it goes on.
#[test]
fn a_host_whose_image_carries_another_release_waits_and_says_why() {
    let seed = Seed::start();
    let host = Host::new(4);
    host.put(
        "etc/launcher/firstboot.toml",
        "kubernetes_version = \"v1.34.0\"\n",
    );
    let out = enroll_once(&host, &seed);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "(worker fbtest-w1): this host's image carries Kubernetes v1.34.0, newer than the \
             cluster's v1.33.4: a kubelet may not be newer than the API server; boot it from an \
             image for v1.33 or older"
        ),
        "{err}"
    );
    assert_eq!(host.done_phases(), vec!["identify", "time"]);
    assert!(!host.path("etc/kubernetes").exists());

    host.put(
        "etc/launcher/firstboot.toml",
        "kubernetes_version = \"v1.33.4\"\n",
    );
    run_to_the_end("with an image of the cluster's release", &host, &seed, 0);
    assert!(host.path("var/lib/launcher/firstboot.done").is_file());
}
