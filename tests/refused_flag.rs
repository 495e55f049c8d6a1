//! End to end, bad input in the cluster file: a kube-apiserver flag kube-apiserver lacks
//! (`launcher-lab up --api-server-arg no-such-flag=1`, the cluster file's
//! `[cluster.api_server_extra_args]`). The master enrolls and starts etcd, then its install
//! fails with kube-apiserver's own verdict in the host's progress, as the seed reports it;
//! nothing of the control plane is half-started (no static Pod manifest, no API server).
//!
//! Beside it, a worker booted straight from an image built for Kubernetes v1.34.0 (`launcher-lab
//! up --direct-boot`, no network boot): a kubelet newer than the cluster's v1.33.4 API server, so
//! the seed refuses it with both versions named, records nothing, and `status` (the rows `up`
//! prints) says why. `down` leaves nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{exec_in, print_logs, text};
use lab::state::LabState;

/// The default image with another Kubernetes release, built into `out`.
fn image_for(version: &str, out: &Path) -> PathBuf {
    common::bake(
        out,
        |def| def["bundle"]["version"] = toml::Value::String(version.into()),
        &["--format", "pxe"],
    )
}

/// What the host's progress must say, from the kubeadm stand-in's control-plane phase.
const VERDICT: &str = "install failed: `kubeadm init --config /etc/kubernetes/kubeadm.yaml` exited with exit status: 1: kubeadm-standin: error execution phase control-plane: kube-apiserver would refuse the command of its manifest, so none was written: unknown flag: --no-such-flag";

#[test]
fn a_flag_kube_apiserver_lacks_fails_the_install_with_its_verdict() {
    let Some(image) = common::image_or_skip() else {
        return;
    };
    let run_holder = tempfile::tempdir().unwrap();
    let run = run_holder.path().to_path_buf();
    let newer = image_for("v1.34.0", &run.join("image-v1.34.0"));
    let direct = format!("w1={}", newer.display());
    let mut up = common::spawn_up(
        &run,
        &image,
        &[
            "--masters",
            "1",
            "--workers",
            "1",
            "--timeout",
            "900",
            "--api-server-arg",
            "no-such-flag=1",
            "--direct-boot",
            &direct,
        ],
    );
    let out = run.join("up.out");
    let checked = std::panic::catch_unwind(|| {
        // The progress rows `up` prints come from the seed's record of each host's reports.
        let failed = |times: usize| {
            let rows = text(&std::fs::read(&out).unwrap_or_default());
            let seen = rows
                .lines()
                .filter(|l| l.contains("install failed"))
                .count();
            (seen >= times).then_some(rows)
        };
        let rows = testkit::wait_for("the install to fail", Duration::from_secs(600), || {
            failed(1)
        });
        let row = rows.lines().find(|l| l.contains("install failed")).unwrap();
        assert!(row.ends_with(VERDICT), "{row}");
        assert!(row.contains("m1 (master lab-m1)"), "{row}");

        // Nothing half-started: no manifest, so no API server; etcd, started before, runs.
        let probe = exec_in(
            &run,
            "m1",
            &[
                "/bin/sh",
                "-c",
                "ls -A /etc/kubernetes/manifests 2>/dev/null | wc -l; \
                 systemctl is-active launcher-etcd; \
                 ss -Hltn 'sport = :6443' | wc -l",
            ],
        );
        let lines: Vec<String> = text(&probe.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .collect();
        assert_eq!(lines, ["0", "active", "0"], "{}", text(&probe.stderr));

        // The worker of another release: refused, nothing recorded, and the seed says why.
        let refused = testkit::wait_for(
            "the v1.34.0 worker to be refused",
            Duration::from_secs(300),
            || {
                let rows = text(&std::fs::read(&out).unwrap_or_default());
                rows.lines()
                    .find(|l| l.contains("] w1 (worker") && l.contains("enroll refused"))
                    .map(str::to_string)
            },
        );
        assert!(
            refused.contains(
                "(worker lab-w1): this host's image carries Kubernetes v1.34.0, newer than the \
                 cluster's v1.33.4: a kubelet may not be newer than the API server"
            ),
            "{refused}"
        );
        let options = LabState::load(&run).unwrap().unwrap().options.unwrap();
        let plan = lab::plan::LabPlan::new(options).unwrap();
        let status = lab::seed_api::read_status(&plan).expect("the seed answers");
        let hosts: Vec<Option<&str>> = status.hosts.iter().map(|h| h.hostname.as_deref()).collect();
        assert_eq!(
            hosts,
            [Some("lab-m1")],
            "nothing recorded of the refused worker"
        );
        let w1 = &plan.vms[1];
        assert!(
            status.refused.iter().any(|r| r.macs == w1.mac),
            "{:?}",
            status.refused
        );
    });
    up.kill();
    let state = LabState::load(&run).unwrap();
    if let Err(panic) = checked {
        print_logs(&run);
        let _ = common::lab(&run, &["down"]);
        std::panic::resume_unwind(panic);
    }
    let down = common::lab(&run, &["down"]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    if let Some(state) = state {
        common::assert_nothing_left(&run, &state);
    }
}
