//! Watching a lab come up: each poll reads the seed's status and the consoles, prints the
//! table, asks [`ready`](crate::ready) whether it is up, keeps the seed running, and gives up at
//! the deadline; then the summary.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use registry_seed::views::StatusView;

use crate::etcd;
use crate::plan::{LabPlan, Vm};
use crate::ready::{self, EtcdAnswer, Readiness};
use crate::running::{Lab, vm_process};
use crate::seed_api;
use crate::watch::{self, Boot, Row};

/// How `up` ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every host `done` and etcd healthy.
    Ready,
    /// What failed, with where to look.
    Failed(String),
    Interrupted,
}

/// What `up` is told besides the plan.
#[derive(Debug, Clone)]
pub struct UpSettings {
    pub timeout: Duration,
    /// Leave everything running after a failure or an interrupt.
    pub keep: bool,
    /// Stop everything after the summary even when the lab came up.
    pub then_down: bool,
}

/// How often the seed's status is read.
const POLL: Duration = Duration::from_secs(3);
/// How often `up` and `wait` start a seed that exited, as its service manager would.
const SEED_RESTARTS: u32 = 5;
/// How long an etcd client credential from the seed is used: half the day it is valid for.
const ETCD_CLIENT_REFRESH: Duration = Duration::from_secs(12 * 3600);

/// Watches `lab` until every powered-on host is done after its latest power-on and etcd has
/// every powered-on master, healthy; or something fails, the time is up, or `stop_flag` is set.
pub(crate) fn until_ready(lab: &mut Lab, settings: &UpSettings, stop_flag: &AtomicBool) -> Outcome {
    let mut watch = Watch::new(lab);
    println!(
        "launcher-lab: {} VMs booting in namespace {} (seed {}, logs in {})",
        watch.powered.len(),
        watch.plan.namespace,
        watch.plan.seed_url(),
        watch.plan.run_dir().display()
    );
    loop {
        let (status, rows) = watch.look();
        let outcome = watch
            .settle(status.as_ref(), settings.timeout)
            .or_else(|| watch.keep_running(lab, &rows))
            .or_else(|| watch.deadline(&rows, settings.timeout))
            .or_else(|| pause(stop_flag));
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
}

/// Waits one poll interval; `Interrupted` if the stop flag is set meanwhile.
fn pause(stop_flag: &AtomicBool) -> Option<Outcome> {
    let wait = Instant::now();
    while wait.elapsed() < POLL {
        if stop_flag.load(Ordering::SeqCst) {
            println!("launcher-lab: interrupted");
            return Some(Outcome::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// What one watch remembers between polls.
struct Watch {
    plan: LabPlan,
    /// The VMs powered on when the watch began, with when each was powered on.
    powered: Vec<(Vm, i64)>,
    /// `plan` with only the powered-on VMs, for the table.
    watched: LabPlan,
    started: Instant,
    printer: Printer,
    /// Each VM's boot stage from its console, and since when.
    stages: Vec<(Boot, Instant)>,
    seed_restarts: u32,
    /// What etcd lacked when last printed, so a change is printed once.
    etcd_waiting: Option<Vec<String>>,
    /// When the seed last handed out the etcd client credential the check uses.
    etcd_client_at: Option<Instant>,
    /// The images the seed said its registry lacks, as last printed.
    missing_images: Vec<String>,
}

impl Watch {
    fn new(lab: &Lab) -> Watch {
        let plan = lab.plan.clone();
        let powered = lab.powered();
        let watched = LabPlan {
            vms: powered.iter().map(|(vm, _)| vm.clone()).collect(),
            ..plan.clone()
        };
        let started = Instant::now();
        Watch {
            stages: vec![(Boot::PoweredOn, started); powered.len()],
            printer: Printer {
                tty: std::io::stdout().is_terminal(),
                started,
                lines: 0,
                last: Vec::new(),
            },
            plan,
            powered,
            watched,
            started,
            seed_restarts: 0,
            etcd_waiting: None,
            etcd_client_at: None,
            missing_images: Vec::new(),
        }
    }

    fn vms(&self) -> &[Vm] {
        &self.watched.vms
    }

    /// Reads the seed's status and the consoles, and prints the table.
    fn look(&mut self) -> (Option<StatusView>, Vec<Row>) {
        let status = seed_api::read_status(&self.plan);
        for (vm, (stage, since)) in self.watched.vms.iter().zip(&mut self.stages) {
            let now = watch::boot_stage(&console(vm));
            if now != *stage {
                *stage = now;
                *since = Instant::now();
            }
        }
        let stages: Vec<(Boot, i64)> = self
            .stages
            .iter()
            .map(|(s, since)| (*s, since.elapsed().as_millis() as i64))
            .collect();
        let rows = watch::rows(&self.watched, status.as_ref(), &stages);
        if let Some(missing) = status.as_ref().map(|s| &s.missing_images)
            && *missing != self.missing_images
        {
            let secs = self.started.elapsed().as_secs();
            if missing.is_empty() {
                println!("[{secs:>4}s] the seed's registry has every image the cluster pulls");
            } else {
                println!(
                    "[{secs:>4}s] hosts wait to enroll: the seed's registry lacks {}",
                    missing.join(", ")
                );
            }
            self.missing_images = missing.clone();
            // The table is drawn again below the line, not over it.
            self.printer.lines = 0;
        }
        self.printer.show(&rows);
        (status, rows)
    }

    /// Once every host is done: the summary when etcd is whole too (or the time is up),
    /// else a line about what etcd lacks.
    fn settle(&mut self, status: Option<&StatusView>, timeout: Duration) -> Option<Outcome> {
        if !ready::hosts_done(status, &self.powered) {
            return None;
        }
        let etcd = self
            .etcd_client()
            .and_then(|()| read_etcd(&self.plan, self.vms()));
        let problems = match ready::readiness(status, &self.powered, Some(&etcd)) {
            Readiness::Hosts => return None,
            Readiness::Ready => Vec::new(),
            Readiness::Etcd(problems) if self.started.elapsed() > timeout => problems,
            Readiness::Etcd(problems) => {
                if self.etcd_waiting.as_ref() != Some(&problems) {
                    println!(
                        "launcher-lab: every host is done; waiting for etcd: {}",
                        problems.join("; ")
                    );
                    self.etcd_waiting = Some(problems);
                }
                return None;
            }
        };
        println!(
            "launcher-lab: every host is done after {}s",
            self.started.elapsed().as_secs()
        );
        Some(summary(self.vms(), status, &etcd, problems))
    }

    /// Asks the seed for an etcd client credential when the watch has none yet or its own is
    /// half-way to expiry; the seed answered the status just before, so it is up.
    fn etcd_client(&mut self) -> Result<(), String> {
        if self
            .etcd_client_at
            .is_some_and(|at| at.elapsed() < ETCD_CLIENT_REFRESH)
        {
            return Ok(());
        }
        let (plan, dir) = (&self.plan, self.plan.etcd_client_dir());
        seed_api::etcd_client(&plan.namespace, &plan.seed_dir(), &dir)
            .map_err(|e| format!("{e:#}"))?;
        self.etcd_client_at = Some(Instant::now());
        Ok(())
    }

    /// A VM whose qemu exited fails the watch; a seed that exited is started again, a few times.
    fn keep_running(&mut self, lab: &mut Lab, rows: &[Row]) -> Option<Outcome> {
        for (vm, row) in self.vms().iter().zip(rows) {
            if !lab.alive(&vm_process(vm)) {
                return Some(Outcome::Failed(failure(vm, row, "its qemu exited")));
            }
        }
        if lab.alive("seed") {
            return None;
        }
        let log = self.plan.run_dir().join("seed.log");
        if self.seed_restarts >= SEED_RESTARTS {
            return Some(Outcome::Failed(format!(
                "the seed exited {} times; see {}",
                self.seed_restarts + 1,
                log.display()
            )));
        }
        self.seed_restarts += 1;
        println!(
            "launcher-lab: the seed exited; starting it again on its state directory \
             (restart {} of at most {SEED_RESTARTS}; log {})",
            self.seed_restarts,
            log.display()
        );
        lab.seed()
            .err()
            .map(|err| Outcome::Failed(format!("restarting the seed: {err:#}")))
    }

    /// Past the deadline: fails on the first VM not done.
    fn deadline(&self, rows: &[Row], timeout: Duration) -> Option<Outcome> {
        if self.started.elapsed() <= timeout {
            return None;
        }
        let vms = self.vms();
        let i = rows.iter().position(|r| r.phase != "done").unwrap_or(0);
        let why = format!("not done after {}s", timeout.as_secs());
        Some(Outcome::Failed(failure(&vms[i], &rows[i], &why)))
    }
}

fn console(vm: &Vm) -> String {
    std::fs::read(&vm.console)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// etcd as the watched masters see it.
fn read_etcd(plan: &LabPlan, vms: &[Vm]) -> EtcdAnswer {
    let masters = vms
        .iter()
        .filter(|vm| vm.role == cluster::api::Role::Master);
    let endpoints = crate::plan::etcd_endpoints(masters);
    etcd::check(&plan.namespace, &endpoints, &plan.etcd_client_dir()).map_err(|e| format!("{e:#}"))
}

/// Prints the table in place on a terminal, or a line per change otherwise.
struct Printer {
    tty: bool,
    started: Instant,
    lines: usize,
    last: Vec<(String, String)>,
}

impl Printer {
    fn show(&mut self, rows: &[Row]) {
        if self.tty {
            let table = watch::render(rows);
            if self.lines > 0 {
                print!("\x1b[{}A\x1b[J", self.lines);
            }
            print!("{table}");
            self.lines = table.lines().count();
        } else {
            for (i, row) in rows.iter().enumerate() {
                let key = (row.phase.clone(), row.state.clone());
                if self.last.get(i) != Some(&key) {
                    let secs = self.started.elapsed().as_secs();
                    println!("[{secs:>4}s] {}", watch::change_line(row));
                }
            }
            self.last = rows
                .iter()
                .map(|r| (r.phase.clone(), r.state.clone()))
                .collect();
        }
        let _ = std::io::stdout().flush();
    }
}

fn failure(vm: &Vm, row: &Row, why: &str) -> String {
    format!(
        "{} ({} {}) {why}: phase {} {}{}; console log {}",
        vm.label,
        vm.role,
        row.hostname,
        row.phase,
        row.state,
        if row.message.is_empty() {
            String::new()
        } else {
            format!(": {}", row.message)
        },
        vm.console.display()
    )
}

/// Prints every host and etcd's members; `Ready` when etcd had no `problems`.
fn summary(
    vms: &[Vm],
    status: Option<&StatusView>,
    etcd: &EtcdAnswer,
    problems: Vec<String>,
) -> Outcome {
    println!("\nhosts:");
    for vm in vms {
        let host = status.and_then(|s| watch::host_for(s, vm));
        let hostname = host
            .and_then(|h| h.hostname.clone())
            .unwrap_or_else(|| "-".into());
        let clock = match watch::clock_report(&console(vm)) {
            Some(c) => format!(
                "clock started {} the seed, then {} off",
                seconds(c.before_ms),
                c.after_ms.map_or("unknown".into(), |ms| format!("{ms} ms"))
            ),
            None => "clock offset not in the console log".into(),
        };
        println!(
            "  {:<3} {:<6} {:<12} {:<15} done  rtc {}  {clock}",
            vm.label, vm.role, hostname, vm.ip, vm.rtc_base
        );
    }
    if let Ok(report) = etcd {
        println!("\netcd members (etcdctl in the lab's namespace):");
        print!("{}", report.render());
    }
    if problems.is_empty() {
        println!("\nlauncher-lab: the cluster is up: every host done, etcd healthy");
        Outcome::Ready
    } else {
        Outcome::Failed(problems.join("; "))
    }
}

/// `42.1 s behind`, `213.0 days ahead of` or `7.1 years behind` for an NTP offset in ms
/// (positive: the host is behind).
fn seconds(ms: i64) -> String {
    const DAY: f64 = 86_400.0;
    let secs = ms.unsigned_abs() as f64 / 1000.0;
    let dir = if ms < 0 { "ahead of" } else { "behind" };
    if secs >= DAY * 365.0 {
        format!("{:.1} years {dir}", secs / (DAY * 365.25))
    } else if secs >= DAY {
        format!("{:.1} days {dir}", secs / DAY)
    } else {
        format!("{secs:.1} s {dir}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_read_in_a_unit_that_fits() {
        assert_eq!(seconds(1_500), "1.5 s behind");
        assert_eq!(seconds(-18_390_666_319), "212.9 days ahead of");
        assert_eq!(seconds(224_000_000_000), "7.1 years behind");
    }
}
