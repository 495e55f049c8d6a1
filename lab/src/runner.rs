//! The thin part that applies a [`LabPlan`]: namespace, seed, dnsmasq and VMs up (then `progress`
//! watches them); a VM powered off and on; everything that was started stopped again by pid and
//! start time, and by namespace.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::host::{namespace_exists, remove_namespace};
use crate::plan::LabPlan;
use crate::procs::Procfs;
use crate::progress;
pub use crate::progress::{Outcome, UpSettings};
use crate::running::{GRACE, Lab, vm_process};
use crate::state::LabState;

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
    let trusted = match &plan.options.trusted_ipxe {
        Some(dir) => Some(crate::trusted::check(dir, &plan.seed_url())?),
        None => None,
    };
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
    crate::host::import_standin_images(&lab.plan, &run_dir.join("images"))?;
    let started = lab.network().and_then(|()| lab.seed()).and_then(|()| {
        if let Some(manifest) = &trusted {
            println!(
                "launcher-lab: the VMs get the trusted iPXE by TFTP and boot from the seed over \
                 HTTPS only (it trusts the CA with pin {}); no plain HTTP",
                manifest.ca_pin
            );
            if let Some(warning) = crate::trusted::other_ca(manifest, &lab.plan.seed_dir()) {
                println!("launcher-lab: warning: {warning}");
            }
        }
        lab.dnsmasq().and_then(|()| lab.vms())
    });
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
/// With `new_disk`, its data disk is replaced by a blank one first.
pub fn power_on(run_dir: &Path, label: &str, new_disk: bool) -> anyhow::Result<()> {
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
    if new_disk {
        crate::host::make_disk(&vm, lab.plan.options.disk_mib)?;
        println!("launcher-lab: {label} has a new blank data disk");
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

/// Prints the VM holding the control-plane VIP; fails when none answers for it.
pub fn vip(run_dir: &Path) -> anyhow::Result<ExitCode> {
    let lab = Lab::from_state(run_dir)?;
    match crate::vip::holder(&lab.plan) {
        Some(vm) => {
            println!("{vm} holds {}", crate::plan::CONTROL_PLANE_IP);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("no VM answers for {}", crate::plan::CONTROL_PLANE_IP);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Runs the real `kubectl ARGS…` inside the lab's namespace, where the control-plane endpoint
/// answers, with an administrator's kubeconfig the seed signs for this call (an hour, kept in
/// `RUN_DIR/admin.kubeconfig`, 0600). Returns kubectl's exit code.
pub fn kubectl(run_dir: &Path, args: &[String]) -> anyhow::Result<i32> {
    let lab = Lab::from_state(run_dir)?;
    let kubectl = crate::which("kubectl").context(
        "kubectl is not installed (Debian: the kubernetes-client package; or put it on PATH)",
    )?;
    let kubeconfig = run_dir.join("admin.kubeconfig");
    crate::seed_api::kubeconfig(&lab.plan.namespace, &lab.plan.seed_dir(), &kubeconfig)?;
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.plan.namespace])
        .arg(&kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(args)
        .status()
        .with_context(|| format!("running kubectl in the namespace {}", lab.plan.namespace))?;
    Ok(status.code().unwrap_or(1))
}

/// Runs `command` in the VM `label` through its guest agent, prints its output and returns its
/// exit code.
pub fn exec(
    run_dir: &Path,
    label: &str,
    command: &[String],
    timeout: std::time::Duration,
) -> anyhow::Result<i32> {
    let lab = Lab::from_state(run_dir)?;
    let vm = lab
        .plan
        .vm(label)
        .with_context(|| format!("the lab has no VM {label}"))?;
    let out = crate::guest::exec(&vm.agent, command, timeout)?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    Ok(out.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Started;

    #[test]
    fn power_refuses_what_the_lab_does_not_have_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let err = |r: anyhow::Result<()>| format!("{:#}", r.unwrap_err());
        let no_lab = format!(
            "no lab in {0}; start one with `launcher-lab up --run-dir {0}`",
            run.display()
        );
        assert_eq!(err(power_on(run, "m1", false)), no_lab);
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
                memory_mib: 2048,
                disk_mib: 1024,
                trusted_ipxe: None,
                held_images: Vec::new(),
                etcd_timing: None,
                api_server_args: vec![],
                direct_boot: vec![],
                media: vec![],
            }),
            added: Vec::new(),
        };
        state.save(run).unwrap();
        let cases = [
            (
                power_on(run, "m9", false),
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
            err(power_on(run, "m1", false)),
            format!(
                "the lab state in {} does not say how the lab was made; `launcher-lab down` and `up` it again",
                run.display()
            )
        );
    }
}
