//! `launcher-bench-enroll`: enrolls many simulated hosts against one running seed and prints
//! hosts/s and latency percentiles as JSON; `spec` writes a cluster file whose inventory lets
//! those hosts in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::enroll::{CsrSet, EnrollLoad, host_mac, pregenerate, run, seed_trust};
use clap::{Parser, Subcommand};
use testkit::fixtures::{ClusterFile, Host, host};

/// Enrollment load: each simulated host has its own P-256 keys and CSRs (made before timing
/// starts) and opens its own TLS connection (no session resumption) to POST /v1/enroll.
#[derive(Debug, Parser)]
#[command(name = "launcher-bench-enroll", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a cluster file: one master that never enrolls and HOSTS inventory workers whose MACs
    /// are the simulated hosts'.
    Spec {
        #[arg(long)]
        hosts: usize,
        /// The seed's HTTPS address, written as the spec's seed URL.
        #[arg(long)]
        seed: SocketAddr,
        #[arg(long)]
        out: PathBuf,
    },
    /// Enroll the simulated hosts.
    Run {
        /// The seed's HTTPS address (loopback only).
        #[arg(long)]
        seed: SocketAddr,
        /// The seed CA certificate (`<state-dir>/seed-ca.crt`).
        #[arg(long)]
        ca: PathBuf,
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        hosts: u32,
        /// Connections open at once.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
        concurrency: u16,
        /// Seconds after which no new host starts (at most 600).
        #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=600))]
        time_limit: u64,
        /// Which CSRs each host sends.
        #[arg(long, value_enum, default_value_t = CsrSet::All)]
        csrs: CsrSet,
        /// Threads of the load generator (it shares the machine with the seed).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
        threads: u16,
    },
}

/// The cluster file for `hosts` simulated workers: the one-master demo file, its master
/// schedulable, every worker known by its MAC, with an address in 10.128.0.0/9 (the simulated
/// hosts all send from loopback, and a host outside the inventory would take that address).
fn spec_text(hosts: usize, seed: SocketAddr) -> String {
    let workers = (0..hosts).map(|i| Host {
        mac: host_mac(i),
        ip: Some(format!(
            "10.{}.{}.{}",
            128 + ((i >> 16) & 0x7f),
            (i >> 8) & 0xff,
            i & 0xff
        )),
        role: Some("worker"),
        hostname: None,
    });
    ClusterFile {
        name: "bench".into(),
        schedulable_masters: true,
        hosts: std::iter::once(host(1, Some("master")))
            .chain(workers)
            .collect(),
        ..ClusterFile::one_master(&seed.to_string())
    }
    .render()
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Spec { hosts, seed, out } => std::fs::write(&out, spec_text(hosts, seed))
            .with_context(|| format!("writing {}", out.display())),
        Command::Run {
            seed,
            ca,
            hosts,
            concurrency,
            time_limit,
            csrs,
            threads,
        } => {
            anyhow::ensure!(seed.ip().is_loopback(), "{seed} is not a loopback address");
            let ca_pem = std::fs::read(&ca).with_context(|| format!("reading {}", ca.display()))?;
            let trust = seed_trust(&ca_pem)?;
            let made = Instant::now();
            let bodies = pregenerate(hosts as usize, csrs, usize::from(threads))?;
            let pregen_secs = made.elapsed().as_secs_f64();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(usize::from(threads))
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let load = EnrollLoad {
                seed,
                concurrency: usize::from(concurrency),
                time_limit: Duration::from_secs(time_limit),
            };
            let result = runtime.block_on(run(&load, trust, bodies));
            let mut json = serde_json::to_value(&result)?;
            json["csr_pregeneration_secs"] = serde_json::json!(pregen_secs);
            println!("{json}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_parses_with_one_master_and_every_worker() {
        let text = spec_text(3, "127.0.0.1:8443".parse().unwrap());
        let spec = cluster::spec::ClusterSpec::parse("bench.toml", &text)
            .unwrap()
            .spec;
        assert_eq!(spec.name.to_string(), "bench");
        assert_eq!(spec.masters, 1);
        assert!(spec.schedulable_masters);
        assert_eq!(spec.hosts.len(), 4);
        assert_eq!(spec.hosts[1].mac.to_string(), host_mac(0));
    }
}
