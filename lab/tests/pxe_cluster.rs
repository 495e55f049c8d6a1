//! End to end: one master and one worker power on with blank disks and wrong clocks, PXE-boot
//! from the seed in a lab namespace, and both reach `done` with a healthy etcd; `down` then
//! stops every process and removes the namespace.

use std::path::{Path, PathBuf};
use std::process::Command;

use lab::plan::namespace_for;
use lab::state::{LabState, runs};

fn image_dir() -> PathBuf {
    std::env::var_os("LAUNCHER_LAB_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::workspace_root().join("out"))
}

fn print_logs(run: &Path) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(run)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    for path in names {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".console") || name.ends_with(".log") {
            let text =
                String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            eprintln!("===== {} (last 80 lines) =====", path.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn one_master_and_one_worker_boot_by_pxe_and_reach_done() {
    if !testkit::require_root("network namespaces, taps and qemu")
        || !testkit::require(&["qemu-system-x86_64", "dnsmasq", "ip", "etcdctl", "sfdisk"])
    {
        return;
    }
    let image = image_dir();
    if !image.join("vmlinuz").is_file() || !image.join("initrd.img").is_file() {
        let reason = format!(
            "no node image in {} (make it with `launcher-build images/debian-bookworm.toml \
             --out out/` or point LAUNCHER_LAB_IMAGE at one; ci/test bakes one)",
            image.display()
        );
        assert!(!testkit::under_ci(), "{reason}");
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let _ = testkit::workspace_bin("launcher-seed");
    let run_holder = tempfile::tempdir().unwrap();
    let run = run_holder.path().to_path_buf();
    let lab = env!("CARGO_BIN_EXE_launcher-lab");
    let output = Command::new(lab)
        .args([
            "up",
            "--masters",
            "1",
            "--workers",
            "1",
            "--timeout",
            "1500",
            "--image",
        ])
        .arg(&image)
        .arg("--run-dir")
        .arg(&run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        print_logs(&run);
    }
    assert!(
        output.status.success(),
        "launcher-lab up failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("every host is done"), "{stdout}");
    assert!(stdout.contains("m1 (master"), "{stdout}");
    assert!(stdout.contains("w1 (worker"), "{stdout}");
    assert!(stdout.contains("done succeeded"), "{stdout}");
    assert!(stdout.contains(" voting   healthy "), "{stdout}");
    assert!(stdout.contains("the cluster is up"), "{stdout}");

    let state = LabState::load(&run)
        .unwrap()
        .expect("a running lab has a state file");
    assert_eq!(state.namespace, namespace_for(&run));
    assert_eq!(state.processes.len(), 4, "{state:?}");
    assert!(namespaces().contains(&state.namespace));

    let down = Command::new(lab)
        .arg("down")
        .arg("--run-dir")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    for p in &state.processes {
        assert!(
            !runs(p.pid, &p.program),
            "{} ({}) still runs after down",
            p.name,
            p.pid
        );
    }
    assert!(!namespaces().contains(&state.namespace));
    assert_eq!(LabState::load(&run).unwrap(), None);
}
