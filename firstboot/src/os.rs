//! The operating system behind a narrow trait: clock, hostname, commands, mounts, etcd health.
//!
//! [`RealOs`] acts on the machine. [`RecordingOs`] records every action instead (optionally into a
//! file under the root, so that a test can read what a run of the binary did) and keeps a
//! simulated clock, so that a host clock years off can be tested without touching the machine's.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum OsError {
    #[error("stepping the clock to {0} ms since the epoch")]
    Clock(i64, #[source] std::io::Error),
    #[error("setting the hostname to {0}")]
    Hostname(String, #[source] std::io::Error),
    #[error("running `{0}`")]
    Spawn(String, #[source] std::io::Error),
    /// The first line of the message is stderr's last line, where a command such as kubeadm puts
    /// its verdict after any warnings; the whole stderr follows when it has more lines.
    /// `log` is empty or says more, such as the last lines of a unit's journal.
    #[error("`{cmd}` exited with {status}: {}{log}", verdict_first(stderr))]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
        log: String,
    },
    #[error("probing {0}: {1}")]
    Probe(String, String),
    #[error(transparent)]
    Kubeconfig(#[from] crate::kubeconfig::KubeconfigError),
    #[error("recording an action in {0}")]
    Record(PathBuf, #[source] std::io::Error),
}

/// A command line: program and arguments, never passed through a shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
}

impl Cmd {
    pub fn new(program: &str, args: &[&str]) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// Something firstboot did to the machine, as recorded by [`RecordingOs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    StepClock {
        from_unix_ms: i64,
        to_unix_ms: i64,
    },
    SetHostname {
        name: String,
    },
    Run {
        cmd: Cmd,
    },
    Mount {
        source: String,
        target: String,
        fstype: Option<String>,
        bind: bool,
    },
    Probe {
        url: String,
    },
    KubeGet {
        kubeconfig: PathBuf,
        path: String,
    },
}

/// Files for a mutual-TLS probe: CA to trust, client certificate and key (PEM paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What firstboot needs from the machine.
pub trait Os {
    /// The host's clock, as Unix nanoseconds (negative before 1970).
    fn now_unix_nanos(&self) -> i128;
    /// Sets the host's clock (`clock_settime(CLOCK_REALTIME)`).
    fn step_clock(&self, to_unix_nanos: i128) -> Result<(), OsError>;
    fn set_hostname(&self, name: &str) -> Result<(), OsError>;
    /// Runs a command to completion and returns its stdout; a non-zero exit is an error.
    fn run(&self, cmd: &Cmd) -> Result<String, OsError>;
    /// `mount [-t fstype] source target`, or `mount --bind source target`.
    fn mount(
        &self,
        source: &str,
        target: &str,
        fstype: Option<&str>,
        bind: bool,
    ) -> Result<(), OsError>;
    fn sleep(&self, d: Duration);
    /// `GET url` over mutual TLS; the body of a 2xx answer.
    fn probe_https(&self, url: &str, tls: &ClientTls) -> Result<String, OsError>;
    /// `GET path` from the API server `kubeconfig` names, as its user; the body of a 2xx
    /// answer.
    fn kube_get(&self, kubeconfig: &Path, path: &str) -> Result<String, OsError>;
}

/// The machine itself.
#[derive(Debug, Default)]
pub struct RealOs;

fn system_unix_nanos() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn verdict_first(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.as_slice() {
        [] => "(no output on stderr)".into(),
        [only] => only.to_string(),
        [.., last] => format!("{last}\nstderr:\n{}", lines.join("\n")),
    }
}

fn run_command(cmd: &Cmd) -> Result<String, OsError> {
    let out = std::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| OsError::Spawn(cmd.to_string(), e))?;
    if !out.status.success() {
        return Err(OsError::Failed {
            cmd: cmd.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            log: String::new(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mount_cmd(source: &str, target: &str, fstype: Option<&str>, bind: bool) -> Cmd {
    let mut args: Vec<&str> = Vec::new();
    if bind {
        args.push("--bind");
    }
    if let Some(t) = fstype {
        args.extend(["-t", t]);
    }
    args.extend([source, target]);
    Cmd::new("mount", &args)
}

/// A client that trusts only `tls.ca` and presents `tls.cert` with `tls.key`.
pub(crate) fn mtls_client(
    tls: &ClientTls,
    timeout: Duration,
) -> Result<reqwest::blocking::Client, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
    let mut identity = read(&tls.cert)?;
    identity.extend(read(&tls.key)?);
    pem_client(&read(&tls.ca)?, &identity, timeout)
}

/// A client that trusts only the CA in `ca_pem` and presents the certificate and key in
/// `identity_pem`.
fn pem_client(
    ca_pem: &[u8],
    identity_pem: &[u8],
    timeout: Duration,
) -> Result<reqwest::blocking::Client, String> {
    let ca = reqwest::Certificate::from_pem(ca_pem).map_err(|e| e.to_string())?;
    let identity = reqwest::Identity::from_pem(identity_pem).map_err(|e| e.to_string())?;
    reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(identity)
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// An error with its sources, where a TLS or connection failure says what it was.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn probe(url: &str, tls: &ClientTls) -> Result<String, OsError> {
    let client =
        mtls_client(tls, Duration::from_secs(5)).map_err(|e| OsError::Probe(url.to_string(), e))?;
    get(&client, url)
}

fn get(client: &reqwest::blocking::Client, url: &str) -> Result<String, OsError> {
    let fail = |e: String| OsError::Probe(url.to_string(), e);
    let resp = client.get(url).send().map_err(|e| fail(with_sources(&e)))?;
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    if !status.is_success() {
        return Err(fail(format!("{status}: {body}")));
    }
    Ok(body)
}

impl Os for RealOs {
    fn now_unix_nanos(&self) -> i128 {
        system_unix_nanos()
    }

    fn step_clock(&self, to: i128) -> Result<(), OsError> {
        use nix::sys::time::TimeSpec;
        use nix::time::{ClockId, clock_settime};
        let secs = to.div_euclid(1_000_000_000) as i64;
        let nanos = to.rem_euclid(1_000_000_000) as i64;
        clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::new(secs, nanos))
            .map_err(|e| OsError::Clock((to / 1_000_000) as i64, e.into()))
    }

    fn set_hostname(&self, name: &str) -> Result<(), OsError> {
        nix::unistd::sethostname(name).map_err(|e| OsError::Hostname(name.to_string(), e.into()))
    }

    fn run(&self, cmd: &Cmd) -> Result<String, OsError> {
        run_command(cmd)
    }

    fn mount(&self, s: &str, t: &str, fstype: Option<&str>, bind: bool) -> Result<(), OsError> {
        run_command(&mount_cmd(s, t, fstype, bind)).map(|_| ())
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }

    fn probe_https(&self, url: &str, tls: &ClientTls) -> Result<String, OsError> {
        probe(url, tls)
    }

    fn kube_get(&self, kubeconfig: &Path, path: &str) -> Result<String, OsError> {
        let access = crate::kubeconfig::read(kubeconfig)?;
        let url = format!("{}{path}", access.server);
        let client = pem_client(
            &access.ca_pem,
            &access.identity_pem,
            Duration::from_secs(10),
        )
        .map_err(|e| OsError::Probe(url.clone(), e))?;
        get(&client, &url)
    }
}

/// Records actions instead of doing them, with a simulated clock `offset` away from the
/// machine's. Programs named in `run_for_real` are run for real (and recorded).
#[derive(Debug, Default)]
pub struct RecordingOs {
    offset_nanos: Mutex<i128>,
    actions: Mutex<Vec<Action>>,
    /// Where each action is appended as a JSON line, and where the clock offset is kept.
    dir: Option<PathBuf>,
    run_for_real: BTreeSet<String>,
    /// Canned stdout for recorded commands, by program name.
    pub outputs: std::collections::BTreeMap<String, String>,
    /// Command lines (as displayed) that fail, with their stderr.
    pub failures: std::collections::BTreeMap<String, String>,
    /// Whether sleeps really sleep (a run of the binary) or return at once (unit tests).
    real_sleep: bool,
}

/// File under the recording dir holding every action, one JSON object a line.
pub const ACTIONS_FILE: &str = "actions.jsonl";
const OFFSET_FILE: &str = "clock-offset-ns";

impl RecordingOs {
    /// In memory only, clock `offset` from the machine's, sleeps return at once.
    pub fn new(offset: Duration, behind: bool) -> RecordingOs {
        let n = offset.as_nanos() as i128;
        RecordingOs {
            offset_nanos: Mutex::new(if behind { -n } else { n }),
            ..Default::default()
        }
    }

    /// Kept in `dir` across runs: the clock offset (the first run starts at `initial_offset`
    /// seconds) and the actions file. Sleeps are real.
    pub fn persistent(
        dir: &Path,
        initial_offset_secs: i64,
        run_for_real: BTreeSet<String>,
    ) -> Result<RecordingOs, OsError> {
        std::fs::create_dir_all(dir).map_err(|e| OsError::Record(dir.to_path_buf(), e))?;
        let offset_path = dir.join(OFFSET_FILE);
        let offset = match std::fs::read_to_string(&offset_path) {
            Ok(t) => t.trim().parse::<i128>().unwrap_or(0),
            Err(_) => i128::from(initial_offset_secs) * 1_000_000_000,
        };
        let os = RecordingOs {
            offset_nanos: Mutex::new(offset),
            dir: Some(dir.to_path_buf()),
            run_for_real,
            real_sleep: true,
            // The simulated systemd keeps every unit it starts running.
            outputs: [(
                "systemctl".to_string(),
                "ActiveState=active\nNRestarts=0\n".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        os.save_offset(offset)?;
        Ok(os)
    }

    pub fn actions(&self) -> Vec<Action> {
        self.actions.lock().unwrap().clone()
    }

    fn save_offset(&self, offset: i128) -> Result<(), OsError> {
        if let Some(dir) = &self.dir {
            let path = dir.join(OFFSET_FILE);
            std::fs::write(&path, offset.to_string()).map_err(|e| OsError::Record(path, e))?;
        }
        Ok(())
    }

    fn record(&self, action: Action) -> Result<(), OsError> {
        if let Some(dir) = &self.dir {
            let path = dir.join(ACTIONS_FILE);
            let mut line = serde_json::to_string(&action).expect("actions serialize");
            line.push('\n');
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| OsError::Record(path, e))?;
        }
        self.actions.lock().unwrap().push(action);
        Ok(())
    }
}

/// Reads the actions a [`RecordingOs::persistent`] wrote into `dir`.
pub fn read_actions(dir: &Path) -> Vec<Action> {
    std::fs::read_to_string(dir.join(ACTIONS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl Os for RecordingOs {
    fn now_unix_nanos(&self) -> i128 {
        system_unix_nanos() + *self.offset_nanos.lock().unwrap()
    }

    fn step_clock(&self, to: i128) -> Result<(), OsError> {
        let from = self.now_unix_nanos();
        let offset = to - system_unix_nanos();
        *self.offset_nanos.lock().unwrap() = offset;
        self.save_offset(offset)?;
        self.record(Action::StepClock {
            from_unix_ms: (from / 1_000_000) as i64,
            to_unix_ms: (to / 1_000_000) as i64,
        })
    }

    fn set_hostname(&self, name: &str) -> Result<(), OsError> {
        self.record(Action::SetHostname {
            name: name.to_string(),
        })
    }

    fn run(&self, cmd: &Cmd) -> Result<String, OsError> {
        self.record(Action::Run { cmd: cmd.clone() })?;
        if let Some(stderr) = self.failures.get(&cmd.to_string()) {
            return Err(OsError::Failed {
                cmd: cmd.to_string(),
                status: "exit status: 1".into(),
                stderr: stderr.clone(),
                log: String::new(),
            });
        }
        if self.run_for_real.contains(&cmd.program) {
            return run_command(cmd);
        }
        Ok(self.outputs.get(&cmd.program).cloned().unwrap_or_default())
    }

    fn mount(&self, s: &str, t: &str, fstype: Option<&str>, bind: bool) -> Result<(), OsError> {
        self.record(Action::Mount {
            source: s.to_string(),
            target: t.to_string(),
            fstype: fstype.map(str::to_string),
            bind,
        })
    }

    fn sleep(&self, d: Duration) {
        if self.real_sleep {
            std::thread::sleep(d);
        }
    }

    fn probe_https(&self, url: &str, _tls: &ClientTls) -> Result<String, OsError> {
        self.record(Action::Probe {
            url: url.to_string(),
        })?;
        Ok(self
            .outputs
            .get(url)
            .cloned()
            .unwrap_or_else(|| r#"{"health":"true"}"#.to_string()))
    }

    /// Failures and canned answers by API path; otherwise a Node whose name is the path's last
    /// segment, as a kubelet that registered at once would have made it.
    fn kube_get(&self, kubeconfig: &Path, path: &str) -> Result<String, OsError> {
        self.record(Action::KubeGet {
            kubeconfig: kubeconfig.to_path_buf(),
            path: path.to_string(),
        })?;
        if let Some(why) = self.failures.get(path) {
            return Err(OsError::Probe(path.to_string(), why.clone()));
        }
        if let Some(answer) = self.outputs.get(path) {
            return Ok(answer.clone());
        }
        let name = path.rsplit('/').next().unwrap_or_default();
        Ok(serde_json::json!({"kind": "Node", "metadata": {"name": name}}).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_leads_with_its_last_line() {
        let failed = |stderr: &str| {
            OsError::Failed {
                cmd: "kubeadm join".into(),
                status: "exit status: 1".into(),
                stderr: stderr.into(),
                log: String::new(),
            }
            .to_string()
        };
        assert_eq!(
            failed(
                "W1201 warning: front-proxy CA key is absent\n\nerror execution phase mark-control-plane: timed out"
            ),
            "`kubeadm join` exited with exit status: 1: error execution phase mark-control-plane: timed out\n\
             stderr:\n\
             W1201 warning: front-proxy CA key is absent\n\
             error execution phase mark-control-plane: timed out"
        );
        assert_eq!(
            failed("no such file"),
            "`kubeadm join` exited with exit status: 1: no such file"
        );
        assert_eq!(
            failed("  \n"),
            "`kubeadm join` exited with exit status: 1: (no output on stderr)"
        );
    }

    #[test]
    fn the_recording_clock_is_offset_and_a_step_moves_it() {
        let os = RecordingOs::new(Duration::from_secs(10 * 365 * 86400), true);
        let skew = system_unix_nanos() - os.now_unix_nanos();
        assert!(skew > 9 * 365 * 86400 * 1_000_000_000, "{skew}");
        os.step_clock(system_unix_nanos()).unwrap();
        let skew = (system_unix_nanos() - os.now_unix_nanos()).abs();
        assert!(skew < 1_000_000_000, "{skew}");
        assert!(matches!(os.actions()[0], Action::StepClock { .. }));
    }

    #[test]
    fn a_persistent_recorder_keeps_its_clock_and_actions_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let os = RecordingOs::persistent(dir.path(), -3600, BTreeSet::new()).unwrap();
        os.set_hostname("m1").unwrap();
        os.run(&Cmd::new("kubeadm", &["init"])).unwrap();
        let again = RecordingOs::persistent(dir.path(), 0, BTreeSet::new()).unwrap();
        let behind = system_unix_nanos() - again.now_unix_nanos();
        assert!(behind > 3500 * 1_000_000_000, "{behind}");
        let actions = read_actions(dir.path());
        assert_eq!(actions.len(), 2);
        assert_eq!(
            actions[1],
            Action::Run {
                cmd: Cmd::new("kubeadm", &["init"])
            }
        );
    }

    #[test]
    fn mount_commands_are_spelled_as_mount_expects() {
        assert_eq!(
            mount_cmd("LABEL=LAUNCHER-DATA", "/mnt", Some("ext4"), false).to_string(),
            "mount -t ext4 LABEL=LAUNCHER-DATA /mnt"
        );
        assert_eq!(
            mount_cmd("/a", "/b", None, true).to_string(),
            "mount --bind /a /b"
        );
    }
}
