//! `down` against real processes in a real namespace: a seed whose binary was deleted while it
//! ran (as `cargo build` relinking it does) and a namespace whose name is already gone are still
//! stopped, and nothing of the run is left.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lab::procs::Procfs;
use lab::runner;
use lab::state::{LabState, Started};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `bin 300` inside `namespace`, as the lab starts its processes.
fn start_in(namespace: &str, bin: &Path, proc: &Procfs) -> (std::process::Child, Started) {
    let child = Command::new("ip")
        .args(["netns", "exec", namespace])
        .arg(bin)
        .arg("300")
        .spawn()
        .unwrap();
    let started = Started {
        name: "seed".into(),
        pid: child.id(),
        program: "launcher-seed".into(),
        start_ticks: proc.stat(child.id()).unwrap().start_ticks,
        started_ms: 0,
    };
    (child, started)
}

#[test]
fn down_stops_a_relinked_seed_and_a_stray_in_a_namespace_whose_name_is_gone() {
    if !testkit::require_root("network namespaces") || !testkit::require(&["ip", "sleep"]) {
        return;
    }
    let run = tempfile::tempdir().unwrap();
    let namespace = format!("launcher-lab-test-{}", std::process::id());
    ip(&["netns", "add", &namespace]);
    let proc = Procfs::system();
    let inode = lab::procs::named_namespace_inode(&namespace).unwrap();
    let bin = run.path().join("launcher-seed");
    std::fs::copy(lab::which("sleep").unwrap(), &bin).unwrap();
    let (mut seed, started) = start_in(&namespace, &bin, &proc);
    // A process the state does not list, such as one a crashed `up` never recorded.
    let (mut stray, _) = start_in(&namespace, &bin, &proc);
    testkit::wait_for("both in the namespace", Duration::from_secs(10), || {
        (proc.in_net_namespace(inode).len() == 2).then_some(())
    });
    std::fs::remove_file(&bin).unwrap();
    ip(&["netns", "del", &namespace]);
    LabState {
        namespace: namespace.clone(),
        namespace_inode: Some(inode),
        processes: vec![started.clone()],
        options: None,
        added: Vec::new(),
    }
    .save(run.path())
    .unwrap();

    runner::down(run.path()).unwrap();
    for child in [&mut seed, &mut stray] {
        testkit::wait_for("down to stop it", Duration::from_secs(15), || {
            child.try_wait().unwrap()
        });
    }
    assert!(!started.runs(&proc));
    assert_eq!(proc.in_net_namespace(inode), Vec::<u32>::new());
    assert_eq!(LabState::load(run.path()).unwrap(), None);
}
