//! `launcher-bench-ntp`: loads an SNTP server on loopback for a bounded time and count, and
//! prints what it answered as JSON.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// Sends SNTP client requests (version 4, mode 3) to one server from a few UDP sockets, each
/// keeping a window of requests in flight, and counts the answers. Stops after `--seconds` or
/// `--max-requests`, whichever comes first; prints a JSON object (sent, answered, bad, lost,
/// elapsed_secs, rate = answers per second).
#[derive(Debug, Parser)]
#[command(name = "launcher-bench-ntp", version)]
struct Args {
    /// The server, e.g. 127.0.0.1:12300. Only loopback addresses are accepted.
    #[arg(long)]
    target: SocketAddr,
    /// How long to send, in seconds (at most 120).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    seconds: u64,
    /// Most requests to send in all.
    #[arg(long, default_value_t = 20_000_000)]
    max_requests: u64,
    /// UDP sockets, one thread each.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    sockets: u16,
    /// Requests each socket keeps in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    window: u16,
    /// Milliseconds without an answer after which a socket's requests count as lost.
    #[arg(long, default_value_t = 200)]
    loss_timeout_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.target.ip().is_loopback(),
        "{} is not a loopback address: this load generator only loads local servers",
        args.target
    );
    let load = bench::ntp::NtpLoad {
        target: args.target,
        duration: Duration::from_secs(args.seconds),
        max_requests: args.max_requests,
        sockets: usize::from(args.sockets),
        window: usize::from(args.window),
        loss_timeout: Duration::from_millis(args.loss_timeout_ms),
    };
    let result = bench::ntp::run(&load).with_context(|| format!("loading {}", args.target))?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
