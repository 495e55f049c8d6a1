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
use crate::state::{LabState, Started, runs, stop};
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

/// A running lab: what was started, kept in the state file as it changes.
struct Lab {
    plan: LabPlan,
    state: LabState,
    /// This process's own children, by their name in the state (`wait` and `power` on a lab
    /// started by another process have none and go by pid).
    children: Vec<(String, Child)>,
}

/// The state's name for a VM's qemu.
fn vm_process(vm: &Vm) -> String {
    format!("vm {}", vm.label)
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

impl Lab {
    /// The lab `up` left running in `run_dir`.
    fn from_state(run_dir: &Path) -> anyhow::Result<Lab> {
        let state = LabState::load(run_dir)?.with_context(|| {
            format!(
                "no lab in {}; start one with `launcher-lab up --run-dir {}`",
                run_dir.display(),
                run_dir.display()
            )
        })?;
        let options = state.options.clone().with_context(|| {
            format!(
                "the lab state in {} does not say how the lab was made; `launcher-lab down` and `up` it again",
                run_dir.display()
            )
        })?;
        Ok(Lab {
            plan: LabPlan::new(options)?,
            state,
            children: Vec::new(),
        })
    }

    /// Starts `program args…` inside the namespace in its own process group (so a Ctrl-C at the
    /// terminal reaches only `up`, which then stops it), output to `log`. A process of the same
    /// name that ended is replaced in the state.
    fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
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
        self.forget(name);
        self.state.processes.push(Started {
            name: name.to_string(),
            pid: child.id(),
            program: program_name,
            started_ms: now_ms(),
        });
        self.children.push((name.to_string(), child));
        self.state.save(self.plan.run_dir())
    }

    /// Drops `name` from the state (reaping it if it is our child).
    fn forget(&mut self, name: &str) {
        self.state.processes.retain(|p| p.name != name);
        self.children.retain_mut(|(n, child)| {
            if n == name {
                let _ = child.try_wait();
                false
            } else {
                true
            }
        });
    }

    fn process(&self, name: &str) -> Option<&Started> {
        self.state.processes.iter().find(|p| p.name == name)
    }

    fn alive(&mut self, name: &str) -> bool {
        if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name) {
            return matches!(child.try_wait(), Ok(None));
        }
        self.process(name).is_some_and(|p| runs(p.pid, &p.program))
    }

    /// Stops `name` (SIGTERM, then SIGKILL after the grace time) and drops it from the state.
    fn stop_process(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(process) = self.process(name).cloned() {
            stop(&process, GRACE);
        }
        if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = child.wait();
        }
        self.forget(name);
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
            if !self.alive("seed") || started.elapsed() > Duration::from_secs(60) {
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
            self.alive("dnsmasq"),
            "dnsmasq did not start; see {}",
            log.display()
        );
        Ok(())
    }

    /// Powers `vm` on: its qemu with its disk, a fresh console log (the last one is kept as
    /// `….console.prev`).
    fn power_on(&mut self, vm: &Vm) -> anyhow::Result<()> {
        let qemu = crate::which("qemu-system-x86_64")
            .context("qemu-system-x86_64 is not installed (ci/deps)")?;
        if !vm.disk.exists() {
            make_disk(vm, self.plan.options.disk_mib)?;
        }
        if vm.console.exists() {
            let _ = std::fs::rename(&vm.console, vm.console.with_extension("console.prev"));
        }
        let log = self
            .plan
            .run_dir()
            .join(format!("vm-{}.qemu.log", vm.number));
        let args = self.plan.qemu_args(vm);
        self.spawn(&vm_process(vm), &qemu, &args, &log)
    }

    /// Every VM gets its blank disk; all but the spare masters are powered on.
    fn vms(&mut self) -> anyhow::Result<()> {
        for vm in self.plan.vms.clone() {
            make_disk(&vm, self.plan.options.disk_mib)?;
            if !vm.spare {
                self.power_on(&vm)?;
            }
        }
        Ok(())
    }

    /// The VMs powered on now, in plan order, with when each was powered on.
    fn powered(&self) -> Vec<(Vm, i64)> {
        self.plan
            .vms
            .iter()
            .filter_map(|vm| {
                self.process(&vm_process(vm))
                    .map(|p| (vm.clone(), p.started_ms))
            })
            .collect()
    }

    /// Stops every process (reaping our own children) and deletes the namespace.
    fn teardown(&mut self) {
        for process in self.state.processes.iter().rev() {
            stop(process, GRACE);
        }
        for (_, child) in &mut self.children {
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
    std::fs::write(plan.cluster_file(), plan.cluster_toml(&[]))
        .with_context(|| format!("writing {}", plan.cluster_file().display()))?;
    let mut lab = Lab {
        state: LabState {
            namespace: plan.namespace.clone(),
            processes: Vec::new(),
            options: Some(plan.options.clone()),
            added: Vec::new(),
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

/// Powers on VM `label` of the lab in `run_dir` (again, or for the first time for a spare
/// master: it is listed in the cluster file, `masters` raised, and the seed restarted to read it).
pub fn power_on(run_dir: &Path, label: &str) -> anyhow::Result<()> {
    let mut lab = Lab::from_state(run_dir)?;
    let labels: Vec<&str> = lab.plan.vms.iter().map(|v| v.label.as_str()).collect();
    let vm = lab
        .plan
        .vm(label)
        .cloned()
        .with_context(|| format!("this lab has no VM {label}; it has {}", labels.join(", ")))?;
    anyhow::ensure!(
        !lab.alive(&vm_process(&vm)),
        "{label} is powered on already"
    );
    if vm.spare && !lab.state.added.contains(&vm.label) {
        lab.state.added.push(vm.label.clone());
        let text = lab.plan.cluster_toml(&lab.state.added);
        let file = lab.plan.cluster_file();
        fsutil_write(&file, &text)?;
        println!(
            "launcher-lab: {label} is a spare master: listed in {} and the seed restarted to read it",
            file.display()
        );
        lab.stop_process("seed")?;
        lab.seed()?;
    }
    lab.power_on(&vm)?;
    println!(
        "launcher-lab: {label} powered on (console {}); `launcher-lab wait --run-dir {}` watches it",
        vm.console.display(),
        run_dir.display()
    );
    Ok(())
}

/// Pulls the plug on VM `label`: its qemu is killed, with no shutdown; its disk stays.
pub fn power_off(run_dir: &Path, label: &str) -> anyhow::Result<()> {
    let mut lab = Lab::from_state(run_dir)?;
    let name = format!("vm {label}");
    let process = lab
        .process(&name)
        .cloned()
        .with_context(|| format!("{label} is not powered on in this lab"))?;
    if runs(process.pid, &process.program) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(process.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let started = Instant::now();
        while runs(process.pid, &process.program) && started.elapsed() < GRACE {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    lab.forget(&name);
    lab.state.save(run_dir)?;
    println!(
        "launcher-lab: {label} powered off (qemu {} killed); its disk is kept",
        process.pid
    );
    Ok(())
}

/// Watches the lab in `run_dir` until every powered-on host is done after its latest power-on
/// and etcd has every powered-on master, healthy.
pub fn wait(
    run_dir: &Path,
    settings: &UpSettings,
    stop_flag: &AtomicBool,
) -> anyhow::Result<Outcome> {
    let mut lab = Lab::from_state(run_dir)?;
    Ok(watch_until_ready(&mut lab, settings, stop_flag))
}

/// Replaces `path` with `text` (a new file renamed over it).
fn fsutil_write(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The seed's view of every host, as `launcher-seed status --json` prints it; `None` while the
/// seed does not answer.
pub fn read_status(plan: &LabPlan) -> Option<StatusView> {
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

/// How often `up` and `wait` start a seed that exited, as its service manager would.
const SEED_RESTARTS: u32 = 5;

fn watch_until_ready(lab: &mut Lab, settings: &UpSettings, stop_flag: &AtomicBool) -> Outcome {
    let plan = lab.plan.clone();
    let powered = lab.powered();
    let vms: Vec<Vm> = powered.iter().map(|(vm, _)| vm.clone()).collect();
    let started = Instant::now();
    let mut printer = Printer {
        tty: std::io::stdout().is_terminal(),
        started,
        lines: 0,
        last: Vec::new(),
    };
    println!(
        "launcher-lab: {} VMs booting in namespace {} (seed {}, logs in {})",
        vms.len(),
        plan.namespace,
        plan.seed_url(),
        plan.run_dir().display()
    );
    let watched = LabPlan {
        vms: vms.clone(),
        ..plan.clone()
    };
    let mut stage_since: Vec<(Boot, Instant)> = vec![(Boot::PoweredOn, started); vms.len()];
    let mut seed_restarts = 0;
    let mut etcd_waiting: Option<Vec<String>> = None;
    loop {
        let status = read_status(&plan);
        for (vm, (stage, since)) in vms.iter().zip(&mut stage_since) {
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
        let rows = watch::rows(&watched, status.as_ref(), &stages);
        printer.show(&rows);
        let done = status.as_ref().is_some_and(|s| {
            powered.iter().all(|(vm, powered_on_ms)| {
                watch::host_for(s, vm).is_some_and(|h| {
                    watch::is_done(h) && h.phase_since_ms.is_some_and(|t| t >= *powered_on_ms)
                })
            })
        });
        if done {
            // A master that joined later is done before the seed promotes its learner: wait
            // for etcd too, up to the same deadline.
            let etcd = etcd_now(&plan, &vms);
            if etcd.1.is_empty() || started.elapsed() > settings.timeout {
                println!(
                    "launcher-lab: every host is done after {}s",
                    started.elapsed().as_secs()
                );
                return summary(&vms, status.as_ref(), etcd);
            }
            if etcd_waiting.as_ref() != Some(&etcd.1) {
                println!(
                    "launcher-lab: every host is done; waiting for etcd: {}",
                    etcd.1.join("; ")
                );
                etcd_waiting = Some(etcd.1);
            }
        }
        for (i, vm) in vms.iter().enumerate() {
            if !lab.alive(&vm_process(vm)) {
                return Outcome::Failed(failure(vm, &rows[i], "its qemu exited"));
            }
        }
        if !lab.alive("seed") {
            let log = plan.run_dir().join("seed.log");
            if seed_restarts >= SEED_RESTARTS {
                return Outcome::Failed(format!(
                    "the seed exited {} times; see {}",
                    seed_restarts + 1,
                    log.display()
                ));
            }
            seed_restarts += 1;
            println!(
                "launcher-lab: the seed exited; starting it again on its state directory \
                 (restart {seed_restarts} of at most {SEED_RESTARTS}; log {})",
                log.display()
            );
            if let Err(err) = lab.seed() {
                return Outcome::Failed(format!("restarting the seed: {err:#}"));
            }
        }
        if started.elapsed() > settings.timeout {
            let (i, vm) = vms
                .iter()
                .enumerate()
                .find(|(i, _)| rows[*i].phase != "done")
                .unwrap_or((0, &vms[0]));
            let why = format!("not done after {}s", settings.timeout.as_secs());
            return Outcome::Failed(failure(vm, &rows[i], &why));
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

/// etcd as the watched masters see it, and what is not yet as the lab wants it.
fn etcd_now(plan: &LabPlan, vms: &[Vm]) -> (Option<EtcdReport>, Vec<String>) {
    let masters = vms
        .iter()
        .filter(|vm| vm.role == cluster::api::Role::Master);
    let endpoints = crate::plan::etcd_endpoints(masters.clone());
    match etcd::check(&plan.namespace, &endpoints, &plan.etcd_client_dir()) {
        Ok(report) => {
            let problems = report.problems(masters.count());
            (Some(report), problems)
        }
        Err(err) => (None, vec![format!("reading etcd's members: {err:#}")]),
    }
}

fn summary(
    vms: &[Vm],
    status: Option<&StatusView>,
    etcd: (Option<EtcdReport>, Vec<String>),
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
    let (report, problems) = etcd;
    if let Some(report) = report {
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
    fn power_refuses_what_the_lab_does_not_have_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let err = |r: anyhow::Result<()>| format!("{:#}", r.unwrap_err());
        let no_lab = format!(
            "no lab in {0}; start one with `launcher-lab up --run-dir {0}`",
            run.display()
        );
        assert_eq!(err(power_on(run, "m1")), no_lab);
        assert_eq!(err(power_off(run, "m1")), no_lab);
        let state = LabState {
            namespace: "launcher-lab-00000000".into(),
            processes: vec![Started {
                name: "vm m1".into(),
                pid: u32::MAX,
                program: "qemu-system-x86_64".into(),
                started_ms: 0,
            }],
            options: Some(crate::plan::LabOptions {
                masters: 1,
                spare_masters: 1,
                workers: 1,
                run_dir: run.to_path_buf(),
                image_dir: "/nonexistent".into(),
                seed_bin: "/nonexistent/launcher-seed".into(),
                memory_mib: 1536,
                disk_mib: 1024,
            }),
            added: Vec::new(),
        };
        state.save(run).unwrap();
        let cases = [
            (
                power_on(run, "m9"),
                "this lab has no VM m9; it has m1, m2, w1",
            ),
            (power_off(run, "w1"), "w1 is not powered on in this lab"),
            (power_off(run, "m7"), "m7 is not powered on in this lab"),
        ];
        for (result, want) in cases {
            assert_eq!(err(result), want);
        }
        assert_eq!(LabState::load(run).unwrap(), Some(state.clone()));
        let old = LabState {
            options: None,
            ..state
        };
        old.save(run).unwrap();
        assert_eq!(
            err(power_on(run, "m1")),
            format!(
                "the lab state in {} does not say how the lab was made; `launcher-lab down` and `up` it again",
                run.display()
            )
        );
    }

    #[test]
    fn offsets_read_in_a_unit_that_fits() {
        assert_eq!(seconds(1_500), "1.5 s behind");
        assert_eq!(seconds(-18_390_666_319), "212.9 days ahead of");
        assert_eq!(seconds(224_000_000_000), "7.1 years behind");
    }
}
