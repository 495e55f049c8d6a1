//! The phase driver: runs each unfinished phase in order, journals it after it succeeded, and
//! reports start, end and failure to the seed.

use crate::config::Config;
use crate::journal::{DONE_MARKER, Journal};
use crate::os::Os;
use crate::seed::{NotYet, SeedClient};
use crate::{fsutil, hostkey, identify, keys, materialize, node, preload, storage, time};
use cluster::api::{EnrollRequest, Phase, PhaseState, ProgressReport};
use cluster::spec::SeedUrl;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a run needs besides the OS.
#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    /// The kernel command line's text (for the boot interface).
    pub cmdline: String,
    pub config: Config,
    /// Stop right after journaling this phase (to test resuming).
    pub stop_after: Option<Phase>,
    /// How long enrollment may wait (None: until enrolled).
    pub enroll_wait: Option<Duration>,
    pub etcd_wait: Duration,
    /// How long the installed kubelet may take to register its Node.
    pub node_wait: Duration,
    /// Whether preload restarts containerd on the configuration materialize wrote.
    pub restart_containerd: bool,
}

/// How a run ended without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    StoppedAfter(Phase),
}

/// A failed phase: which, what was tried, what went wrong, what to check.
#[derive(Debug, thiserror::Error)]
#[error("firstboot phase `{phase}` failed: {message}\n  tried: {tried}\n  check: {check}")]
pub struct PhaseFailure {
    pub phase: String,
    pub tried: String,
    pub message: String,
    pub check: String,
}

/// An error and its sources, `: `-separated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// What each phase tries and what to check when it fails.
fn describe(phase: Phase, o: &Options) -> (String, String) {
    let seeds: Vec<String> = o.config.seeds.iter().map(SeedUrl::to_string).collect();
    let (tried, check) = match phase {
        Phase::Identify => ("reading MACs and DMI ids from /sys".into(), "that /sys is mounted".into()),
        Phase::Time => (
            format!("sntp against {}", o.config.ntp),
            "the seed's ntp server and the network path to it (udp)".into(),
        ),
        Phase::Enroll => (
            format!("POST /v1/enroll to {}", seeds.join(", ")),
            "that the seed runs, that the pin is `launcher-seed pin`'s, and that the host is in the inventory, has a token or is approved".into(),
        ),
        Phase::Materialize => (
            "writing the plan's files and containerd's configuration".into(),
            "free space and permissions under /etc and /var/lib".into(),
        ),
        Phase::Storage => (
            "mounting the LAUNCHER-DATA disk".into(),
            "the disk's filesystem (`blkid`), or boot with launcher.wipe=1 to format an empty one".into(),
        ),
        Phase::Preload => (
            format!("ctr images import from {}", o.config.preload_dir),
            format!("that containerd runs at {} (`journalctl -u containerd`)", o.config.containerd_address),
        ),
        Phase::Etcd => (
            "starting etcd and waiting for its health".into(),
            "`journalctl -u launcher-etcd` and the other masters".into(),
        ),
        Phase::Install => (
            "keepalived (masters with a VIP) then kubeadm init/join, or starting the kubelet; then waiting for the Node to register".into(),
            "the output above, the config files the plan wrote, `journalctl -u keepalived` and `journalctl -u kubelet`".into(),
        ),
        Phase::Done => ("writing the done marker".into(), "free space under /var/lib/launcher".into()),
    };
    (tried, check)
}

fn failure(phase: &str, tried: String, check: String, e: &dyn std::error::Error) -> PhaseFailure {
    PhaseFailure {
        phase: phase.to_string(),
        tried,
        message: chain(e),
        check,
    }
}

struct Runner<'a> {
    o: &'a Options,
    os: &'a dyn Os,
    client: SeedClient,
    journal: Journal,
    rebooted: bool,
}

impl Runner<'_> {
    fn report(&self, phase: Phase, state: PhaseState, message: &str) {
        let (Some(id), Some(seed)) = (&self.journal.host_id, &self.journal.seed) else {
            return;
        };
        let Ok(seed) = seed.parse::<SeedUrl>() else {
            return;
        };
        // The seed keeps messages up to 4 KiB; the start of a failure says the most.
        let mut message = message.to_string();
        if message.len() > 4000 {
            let mut end = 4000;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let report = ProgressReport {
            phase,
            state,
            message,
            at_unix_ms: (self.os.now_unix_nanos() / 1_000_000) as i64,
        };
        self.client.report(&seed, id, &report);
    }

    fn phase(&mut self, phase: Phase) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let root = &self.o.root;
        let cfg = &self.o.config;
        match phase {
            Phase::Identify => {
                self.journal.identity = Some(identify::identify(root, &self.o.cmdline)?);
            }
            Phase::Time => {
                let rec = time::sync(self.os, &cfg.ntp.to_string(), cfg.max_skew, cfg.ntp_wait)?;
                self.journal.time = Some(rec);
            }
            Phase::Enroll => self.enroll()?,
            Phase::Materialize => self.materialize()?,
            Phase::Storage => {
                self.journal.data_disk = Some(storage::storage(root, self.os, cfg.wipe)?);
            }
            Phase::Preload => {
                let names = preload::preload(
                    root,
                    self.os,
                    &cfg.preload_dir,
                    &cfg.containerd_address,
                    self.o.restart_containerd,
                )?;
                self.journal.preloaded = names;
            }
            Phase::Etcd => {
                node::etcd(root, self.os, self.journal.plan(), self.o.etcd_wait)?;
            }
            Phase::Install => self.install()?,
            Phase::Done => {
                let marker = fsutil::under_root(root, DONE_MARKER)?;
                durable::write_atomic(&marker, b"done\n", 0o644)?;
            }
        }
        Ok(())
    }

    /// The plan's files, and containerd's configuration.
    fn materialize(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let seed: SeedUrl = self.journal.seed.as_deref().unwrap_or_default().parse()?;
        let ca = self.journal.seed_ca_pem.clone().unwrap_or_default();
        let plan = self.journal.plan();
        let n = materialize::materialize(&self.o.root, self.os, plan, &seed, &ca)?;
        tracing::info!("wrote {n} files");
        Ok(())
    }

    /// keepalived and kubeadm (masters) or the kubelet (workers), then the wait for the Node.
    /// A master whose kubeadm failed in this boot is reset before kubeadm runs again, so that
    /// the retry meets a node as the first attempt did, not the files that attempt left.
    fn install(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let root = &self.o.root;
        let plan = self.journal.plan().clone();
        let master = plan.role == cluster::api::Role::Master;
        let done_this_boot =
            self.journal.boot_id.is_some() && self.journal.kubeadm_boot == self.journal.boot_id;
        let step = node::kubeadm_step(
            done_this_boot,
            self.rebooted,
            master && node::manifests_present(root)?,
        );
        if master && step == node::Kubeadm::ResetThenRun {
            tracing::warn!("an earlier kubeadm in this boot left its files: kubeadm reset first");
            node::reset(self.os)?;
            self.materialize()?;
        }
        let run_kubeadm = step != node::Kubeadm::Skip;
        node::install(root, self.os, &plan, run_kubeadm)?;
        if master && run_kubeadm {
            self.journal.kubeadm_boot = self.journal.boot_id.clone();
            self.journal.save(root)?;
        }
        crate::registered::wait_registered(root, self.os, &plan, self.o.node_wait)?;
        Ok(())
    }

    fn enroll(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let csrs = keys::ensure_keys_and_csrs(&self.o.root)?;
        let req = EnrollRequest {
            identity: self.journal.identity.clone().unwrap_or_default(),
            token: self.o.config.token.as_ref().map(|t| t.as_str().to_string()),
            csrs,
            kubernetes_version: self.o.config.kubernetes_version,
        };
        let enrolled = self.client.enroll(
            self.os,
            &self.o.config.seeds,
            &req,
            self.o.enroll_wait,
            |not_yet| match not_yet {
                NotYet::IdentityTaken { .. } => tracing::warn!("{not_yet}"),
                _ => tracing::info!("not enrolled yet: {not_yet}"),
            },
        )?;
        tracing::info!(
            host_id = %enrolled.plan.host_id,
            role = %enrolled.plan.role,
            hostname = %enrolled.plan.hostname,
            "enrolled"
        );
        self.journal.host_id = Some(enrolled.plan.host_id.clone());
        self.journal.seed = Some(enrolled.seed.to_string());
        self.journal.seed_ca_pem = Some(enrolled.seed_ca_pem);
        self.journal.plan = Some(enrolled.plan);
        Ok(())
    }
}

/// Runs every unfinished phase. The data disk, when there is one, is attached before the
/// journal is read, so that a rebooted host resumes from the journal on its disk, and the
/// identity key beside it is read (or made, see `hostkey`) before any request to the seed.
pub fn run(o: &Options, os: &dyn Os) -> Result<Outcome, PhaseFailure> {
    let early = |e: &dyn std::error::Error, what: &str| {
        failure("start", what.to_string(), "the message above".into(), e)
    };
    storage::attach(&o.root, os).map_err(|e| early(&e, "attaching the LAUNCHER-DATA disk"))?;
    let mut journal =
        crate::journal::Journal::load(&o.root).map_err(|e| early(&e, "reading the journal"))?;
    let boot_id = std::fs::read_to_string(o.root.join("proc/sys/kernel/random/boot_id"))
        .ok()
        .map(|s| s.trim().to_string());
    let rebooted = journal.new_boot(boot_id);
    if rebooted {
        tracing::info!("the host rebooted: redoing time, materialize, etcd and install");
    }
    let identity = hostkey::load_or_make(&o.root, os, o.config.wipe)
        .map_err(|e| early(&e, "reading or making the host's identity key"))?;
    match identity.id() {
        Ok(id) => tracing::info!("identity key {id}"),
        Err(e) => tracing::warn!("the identity key's id: {e}"),
    }
    let client = SeedClient::new(o.config.pin, &identity)
        .map_err(|e| early(&e, "making the https client"))?;
    let mut runner = Runner {
        o,
        os,
        client,
        journal,
        rebooted,
    };
    for phase in Phase::ALL {
        if runner.journal.is_done(phase) {
            tracing::debug!("phase {} already done", phase.as_str());
            continue;
        }
        let span = tracing::info_span!("phase", name = phase.as_str());
        let _guard = span.enter();
        tracing::info!("starting");
        runner.report(phase, PhaseState::Started, "");
        if let Err(e) = runner.phase(phase) {
            let (tried, check) = describe(phase, o);
            let f = failure(phase.as_str(), tried, check, e.as_ref());
            runner.report(phase, PhaseState::Failed, &f.message);
            return Err(f);
        }
        runner.journal.mark_done(phase);
        runner.journal.save(&o.root).map_err(|e| {
            let (tried, _) = describe(phase, o);
            failure(
                phase.as_str(),
                tried,
                "free space under /var/lib/launcher".into(),
                &e,
            )
        })?;
        runner.report(phase, PhaseState::Succeeded, "");
        tracing::info!("done");
        if o.stop_after == Some(phase) {
            return Ok(Outcome::StoppedAfter(phase));
        }
    }
    Ok(Outcome::Done)
}
