//! `launcher-bench-storm`: powers on many simulated machines at once against a boot server
//! (the seed's plain HTTP listener, or nginx serving the same files) and prints, as JSON, how
//! long until the last one was done, each step's latency percentiles and what failed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::enroll::{CsrSet, pregenerate, seed_trust};
use bench::storm::{Storm, run, split_url};
use clap::Parser;

/// Each machine fetches `/boot.ipxe`, its own script, the kernel and the initrd (each request
/// on a connection of its own), then, with `--enroll`, enrolls over TLS with keys of its own
/// (made before the clock starts). Every machine starts at once.
#[derive(Debug, Parser)]
#[command(name = "launcher-bench-storm", version)]
struct Cli {
    /// The boot script's URL, `http://127.0.0.1:PORT/boot.ipxe` (loopback only).
    #[arg(long)]
    boot: String,
    /// Machines powered on together.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=5000))]
    machines: u32,
    /// Enroll each machine with the seed at this HTTPS address after its downloads.
    #[arg(long, requires = "ca")]
    enroll: Option<SocketAddr>,
    /// The seed CA certificate (`<state-dir>/seed-ca.crt`), with `--enroll`.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Seconds a machine may take before it counts as not done (at most 600).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=600))]
    time_limit: u64,
    /// Threads of the load generator (it shares the machine with the server).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    split_url(&cli.boot).map_err(anyhow::Error::msg)?;
    if let Some(seed) = cli.enroll {
        anyhow::ensure!(seed.ip().is_loopback(), "{seed} is not a loopback address");
    }
    let machines = cli.machines as usize;
    let (trust, hosts, pregen_secs) = match (&cli.enroll, &cli.ca) {
        (Some(_), Some(ca)) => {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let made = Instant::now();
            let hosts = pregenerate(machines, CsrSet::All, usize::from(cli.threads))?;
            (Some(seed_trust(&pem)?), hosts, made.elapsed().as_secs_f64())
        }
        _ => (None, Vec::new(), 0.0),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(cli.threads))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let storm = Storm {
        boot: cli.boot.clone(),
        machines,
        enroll: cli.enroll,
        time_limit: Duration::from_secs(cli.time_limit),
    };
    let result = runtime.block_on(run(&storm, trust, hosts));
    let mut json = serde_json::to_value(&result)?;
    json["csr_pregeneration_secs"] = serde_json::json!(pregen_secs);
    println!("{json}");
    Ok(())
}
