//! Processes as `/proc` shows them: which one a recorded pid still is, which ones live in a network
//! namespace, and stopping them. The root is passed in, so tests read a fake `/proc`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// What a process's `stat` line says that the lab uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `Z`, …
    pub state: char,
    /// Field 22: when the process started, in clock ticks since boot. A pid names the same
    /// process only while this stays the same; `exec` and a deleted binary leave it alone.
    pub start_ticks: u64,
}

impl Stat {
    /// Reads a `/proc/<pid>/stat` line; the command in parentheses may itself hold `)` and spaces.
    pub fn parse(line: &str) -> Option<Stat> {
        let fields: Vec<&str> = line.rsplit_once(')')?.1.split_whitespace().collect();
        // `fields[0]` is field 3 of the line.
        Some(Stat {
            state: fields.first()?.chars().next()?,
            start_ticks: fields.get(19)?.parse().ok()?,
        })
    }

    /// A zombie or a dead task runs nothing any more.
    pub fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// A `/proc` to read: the real one, or a directory laid out like it.
#[derive(Debug, Clone)]
pub struct Procfs {
    root: PathBuf,
}

impl Procfs {
    pub fn system() -> Procfs {
        Procfs::at("/proc")
    }

    pub fn at(root: impl Into<PathBuf>) -> Procfs {
        Procfs { root: root.into() }
    }

    /// `pid`'s stat line, read; `None` once the pid is gone.
    pub fn stat(&self, pid: u32) -> Option<Stat> {
        let line = std::fs::read_to_string(self.root.join(pid.to_string()).join("stat")).ok()?;
        Stat::parse(&line)
    }

    /// Whether `pid` is still the process that started at `start_ticks`, and runs.
    pub fn is_running(&self, pid: u32, start_ticks: u64) -> bool {
        self.stat(pid)
            .is_some_and(|s| s.start_ticks == start_ticks && s.running())
    }

    /// Every pid in `/proc`.
    fn pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        pids
    }

    /// The network namespace `pid` lives in, by its inode (`/proc/<pid>/ns/net` reads
    /// `net:[INODE]`).
    pub fn net_namespace(&self, pid: u32) -> Option<u64> {
        let link = std::fs::read_link(self.root.join(pid.to_string()).join("ns/net")).ok()?;
        namespace_inode(link.to_str()?)
    }

    /// Every running process in the network namespace with inode `inode`, named or not.
    pub fn in_net_namespace(&self, inode: u64) -> Vec<u32> {
        self.pids()
            .into_iter()
            .filter(|pid| self.net_namespace(*pid) == Some(inode))
            .filter(|pid| self.stat(*pid).is_some_and(|s| s.running()))
            .collect()
    }
}

/// The inode in a `net:[INODE]` link.
fn namespace_inode(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The inode of the named network namespace (`/run/netns/NAME` is a bind mount of it).
pub fn named_namespace_inode(name: &str) -> Option<u64> {
    std::fs::metadata(Path::new("/run/netns").join(name))
        .ok()
        .map(|m| m.ino())
}

/// SIGTERM to every process of `targets` (pid and start ticks) still running, up to `grace` for
/// them to end, then SIGKILL to the rest. Returns how many were running.
pub fn stop_all(proc: &Procfs, targets: &[(u32, u64)], grace: Duration) -> usize {
    let running: Vec<(u32, u64)> = targets
        .iter()
        .copied()
        .filter(|&(pid, ticks)| proc.is_running(pid, ticks))
        .collect();
    let signal = |sig| {
        for &(pid, ticks) in &running {
            if proc.is_running(pid, ticks) {
                let _ = kill(Pid::from_raw(pid as i32), sig);
            }
        }
    };
    signal(Signal::SIGTERM);
    let started = Instant::now();
    while started.elapsed() < grace
        && running
            .iter()
            .any(|&(pid, ticks)| proc.is_running(pid, ticks))
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(Signal::SIGKILL);
    running.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line with `state` and `start` in fields 3 and 22.
    fn stat_line(pid: u32, comm: &str, state: char, start: u64) -> String {
        format!(
            "{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 4194560 0 0 0 0 3 1 0 0 20 0 1 0 {start} 0 0"
        )
    }

    fn fake_process(root: &Path, pid: u32, state: char, start: u64, netns: u64) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        std::fs::write(
            dir.join("stat"),
            stat_line(pid, "launcher-seed", state, start),
        )
        .unwrap();
        std::os::unix::fs::symlink(format!("net:[{netns}]"), dir.join("ns/net")).unwrap();
    }

    #[test]
    fn stat_lines_give_state_and_start_time_whatever_the_command_holds() {
        let cases = [
            (stat_line(42, "qemu", 'S', 777), Some(('S', 777))),
            (stat_line(42, "a) b (c", 'Z', 9), Some(('Z', 9))),
            (
                stat_line(42, "launcher-seed (deleted)", 'R', 5),
                Some(('R', 5)),
            ),
            ("42 (short) S 1 2".to_string(), None),
            ("garbage".to_string(), None),
        ];
        for (line, want) in cases {
            let got = Stat::parse(&line).map(|s| (s.state, s.start_ticks));
            assert_eq!(got, want, "{line}");
        }
        assert_eq!(namespace_inode("net:[4026532281]"), Some(4026532281));
        assert_eq!(namespace_inode("mnt:[4026532281]"), None);
    }

    #[test]
    fn a_pid_is_the_recorded_process_only_with_its_start_time_and_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let proc = Procfs::at(dir.path());
        fake_process(dir.path(), 100, 'S', 5000, 1);
        fake_process(dir.path(), 101, 'Z', 5001, 1);
        let cases = [
            ((100, 5000), true),
            ((100, 4999), false), // the pid was reused by a later process
            ((101, 5001), false), // a zombie
            ((102, 5002), false), // gone
        ];
        for ((pid, ticks), want) in cases {
            assert_eq!(proc.is_running(pid, ticks), want, "pid {pid} ticks {ticks}");
        }
    }

    #[test]
    fn the_namespace_holds_every_running_process_in_it_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let proc = Procfs::at(dir.path());
        fake_process(dir.path(), 7, 'S', 1, 4026532001);
        fake_process(dir.path(), 31, 'R', 2, 4026531840);
        fake_process(dir.path(), 205, 'S', 3, 4026532001);
        fake_process(dir.path(), 206, 'Z', 4, 4026532001);
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        std::fs::create_dir_all(dir.path().join("300")).unwrap();
        assert_eq!(proc.in_net_namespace(4026532001), [7, 205]);
        assert_eq!(proc.in_net_namespace(4026531840), [31]);
        assert_eq!(proc.in_net_namespace(1), Vec::<u32>::new());
    }

    #[test]
    fn a_process_whose_binary_was_deleted_is_still_found_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("launcher-seed");
        std::fs::copy(crate::which("sleep").expect("sleep"), &bin).unwrap();
        let mut child = std::process::Command::new(&bin).arg("30").spawn().unwrap();
        std::fs::remove_file(&bin).unwrap();
        let proc = Procfs::system();
        let pid = child.id();
        let ticks = proc.stat(pid).unwrap().start_ticks;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert!(exe.to_string_lossy().ends_with(" (deleted)"), "{exe:?}");
        assert!(proc.is_running(pid, ticks));
        assert!(!proc.is_running(pid, ticks + 1));
        let own = proc.net_namespace(std::process::id());
        assert!(own.is_some());
        assert!(own.is_some_and(|ns| proc.in_net_namespace(ns).contains(&pid)));
        assert_eq!(stop_all(&proc, &[(pid, ticks)], Duration::from_secs(5)), 1);
        child.wait().unwrap();
        assert!(!proc.is_running(pid, ticks));
        assert_eq!(stop_all(&proc, &[(pid, ticks)], Duration::from_secs(5)), 0);
    }
}
