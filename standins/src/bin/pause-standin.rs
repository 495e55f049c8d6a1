//! `pause-standin`: a stand-in for the pause container (`registry.k8s.io/pause`), the process
//! that holds a Pod sandbox's namespaces. Like the real one: it waits for signals, reaps the
//! children it inherits as PID 1, and exits 0 on SIGINT or SIGTERM; `-v` prints its version.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {}
        [v] if v == "-v" => {
            println!(
                "pause-standin (a stand-in for pause) {}",
                env!("CARGO_PKG_VERSION")
            );
            return;
        }
        _ => {
            eprintln!("pause-standin: takes no arguments but -v");
            std::process::exit(1);
        }
    }
    if std::process::id() != 1 {
        eprintln!("Warning: pause should be the first process");
    }
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        signals.add(signal);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        eprintln!("pause-standin: blocking signals: {e}");
        std::process::exit(1);
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGINT | Signal::SIGTERM) => std::process::exit(0),
            Ok(_) => reap(),
            Err(e) => {
                eprintln!("pause-standin: waiting for a signal: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Collects every child that has exited.
fn reap() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
