//! A boot storm: many simulated machines powered on at once, each doing what a netbooting one
//! does. It fetches `/boot.ipxe`, follows its `chain` to its own script (its MAC in the query, as
//! iPXE's `${mac:hexhyp}` puts it), downloads the kernel and the initrd that script names, each
//! request on its own connection, and then, when a seed to enroll with is given, enrolls with its
//! own keys over its own TLS connection. The same downloads against nginx serving the same files
//! are the peer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Bytes;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::enroll::{SeedTrust, SimHost, host_mac};
use crate::stats::{millis, percentile};

/// Scripts are a few hundred bytes; anything past this is not one.
const MAX_SCRIPT: usize = 64 * 1024;

/// The steps of one machine, in order.
pub const STEPS: [&str; 5] = ["boot.ipxe", "script", "kernel", "initrd", "enroll"];

/// `http://HOST:PORT/PATH` split into a loopback address and the path (with its query).
pub fn split_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], rest[at..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr: SocketAddr = authority
        .parse()
        .map_err(|_| format!("{url:?} does not name an IP address and port"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{url:?} is not on loopback"));
    }
    Ok((addr, path))
}

/// The URL `/boot.ipxe` chains to, with iPXE's variables for machine `index` filled in.
pub fn chain_target(script: &str, index: usize) -> Result<String, String> {
    let line = script
        .lines()
        .find_map(|l| l.strip_prefix("chain "))
        .ok_or("the boot script has no chain line")?;
    let url = line.split_whitespace().next().unwrap_or_default();
    Ok(url
        .replace("${mac:hexhyp}", &host_mac(index).replace(':', "-"))
        .replace("${uuid}", "")
        .replace("${serial}", ""))
}

/// The kernel's and the initrd's URLs in a machine's script.
pub fn boot_files(script: &str) -> Result<(String, String), String> {
    let first = |word: &str| {
        script
            .lines()
            .find_map(|l| l.strip_prefix(word))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| format!("the machine's script has no {}line", word))
    };
    Ok((first("kernel ")?, first("initrd ")?))
}

/// One GET on a connection of its own: the status, the body's length, and the body itself
/// when `keep` allows (scripts), else only counted as it streams (kernels, initrds).
async fn get(url: &str, keep: bool) -> Result<(u16, u64, Vec<u8>), String> {
    let (addr, path) = split_url(url)?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .header("user-agent", "iPXE/2.0.0")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = crate::enroll::send_on(tcp, request).await?;
    let status = response.status().as_u16();
    let declared = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut body = response.into_body();
    let (mut length, mut kept) = (0u64, Vec::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading: {e}"))?;
        if let Some(data) = frame.data_ref() {
            length += data.len() as u64;
            if keep {
                if kept.len() + data.len() > MAX_SCRIPT {
                    return Err("reading: a script past 64 KiB".into());
                }
                kept.extend_from_slice(data);
            }
        }
    }
    if declared.is_some_and(|d| d != length) {
        return Err(format!("reading: {length} bytes of {declared:?}"));
    }
    Ok((status, length, kept))
}

async fn step(url: &str, keep: bool) -> Result<(Duration, u64, Vec<u8>), String> {
    let start = Instant::now();
    let (status, length, body) = get(url, keep).await?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok((start.elapsed(), length, body))
}

/// What one machine did: each step's time and the bytes it downloaded.
#[derive(Debug, Default)]
struct Machine {
    steps: Vec<(usize, Duration)>,
    bytes: u64,
}

async fn one_machine(
    index: usize,
    boot: &str,
    enroll: Option<(SeedTrust, SocketAddr, SimHost)>,
) -> Result<Machine, (usize, String)> {
    let mut m = Machine::default();
    let (took, _, script) = step(boot, true).await.map_err(|e| (0, e))?;
    m.steps.push((0, took));
    let script = String::from_utf8_lossy(&script).into_owned();
    let target = chain_target(&script, index).map_err(|e| (1, e))?;
    let (took, _, own) = step(&target, true).await.map_err(|e| (1, e))?;
    m.steps.push((1, took));
    let (kernel, initrd) = boot_files(&String::from_utf8_lossy(&own)).map_err(|e| (2, e))?;
    for (i, url) in [(2, kernel), (3, initrd)] {
        let (took, length, _) = step(&url, false).await.map_err(|e| (i, e))?;
        m.steps.push((i, took));
        m.bytes += length;
    }
    if let Some((trust, seed, host)) = enroll {
        let start = Instant::now();
        match crate::enroll::enroll_once(&trust, seed, host).await {
            Ok(()) => m.steps.push((4, start.elapsed())),
            Err(why) => return Err((4, why)),
        }
    }
    Ok(m)
}

/// A storm's settings.
#[derive(Debug, Clone)]
pub struct Storm {
    /// `http://…/boot.ipxe` of the server under test.
    pub boot: String,
    pub machines: usize,
    /// Enroll each machine with this seed (HTTPS) after its downloads.
    pub enroll: Option<SocketAddr>,
    /// A machine still running after this long counts as not done.
    pub time_limit: Duration,
}

/// One step's latency over the machines that did it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepFigures {
    pub done: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// What a storm measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StormResult {
    pub machines: usize,
    /// Machines that did every step.
    pub done: usize,
    /// From the start until the last machine finished.
    pub elapsed_secs: f64,
    /// Machines done per second over the whole storm.
    pub machines_per_sec: f64,
    pub downloaded_mib: f64,
    pub steps: BTreeMap<String, StepFigures>,
    /// Machines that failed, by the step they failed at and the kind of error.
    pub failed: BTreeMap<String, usize>,
    pub timed_out: usize,
}

/// Powers on `storm.machines` machines at once; `hosts` are their keys and enrollment bodies,
/// one per machine, when the storm enrolls.
pub async fn run(storm: &Storm, trust: Option<SeedTrust>, hosts: Vec<SimHost>) -> StormResult {
    let results = Arc::new(Mutex::new(Vec::with_capacity(storm.machines)));
    let start = Instant::now();
    let mut hosts = hosts.into_iter();
    let mut tasks = Vec::with_capacity(storm.machines);
    for index in 0..storm.machines {
        let enroll = match (&trust, storm.enroll, hosts.next()) {
            (Some(t), Some(seed), Some(host)) => Some((t.clone(), seed, host)),
            _ => None,
        };
        let (boot, results, limit) = (storm.boot.clone(), results.clone(), storm.time_limit);
        tasks.push(tokio::spawn(async move {
            let work = one_machine(index, &boot, enroll);
            let outcome = tokio::time::timeout(limit, work).await;
            results.lock().await.push((outcome, start.elapsed()));
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let results = std::mem::take(&mut *results.lock().await);
    tally(storm, results)
}

type Outcome = (
    Result<Result<Machine, (usize, String)>, tokio::time::error::Elapsed>,
    Duration,
);

fn tally(storm: &Storm, results: Vec<Outcome>) -> StormResult {
    let mut per_step: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len()];
    let mut out = StormResult {
        machines: storm.machines,
        ..StormResult::default()
    };
    let mut last = Duration::ZERO;
    let mut bytes = 0u64;
    for (outcome, at) in results {
        match outcome {
            Ok(Ok(machine)) => {
                out.done += 1;
                last = last.max(at);
                bytes += machine.bytes;
                for (i, took) in machine.steps {
                    per_step[i].push(took);
                }
            }
            Ok(Err((i, why))) => {
                let kind = why.split(':').next().unwrap_or("error");
                *out.failed
                    .entry(format!("{}: {kind}", STEPS[i]))
                    .or_default() += 1;
            }
            Err(_) => out.timed_out += 1,
        }
    }
    out.elapsed_secs = last.as_secs_f64();
    out.machines_per_sec = if out.elapsed_secs > 0.0 {
        out.done as f64 / out.elapsed_secs
    } else {
        0.0
    };
    out.downloaded_mib = bytes as f64 / (1024.0 * 1024.0);
    for (name, times) in STEPS.iter().zip(per_step) {
        if times.is_empty() {
            continue;
        }
        let ms = |p| percentile(&times, p).map(millis);
        out.steps.insert(
            (*name).to_string(),
            StepFigures {
                done: times.len(),
                p50_ms: ms(50.0),
                p99_ms: ms(99.0),
                max_ms: ms(100.0),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_a_loopback_address_and_a_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/ipxe?mac=52-55&uuid=").unwrap(),
            (
                "127.0.0.1:8080".parse().unwrap(),
                "/ipxe?mac=52-55&uuid=".into()
            )
        );
        for (bad, why) in [
            (
                "https://127.0.0.1:1/x",
                "\"https://127.0.0.1:1/x\" is not an http:// URL",
            ),
            (
                "http://seed:80/x",
                "\"http://seed:80/x\" does not name an IP address and port",
            ),
            (
                "http://10.0.0.1:80/x",
                "\"http://10.0.0.1:80/x\" is not on loopback",
            ),
        ] {
            assert_eq!(split_url(bad).unwrap_err(), why);
        }
    }

    #[test]
    fn the_chain_and_the_boot_files_come_from_the_scripts_as_ipxe_reads_them() {
        let boot = "#!ipxe\nchain http://127.0.0.1:8080/ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial}\n";
        assert_eq!(
            chain_target(boot, 1).unwrap(),
            "http://127.0.0.1:8080/ipxe?mac=52-55-00-00-00-01&uuid=&serial="
        );
        let own = "#!ipxe\nkernel http://127.0.0.1:8080/boot/vmlinuz initrd=initrd.img console=ttyS0\n\
                   initrd http://127.0.0.1:8080/boot/initrd.img\nboot\n";
        assert_eq!(
            boot_files(own).unwrap(),
            (
                "http://127.0.0.1:8080/boot/vmlinuz".into(),
                "http://127.0.0.1:8080/boot/initrd.img".into()
            )
        );
        assert_eq!(
            chain_target("#!ipxe\nsleep 30\n", 0).unwrap_err(),
            "the boot script has no chain line"
        );
        assert_eq!(
            boot_files("#!ipxe\nkernel http://127.0.0.1:1/k\n").unwrap_err(),
            "the machine's script has no initrd line"
        );
    }
}
