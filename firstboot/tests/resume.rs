//! Resuming: firstboot stopped right after each phase in turn finishes on the rerun with the
//! same identity key, and every phase and every action happens once.

mod common;

use common::{Host, Seed, run_to_the_end, run_with_seed, stderr};
use firstboot::os::Action;

const PHASES: [&str; 9] = [
    "identify",
    "time",
    "enroll",
    "materialize",
    "storage",
    "preload",
    "etcd",
    "install",
    "done",
];

#[test]
fn a_run_stopped_after_any_phase_resumes_and_does_each_phase_once() {
    for stop in &PHASES[..8] {
        // A new machine each time, so a seed of its own: the seed binds a machine to its first
        // key.
        let seed = Seed::start();
        let host = Host::new(1);
        // A data disk and an image archive, so that storage and preload act.
        host.put("dev/disk/by-label/LAUNCHER-DATA", "");
        host.put("usr/share/launcher/images/a.tar", "");
        let out = run_with_seed(&host, &seed, -3600, &["--stop-after", stop]);
        assert_eq!(
            out.status.code(),
            Some(75),
            "stop after {stop}: {}",
            stderr(&out)
        );
        let done = host.done_phases();
        assert_eq!(done.last().map(String::as_str), Some(*stop));
        let key = std::fs::read_to_string(firstboot::hostkey::key_path(host.root())).unwrap();

        run_to_the_end(&format!("rerun after {stop}"), &host, &seed, -3600);
        assert_eq!(host.done_phases(), PHASES, "after {stop}");
        let again = std::fs::read_to_string(firstboot::hostkey::key_path(host.root())).unwrap();
        assert_eq!(again, key, "the rerun after {stop} kept the identity key");

        let actions = host.actions();
        let count = |pred: &dyn Fn(&Action) -> bool| actions.iter().filter(|a| pred(a)).count();
        let ran = |prefix: &str| {
            count(&|a| matches!(a, Action::Run { cmd } if cmd.to_string().starts_with(prefix)))
        };
        assert_eq!(
            count(&|a| matches!(a, Action::StepClock { .. })),
            1,
            "after {stop}: {actions:?}"
        );
        assert_eq!(
            count(&|a| matches!(a, Action::SetHostname { .. })),
            1,
            "after {stop}"
        );
        assert_eq!(
            count(&|a| matches!(a, Action::Mount { bind: false, .. })),
            1,
            "after {stop}"
        );
        assert_eq!(ran("systemctl restart containerd"), 1, "after {stop}");
        assert_eq!(ran("ctr "), 1, "after {stop}");
        assert_eq!(
            ran("systemctl enable --now launcher-etcd.service"),
            1,
            "after {stop}"
        );
        assert_eq!(ran("kubeadm init"), 1, "after {stop}: {actions:?}");
    }
}

/// A master whose kubeadm failed in this boot left static Pod manifests (and the reset it
/// needs empties the certificates directory): the next run resets the node, writes the plan's
/// files again, then runs kubeadm, instead of meeting the leftovers in kubeadm's preflight.
#[test]
fn a_master_retried_after_a_failed_kubeadm_is_reset_first() {
    let seed = Seed::start();
    let host = Host::new(1);
    let out = run_with_seed(&host, &seed, 0, &["--stop-after", "etcd"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    // What a kubeadm cut off halfway leaves, and what a reset removes.
    host.put(
        "etc/kubernetes/manifests/kube-apiserver.yaml",
        "apiVersion: v1\nkind: Pod\n",
    );
    std::fs::remove_file(host.path("etc/kubernetes/pki/ca.crt")).unwrap();

    run_to_the_end("after a failed kubeadm", &host, &seed, 0);
    let ran: Vec<String> = host
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Run { cmd } if cmd.program == "kubeadm" => Some(cmd.to_string()),
            _ => None,
        })
        .collect();
    let config = host.path("etc/kubernetes/kubeadm.yaml");
    assert_eq!(
        ran,
        [
            "kubeadm reset --force --cri-socket unix:///run/containerd/containerd.sock".to_string(),
            format!("kubeadm init --config {}", config.display()),
        ]
    );
    assert!(host.path("etc/kubernetes/pki/ca.crt").is_file());
    assert!(host.path("var/lib/launcher/firstboot.done").is_file());
}
