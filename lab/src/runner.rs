//! The thin part that applies a [`LabPlan`]: namespace, seed, dnsmasq and VMs up; watching them;
//! everything that was started stopped again by pid.

use std::fs::File;
use std::io::IsTerminal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use registry_seed::views::StatusView;

use crate::etcd::{self, EtcdReport};
use crate::plan::{LabPlan, Vm};
use crate::state::{LabState, Started, stop};
use crate::watch::{self, Boot, Row};

/// How often the seed's status is read.
const POLL: Duration = Duration::from_secs(3);
/// How long a process gets after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// How `up` ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every host `done` and etcd healthy.
    Ready,
    /// What failed, with where to look.
    Failed(String),
    Interrupted,
}

/// Finds a workspace binary next to this program, else on PATH.
pub fn sibling_bin(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs `launcher-build DEFINITION --out DIR` when DIR lacks the PXE pair.
pub fn ensure_image(image_dir: &Path, definition: &Path) -> anyhow::Result<()> {
    if ["vmlinuz", "initrd.img"]
        .iter()
        .all(|f| image_dir.join(f).is_file())
    {
        return Ok(());
    }
    println!(
        "launcher-lab: no image in {}; building it from {}",
        image_dir.display(),
        definition.display()
    );
    let status = Command::new(sibling_bin("launcher-build"))
        .arg(definition)
        .arg("--out")
        .arg(image_dir)
        .status()
        .context("running launcher-build")?;
    anyhow::ensure!(status.success(), "launcher-build failed ({status})");
    Ok(())
}

fn run_ip(args: &[String]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn namespace_exists(namespace: &str) -> bool {
    Path::new("/run/netns").join(namespace).exists()
}

fn make_disk(vm: &Vm, size_mib: u32) -> anyhow::Result<()> {
    let file = File::create(&vm.disk).with_context(|| format!("creating {}", vm.disk.display()))?;
    file.set_len(u64::from(size_mib) * 1024 * 1024)
        .with_context(|| format!("sizing {}", vm.disk.display()))?;
    drop(file);
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&vm.disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running sfdisk")?;
    child
        .stdin
        .take()
        .context("sfdisk's stdin")?
        .write_all(LabPlan::disk_layout().as_bytes())
        .context("writing to sfdisk")?;
    let output = child.wait_with_output().context("running sfdisk")?;
    anyhow::ensure!(
        output.status.success(),
        "sfdisk on {} failed: {}",
        vm.disk.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// A running lab: what `up` started so far, kept in the state file as it grows.
struct Lab {
    plan: LabPlan,
    state: LabState,
    children: Vec<Child>,
}

impl Lab {
    /// Starts `program args…` inside the namespace in its own process group (so a Ctrl-C at the
    /// terminal reaches only `up`, which then stops it), output to `log`.
    fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating a log file handle")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.plan.namespace])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let program_name = program
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        self.state.processes.push(Started {
            name: name.to_string(),
            pid: child.id(),
            program: program_name,
        });
        self.children.push(child);
        self.state.save(self.plan.run_dir())
    }

    fn network(&mut self) -> anyhow::Result<()> {
        for cmd in self.plan.network_commands() {
            run_ip(&cmd)?;
        }
        Ok(())
    }

    fn seed(&mut self) -> anyhow::Result<()> {
        let plan = self.plan.clone();
        let seed_dir = plan.seed_dir();
        for stale in ["serve.addr", "http.addr", "ntp.addr"] {
            let _ = std::fs::remove_file(seed_dir.join(stale));
        }
        etcd::write_client(&seed_dir, &plan.cluster_file(), &plan.etcd_client_dir())?;
        let log = plan.run_dir().join("seed.log");
        self.spawn("seed", &plan.options.seed_bin, &plan.seed_args(), &log)?;
        let started = Instant::now();
        while !(seed_dir.join("serve.addr").exists() && seed_dir.join("http.addr").exists()) {
            if !self.alive(0) || started.elapsed() > Duration::from_secs(60) {
                bail!("the seed did not start; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn dnsmasq(&mut self) -> anyhow::Result<()> {
        let log = self.plan.run_dir().join("dnsmasq.log");
        let args = self.plan.dnsmasq_args();
        self.spawn("dnsmasq", Path::new("/usr/sbin/dnsmasq"), &args, &log)?;
        std::thread::sleep(Duration::from_millis(500));
        anyhow::ensure!(
            self.alive(1),
            "dnsmasq did not start; see {}",
            log.display()
        );
        Ok(())
    }

    fn vms(&mut self) -> anyhow::Result<()> {
        let qemu = crate::which("qemu-system-x86_64")
            .context("qemu-system-x86_64 is not installed (ci/deps)")?;
        for vm in self.plan.vms.clone() {
            make_disk(&vm, self.plan.options.disk_mib)?;
            let log = self
                .plan
                .run_dir()
                .join(format!("vm-{}.qemu.log", vm.number));
            let args = self.plan.qemu_args(&vm);
            self.spawn(&format!("vm {}", vm.label), &qemu, &args, &log)?;
        }
        Ok(())
    }

    fn alive(&mut self, index: usize) -> bool {
        matches!(
            self.children.get_mut(index).map(Child::try_wait),
            Some(Ok(None))
        )
    }

    /// Stops every process (reaping our own children) and deletes the namespace.
    fn teardown(&mut self) {
        for (process, child) in self.state.processes.iter().zip(&mut self.children).rev() {
            stop(process, GRACE);
            let _ = child.wait();
        }
        remove_namespace(&self.state.namespace);
        let _ = LabState::remove(self.plan.run_dir());
    }
}

fn remove_namespace(namespace: &str) {
    if namespace_exists(namespace)
        && let Err(err) = run_ip(&["netns".into(), "del".into(), namespace.into()])
    {
        eprintln!("launcher-lab: {err:#}");
    }
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

/// Brings the lab up, watches it and prints the summary.
pub fn up(
    plan: LabPlan,
    settings: &UpSettings,
    stop_flag: Arc<AtomicBool>,
) -> anyhow::Result<Outcome> {
    let run_dir = plan.run_dir().to_path_buf();
    if let Some(old) = LabState::load(&run_dir)? {
        bail!(
            "a lab is already up in {} (namespace {}); run `launcher-lab down --run-dir {}` first",
            run_dir.display(),
            old.namespace,
            run_dir.display()
        );
    }
    anyhow::ensure!(
        !namespace_exists(&plan.namespace),
        "the namespace {} exists already; `ip netns del {}` if nothing uses it",
        plan.namespace,
        plan.namespace
    );
    std::fs::write(plan.cluster_file(), plan.cluster_toml())
        .with_context(|| format!("writing {}", plan.cluster_file().display()))?;
    let mut lab = Lab {
        state: LabState {
            namespace: plan.namespace.clone(),
            processes: Vec::new(),
        },
        plan,
        children: Vec::new(),
    };
    lab.state.save(&run_dir)?;
    let started = lab
        .network()
        .and_then(|()| lab.seed())
        .and_then(|()| lab.dnsmasq())
        .and_then(|()| lab.vms());
    let outcome = match started {
        Ok(()) => watch_until_ready(&mut lab, settings, &stop_flag),
        Err(err) => Outcome::Failed(format!("{err:#}")),
    };
    let ready = matches!(outcome, Outcome::Ready);
    if (ready && settings.then_down) || (!ready && !settings.keep) {
        println!("launcher-lab: stopping the lab");
        lab.teardown();
    } else {
        println!(
            "launcher-lab: the lab runs on (namespace {}); stop it with `launcher-lab down --run-dir {}`",
            lab.plan.namespace,
            run_dir.display()
        );
    }
    Ok(outcome)
}

/// Stops what the state file in `run_dir` lists and deletes the namespace.
pub fn down(run_dir: &Path) -> anyhow::Result<()> {
    let Some(state) = LabState::load(run_dir)? else {
        println!("launcher-lab: no lab in {}", run_dir.display());
        return Ok(());
    };
    for process in state.processes.iter().rev() {
        stop(process, GRACE);
    }
    remove_namespace(&state.namespace);
    LabState::remove(run_dir)?;
    println!(
        "launcher-lab: stopped {} processes and removed {}",
        state.processes.len(),
        state.namespace
    );
    Ok(())
}

fn read_status(plan: &LabPlan) -> Option<StatusView> {
    let output = Command::new("ip")
        .args(["netns", "exec", &plan.namespace])
        .arg(&plan.options.seed_bin)
        .args(["status", "--json", "--state-dir"])
        .arg(plan.seed_dir())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

fn console(vm: &Vm) -> String {
    std::fs::read(&vm.console)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
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

fn watch_until_ready(lab: &mut Lab, settings: &UpSettings, stop_flag: &AtomicBool) -> Outcome {
    let plan = lab.plan.clone();
    let started = Instant::now();
    let mut printer = Printer {
        tty: std::io::stdout().is_terminal(),
        started,
        lines: 0,
        last: Vec::new(),
    };
    println!(
        "launcher-lab: {} VMs booting in namespace {} (seed {}, logs in {})",
        plan.vms.len(),
        plan.namespace,
        plan.seed_url(),
        plan.run_dir().display()
    );
    let mut stage_since: Vec<(Boot, Instant)> = vec![(Boot::PoweredOn, started); plan.vms.len()];
    loop {
        let status = read_status(&plan);
        for (vm, (stage, since)) in plan.vms.iter().zip(&mut stage_since) {
            let now = watch::boot_stage(&console(vm));
            if now != *stage {
                *stage = now;
                *since = Instant::now();
            }
        }
        let stages: Vec<(Boot, i64)> = stage_since
            .iter()
            .map(|(s, since)| (*s, since.elapsed().as_millis() as i64))
            .collect();
        let rows = watch::rows(&plan, status.as_ref(), &stages);
        printer.show(&rows);
        let done = status.as_ref().is_some_and(|s| {
            plan.vms
                .iter()
                .all(|vm| watch::host_for(s, vm).is_some_and(watch::is_done))
        });
        if done {
            println!(
                "launcher-lab: every host is done after {}s",
                started.elapsed().as_secs()
            );
            return summary(&plan, status.as_ref());
        }
        for (i, vm) in plan.vms.iter().enumerate() {
            // Children: 0 seed, 1 dnsmasq, then one VM each.
            if !lab.alive(i + 2) {
                return Outcome::Failed(failure(&plan, vm, &rows[i], "its qemu exited"));
            }
        }
        if !lab.alive(0) {
            return Outcome::Failed(format!(
                "the seed exited; see {}",
                plan.run_dir().join("seed.log").display()
            ));
        }
        if started.elapsed() > settings.timeout {
            let (i, vm) = plan
                .vms
                .iter()
                .enumerate()
                .find(|(i, _)| rows[*i].phase != "done")
                .unwrap_or((0, &plan.vms[0]));
            let why = format!("not done after {}s", settings.timeout.as_secs());
            return Outcome::Failed(failure(&plan, vm, &rows[i], &why));
        }
        let wait = Instant::now();
        while wait.elapsed() < POLL {
            if stop_flag.load(Ordering::SeqCst) {
                println!("launcher-lab: interrupted");
                return Outcome::Interrupted;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn failure(plan: &LabPlan, vm: &Vm, row: &Row, why: &str) -> String {
    let _ = plan;
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

fn summary(plan: &LabPlan, status: Option<&StatusView>) -> Outcome {
    println!("\nhosts:");
    for vm in &plan.vms {
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
    let report: anyhow::Result<EtcdReport> = etcd::check(
        &plan.namespace,
        &plan.etcd_endpoints(),
        &plan.etcd_client_dir(),
    );
    match report {
        Ok(report) => {
            println!("\netcd members (etcdctl in the lab's namespace):");
            print!("{}", report.render());
            let problems = report.problems(plan.masters().count());
            if problems.is_empty() {
                println!("\nlauncher-lab: the cluster is up: every host done, etcd healthy");
                Outcome::Ready
            } else {
                Outcome::Failed(problems.join("; "))
            }
        }
        Err(err) => Outcome::Failed(format!("reading etcd's members: {err:#}")),
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
