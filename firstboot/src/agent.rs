//! The resident agent (`launcher-firstboot agent`, unit `launcher-agent.service`): once every
//! phase is done it keeps one held poll open to the seed that enrolled the host, over TLS
//! pinned to that seed's CA and presenting the host's identity key, carries out each command
//! the seed hands it and says what it came to. Between polls it holds nothing but a socket; a
//! seed that does not answer is asked again after a backoff with jitter (1 s doubling to 60 s).

use crate::hostkey::{self, HostKeyError};
use crate::journal::{Journal, JournalError};
use crate::os::{Cmd, Os};
use crate::seed::{SeedClient, SeedError, jittered};
use crate::storage;
use cluster::api::{CommandKind, CommandOutcome, HostCommand, Phase, Plan, Role};
use cluster::pki::CaPin;
use cluster::spec::SeedUrl;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the seed may hold a poll: under its 30 s cap.
pub const POLL_WAIT: Duration = Duration::from_secs(25);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How often an agent started before firstboot finished looks at the journal again.
const NOT_DONE_RECHECK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("firstboot has not finished on this host: the agent starts once every phase is done")]
    NotDone,
    #[error("the journal lacks {0}, which the enrollment records")]
    Incomplete(&'static str),
    #[error("the seed's CA certificate in the journal is unreadable: {0}")]
    SeedCa(String),
    #[error(transparent)]
    Key(#[from] HostKeyError),
    #[error(transparent)]
    Seed(#[from] SeedError),
}

/// One host's agent: who it is, which seed it asks, and the machine it acts on.
pub struct Agent<'a> {
    root: PathBuf,
    os: &'a dyn Os,
    client: SeedClient,
    seed: SeedUrl,
    host_id: String,
    plan: Plan,
}

impl<'a> Agent<'a> {
    /// The agent of the host under `root`, from firstboot's journal: the seed that enrolled it,
    /// trusted by the CA that matched the pin then, and the host's identity key.
    pub fn from_journal(root: &Path, os: &'a dyn Os) -> Result<Agent<'a>, AgentError> {
        let journal = Journal::load(root)?;
        if !journal.done.contains(&Phase::Done) {
            return Err(AgentError::NotDone);
        }
        let seed: SeedUrl = journal
            .seed
            .as_deref()
            .ok_or(AgentError::Incomplete("the seed's URL"))?
            .parse()
            .map_err(|_| AgentError::Incomplete("a readable seed URL"))?;
        let ca_pem = journal
            .seed_ca_pem
            .as_deref()
            .ok_or(AgentError::Incomplete("the seed's CA certificate"))?;
        let ca = pem::parse(ca_pem).map_err(|e| AgentError::SeedCa(e.to_string()))?;
        let pin =
            CaPin::of_cert_der(ca.contents()).map_err(|e| AgentError::SeedCa(e.to_string()))?;
        let plan = journal.plan.ok_or(AgentError::Incomplete("the plan"))?;
        let host_id = journal.host_id.unwrap_or_else(|| plan.host_id.clone());
        let key = hostkey::load_existing(root)?;
        Ok(Agent {
            root: root.to_path_buf(),
            os,
            client: SeedClient::new(pin, &key)?,
            seed,
            host_id,
            plan,
        })
    }

    /// Asks once (the seed holding the poll up to `wait`), carries out each command handed
    /// out and answers it. Returns the commands carried out.
    pub fn poll_once(&self, wait: Duration) -> Result<Vec<HostCommand>, String> {
        let mut done = Vec::new();
        for command in self.client.commands(&self.seed, &self.host_id, wait)? {
            match command {
                Ok(command) => {
                    self.carry_out(&command)?;
                    done.push(command);
                }
                Err(unknown) => {
                    let said = format!(
                        "launcher-firstboot {} does not know the command {}",
                        env!("CARGO_PKG_VERSION"),
                        unknown.kind
                    );
                    let outcome = CommandOutcome {
                        ok: false,
                        message: said,
                    };
                    self.client
                        .answer(&self.seed, &self.host_id, &unknown.id, &outcome)?;
                }
            }
        }
        Ok(done)
    }

    /// Polls for ever, backing off while the seed does not answer.
    pub fn run(&self) -> ! {
        tracing::info!(seed = %self.seed, host = %self.host_id, "agent polling for commands");
        let mut backoff = BACKOFF_START;
        loop {
            match self.poll_once(POLL_WAIT) {
                Ok(_) => backoff = BACKOFF_START,
                Err(why) => {
                    tracing::warn!("no commands from the seed: {why}");
                    self.os.sleep(jittered(backoff));
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        }
    }

    fn carry_out(&self, command: &HostCommand) -> Result<(), String> {
        tracing::info!(command = %command.id, kind = command.kind.as_str(), "carrying out");
        match command.kind {
            CommandKind::Health => {
                let (ok, message) = self.health();
                self.answer(command, ok, message)
            }
            CommandKind::Reboot => {
                // Said first, and done only once the seed has heard it: a reboot is never
                // handed out again after the host went down for it.
                self.answer(command, true, "rebooting".into())?;
                self.reboot()
            }
            CommandKind::Reset => {
                let disk = storage::data_disk_attached(&self.root).map_err(|e| e.to_string())?;
                let said = if disk {
                    "resetting: the LAUNCHER-DATA disk is cleared at the next boot and the host \
                     comes back with a new identity key"
                } else {
                    "resetting: this host keeps its state in RAM, so it comes back from the \
                     reboot with a new identity key"
                };
                // The seed unbinds the key when it records this answer; only then is the disk
                // marked, so a host whose answer was not heard is not reset.
                self.answer(command, true, said.into())?;
                if disk {
                    storage::mark_for_reset(&self.root).map_err(|e| e.to_string())?;
                }
                self.reboot()
            }
        }
    }

    fn reboot(&self) -> Result<(), String> {
        self.os
            .run(&Cmd::new("systemctl", &["reboot"]))
            .map(|_| ())
            .map_err(|e| format!("systemctl reboot: {e}"))
    }

    fn answer(&self, command: &HostCommand, ok: bool, message: String) -> Result<(), String> {
        let outcome = CommandOutcome { ok, message };
        self.client
            .answer(&self.seed, &self.host_id, &command.id, &outcome)
    }

    /// Uptime, load and the state of the units this host's role runs; healthy when every
    /// one of them is active.
    fn health(&self) -> (bool, String) {
        let read = |rel: &str| std::fs::read_to_string(self.root.join(rel)).unwrap_or_default();
        let uptime = read("proc/uptime")
            .split_whitespace()
            .next()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or("unknown".to_string(), |s| format!("{}s", s as u64));
        let load: Vec<String> = read("proc/loadavg")
            .split_whitespace()
            .take(3)
            .map(str::to_string)
            .collect();
        let units = units(&self.plan);
        let mut args = vec!["show", "--property=ActiveState", "--value"];
        args.extend(units.iter().copied());
        let states: Vec<String> = match self.os.run(&Cmd::new("systemctl", &args)) {
            Ok(out) => out
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
                .collect(),
            Err(e) => vec![format!("unknown ({e})"); 1],
        };
        let mut ok = states.len() == units.len();
        let mut said = Vec::new();
        for (i, unit) in units.iter().enumerate() {
            let state = states.get(i).map_or("unknown", String::as_str);
            ok &= state == "active";
            said.push(format!("{unit} {state}"));
        }
        let load = if load.len() == 3 {
            load.join(" ")
        } else {
            "unknown".into()
        };
        (ok, format!("up {uptime}, load {load}; {}", said.join(", ")))
    }
}

/// The units a host of this plan runs for the cluster.
fn units(plan: &Plan) -> Vec<&'static str> {
    let mut units = vec!["containerd", "kubelet"];
    if plan.role == Role::Master {
        units.push("launcher-etcd");
        if plan.vip.is_some() {
            units.push("keepalived");
        }
    }
    units
}

/// `launcher-firstboot agent`: waits until firstboot is done, then polls for ever.
pub fn main(root: &Path, os: &dyn Os) -> i32 {
    loop {
        match Agent::from_journal(root, os) {
            Ok(agent) => agent.run(),
            Err(AgentError::NotDone) | Err(AgentError::Journal(_)) => {
                tracing::debug!("firstboot has not finished; looking again in 30 s");
                os.sleep(NOT_DONE_RECHECK);
            }
            Err(e) => {
                eprintln!("launcher-firstboot agent: {e}");
                return 1;
            }
        }
    }
}
