//! The thin part that applies a [`LabPlan`]: namespace, seed, dnsmasq and VMs up (then `progress`
//! watches them); a VM powered off and on; everything that was started stopped again by pid and
//! start time, and by namespace.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::etcd;
use crate::host::{make_disk, namespace_exists, remove_namespace, run_ip};
use crate::plan::{LabPlan, Vm};
use crate::procs::{Procfs, named_namespace_inode, stop_all};
use crate::progress;
use crate::state::{LabState, Started};

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

/// A running lab: what was started, kept in the state file as it changes.
pub(crate) struct Lab {
    pub(crate) plan: LabPlan,
    state: LabState,
    /// This process's own children, by their name in the state (`wait` and `power` on a lab
    /// started by another process have none and go by pid).
    children: Vec<(String, Child)>,
}

/// The state's name for a VM's qemu.
pub(crate) fn vm_process(vm: &Vm) -> String {
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
        let start_ticks = Procfs::system()
            .stat(child.id())
            .with_context(|| format!("reading the start time of {name} (pid {})", child.id()))?
            .start_ticks;
        self.forget(name);
        self.state.processes.push(Started {
            name: name.to_string(),
            pid: child.id(),
            program: program_name,
            start_ticks,
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

    pub(crate) fn alive(&mut self, name: &str) -> bool {
        if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name) {
            return matches!(child.try_wait(), Ok(None));
        }
        self.process(name)
            .is_some_and(|p| p.runs(&Procfs::system()))
    }

    /// Stops `name` (SIGTERM, then SIGKILL after the grace time) and drops it from the state.
    fn stop_process(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(p) = self.process(name) {
            stop_all(&Procfs::system(), &[(p.pid, p.start_ticks)], GRACE);
        }
        if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = child.wait();
        }
        self.forget(name);
        self.state.save(self.plan.run_dir())
    }

    /// Makes the namespace and its network, and records the namespace's inode.
    fn network(&mut self) -> anyhow::Result<()> {
        for cmd in self.plan.network_commands() {
            run_ip(&cmd)?;
            if self.state.namespace_inode.is_none() {
                self.state.namespace_inode = named_namespace_inode(&self.plan.namespace);
                self.state.save(self.plan.run_dir())?;
            }
        }
        Ok(())
    }

    pub(crate) fn seed(&mut self) -> anyhow::Result<()> {
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
    pub(crate) fn powered(&self) -> Vec<(Vm, i64)> {
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
        self.state.stop_everything(&Procfs::system(), GRACE);
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
        remove_namespace(&self.state.namespace);
        let _ = LabState::remove(self.plan.run_dir());
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
    durable::write_atomic(
        &plan.cluster_file(),
        plan.cluster_toml(&[]).as_bytes(),
        0o644,
    )?;
    let mut lab = Lab {
        state: LabState {
            namespace: plan.namespace.clone(),
            namespace_inode: None,
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
        Ok(()) => progress::until_ready(&mut lab, settings, &stop_flag),
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

/// Stops what the state file in `run_dir` lists and whatever else runs in the lab's namespace,
/// and deletes the namespace.
pub fn down(run_dir: &Path) -> anyhow::Result<()> {
    let Some(state) = LabState::load(run_dir)? else {
        println!("launcher-lab: no lab in {}", run_dir.display());
        return Ok(());
    };
    let stopped = state.stop_everything(&Procfs::system(), GRACE);
    remove_namespace(&state.namespace);
    LabState::remove(run_dir)?;
    println!(
        "launcher-lab: stopped {stopped} processes and removed {}",
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
        durable::write_atomic(&file, text.as_bytes(), 0o644)?;
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
    let proc = Procfs::system();
    if process.runs(&proc) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(process.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let started = Instant::now();
        while process.runs(&proc) && started.elapsed() < GRACE {
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
    Ok(progress::until_ready(&mut lab, settings, stop_flag))
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
            namespace_inode: None,
            processes: vec![Started {
                name: "vm m1".into(),
                pid: u32::MAX,
                program: "qemu-system-x86_64".into(),
                start_ticks: 0,
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
}
