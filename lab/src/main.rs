//! `launcher-lab`: power on a cluster of VMs that PXE-boot from a seed, and watch them join.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use lab::plan::{LabOptions, LabPlan};
use lab::runner::{self, Outcome, UpSettings};

/// A lab cluster on this machine: a network namespace with a bridge, a seed serving DHCP
/// (dnsmasq), iPXE scripts, boot files, time and enrollment, and one qemu VM per host that
/// boots from the network with a wrong clock and a blank LAUNCHER-DATA disk. Needs root.
#[derive(Debug, Parser)]
#[command(name = "launcher-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the lab and watch every host until it is done (exit 0) or fails (exit 1).
    Up(UpArgs),
    /// Stop everything `up` started in the run directory and delete its namespace.
    Down {
        /// The run directory `up` used.
        #[arg(long, default_value = "lab-run")]
        run_dir: PathBuf,
    },
    /// Power a VM of a running lab off (the plug pulled: no shutdown, its disk kept) or on (it
    /// boots from the network again; a spare master is first added to the cluster file).
    Power {
        #[arg(value_enum)]
        state: PowerState,
        /// The VM: `m1`, `w2`, … as `up` lists them.
        vm: String,
        /// With `on`: give the VM a new blank data disk first, as when a disk is replaced. The
        /// seed refuses the machine's new identity key (`identity_taken`) until an operator
        /// runs `launcher-seed hosts reset ID`.
        #[arg(long)]
        new_disk: bool,
        /// The run directory `up` used.
        #[arg(long, default_value = "lab-run")]
        run_dir: PathBuf,
    },
    /// Print which VM holds the control-plane VIP (exit 1 when none does).
    Vip {
        /// The run directory `up` used.
        #[arg(long, default_value = "lab-run")]
        run_dir: PathBuf,
    },
    /// Run kubectl against the lab's cluster: inside the lab's namespace, through the
    /// control-plane endpoint, as an administrator whose short-lived certificate the seed signs
    /// (`launcher-lab kubectl get nodes -o wide`).
    Kubectl {
        /// The run directory `up` used.
        #[arg(long, default_value = "lab-run")]
        run_dir: PathBuf,
        /// kubectl's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Run a command inside a VM through its QEMU guest agent and print what it printed
    /// (`launcher-lab exec m1 -- cat /etc/hostname`); exits with the command's code.
    Exec {
        /// The run directory `up` used.
        #[arg(long, default_value = "lab-run")]
        run_dir: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// The VM: `m1`, `w2`, … as `up` lists them.
        vm: String,
        /// The command and its arguments (absolute path or one on the guest's PATH).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Watch a running lab until every powered-on host is done (again, after a power-on) and
    /// etcd has every powered-on master, healthy (exit 0), or something fails (exit 1).
    Wait {
        /// The run directory `up` used.
        #[arg(long, default_value = "lab-run")]
        run_dir: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PowerState {
    On,
    Off,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Control-plane VMs (each runs an etcd member).
    #[arg(long, default_value_t = 3)]
    masters: u32,
    /// More masters, given a MAC, address and disk but left powered off and out of the cluster
    /// file; `launcher-lab power on mN` adds one to the running cluster later.
    #[arg(long, default_value_t = 0)]
    spare_masters: u32,
    /// Worker VMs.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Directory holding the image's vmlinuz and initrd.img; built with launcher-build from
    /// --definition when they are missing.
    #[arg(long, default_value = "out")]
    image: PathBuf,
    /// The image definition used when the image must be built.
    #[arg(long, default_value = "images/debian-bookworm.toml")]
    definition: PathBuf,
    /// Where the cluster file, the seed's state, disks, console logs and the lab's state go.
    #[arg(long, default_value = "lab-run")]
    run_dir: PathBuf,
    /// Give up when the hosts are not all done after this many seconds.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Memory of each VM, MiB: its root file system lives in half of it, and kubeadm's preflight
    /// wants 1700.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Leave everything running after a failure or Ctrl-C (to look at it); `down` stops it.
    #[arg(long)]
    keep: bool,
    /// Stop the lab after the summary even when it came up.
    #[arg(long)]
    then_down: bool,
    /// Boot the VMs with the trusted iPXE in this directory (`launcher-seed ipxe --state-dir
    /// RUN_DIR/seed --seed-url https://10.77.0.1:8443 --out DIR`): dnsmasq hands it out by
    /// TFTP, it fetches everything from the seed over HTTPS trusting only the seed's CA, and
    /// the seed serves nothing over plain HTTP.
    #[arg(long)]
    trusted_ipxe: Option<PathBuf>,
    /// Leave this stand-in image (`kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `pause`; repeatable) out of the seed's registry, to watch the hosts
    /// wait for it: none enrolls until `launcher-seed images import --state-dir RUN_DIR/seed
    /// RUN_DIR/images/NAME.tar` brings it.
    #[arg(long = "hold-image", value_name = "NAME")]
    held_images: Vec<String>,
    /// etcd's heartbeat interval and election timeout in the cluster file, milliseconds
    /// (`cluster.etcd_heartbeat_interval_ms`, `cluster.etcd_election_timeout_ms`). The lab's
    /// default is five times etcd's 100/1000: TCG VMs sharing a few cores stall for seconds,
    /// and with etcd's timing four members elected a leader every few seconds. `100/1000` runs
    /// the cluster with etcd's defaults, as on real machines.
    #[arg(long, value_name = "HEARTBEAT/ELECTION", default_value = "500/5000", value_parser = etcd_timing)]
    etcd_timing: (u32, u32),
    /// A kube-apiserver flag for the cluster file (`[cluster.api_server_extra_args]`), as
    /// NAME=VALUE without the dashes; repeatable. A flag kube-apiserver lacks makes every
    /// master's install fail with kube-apiserver's own error in its progress.
    #[arg(long = "api-server-arg", value_name = "NAME=VALUE", value_parser = api_server_arg)]
    api_server_args: Vec<(String, String)>,
    /// Boot this VM (`w1`, `m2`, …; repeatable) straight from DIR's `vmlinuz` and `initrd.img`
    /// by qemu, not from the seed over the network: a host whose image is another build (another
    /// Kubernetes release, a new firstboot), next to the others.
    #[arg(long = "direct-boot", value_name = "VM=DIR", value_parser = direct_boot)]
    direct_boot: Vec<(String, PathBuf)>,
    /// Boot this VM (repeatable) by its UEFI firmware (OVMF) from an `image.iso` or `disk.raw`
    /// of `launcher-build --format iso,disk`, with no network boot: the medium's firstboot
    /// finds the seed by the URL and pin baked into it, so bake it for this lab's seed
    /// (`--seed-url https://10.77.0.1:8443 --pin "$(launcher-seed pin --init --state-dir
    /// RUN_DIR/seed)"`) and give its kernel command line `launcher.wipe=1` to have the VM's
    /// blank data disk formatted. An ISO is read where it is; a disk is copied into the run
    /// directory first and the copy is the host's root file system.
    #[arg(long = "media", value_name = "VM=FILE", value_parser = media_boot)]
    media: Vec<lab::plan::MediaBoot>,
}

fn direct_boot(text: &str) -> Result<(String, PathBuf), String> {
    let (vm, dir) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not VM=DIR, like w1=out-v1.34"))?;
    let dir = std::path::absolute(dir).map_err(|e| format!("{dir}: {e}"))?;
    for file in ["vmlinuz", "initrd.img"] {
        if !dir.join(file).is_file() {
            return Err(format!("{} has no {file}", dir.display()));
        }
    }
    Ok((vm.to_string(), dir))
}

fn media_boot(text: &str) -> Result<lab::plan::MediaBoot, String> {
    use std::io::Read;
    let (vm, file) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not VM=FILE, like w2=out/image.iso"))?;
    let path = std::path::absolute(file).map_err(|e| format!("{file}: {e}"))?;
    let mut head = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(0x8800).read_to_end(&mut head))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let medium = lab::plan::Medium::of_header(&head).ok_or_else(|| {
        format!(
            "{} is neither an ISO image nor a GPT disk image (launcher-build --format iso,disk)",
            path.display()
        )
    })?;
    Ok(lab::plan::MediaBoot {
        vm: vm.to_string(),
        medium,
        path,
    })
}

fn api_server_arg(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE, like audit-log-maxage=30"))?;
    Ok((name.to_string(), value.to_string()))
}

fn etcd_timing(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{text:?} is not HEARTBEAT_MS/ELECTION_MS, like 100/1000");
    let (h, e) = text.split_once('/').ok_or_else(bad)?;
    Ok((h.parse().map_err(|_| bad())?, e.parse().map_err(|_| bad())?))
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Sets the flag on Ctrl-C or SIGTERM.
fn watch_signals(flag: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            flag.store(true, Ordering::SeqCst);
        });
    });
}

fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let run_dir = absolute(&args.run_dir)?;
    let image_dir = absolute(&args.image)?;
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    lab::host::ensure_image(&image_dir, &args.definition)?;
    let plan = LabPlan::new(LabOptions {
        masters: args.masters,
        spare_masters: args.spare_masters,
        workers: args.workers,
        run_dir,
        image_dir,
        seed_bin: lab::host::sibling_bin("launcher-seed"),
        memory_mib: args.memory,
        disk_mib: 1024,
        trusted_ipxe: args.trusted_ipxe.as_deref().map(absolute).transpose()?,
        held_images: args.held_images.clone(),
        etcd_timing: Some(args.etcd_timing),
        api_server_args: args.api_server_args.clone(),
        direct_boot: args.direct_boot.clone(),
        media: args.media.clone(),
    })?;
    let flag = Arc::new(AtomicBool::new(false));
    watch_signals(flag.clone());
    let settings = UpSettings {
        timeout: Duration::from_secs(args.timeout),
        keep: args.keep,
        then_down: args.then_down,
    };
    Ok(exit(runner::up(plan, &settings, flag)?))
}

fn exit(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Ready => ExitCode::SUCCESS,
        Outcome::Failed(why) => {
            eprintln!("launcher-lab: failed: {why}");
            ExitCode::FAILURE
        }
        Outcome::Interrupted => ExitCode::from(130),
    }
}

fn wait(run_dir: &Path, timeout: u64) -> anyhow::Result<ExitCode> {
    let flag = Arc::new(AtomicBool::new(false));
    watch_signals(flag.clone());
    let settings = UpSettings {
        timeout: Duration::from_secs(timeout),
        keep: true,
        then_down: false,
    };
    Ok(exit(runner::wait(&absolute(run_dir)?, &settings, &flag)?))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Cmd::Up(args) => up(args),
        Cmd::Down { run_dir } => absolute(&run_dir)
            .and_then(|dir| runner::down(&dir))
            .map(|()| ExitCode::SUCCESS),
        Cmd::Power {
            state,
            vm,
            new_disk,
            run_dir,
        } => absolute(&run_dir)
            .and_then(|dir| match state {
                PowerState::On => runner::power_on(&dir, &vm, new_disk),
                PowerState::Off if new_disk => {
                    anyhow::bail!("--new-disk goes with `power on`")
                }
                PowerState::Off => runner::power_off(&dir, &vm),
            })
            .map(|()| ExitCode::SUCCESS),
        Cmd::Wait { run_dir, timeout } => wait(&run_dir, timeout),
        Cmd::Vip { run_dir } => absolute(&run_dir).and_then(|dir| runner::vip(&dir)),
        Cmd::Exec {
            run_dir,
            timeout,
            vm,
            command,
        } => absolute(&run_dir)
            .and_then(|dir| runner::exec(&dir, &vm, &command, Duration::from_secs(timeout)))
            .map(|code| ExitCode::from(u8::try_from(code).unwrap_or(1))),
        Cmd::Kubectl { run_dir, args } => absolute(&run_dir)
            .and_then(|dir| runner::kubectl(&dir, &args))
            .map(|code| ExitCode::from(u8::try_from(code).unwrap_or(1))),
    };
    result.unwrap_or_else(|err| {
        eprintln!("launcher-lab: {err:#}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn api_server_args_are_name_equals_value() {
        assert_eq!(
            api_server_arg("audit-log-maxage=30"),
            Ok(("audit-log-maxage".into(), "30".into()))
        );
        assert_eq!(api_server_arg("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(
            api_server_arg("profiling"),
            Err("\"profiling\" is not NAME=VALUE, like audit-log-maxage=30".into())
        );
    }

    #[test]
    fn etcd_timing_is_two_numbers_of_milliseconds() {
        assert_eq!(etcd_timing("100/1000"), Ok((100, 1000)));
        for bad in ["", "100", "100/", "/1000", "1s/5s", "100/1000/1", "-1/1000"] {
            assert_eq!(
                etcd_timing(bad),
                Err(format!(
                    "{bad:?} is not HEARTBEAT_MS/ELECTION_MS, like 100/1000"
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn kubectl_passes_its_arguments_through_flags_included() {
        let cli = Cli::try_parse_from([
            "launcher-lab",
            "kubectl",
            "--run-dir",
            "r",
            "get",
            "nodes",
            "-o",
            "wide",
        ])
        .unwrap();
        let Cmd::Kubectl { run_dir, args } = cli.command else {
            panic!("not kubectl: {cli:?}");
        };
        assert_eq!(run_dir, PathBuf::from("r"));
        assert_eq!(args, ["get", "nodes", "-o", "wide"]);
        assert!(Cli::try_parse_from(["launcher-lab", "kubectl"]).is_err());
    }
}
