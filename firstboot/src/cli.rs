//! The command line of `launcher-firstboot`.

use crate::config::{self, Overrides};
use crate::os::{Os, RealOs};
use crate::run::{self, Options, Outcome};
use clap::Parser;
use cluster::api::Phase;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit status of a run stopped on purpose by `--stop-after`.
pub const EXIT_STOPPED: i32 = 75;

/// Turns this machine into a node of the cluster its seed decides: syncs time with the seed,
/// enrolls over TLS pinned to the seed's CA, writes the plan it receives, keeps state on the
/// LAUNCHER-DATA disk, preloads images, starts etcd (masters) and runs kubeadm or the kubelet.
///
/// Each phase is journaled in /var/lib/launcher/firstboot.json after it succeeds; a rerun
/// resumes at the first unfinished phase. The host's identity key, made on its first boot, is
/// kept beside it in /var/lib/launcher/identity/key.pem and presented to the seed on every
/// connection. Configuration comes from /etc/launcher/firstboot.toml,
/// then the kernel command line (launcher.seed=, launcher.pin=, launcher.token=, launcher.ntp=,
/// launcher.wipe=1), then these flags.
#[derive(Debug, Parser)]
#[command(name = "launcher-firstboot", version)]
pub struct Cli {
    /// Apply everything under this directory instead of / (dry run, tests).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Read the kernel command line from this file instead of <root>/proc/cmdline.
    #[arg(long, value_name = "FILE")]
    pub cmdline: Option<PathBuf>,
    /// Seed base URL (https://HOST:PORT); repeat for several seeds.
    #[arg(long, value_name = "URL")]
    pub seed: Vec<String>,
    /// SHA-256 pin of the seed CA's public key, `sha256:<hex>`.
    #[arg(long)]
    pub pin: Option<String>,
    /// One-time join token.
    #[arg(long)]
    pub token: Option<String>,
    /// The seed's NTP server, HOST[:PORT] (default: the first seed's host, port 123).
    #[arg(long, value_name = "ADDR")]
    pub ntp: Option<String>,
    /// Largest clock skew to the seed allowed after stepping, in milliseconds (default 500).
    #[arg(long, value_name = "MS")]
    pub max_skew_ms: Option<u32>,
    /// How long to keep asking a silent NTP server, in seconds (default 60).
    #[arg(long, value_name = "SECS")]
    pub ntp_wait_secs: Option<u32>,
    /// Give up enrolling after this many seconds (default: keep trying).
    #[arg(long, value_name = "SECS")]
    pub enroll_wait_secs: Option<u64>,
    /// How long to wait for etcd to become healthy, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub etcd_wait_secs: u64,
    /// How long the kubelet may take to register its Node once installed, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub node_wait_secs: u64,
    /// Directory of OCI archives to import into containerd.
    #[arg(long, value_name = "DIR")]
    pub preload_dir: Option<String>,
    /// containerd's socket.
    #[arg(long, value_name = "SOCKET")]
    pub containerd_address: Option<String>,
    /// Do not restart containerd before importing images.
    #[arg(long)]
    pub no_restart_containerd: bool,
    /// Format an empty LAUNCHER-DATA partition (like launcher.wipe=1).
    #[arg(long)]
    pub wipe: bool,
    /// Exit (status 75) right after journaling this phase, to test resuming.
    #[arg(long, value_name = "PHASE", value_parser = parse_phase)]
    pub stop_after: Option<Phase>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Exit 0 when the local API server is ready (`GET https://127.0.0.1:6443/readyz`, verified
    /// with <root>/etc/kubernetes/pki/ca.crt), 1 otherwise: keepalived's health check for the
    /// control-plane VIP.
    CheckApiserver,
    /// Exit 1 when the cluster's etcd no longer lists this master (the seed removed it), 0
    /// when a member lists it or none answers: keepalived's second check for the VIP, so that
    /// a removed master gives the VIP away while its API server is still ready.
    CheckMember,
    /// The resident agent, run by launcher-agent.service: once every phase is done, keep one
    /// held poll open to the seed that enrolled this host (pinned to its CA, presenting the
    /// host's identity key), carry out what the seed asks (`health`: uptime, load and this
    /// role's units; `reboot`) and report each outcome. Waits, looking every 30 s, while
    /// firstboot has not finished; backs off 1 s to 60 s, with jitter, while the seed does not
    /// answer.
    Agent,
    /// Ask the API server once for this host's Node, with the kubeconfig its kubelet registers
    /// with (the one the plan names, or --kubeconfig), as the install phase does before `done`:
    /// exit 0 with its Ready condition when it is there, 1 with why not (the TLS verdict, the
    /// API's answer).
    CheckNode {
        /// The kubeconfig to ask with (default: the kubelet's, from the plan).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// The Node's name (default: the host's, from the plan).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
}

fn parse_phase(text: &str) -> Result<Phase, String> {
    Phase::ALL
        .into_iter()
        .find(|p| p.as_str() == text)
        .ok_or_else(|| {
            let names: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown phase {text:?} (phases: {})", names.join(", "))
        })
}

fn options(cli: &Cli) -> anyhow::Result<Options> {
    let flags = Overrides {
        seed: cli.seed.clone(),
        ntp: cli.ntp.clone(),
        pin: cli.pin.clone(),
        token: cli.token.clone(),
        max_skew_ms: cli.max_skew_ms,
        ntp_wait_secs: cli.ntp_wait_secs,
        preload_dir: cli.preload_dir.clone(),
        containerd_address: cli.containerd_address.clone(),
        wipe: cli.wipe,
    };
    let config = config::load(&cli.root, cli.cmdline.as_deref(), &flags)?;
    let cmdline_path = cli
        .cmdline
        .clone()
        .unwrap_or_else(|| cli.root.join("proc/cmdline"));
    let cmdline = std::fs::read_to_string(&cmdline_path).unwrap_or_default();
    Ok(Options {
        root: cli.root.clone(),
        cmdline,
        config,
        stop_after: cli.stop_after,
        enroll_wait: cli.enroll_wait_secs.map(Duration::from_secs),
        etcd_wait: Duration::from_secs(cli.etcd_wait_secs),
        node_wait: Duration::from_secs(cli.node_wait_secs),
        restart_containerd: !cli.no_restart_containerd,
    })
}

/// Runs on this machine and returns the process exit status.
pub fn main(cli: Cli) -> i32 {
    match cli.command {
        Some(Command::CheckApiserver) => {
            return match crate::vip::check_apiserver(&cli.root) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("launcher-firstboot check-apiserver: {}", run::chain(&e));
                    1
                }
            };
        }
        Some(Command::CheckMember) => return check_member(&cli.root),
        Some(Command::Agent) => return crate::agent::main(&cli.root, &RealOs),
        Some(Command::CheckNode {
            ref kubeconfig,
            ref node,
        }) => return check_node(&cli.root, &RealOs, kubeconfig.as_deref(), node.as_deref()),
        None => {}
    }
    run_with(&cli, &RealOs, &mut std::io::stderr())
}

/// `check-node`: the plan gives what the flags do not.
pub fn check_node(root: &Path, os: &dyn Os, kubeconfig: Option<&Path>, node: Option<&str>) -> i32 {
    let say = |line: String| eprintln!("launcher-firstboot check-node: {line}");
    let journal = crate::journal::Journal::load(root).unwrap_or_default();
    let plan = journal.plan.as_ref();
    let Some(node) = node.or(plan.map(|p| p.hostname.as_str())) else {
        say("no plan on this host yet: give --node and --kubeconfig".into());
        return 1;
    };
    let path = match (kubeconfig, plan) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(plan)) => {
            match crate::fsutil::under_root(root, crate::registered::kubelet_kubeconfig(plan)) {
                Ok(path) => path,
                Err(e) => {
                    say(e.to_string());
                    return 1;
                }
            }
        }
        (None, None) => {
            say("no plan on this host yet: give --kubeconfig".into());
            return 1;
        }
    };
    match crate::registered::check_registered(os, &path, node) {
        Ok(ready) => {
            println!("Node {node} is registered; Ready: {ready}");
            0
        }
        Err(why) => {
            say(format!("Node {node} is not registered: {why}"));
            1
        }
    }
}

fn check_member(root: &Path) -> i32 {
    use crate::vip::MemberCheck;
    match crate::vip::check_member(root) {
        Ok(MemberCheck::Listed(_)) => 0,
        Ok(MemberCheck::NoAnswer(reasons)) => {
            eprintln!(
                "launcher-firstboot check-member: no etcd member answered, the API server's readiness decides: {}",
                reasons.join("; ")
            );
            0
        }
        Err(e) => {
            eprintln!("launcher-firstboot check-member: {}", run::chain(&e));
            1
        }
    }
}

/// Runs with `os` doing the clock, hostname, mounts and commands, and returns the exit status;
/// the closing line a person reads goes to `out`. Tests pass a recording `Os` here: the binary
/// has no flag that fakes the machine.
pub fn run_with(cli: &Cli, os: &dyn Os, out: &mut dyn Write) -> i32 {
    let options = match options(cli) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(out, "launcher-firstboot: {e:#}");
            return 2;
        }
    };
    let (status, line) = match run::run(&options, os) {
        Ok(Outcome::Done) => (0, "every phase done".to_string()),
        Ok(Outcome::StoppedAfter(phase)) => (
            EXIT_STOPPED,
            format!("stopped after phase {}", phase.as_str()),
        ),
        Err(f) => (1, f.to_string()),
    };
    let _ = writeln!(out, "launcher-firstboot: {line}");
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
        assert_eq!(parse_phase("preload"), Ok(Phase::Preload));
        assert!(
            parse_phase("boot")
                .unwrap_err()
                .starts_with("unknown phase \"boot\"")
        );
    }
}
