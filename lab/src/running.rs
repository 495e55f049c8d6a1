//! A running lab: what was started (by name, pid and start time), kept in the state file as
//! it changes, and the steps that start or stop one part of it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::host::{make_disk, remove_namespace, run_ip};
use crate::plan::{LabPlan, Vm};
use crate::procs::{Procfs, named_namespace_inode, stop_all};
use crate::state::{LabState, Started};

/// How long a process gets after SIGTERM before SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// A running lab: what was started, kept in the state file as it changes.
pub(crate) struct Lab {
    pub(crate) plan: LabPlan,
    pub(crate) state: LabState,
    /// This process's own children, by their name in the state (`wait` and `power` on a lab
    /// started by another process have none and go by pid).
    pub(crate) children: Vec<(String, Child)>,
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
    pub(crate) fn from_state(run_dir: &Path) -> anyhow::Result<Lab> {
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
    pub(crate) fn spawn(
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
    pub(crate) fn forget(&mut self, name: &str) {
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

    pub(crate) fn process(&self, name: &str) -> Option<&Started> {
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
    pub(crate) fn stop_process(&mut self, name: &str) -> anyhow::Result<()> {
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
    pub(crate) fn network(&mut self) -> anyhow::Result<()> {
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
        let log = plan.run_dir().join("seed.log");
        self.spawn("seed", &plan.options.seed_bin, &plan.seed_args(), &log)?;
        let started = Instant::now();
        // Without plain HTTP (a trusted iPXE) the seed writes no http.addr.
        let mut bound = vec!["serve.addr"];
        if plan.plain_http() {
            bound.push("http.addr");
        }
        while !bound.iter().all(|f| seed_dir.join(f).exists()) {
            if !self.alive("seed") || started.elapsed() > Duration::from_secs(60) {
                bail!("the seed did not start; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    pub(crate) fn dnsmasq(&mut self) -> anyhow::Result<()> {
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
    pub(crate) fn power_on(&mut self, vm: &Vm) -> anyhow::Result<()> {
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
        let args = match (self.plan.direct_boot(vm), self.plan.media_boot(vm)) {
            (Some(dir), _) => {
                let pin = crate::host::seed_pin(&self.plan)?;
                self.plan
                    .qemu_args_direct(vm, dir, &self.plan.direct_cmdline(&pin))
            }
            (None, Some(media)) => {
                crate::host::prepare_media(&self.plan, vm, media)?;
                self.plan.qemu_args_media(vm, media)
            }
            (None, None) => self.plan.qemu_args(vm),
        };
        self.spawn(&vm_process(vm), &qemu, &args, &log)
    }

    /// Every VM gets its blank disk; all but the spare masters are powered on.
    pub(crate) fn vms(&mut self) -> anyhow::Result<()> {
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
    pub(crate) fn teardown(&mut self) {
        self.state.stop_everything(&Procfs::system(), GRACE);
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
        remove_namespace(&self.state.namespace);
        let _ = LabState::remove(self.plan.run_dir());
    }
}
