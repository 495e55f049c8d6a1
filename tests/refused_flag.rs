//! End to end, bad input in the cluster file: a kube-apiserver flag kube-apiserver lacks
//! (`launcher-lab up --api-server-arg no-such-flag=1`, the cluster file's
//! `[cluster.api_server_extra_args]`). The master enrolls and starts etcd, then its install
//! fails with kube-apiserver's own verdict in the host's progress, as the seed reports it;
//! nothing of the control plane is half-started (no static Pod manifest, no API server).
//! `down` leaves nothing behind.

mod common;

use std::time::Duration;

use common::{exec_in, print_logs, text};
use lab::state::LabState;

/// What the host's progress must say, from the kubeadm stand-in's control-plane phase.
const VERDICT: &str = "install failed: `kubeadm init --config /etc/kubernetes/kubeadm.yaml` exited with exit status: 1: kubeadm-standin: error execution phase control-plane: kube-apiserver would refuse the command of its manifest, so none was written: unknown flag: --no-such-flag";

#[test]
fn a_flag_kube_apiserver_lacks_fails_the_install_with_its_verdict() {
    let Some(image) = common::image_or_skip() else {
        return;
    };
    let run_holder = tempfile::tempdir().unwrap();
    let run = run_holder.path().to_path_buf();
    let mut up = common::spawn_up(
        &run,
        &image,
        &[
            "--masters",
            "1",
            "--workers",
            "0",
            "--timeout",
            "900",
            "--api-server-arg",
            "no-such-flag=1",
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
