//! Helpers shared by integration tests across crates.
//!
//! A test that needs a tool calls [`require`] first: on a developer's machine a missing tool
//! skips the test with a printed reason; under CI (`CI=true`) it fails the test instead.

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub mod containerd;
pub mod fixtures;

/// Whether we run under CI, where a missing tool is a failure rather than a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds `tool` on PATH (or in the sbin directories Debian puts daemons in).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|dir| PathBuf::from(dir).join(tool))
        .find(|candidate| candidate.is_file())
}

/// Returns true when every tool exists. Otherwise prints why the test is skipped and returns
/// false, or panics under CI.
#[must_use]
pub fn require(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!("missing tool(s): {} (run ci/deps)", missing.join(", "));
    assert!(!under_ci(), "{reason}");
    eprintln!("SKIPPED: {reason}");
    false
}

/// Returns true when running as root. Otherwise skips (or fails under CI) with `why`.
#[must_use]
pub fn require_root(why: &str) -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if String::from_utf8_lossy(&uid).trim() == "0" {
        return true;
    }
    let reason = format!("needs root: {why}");
    assert!(!under_ci(), "{reason}");
    eprintln!("SKIPPED: {reason}");
    false
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves nothing
/// running.
#[derive(Debug)]
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process now and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Path of a binary built from this workspace (`cargo build` puts it next to the test binary).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// `launcher-seed images import --state-dir STATE ARCHIVES…`, which must succeed; what it
/// printed (one line per image imported).
pub fn seed_import(state: &std::path::Path, archives: &[&std::path::Path]) -> String {
    let out = Command::new(workspace_bin("launcher-seed"))
        .args(["images", "import", "--state-dir"])
        .arg(state)
        .args(archives)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "launcher-seed images import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
