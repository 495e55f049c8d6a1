//! The lab as a value: addresses, MACs, UUIDs, wrong clocks, the cluster file and every command
//! line, decided from the options alone so that it can be read and tested without a machine.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use cluster::api::Role;
// The DHCP user class of the trusted iPXE's requests (its script sets it).
use registry_seed::ipxe::recipe::USER_CLASS as TRUSTED_USER_CLASS;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The seed's address on the lab bridge (and the bridge's own address).
pub const SEED_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The lab network's prefix length.
pub const PREFIX: u8 = 24;
/// The bridge inside the namespace.
pub const BRIDGE: &str = "br0";
/// The seed's HTTPS API (the cluster file's `seed.url`).
pub const HTTPS_PORT: u16 = 8443;
/// Plain HTTP for iPXE: qemu's iPXE ROM does not trust the seed's CA (unless the lab boots a
/// trusted iPXE, when there is no plain HTTP).
pub const HTTP_PORT: u16 = 8080;
/// The seed's NTP server.
pub const NTP_PORT: u16 = 123;
/// The control-plane endpoint the cluster file names (an address no VM has).
pub const CONTROL_PLANE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
/// Most VMs a lab has: MACs end in the two decimal digits of the VM's number.
pub const MAX_VMS: u32 = 99;
/// The Kubernetes version of the lab's cluster (and of the stand-in images the seed serves).
pub const KUBERNETES_VERSION: &str = "v1.33.4";
/// Past and future years (none past 2035, where NTP's era 0 ends) the VMs' clocks start in.
const WRONG_YEARS: [u32; 8] = [2001, 2034, 2012, 2030, 2005, 2028, 2018, 2032];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("a lab needs at least one master (etcd and the control plane run there)")]
    NoMaster,
    #[error("a lab has at most {MAX_VMS} VMs; {0} were asked for")]
    TooMany(u32),
    #[error("{what} must be an absolute path, not {path}")]
    Relative { what: &'static str, path: PathBuf },
    #[error("{flag} {vm}: the lab has no such VM (its VMs are m1…, then w1…)")]
    NoSuchVm { flag: &'static str, vm: String },
    #[error(
        "{0} is given two ways to boot (--direct-boot and --media each name it at most once, and not both)"
    )]
    BootedTwice(String),
}

/// Where the lab's VMs find their UEFI firmware (Debian's `ovmf`): the code, read-only, and the
/// template of the variable store each VM gets a copy of.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// A bootable medium `launcher-build` makes, booted by a VM's UEFI firmware with no network
/// boot: the hybrid ISO as a CD, the raw disk as the VM's first disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    Iso,
    Disk,
}

impl Medium {
    /// What the first 34 KiB of a file say it is: ISO 9660's `CD001` at byte 32769 (a hybrid
    /// ISO carries a GPT as well, so this comes first), else a GPT header at byte 512.
    pub fn of_header(head: &[u8]) -> Option<Medium> {
        if head.get(0x8001..0x8006) == Some(b"CD001") {
            Some(Medium::Iso)
        } else if head.get(512..520) == Some(b"EFI PART") {
            Some(Medium::Disk)
        } else {
            None
        }
    }
}

/// A VM booted from a medium (`launcher-lab up --media VM=FILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaBoot {
    pub vm: String,
    pub medium: Medium,
    /// The ISO or raw disk image as built; a disk is copied into the run directory before the
    /// VM first writes to it.
    pub path: PathBuf,
}

/// What `launcher-lab up` was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabOptions {
    /// Masters powered on by `up`; the cluster file's `masters` (they bootstrap etcd together).
    pub masters: u32,
    /// Masters listed in the inventory but left powered off by `up`: powering one on later adds
    /// it to the running cluster (an etcd learner, then promoted).
    #[serde(default)]
    pub spare_masters: u32,
    pub workers: u32,
    /// Holds the cluster file, the seed's state, disks, console logs and the lab's state file.
    pub run_dir: PathBuf,
    /// Holds the image's `vmlinuz` and `initrd.img`.
    pub image_dir: PathBuf,
    /// The `launcher-seed` binary.
    pub seed_bin: PathBuf,
    /// Memory of each VM.
    pub memory_mib: u32,
    /// Size of each VM's `LAUNCHER-DATA` disk.
    pub disk_mib: u32,
    /// A trusted iPXE (`launcher-seed ipxe --out DIR`): dnsmasq hands it to the VMs' ROM by
    /// TFTP, it boots them from the seed over HTTPS, and the seed serves nothing over plain
    /// HTTP.
    #[serde(default)]
    pub trusted_ipxe: Option<PathBuf>,
    /// Stand-in images made but left out of the seed's registry (`kube-scheduler`, `pause`):
    /// hosts wait to enroll until they are imported from `RUN_DIR/images/NAME.tar`.
    #[serde(default)]
    pub held_images: Vec<String>,
    /// etcd's heartbeat interval and election timeout (ms) for the cluster file; `None` leaves
    /// etcd's defaults.
    #[serde(default)]
    pub etcd_timing: Option<(u32, u32)>,
    /// kube-apiserver flags for the cluster file's `[cluster.api_server_extra_args]`, as
    /// `(name, value)`.
    #[serde(default)]
    pub api_server_args: Vec<(String, String)>,
    /// VMs booted straight from another image's `vmlinuz` and `initrd.img` (qemu's own kernel
    /// loading, no network boot), as `(label, directory)`: a host whose image differs from the
    /// others.
    #[serde(default)]
    pub direct_boot: Vec<(String, PathBuf)>,
    /// VMs booted by UEFI firmware from an ISO or a raw disk image baked for this lab's seed
    /// (its URL and pin inside), no network boot at all.
    #[serde(default)]
    pub media: Vec<MediaBoot>,
}

/// `[cluster.api_server_extra_args]` of `launcher-lab up --api-server-arg`, empty without any;
/// names and values quoted (JSON's string escapes are TOML's), checked by the cluster file's
/// parser.
fn api_server_table(args: &[(String, String)]) -> String {
    if args.is_empty() {
        return String::new();
    }
    let mut table =
        "\n# launcher-lab up --api-server-arg\n[cluster.api_server_extra_args]\n".to_string();
    for (name, value) in args {
        let quoted = |s: &str| serde_json::Value::from(s).to_string();
        table.push_str(&format!("{} = {}\n", quoted(name), quoted(value)));
    }
    table
}

/// One VM of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// 1-based; masters first.
    pub number: u32,
    pub role: Role,
    /// `m1`, `w1`, … for messages.
    pub label: String,
    /// `52:54:00:77:00:NN`.
    pub mac: String,
    /// `10.77.0.1NN`.
    pub ip: Ipv4Addr,
    /// DMI product UUID.
    pub uuid: String,
    /// DMI product serial.
    pub serial: String,
    /// The tap device inside the namespace.
    pub tap: String,
    /// The guest's wrong clock at power-on (`-rtc base=`).
    pub rtc_base: String,
    /// Listed in the inventory but not powered on by `up`.
    pub spare: bool,
    pub console: PathBuf,
    pub disk: PathBuf,
    /// The host end of its guest agent's serial port (see [`crate::guest`]).
    pub agent: PathBuf,
}

/// Everything `up` does, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPlan {
    pub options: LabOptions,
    pub namespace: String,
    pub vms: Vec<Vm>,
}

/// The network namespace of a run directory: `launcher-lab-<8 hex of sha256(path)>`.
pub fn namespace_for(run_dir: &Path) -> String {
    let digest = Sha256::digest(run_dir.as_os_str().as_encoded_bytes());
    format!("launcher-lab-{}", &hex::encode(digest)[..8])
}

/// A different wrong date for each VM, years away from today in either direction.
pub fn wrong_clock(number: u32) -> String {
    let i = number.saturating_sub(1);
    let year = WRONG_YEARS[(i % 8) as usize];
    let month = 1 + (i / 8) % 12;
    let day = 1 + i % 28;
    let hour = i % 24;
    format!("{year}-{month:02}-{day:02}T{hour:02}:00:00")
}

fn vm(options: &LabOptions, number: u32, role: Role, role_index: u32) -> Vm {
    let letter = if role == Role::Master { 'm' } else { 'w' };
    Vm {
        number,
        role,
        label: format!("{letter}{role_index}"),
        mac: format!("52:54:00:77:00:{number:02}"),
        ip: Ipv4Addr::new(10, 77, 0, 100 + number as u8),
        uuid: format!("6c61622d-0000-4000-8000-{number:012}"),
        serial: format!("LAB-{number:04}"),
        tap: format!("tap{number}"),
        rtc_base: wrong_clock(number),
        spare: false,
        console: options.run_dir.join(format!("vm-{number}.console")),
        disk: options.run_dir.join(format!("vm-{number}.data.raw")),
        agent: options.run_dir.join(format!("vm-{number}.qga")),
    }
}

impl LabPlan {
    pub fn new(options: LabOptions) -> Result<LabPlan, PlanError> {
        if options.masters == 0 {
            return Err(PlanError::NoMaster);
        }
        let total = options
            .masters
            .saturating_add(options.spare_masters)
            .saturating_add(options.workers);
        if total > MAX_VMS {
            return Err(PlanError::TooMany(total));
        }
        let trusted = options
            .trusted_ipxe
            .iter()
            .map(|dir| ("the trusted iPXE directory", dir))
            .chain(
                options
                    .direct_boot
                    .iter()
                    .map(|(_, dir)| ("a --direct-boot image directory", dir)),
            )
            .chain(
                options
                    .media
                    .iter()
                    .map(|m| ("a --media image file", &m.path)),
            );
        for (what, path) in [
            ("the run directory", &options.run_dir),
            ("the image directory", &options.image_dir),
        ]
        .into_iter()
        .chain(trusted)
        {
            if !path.is_absolute() {
                return Err(PlanError::Relative {
                    what,
                    path: path.clone(),
                });
            }
        }
        let all_masters = options.masters + options.spare_masters;
        let masters = (1..=all_masters).map(|i| Vm {
            spare: i > options.masters,
            ..vm(&options, i, Role::Master, i)
        });
        let workers = (1..=options.workers).map(|i| vm(&options, all_masters + i, Role::Worker, i));
        let vms: Vec<Vm> = masters.chain(workers).collect();
        let named = options
            .direct_boot
            .iter()
            .map(|(label, _)| ("--direct-boot", label))
            .chain(options.media.iter().map(|m| ("--media", &m.vm)));
        let mut seen = std::collections::BTreeSet::new();
        for (flag, label) in named {
            if !vms.iter().any(|vm| vm.label == *label) {
                return Err(PlanError::NoSuchVm {
                    flag,
                    vm: label.clone(),
                });
            }
            if !seen.insert(label) {
                return Err(PlanError::BootedTwice(label.clone()));
            }
        }
        Ok(LabPlan {
            namespace: namespace_for(&options.run_dir),
            vms,
            options,
        })
    }

    pub fn run_dir(&self) -> &Path {
        &self.options.run_dir
    }

    pub fn cluster_file(&self) -> PathBuf {
        self.run_dir().join("cluster.toml")
    }

    /// The seed's state directory.
    /// The seed's registry as image references name it.
    pub fn registry(&self) -> String {
        format!("{SEED_IP}:{HTTPS_PORT}")
    }

    pub fn seed_dir(&self) -> PathBuf {
        self.run_dir().join("seed")
    }

    /// Where the etcd client certificate for the summary is kept.
    pub fn etcd_client_dir(&self) -> PathBuf {
        self.run_dir().join("etcd-client")
    }

    pub fn seed_url(&self) -> String {
        format!("https://{SEED_IP}:{HTTPS_PORT}")
    }

    /// What iPXE clients are told to fetch (without a trusted iPXE).
    pub fn boot_url(&self) -> String {
        format!("http://{SEED_IP}:{HTTP_PORT}/boot.ipxe")
    }

    /// Whether the seed serves boot files over plain HTTP: only when the VMs' ROM iPXE boots
    /// from it, not with a trusted iPXE.
    pub fn plain_http(&self) -> bool {
        self.options.trusted_ipxe.is_none()
    }

    pub fn masters(&self) -> impl Iterator<Item = &Vm> {
        self.vms.iter().filter(|v| v.role == Role::Master)
    }

    /// The VM labelled `label` (`m1`, `w2`, …).
    pub fn vm(&self, label: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| v.label == label)
    }

    /// `https://IP:2379` of every master `up` powers on.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        etcd_endpoints(self.masters().filter(|m| !m.spare))
    }

    /// The cluster file the seed serves: one inventory entry per VM, by MAC, with its address.
    /// Spare masters are left out until they are `added` (powered on for the first time); each
    /// one added raises `masters`, as an operator adding a master to the inventory would.
    pub fn cluster_toml(&self, added: &[String]) -> String {
        let listed: Vec<&Vm> = self
            .vms
            .iter()
            .filter(|vm| !vm.spare || added.contains(&vm.label))
            .collect();
        let masters = listed.iter().filter(|vm| vm.role == Role::Master).count();
        let mut text = format!(
            "# Written by launcher-lab for the VMs of {run}.\n\n\
             [cluster]\nname = \"lab\"\nkubernetes_version = \"{KUBERNETES_VERSION}\"\n\
             control_plane_endpoint = \"{CONTROL_PLANE_IP}:6443\"\n\
             pod_subnet = \"10.244.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
             dns_domain = \"cluster.local\"\nmasters = {masters}\nschedulable_masters = true\n\
             key_algorithm = \"ecdsa-p256\"\n\
             # The VMs have one CPU each, under kubeadm's two.\n\
             ignore_preflight_errors = [\"NumCPU\"]\n\
             # The stand-in kubelet runs static Pods only: no add-on would run.\n\
             skip_phases = [\"addon\"]\n{timing}{api_server_args}\n\
             [seed]\nurl = \"{url}\"\nregistry = \"{registry}\"\n",
            run = self.run_dir().display(),
            url = self.seed_url(),
            registry = self.registry(),
            timing = self
                .options
                .etcd_timing
                .map_or(String::new(), |(h, e)| format!(
                    "# launcher-lab up --etcd-timing {h}/{e}\n\
                 etcd_heartbeat_interval_ms = {h}\netcd_election_timeout_ms = {e}\n"
                )),
            api_server_args = api_server_table(&self.options.api_server_args),
        );
        for vm in listed {
            text.push_str(&format!(
                "\n[[hosts]]\nmac = \"{}\"\nip = \"{}\"\nrole = \"{}\"\n",
                vm.mac, vm.ip, vm.role
            ));
        }
        text
    }

    /// `ip` invocations that make the namespace, its bridge and one tap per VM.
    pub fn network_commands(&self) -> Vec<Vec<String>> {
        let ns = &self.namespace;
        let mut cmds = vec![
            words(&["netns", "add", ns]),
            words(&["-n", ns, "link", "set", "lo", "up"]),
            words(&["-n", ns, "link", "add", BRIDGE, "type", "bridge"]),
            words(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{SEED_IP}/{PREFIX}"),
                "dev",
                BRIDGE,
            ]),
            words(&["-n", ns, "link", "set", BRIDGE, "up"]),
        ];
        for vm in &self.vms {
            cmds.push(words(&[
                "-n", ns, "tuntap", "add", "dev", &vm.tap, "mode", "tap",
            ]));
            cmds.push(words(&["-n", ns, "link", "set", &vm.tap, "master", BRIDGE]));
            cmds.push(words(&["-n", ns, "link", "set", &vm.tap, "up"]));
        }
        cmds
    }

    /// `launcher-seed serve` arguments (run inside the namespace).
    pub fn seed_args(&self) -> Vec<String> {
        let mut args = words(&["serve", "--cluster"]);
        args.push(self.cluster_file().display().to_string());
        args.push("--state-dir".into());
        args.push(self.seed_dir().display().to_string());
        args.extend([
            format!("--listen={SEED_IP}:{HTTPS_PORT}"),
            format!("--ntp-listen={SEED_IP}:{NTP_PORT}"),
        ]);
        if self.plain_http() {
            args.push(format!("--http-listen={SEED_IP}:{HTTP_PORT}"));
        }
        args.push(format!("--boot-dir={}", self.options.image_dir.display()));
        args.extend(KERNEL_ARGS.iter().map(|a| format!("--kernel-arg={a}")));
        args
    }

    /// The image directory `vm` boots from directly, if it does not boot from the network.
    pub fn direct_boot(&self, vm: &Vm) -> Option<&Path> {
        self.options
            .direct_boot
            .iter()
            .find(|(label, _)| *label == vm.label)
            .map(|(_, dir)| dir.as_path())
    }

    /// What `vm` runs first once powered on: `pxe` (the NIC's iPXE), `uefi` (the firmware,
    /// reading its medium) or `qemu` (qemu loading the kernel itself).
    pub fn firmware(&self, vm: &Vm) -> &'static str {
        if self.direct_boot(vm).is_some() {
            "qemu"
        } else if self.media_boot(vm).is_some() {
            "uefi"
        } else {
            "pxe"
        }
    }

    /// The medium `vm` boots from, if it boots from one.
    pub fn media_boot(&self, vm: &Vm) -> Option<&MediaBoot> {
        self.options.media.iter().find(|m| m.vm == vm.label)
    }

    /// The copy of the firmware's variable store `vm` writes its boot entries to.
    pub fn uefi_vars(&self, vm: &Vm) -> PathBuf {
        self.run_dir().join(format!("vm-{}.vars.fd", vm.number))
    }

    /// The file a VM booted from `media` reads: the ISO itself (read-only), or the run
    /// directory's copy of a raw disk, which the host's root file system then lives on.
    pub fn media_file(&self, vm: &Vm, media: &MediaBoot) -> PathBuf {
        match media.medium {
            Medium::Iso => media.path.clone(),
            Medium::Disk => self.run_dir().join(format!("vm-{}.boot.raw", vm.number)),
        }
    }

    /// The kernel command line of a VM booted directly: what the seed's per-machine iPXE script
    /// gives a network-booted one, with the seed CA's `pin`.
    pub fn direct_cmdline(&self, pin: &str) -> String {
        let mut args = vec![
            format!("launcher.seed={}", self.seed_url()),
            format!("launcher.pin={pin}"),
            format!("launcher.ntp={SEED_IP}:{NTP_PORT}"),
        ];
        args.extend(KERNEL_ARGS.iter().map(|a| a.to_string()));
        args.join(" ")
    }

    /// `dnsmasq` arguments: a fixed address per VM; iPXE sent to the seed over plain HTTP, or
    /// with a trusted iPXE, that iPXE by TFTP (see [`LabPlan::trusted_boot_args`]).
    pub fn dnsmasq_args(&self) -> Vec<String> {
        let mut args = words(&[
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--log-facility=-",
            "--user=root",
            "--group=root",
            "--bind-interfaces",
        ]);
        args.push(format!("--interface={BRIDGE}"));
        args.push(format!(
            "--dhcp-leasefile={}",
            self.run_dir().join("dnsmasq.leases").display()
        ));
        args.push("--dhcp-range=10.77.0.200,10.77.0.250,255.255.255.0,12h".into());
        for vm in &self.vms {
            args.push(format!("--dhcp-host={},{}", vm.mac, vm.ip));
        }
        match &self.options.trusted_ipxe {
            None => {
                args.push("--dhcp-match=set:ipxe,175".into());
                args.push(format!("--dhcp-boot=tag:ipxe,{}", self.boot_url()));
            }
            Some(dir) => args.extend(Self::trusted_boot_args(dir)),
        }
        args
    }

    /// DHCP and TFTP for a trusted iPXE in `dir`: the VMs' firmware (a PXE ROM, or the iPXE
    /// ROM qemu has) gets `undionly.kpxe` (BIOS) or `ipxe.efi` (UEFI) by TFTP. The trusted iPXE
    /// then asks DHCP again with its own user class and gets no boot file: its script chains
    /// to the seed by itself, and a boot file would only have it load itself again.
    pub fn trusted_boot_args(dir: &Path) -> Vec<String> {
        vec![
            "--enable-tftp".into(),
            format!("--tftp-root={}", dir.display()),
            // Each request's user class and tags in the log: which iPXE asked, what it got.
            "--log-dhcp".into(),
            format!("--dhcp-userclass=set:trusted,{TRUSTED_USER_CLASS}"),
            // RFC 4578 client architectures 7 and 9: x86-64 UEFI.
            "--dhcp-match=set:efi64,option:client-arch,7".into(),
            "--dhcp-match=set:efi64,option:client-arch,9".into(),
            "--dhcp-boot=tag:!trusted,tag:efi64,ipxe.efi".into(),
            "--dhcp-boot=tag:!trusted,tag:!efi64,undionly.kpxe".into(),
        ]
    }

    /// `qemu-system-x86_64` arguments for a VM booted directly from `dir` with `cmdline`: as
    /// [`LabPlan::qemu_args`], with qemu loading the kernel and initrd instead of a network boot.
    pub fn qemu_args_direct(&self, vm: &Vm, dir: &Path, cmdline: &str) -> Vec<String> {
        let mut args = self.qemu_args(vm);
        if let Some(at) = args.windows(2).position(|w| w[0] == "-boot" && w[1] == "n") {
            args.splice(
                at..at + 2,
                [
                    "-kernel".to_string(),
                    dir.join("vmlinuz").display().to_string(),
                    "-initrd".to_string(),
                    dir.join("initrd.img").display().to_string(),
                    "-append".to_string(),
                    cmdline.to_string(),
                ],
            );
        }
        args
    }

    /// `qemu-system-x86_64` arguments for a VM booted from `media` by OVMF: as
    /// [`LabPlan::qemu_args`], with UEFI firmware, the medium first in the boot order and the
    /// NIC without its iPXE ROM, so the VM cannot fall back to a network boot: what reaches the
    /// seed is the medium's own firstboot, with the URL and pin baked into it.
    pub fn qemu_args_media(&self, vm: &Vm, media: &MediaBoot) -> Vec<String> {
        let mut args = self.qemu_args(vm);
        if let Some(at) = args.windows(2).position(|w| w[0] == "-boot" && w[1] == "n") {
            args.drain(at..at + 2);
        }
        if let Some(nic) = args.iter_mut().find(|a| a.starts_with("virtio-net-pci,")) {
            nic.push_str(",romfile=");
        }
        let file = self.media_file(vm, media).display().to_string();
        let drive = match media.medium {
            Medium::Iso => {
                format!("file={file},format=raw,if=none,id=media,media=cdrom,readonly=on")
            }
            Medium::Disk => format!("file={file},format=raw,if=none,id=media"),
        };
        let device = match media.medium {
            Medium::Iso => "ide-cd,drive=media,bootindex=0",
            Medium::Disk => "virtio-blk-pci,drive=media,bootindex=0",
        };
        args.extend([
            "-drive".to_string(),
            format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            "-drive".to_string(),
            format!("if=pflash,format=raw,file={}", self.uefi_vars(vm).display()),
            "-drive".to_string(),
            drive,
            "-device".to_string(),
            device.to_string(),
        ]);
        args
    }

    /// `qemu-system-x86_64` arguments for one VM: network boot, its data disk, its clock.
    pub fn qemu_args(&self, vm: &Vm) -> Vec<String> {
        let mut args = words(&["-name", &format!("lab-{}", vm.label)]);
        args.extend(words(&["-accel", "tcg", "-smp", "1", "-m"]));
        args.push(self.options.memory_mib.to_string());
        args.extend(words(&[
            "-display", "none", "-monitor", "none", "-boot", "n",
        ]));
        args.push("-serial".into());
        args.push(format!("file:{}", vm.console.display()));
        args.push("-netdev".into());
        args.push(format!(
            "tap,id=n0,ifname={},script=no,downscript=no",
            vm.tap
        ));
        args.push("-device".into());
        args.push(format!("virtio-net-pci,netdev=n0,mac={}", vm.mac));
        args.extend(words(&["-device", "virtio-rng-pci", "-uuid", &vm.uuid]));
        args.push("-smbios".into());
        args.push(format!("type=1,serial={}", vm.serial));
        args.push("-drive".into());
        args.push(format!("file={},format=raw,if=virtio", vm.disk.display()));
        args.push("-rtc".into());
        args.push(format!("base={}", vm.rtc_base));
        args.push("-chardev".into());
        args.push(format!(
            "socket,id=qga0,path={},server=on,wait=off",
            vm.agent.display()
        ));
        args.extend(words(&[
            "-device",
            "virtio-serial-pci",
            "-device",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ]));
        args
    }

    /// The `sfdisk` script of a data disk: GPT, one Linux partition named `LAUNCHER-DATA`.
    pub fn disk_layout() -> &'static str {
        "label: gpt\ntype=0FC63DAF-8483-4772-8E79-3D47DE7D7284, name=\"LAUNCHER-DATA\"\n"
    }
}

/// `https://IP:2379` of each of `masters`.
pub fn etcd_endpoints<'a>(masters: impl Iterator<Item = &'a Vm>) -> Vec<String> {
    masters
        .map(|m| format!("https://{}:{}", m.ip, cluster::etcd::CLIENT_PORT))
        .collect()
}

/// Kernel arguments of every VM besides the seed's own.
const KERNEL_ARGS: [&str; 3] = [
    "console=ttyS0,115200",
    // The data disk comes with an empty partition; firstboot formats it when told.
    "launcher.wipe=1",
    // Every service's log (firstboot, the kubelet, keepalived, etcd) in the VM's console file
    // as well as its journal: the lab's VMs have no other way out.
    "systemd.journald.forward_to_console=1",
];

fn words(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Options with `masters` and `workers`, absolute directories and the default VM sizes.
    pub(crate) fn options(masters: u32, workers: u32) -> LabOptions {
        LabOptions {
            masters,
            spare_masters: 0,
            workers,
            run_dir: "/tmp/lab-run".into(),
            image_dir: "/work/out".into(),
            seed_bin: "/usr/bin/launcher-seed".into(),
            memory_mib: 2048,
            disk_mib: 1024,
            trusted_ipxe: None,
            held_images: vec![],
            etcd_timing: None,
            api_server_args: vec![],
            direct_boot: vec![],
            media: vec![],
        }
    }

    /// Options of a lab that boots the trusted iPXE in `/work/ipxe`.
    pub(crate) fn trusted(masters: u32, workers: u32) -> LabOptions {
        LabOptions {
            trusted_ipxe: Some("/work/ipxe".into()),
            held_images: vec![],
            etcd_timing: None,
            api_server_args: vec![],
            ..options(masters, workers)
        }
    }

    #[test]
    fn vms_get_addresses_macs_and_names_by_number_masters_first() {
        let plan = LabPlan::new(options(3, 1)).unwrap();
        let got: Vec<(&str, &str, String, Role)> = plan
            .vms
            .iter()
            .map(|v| (v.label.as_str(), v.mac.as_str(), v.ip.to_string(), v.role))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "m1",
                    "52:54:00:77:00:01",
                    "10.77.0.101".into(),
                    Role::Master
                ),
                (
                    "m2",
                    "52:54:00:77:00:02",
                    "10.77.0.102".into(),
                    Role::Master
                ),
                (
                    "m3",
                    "52:54:00:77:00:03",
                    "10.77.0.103".into(),
                    Role::Master
                ),
                (
                    "w1",
                    "52:54:00:77:00:04",
                    "10.77.0.104".into(),
                    Role::Worker
                ),
            ]
        );
        assert_eq!(plan.vms[3].tap, "tap4");
        assert_eq!(
            plan.vms[3].console,
            PathBuf::from("/tmp/lab-run/vm-4.console")
        );
        assert_eq!(
            plan.etcd_endpoints(),
            [
                "https://10.77.0.101:2379",
                "https://10.77.0.102:2379",
                "https://10.77.0.103:2379"
            ]
        );
    }

    #[test]
    fn every_vm_gets_its_own_wrong_clock_years_away() {
        let plan = LabPlan::new(options(40, 40)).unwrap();
        let mut clocks: Vec<&str> = plan.vms.iter().map(|v| v.rtc_base.as_str()).collect();
        assert_eq!(clocks[0], "2001-01-01T00:00:00");
        assert_eq!(clocks[1], "2034-01-02T01:00:00");
        for clock in &clocks {
            let year: u32 = clock[..4].parse().unwrap();
            assert!(
                (2001..=2035).contains(&year) && !(2025..=2027).contains(&year),
                "{clock}"
            );
        }
        clocks.sort_unstable();
        clocks.dedup();
        assert_eq!(clocks.len(), 80);
    }

    #[test]
    fn bad_options_are_refused() {
        let cases = [
            (options(0, 2), PlanError::NoMaster),
            (options(50, 50), PlanError::TooMany(100)),
            (
                LabOptions {
                    run_dir: "run".into(),
                    ..options(1, 0)
                },
                PlanError::Relative {
                    what: "the run directory",
                    path: "run".into(),
                },
            ),
        ];
        let relative_ipxe = (
            LabOptions {
                trusted_ipxe: Some("ipxe".into()),
                ..options(1, 0)
            },
            PlanError::Relative {
                what: "the trusted iPXE directory",
                path: "ipxe".into(),
            },
        );
        for (opts, want) in cases.into_iter().chain([relative_ipxe]) {
            assert_eq!(LabPlan::new(opts).unwrap_err(), want);
        }
        assert_eq!(
            PlanError::NoMaster.to_string(),
            "a lab needs at least one master (etcd and the control plane run there)"
        );
    }

    #[test]
    fn the_namespace_follows_the_run_directory() {
        let a = namespace_for(Path::new("/tmp/a"));
        assert!(a.starts_with("launcher-lab-") && a.len() == 21, "{a}");
        assert_eq!(a, namespace_for(Path::new("/tmp/a")));
        assert_ne!(a, namespace_for(Path::new("/tmp/b")));
    }

    #[test]
    fn the_cluster_file_parses_and_lists_every_vm_with_its_role() {
        let plan = LabPlan::new(options(3, 1)).unwrap();
        let parsed = cluster::spec::ClusterSpec::parse("cluster.toml", &plan.cluster_toml(&[]))
            .unwrap_or_else(|e| panic!("{e}\n{}", plan.cluster_toml(&[])));
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let spec = parsed.spec;
        assert_eq!(spec.masters, 3);
        assert_eq!(spec.seed.url.to_string(), "https://10.77.0.1:8443");
        let planned: Vec<(String, Role, String)> = spec
            .plan_inventory()
            .iter()
            .map(|p| {
                (
                    p.host.mac.to_string(),
                    p.role,
                    p.host.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(planned.len(), 4);
        assert_eq!(
            planned[0],
            (
                "52:54:00:77:00:01".into(),
                Role::Master,
                "10.77.0.101".into()
            )
        );
        assert_eq!(
            planned[3],
            (
                "52:54:00:77:00:04".into(),
                Role::Worker,
                "10.77.0.104".into()
            )
        );
        assert_eq!(spec.etcd_timing, cluster::spec::EtcdTiming::default());
        let slow = LabPlan::new(LabOptions {
            etcd_timing: Some((500, 5000)),
            ..options(3, 1)
        })
        .unwrap();
        let spec = cluster::spec::ClusterSpec::parse("cluster.toml", &slow.cluster_toml(&[]))
            .unwrap()
            .spec;
        assert_eq!(
            (
                spec.etcd_timing.heartbeat_interval_ms,
                spec.etcd_timing.election_timeout_ms
            ),
            (500, 5000)
        );
        let flagged = LabPlan::new(LabOptions {
            api_server_args: vec![
                ("audit-log-maxage".into(), "30".into()),
                ("oidc-username-prefix".into(), "\"oidc\":\\".into()),
            ],
            ..options(1, 0)
        })
        .unwrap();
        let spec = cluster::spec::ClusterSpec::parse("cluster.toml", &flagged.cluster_toml(&[]))
            .unwrap()
            .spec;
        let args: Vec<(String, String)> = spec
            .api_server_extra_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            args,
            [
                ("audit-log-maxage".to_string(), "30".to_string()),
                ("oidc-username-prefix".into(), "\"oidc\":\\".into())
            ]
        );
    }

    #[test]
    fn a_spare_master_joins_the_cluster_file_only_once_added() {
        let plan = LabPlan::new(LabOptions {
            spare_masters: 1,
            ..options(3, 1)
        })
        .unwrap();
        let labels: Vec<(&str, bool, u32)> = plan
            .vms
            .iter()
            .map(|v| (v.label.as_str(), v.spare, v.number))
            .collect();
        assert_eq!(
            labels,
            [
                ("m1", false, 1),
                ("m2", false, 2),
                ("m3", false, 3),
                ("m4", true, 4),
                ("w1", false, 5)
            ]
        );
        assert_eq!(plan.etcd_endpoints().len(), 3);
        let masters_and_macs = |text: &str| {
            let spec = cluster::spec::ClusterSpec::parse("cluster.toml", text)
                .unwrap_or_else(|e| panic!("{e}\n{text}"))
                .spec;
            let macs: Vec<String> = spec.hosts.iter().map(|h| h.mac.to_string()).collect();
            (spec.masters, macs)
        };
        let (masters, macs) = masters_and_macs(&plan.cluster_toml(&[]));
        assert_eq!(masters, 3);
        assert!(!macs.contains(&"52:54:00:77:00:04".to_string()), "{macs:?}");
        assert_eq!(macs.len(), 4);
        let (masters, macs) = masters_and_macs(&plan.cluster_toml(&["m4".into()]));
        assert_eq!(masters, 4);
        assert!(macs.contains(&"52:54:00:77:00:04".to_string()), "{macs:?}");
        // Every VM, spare or not, has its tap and its DHCP entry from the start.
        assert_eq!(
            plan.network_commands()
                .iter()
                .filter(|c| c.contains(&"tuntap".to_string()))
                .count(),
            5
        );
        assert!(
            plan.dnsmasq_args()
                .contains(&"--dhcp-host=52:54:00:77:00:04,10.77.0.104".to_string())
        );
    }

    #[test]
    fn dnsmasq_pins_each_mac_to_its_address_and_sends_ipxe_to_the_seed() {
        let plan = LabPlan::new(options(1, 1)).unwrap();
        let args = plan.dnsmasq_args();
        for want in [
            "--no-daemon",
            "--conf-file=/dev/null",
            "--interface=br0",
            "--bind-interfaces",
            "--port=0",
            "--dhcp-host=52:54:00:77:00:01,10.77.0.101",
            "--dhcp-host=52:54:00:77:00:02,10.77.0.102",
            "--dhcp-match=set:ipxe,175",
            "--dhcp-boot=tag:ipxe,http://10.77.0.1:8080/boot.ipxe",
            "--dhcp-leasefile=/tmp/lab-run/dnsmasq.leases",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "{want} missing from {args:?}"
            );
        }
    }

    #[test]
    fn with_a_trusted_ipxe_dnsmasq_hands_it_out_by_tftp_and_never_to_itself() {
        let plan = LabPlan::new(trusted(1, 1)).unwrap();
        let args = plan.dnsmasq_args();
        let tail: Vec<&str> = args
            .iter()
            .skip_while(|a| a.starts_with("--dhcp-host=") || !a.starts_with("--enable-tftp"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            [
                "--enable-tftp",
                "--tftp-root=/work/ipxe",
                "--log-dhcp",
                "--dhcp-userclass=set:trusted,launcher-trusted-ipxe",
                "--dhcp-match=set:efi64,option:client-arch,7",
                "--dhcp-match=set:efi64,option:client-arch,9",
                "--dhcp-boot=tag:!trusted,tag:efi64,ipxe.efi",
                "--dhcp-boot=tag:!trusted,tag:!efi64,undionly.kpxe",
            ]
        );
        // The address of every VM is pinned as without it; nothing points at plain HTTP.
        assert!(args.contains(&"--dhcp-host=52:54:00:77:00:02,10.77.0.102".to_string()));
        assert!(
            !args
                .iter()
                .any(|a| a.contains("http:") || a.contains(",175")),
            "{args:?}"
        );
    }

    #[test]
    fn with_a_trusted_ipxe_the_seed_listens_for_nothing_in_the_clear() {
        let plan = LabPlan::new(trusted(1, 0)).unwrap();
        assert!(!plan.plain_http());
        assert_eq!(
            plan.seed_args().join(" "),
            "serve --cluster /tmp/lab-run/cluster.toml --state-dir /tmp/lab-run/seed \
             --listen=10.77.0.1:8443 --ntp-listen=10.77.0.1:123 \
             --boot-dir=/work/out --kernel-arg=console=ttyS0,115200 --kernel-arg=launcher.wipe=1 \
             --kernel-arg=systemd.journald.forward_to_console=1"
        );
        // The VMs still boot from the network, the same way.
        assert_eq!(
            plan.qemu_args(&plan.vms[0]),
            LabPlan::new(options(1, 0)).unwrap().qemu_args(&plan.vms[0])
        );
    }

    #[test]
    fn qemu_boots_from_the_network_with_its_disk_mac_uuid_and_clock() {
        let plan = LabPlan::new(options(1, 1)).unwrap();
        let args = plan.qemu_args(&plan.vms[1]).join(" ");
        assert_eq!(
            args,
            "-name lab-w1 -accel tcg -smp 1 -m 2048 -display none -monitor none -boot n \
             -serial file:/tmp/lab-run/vm-2.console \
             -netdev tap,id=n0,ifname=tap2,script=no,downscript=no \
             -device virtio-net-pci,netdev=n0,mac=52:54:00:77:00:02 -device virtio-rng-pci \
             -uuid 6c61622d-0000-4000-8000-000000000002 -smbios type=1,serial=LAB-0002 \
             -drive file=/tmp/lab-run/vm-2.data.raw,format=raw,if=virtio \
             -rtc base=2034-01-02T01:00:00 \
             -chardev socket,id=qga0,path=/tmp/lab-run/vm-2.qga,server=on,wait=off \
             -device virtio-serial-pci -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"
        );
    }

    #[test]
    fn a_directly_booted_vm_gets_the_kernel_the_initrd_and_the_seed_on_its_command_line() {
        let plan = LabPlan::new(LabOptions {
            direct_boot: vec![("w1".into(), "/work/other".into())],
            ..options(1, 1)
        })
        .unwrap();
        assert_eq!(plan.direct_boot(&plan.vms[0]), None);
        assert_eq!(plan.firmware(&plan.vms[1]), "qemu");
        let dir = plan.direct_boot(&plan.vms[1]).unwrap();
        assert_eq!(dir, Path::new("/work/other"));
        let cmdline = plan.direct_cmdline("sha256:ab");
        assert_eq!(
            cmdline,
            "launcher.seed=https://10.77.0.1:8443 launcher.pin=sha256:ab \
             launcher.ntp=10.77.0.1:123 console=ttyS0,115200 launcher.wipe=1 \
             systemd.journald.forward_to_console=1"
        );
        let args = plan.qemu_args_direct(&plan.vms[1], dir, &cmdline);
        let network = plan.qemu_args(&plan.vms[1]);
        let at = network.iter().position(|a| a == "-boot").unwrap();
        assert_eq!(args[..at], network[..at]);
        assert_eq!(
            args[at..at + 6],
            [
                "-kernel",
                "/work/other/vmlinuz",
                "-initrd",
                "/work/other/initrd.img",
                "-append",
                cmdline.as_str()
            ]
        );
        assert_eq!(args[at + 6..], network[at + 2..]);

        let refused = [
            (
                LabOptions {
                    direct_boot: vec![("w2".into(), "/work/other".into())],
                    ..options(1, 1)
                },
                "--direct-boot w2: the lab has no such VM (its VMs are m1…, then w1…)",
            ),
            (
                LabOptions {
                    direct_boot: vec![("w1".into(), "other".into())],
                    ..options(1, 1)
                },
                "a --direct-boot image directory must be an absolute path, not other",
            ),
        ];
        for (options, want) in refused {
            assert_eq!(LabPlan::new(options).unwrap_err().to_string(), want);
        }
    }

    fn media(vm: &str, medium: Medium, path: &str) -> MediaBoot {
        MediaBoot {
            vm: vm.into(),
            medium,
            path: path.into(),
        }
    }

    #[test]
    fn a_vm_booted_from_media_gets_uefi_the_medium_first_and_no_network_boot() {
        let plan = LabPlan::new(LabOptions {
            media: vec![
                media("w1", Medium::Iso, "/work/out/image.iso"),
                media("w2", Medium::Disk, "/work/out/disk.raw"),
            ],
            ..options(1, 2)
        })
        .unwrap();
        assert_eq!(plan.media_boot(&plan.vms[0]), None);
        let firmware: Vec<&str> = plan.vms.iter().map(|vm| plan.firmware(vm)).collect();
        assert_eq!(firmware, ["pxe", "uefi", "uefi"]);
        let network = plan.qemu_args(&plan.vms[1]).join(" ");
        let iso = plan
            .qemu_args_media(&plan.vms[1], plan.media_boot(&plan.vms[1]).unwrap())
            .join(" ");
        let without_rom = network
            .replace(" -boot n", "")
            .replace("mac=52:54:00:77:00:02", "mac=52:54:00:77:00:02,romfile=");
        assert_eq!(
            iso,
            format!(
                "{without_rom} -drive if=pflash,format=raw,readonly=on,\
                 file=/usr/share/OVMF/OVMF_CODE_4M.fd \
                 -drive if=pflash,format=raw,file=/tmp/lab-run/vm-2.vars.fd \
                 -drive file=/work/out/image.iso,format=raw,if=none,id=media,media=cdrom,readonly=on \
                 -device ide-cd,drive=media,bootindex=0"
            )
        );
        // A raw disk is booted from the run directory's copy, which the host writes.
        let disk = plan.qemu_args_media(&plan.vms[2], plan.media_boot(&plan.vms[2]).unwrap());
        let tail: Vec<&str> = disk[disk.len() - 4..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "-drive",
                "file=/tmp/lab-run/vm-3.boot.raw,format=raw,if=none,id=media",
                "-device",
                "virtio-blk-pci,drive=media,bootindex=0"
            ]
        );

        let refused = [
            (
                LabOptions {
                    media: vec![media("m2", Medium::Iso, "/work/out/image.iso")],
                    ..options(1, 1)
                },
                "--media m2: the lab has no such VM (its VMs are m1…, then w1…)",
            ),
            (
                LabOptions {
                    media: vec![media("w1", Medium::Disk, "out/disk.raw")],
                    ..options(1, 1)
                },
                "a --media image file must be an absolute path, not out/disk.raw",
            ),
            (
                LabOptions {
                    direct_boot: vec![("w1".into(), "/work/other".into())],
                    media: vec![media("w1", Medium::Iso, "/work/out/image.iso")],
                    ..options(1, 1)
                },
                "w1 is given two ways to boot (--direct-boot and --media each name it at most \
                 once, and not both)",
            ),
        ];
        for (options, want) in refused {
            assert_eq!(LabPlan::new(options).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn a_medium_is_known_by_its_header() {
        let mut iso = vec![0u8; 0x8800];
        iso[512..520].copy_from_slice(b"EFI PART");
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        assert_eq!(Medium::of_header(&iso), Some(Medium::Iso));
        let mut disk = vec![0u8; 0x8800];
        disk[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(Medium::of_header(&disk), Some(Medium::Disk));
        assert_eq!(Medium::of_header(&disk[..600]), Some(Medium::Disk));
        assert_eq!(Medium::of_header(&[0u8; 0x8800]), None);
        assert_eq!(Medium::of_header(b""), None);
    }

    #[test]
    fn the_seed_serves_boot_files_over_http_and_the_api_and_ntp_on_the_bridge() {
        let plan = LabPlan::new(options(1, 0)).unwrap();
        assert_eq!(
            plan.seed_args().join(" "),
            "serve --cluster /tmp/lab-run/cluster.toml --state-dir /tmp/lab-run/seed \
             --listen=10.77.0.1:8443 --ntp-listen=10.77.0.1:123 --http-listen=10.77.0.1:8080 \
             --boot-dir=/work/out --kernel-arg=console=ttyS0,115200 --kernel-arg=launcher.wipe=1 \
             --kernel-arg=systemd.journald.forward_to_console=1"
        );
        let net: Vec<String> = plan
            .network_commands()
            .iter()
            .map(|c| c.join(" "))
            .collect();
        let ns = &plan.namespace;
        assert_eq!(net[0], format!("netns add {ns}"));
        assert!(net.contains(&format!("-n {ns} addr add 10.77.0.1/24 dev br0")));
        assert!(net.contains(&format!("-n {ns} link set tap1 master br0")));
    }
}
