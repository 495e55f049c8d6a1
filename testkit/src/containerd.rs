//! A containerd of a test's own: root, state and config in a directory, its socket where the
//! test says, driven with the real `ctr` in one namespace; its containers' tasks deleted on drop
//! (their processes would outlive containerd otherwise), then containerd killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::{ChildGuard, wait_for};

pub struct Containerd {
    pub socket: PathBuf,
    pub namespace: String,
    _guard: ChildGuard,
}

impl Containerd {
    /// Starts containerd with its root, state and log in `dir` and its socket at `socket`
    /// (the CRI plugin off), and waits until it answers.
    pub fn start(dir: &Path, socket: &Path, namespace: &str) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\",\n\
             \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\",\n\
             \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.tracing.processor.v1.otlp\"]\n\
             [grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n",
            d = dir.display(),
            s = socket.display()
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let guard = ChildGuard::spawn(
            "containerd",
            Command::new("containerd")
                .arg("--config")
                .arg(&config_path)
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let c = Containerd {
            socket: socket.to_path_buf(),
            namespace: namespace.to_owned(),
            _guard: guard,
        };
        wait_for("containerd to answer", Duration::from_secs(30), || {
            c.ctr(&["version"]).status.success().then_some(())
        });
        c
    }

    /// `ctr ARGS…` against this containerd, in its namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", &self.namespace])
            .args(args)
            .output()
            .unwrap()
    }

    /// `ctr ARGS…` that must succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The state of the task of container `id` (`RUNNING`, `STOPPED`), if it has one.
    pub fn task_state(&self, id: &str) -> Option<String> {
        let out = String::from_utf8(self.ctr(&["task", "ls"]).stdout).unwrap();
        out.lines().find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
        })
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let ids = String::from_utf8(self.ctr(&["containers", "ls", "-q"]).stdout).unwrap();
        for id in ids.lines() {
            self.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
            for _ in 0..50 {
                if self.ctr(&["task", "delete", id]).status.success()
                    || self.task_state(id).is_none()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            self.ctr(&["containers", "delete", id]);
        }
    }
}
