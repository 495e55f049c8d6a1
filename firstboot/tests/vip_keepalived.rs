//! The control-plane VIP under real keepalived: four "masters" in network namespaces on one
//! bridge, each running keepalived with the configuration `cluster::vip::render` makes, the
//! API server's health and etcd membership checks replaced by `test -e` on files the test
//! controls. One holder at a time through a power-off, an unhealthy holder, a master added later,
//! an old holder coming back and a holder removed from etcd; the failover gap after a power-off
//! is measured and printed.
//!
//! Needs root (namespaces) and keepalived (`ci/deps`):
//! `cargo test -p firstboot --test vip_keepalived -- --nocapture`

use cluster::api::VipInstructions;
use cluster::vip::{self, Keepalived};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::ChildGuard;

const VIP: &str = "10.213.0.10";
const POLL: Duration = Duration::from_millis(50);
/// The benchmark goal for the longest gap without a holder after the holder is powered off.
const MAX_GAP: Duration = Duration::from_secs(2);

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bridge namespace and up to four master namespaces, removed (with every process in them)
/// when dropped.
struct Lab {
    dir: tempfile::TempDir,
    bridge: String,
    masters: Vec<String>,
    keepalived: Vec<Option<ChildGuard>>,
}

impl Lab {
    fn new(masters: usize) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        // keepalived runs the check as `nobody`, which must reach the health files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pid = std::process::id();
        let mut lab = Lab {
            dir,
            bridge: format!("lvip{pid}-br"),
            masters: (1..=masters).map(|i| format!("lvip{pid}-m{i}")).collect(),
            keepalived: (0..masters).map(|_| None).collect(),
        };
        ip(&["netns", "add", &lab.bridge]);
        ip(&["-n", &lab.bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lab.bridge, "link", "set", "br0", "up"]);
        for i in 0..masters {
            lab.add_master(i);
        }
        lab
    }

    fn add_master(&mut self, i: usize) {
        let (b, m) = (self.bridge.clone(), self.masters[i].clone());
        ip(&["netns", "add", &m]);
        let port = format!("m{i}");
        ip(&[
            "-n", &b, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &m,
        ]);
        ip(&["-n", &b, "link", "set", &port, "master", "br0", "up"]);
        let address = format!("{}/24", self.address(i));
        ip(&["-n", &m, "addr", "add", &address, "dev", "eth0"]);
        ip(&["-n", &m, "link", "set", "eth0", "up"]);
        ip(&["-n", &m, "link", "set", "lo", "up"]);
    }

    fn address(&self, i: usize) -> String {
        format!("10.213.0.{}", 11 + i)
    }

    fn health_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("healthy-{i}"))
    }

    fn set_healthy(&self, i: usize, healthy: bool) {
        set_file(&self.health_file(i), healthy);
    }

    fn member_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("member-{i}"))
    }

    fn set_member(&self, i: usize, member: bool) {
        set_file(&self.member_file(i), member);
    }

    /// Renders master `i`'s configuration as firstboot does, with the test's check, and starts
    /// keepalived in its namespace.
    fn start(&mut self, i: usize) {
        let instructions = VipInstructions {
            address: VIP.parse().unwrap(),
            router_id: vip::router_id(&self.bridge),
            priority: vip::priority(self.address(i).parse().unwrap()),
            advert_interval_cs: vip::ADVERT_INTERVAL_CS,
        };
        let check = format!("/usr/bin/test -e {}", self.health_file(i).display());
        let member_check = format!("/usr/bin/test -e {}", self.member_file(i).display());
        let conf = vip::render(&Keepalived {
            vip: &instructions,
            interface: "eth0",
            address: self.address(i).parse().unwrap(),
            prefix: 24,
            check: &check,
            member_check: &member_check,
        })
        .unwrap();
        let file = |name: &str| self.dir.path().join(format!("{name}-{i}"));
        std::fs::write(file("keepalived.conf"), conf).unwrap();
        // keepalived's own reading of the file: no unknown keyword, no script it cannot run.
        let test = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.masters[i],
                "keepalived",
                "--config-test",
            ])
            .arg("--use-file")
            .arg(file("keepalived.conf"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&test.stderr).into_owned()
            + &String::from_utf8_lossy(&test.stdout);
        assert!(said.trim().is_empty(), "keepalived --config-test: {said}");
        let log = std::fs::File::create(file("keepalived.log")).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.masters[i], "keepalived"])
            .args(["--dont-fork", "--log-console", "--log-detail"])
            .arg("--use-file")
            .arg(file("keepalived.conf"))
            .arg("--pid")
            .arg(file("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(file("vrrp.pid"))
            .arg("--checkers_pid")
            .arg(file("checkers.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.keepalived[i] = Some(ChildGuard::spawn("keepalived", &mut cmd));
    }

    /// Kills every process in master `i`'s namespace.
    fn kill_all(&mut self, ns: &str) {
        let out = Command::new("ip").args(["netns", "pids", ns]).output();
        let pids = out.map(|o| o.stdout).unwrap_or_default();
        for pid in String::from_utf8_lossy(&pids).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }

    /// As a power cut does: the link goes first (no last advert leaves), then keepalived, then
    /// the address with the host.
    fn power_off(&mut self, i: usize) {
        let m = self.masters[i].clone();
        ip(&["-n", &m, "link", "set", "eth0", "down"]);
        self.kill_all(&m);
        if let Some(mut child) = self.keepalived[i].take() {
            child.kill();
        }
        let _ = Command::new("ip")
            .args(["-n", &m, "addr", "del", &format!("{VIP}/24"), "dev", "eth0"])
            .output();
    }

    fn power_on(&mut self, i: usize) {
        ip(&["-n", &self.masters[i], "link", "set", "eth0", "up"]);
        self.start(i);
    }

    /// The masters whose eth0 carries the VIP now.
    fn holders(&self) -> Vec<usize> {
        let needle = format!("inet {VIP}/");
        (0..self.masters.len())
            .filter(|&i| {
                let out = Command::new("ip")
                    .args([
                        "-n",
                        &self.masters[i],
                        "-o",
                        "-4",
                        "addr",
                        "show",
                        "dev",
                        "eth0",
                    ])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains(&needle)
            })
            .collect()
    }

    /// Polls until one master, not in `not`, is the only holder; panics (with the logs) on two
    /// holders or after `timeout`.
    fn wait_for_holder(&self, not: &[usize], timeout: Duration) -> (usize, Duration) {
        let start = Instant::now();
        loop {
            let holders = self.holders();
            self.never_two(&holders);
            if let [h] = holders[..]
                && !not.contains(&h)
            {
                return (h, start.elapsed());
            }
            if start.elapsed() > timeout {
                panic!(
                    "no single new holder after {timeout:?} (holders {holders:?}){}",
                    self.logs()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Samples for `period` that `holder` alone holds the VIP.
    fn keeps(&self, holder: usize, period: Duration) {
        let start = Instant::now();
        while start.elapsed() < period {
            let holders = self.holders();
            self.never_two(&holders);
            assert_eq!(holders, [holder], "the VIP moved{}", self.logs());
            std::thread::sleep(POLL);
        }
    }

    fn never_two(&self, holders: &[usize]) {
        assert!(
            holders.len() <= 1,
            "two holders: {holders:?}{}",
            self.logs()
        );
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for i in 0..self.masters.len() {
            let path = self.dir.path().join(format!("keepalived.log-{i}"));
            let log = std::fs::read_to_string(Path::new(&path)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            all.push_str(&format!("\n--- master {i}:\n{}", tail.join("\n")));
        }
        all
    }
}

fn set_file(path: &Path, present: bool) {
    if present {
        std::fs::write(path, "").unwrap();
    } else {
        std::fs::remove_file(path).unwrap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.masters.clone() {
            self.kill_all(&ns);
        }
        for child in self.keepalived.iter_mut().flatten() {
            child.kill();
        }
        for ns in self.masters.iter().chain([&self.bridge]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn one_healthy_master_holds_the_vip_through_failures_and_additions() {
    if !testkit::require_root("network namespaces") || !testkit::require(&["keepalived", "ip"]) {
        return;
    }
    let mut lab = Lab::new(4);
    for i in 0..3 {
        lab.set_healthy(i, true);
        lab.set_member(i, true);
        lab.start(i);
    }
    let (first, _) = lab.wait_for_holder(&[], Duration::from_secs(15));
    lab.keeps(first, Duration::from_secs(2));

    lab.power_off(first);
    let (second, gap) = lab.wait_for_holder(&[first], Duration::from_secs(10));
    println!(
        "failover gap after the holder's power-off: {} ms",
        gap.as_millis()
    );
    assert!(gap <= MAX_GAP, "failover took {gap:?}{}", lab.logs());

    lab.set_healthy(second, false);
    let (third, moved) = lab.wait_for_holder(&[first, second], Duration::from_secs(20));
    println!(
        "the VIP left the unhealthy holder in {} ms",
        moved.as_millis()
    );

    // A master added later joins as a backup, and never makes a second holder.
    lab.set_healthy(3, true);
    lab.set_member(3, true);
    lab.start(3);
    lab.keeps(third, Duration::from_secs(5));

    // The old holders back and healthy do not take the VIP back (nopreempt).
    lab.set_healthy(second, true);
    lab.power_on(first);
    lab.keeps(third, Duration::from_secs(5));

    // The holder is removed from etcd, its API server still ready: it gives the VIP away, and
    // does not take it back even when no other master is left.
    lab.set_member(third, false);
    let (_, left) = lab.wait_for_holder(&[third], Duration::from_secs(75));
    println!("the VIP left the removed holder in {} ms", left.as_millis());
    for i in (0..4).filter(|i| *i != third) {
        lab.power_off(i);
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let holders = lab.holders();
        assert!(
            holders.is_empty(),
            "a removed master took the VIP: {holders:?}{}",
            lab.logs()
        );
        std::thread::sleep(POLL);
    }
}
