//! A whole build: check every input, then stage, archive and make the boot images in a temporary
//! directory inside the output directory, and move the outputs into place only when complete.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::archive::{self, Extra, Node};
use crate::boot::{self, Ids};
use crate::definition::{self, Base, BundleSource, Definition, Sha256Hex};
use crate::layout::{self, OverlayItem, Resolved};
use crate::manifest::{self, FileRecord, Manifest};
use crate::progress::Progress;
use crate::{base, oci, stage, tools};

/// Firstboot's own unit, used when the definition names none.
pub const DEFAULT_FIRSTBOOT_UNIT: &str =
    include_str!("../../firstboot/dist/launcher-firstboot.service");
/// Used when neither the environment nor the definition sets SOURCE_DATE_EPOCH (2024-01-01).
pub const DEFAULT_EPOCH: u64 = 1_704_067_200;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Definition(#[from] definition::DefinitionError),
    #[error(transparent)]
    Tool(#[from] tools::ToolError),
    #[error(transparent)]
    Stage(#[from] stage::StageError),
    #[error(transparent)]
    Base(#[from] base::BaseError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    #[error("{what}: sha256 is {actual}, the definition pins {pinned}")]
    Mismatch {
        what: String,
        actual: String,
        pinned: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Input(String),
}

fn io_err(what: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    let what = what.into();
    move |source| BuildError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Which outputs to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    pub tar: bool,
    pub pxe: bool,
    pub disk: bool,
    pub iso: bool,
}

impl Formats {
    pub const ALL: Formats = Formats {
        tar: true,
        pxe: true,
        disk: true,
        iso: true,
    };

    pub fn parse(list: &str) -> Result<Formats, String> {
        let mut f = Formats {
            tar: false,
            pxe: false,
            disk: false,
            iso: false,
        };
        for item in list.split(',').map(str::trim) {
            match item {
                "tar" => f.tar = true,
                "pxe" => f.pxe = true,
                "disk" => f.disk = true,
                "iso" => f.iso = true,
                other => {
                    return Err(format!(
                        "unknown format {other:?}; the formats are tar, pxe, disk, iso"
                    ));
                }
            }
        }
        Ok(f)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub definition: PathBuf,
    pub out: PathBuf,
    pub formats: Formats,
    pub jobs: u32,
    pub cache: PathBuf,
    /// Where `launcher-firstboot` and the stand-ins are (default: next to this program).
    pub bin_dir: PathBuf,
    pub quiet: bool,
}

/// What a finished build reports.
#[derive(Debug, Clone)]
pub struct Report {
    pub outputs: Vec<FileRecord>,
    pub steps: Vec<(String, std::time::Duration)>,
    pub base_was_cached: bool,
}

/// Everything checked before the output directory is touched.
struct Checked {
    def: Definition,
    epoch: u64,
    base: PathBuf,
    base_was_cached: bool,
    resolved: Resolved,
    inputs: Vec<FileRecord>,
}

pub fn build(opts: &Options) -> Result<Report, BuildError> {
    let mut progress = Progress::new(opts.quiet);
    let (def, epoch, resolved, mut inputs) =
        progress.step("check definition and inputs", || check(opts))?;
    let step = match def.base {
        Base::Tarball { .. } => "check base tarball",
        Base::Mmdebstrap(_) => "base rootfs (mmdebstrap, cached by its inputs)",
    };
    let (base, base_was_cached) =
        progress.step(step, || base_rootfs(&def, epoch, opts, &mut inputs))?;
    let checked = Checked {
        def,
        epoch,
        base,
        base_was_cached,
        resolved,
        inputs,
    };
    let tmp = TempDir::create(&opts.out)?;
    let outputs = make(opts, &checked, &tmp.path, &mut progress)?;
    progress.step("move outputs into place", || tmp.commit(&outputs))?;
    Ok(Report {
        outputs,
        steps: progress.steps,
        base_was_cached: checked.base_was_cached,
    })
}

/// The definition, tools, timestamp and every pinned input except the base.
fn check(opts: &Options) -> Result<(Definition, u64, Resolved, Vec<FileRecord>), BuildError> {
    let def = definition::load(&opts.definition)?;
    let f = opts.formats;
    tools::require(&tools::needed(
        matches!(def.base, Base::Mmdebstrap(_)),
        f.disk || f.iso,
        f.iso,
    ))?;
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| {
            BuildError::Input(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        })?,
        Err(_) => def.source_date_epoch.unwrap_or(DEFAULT_EPOCH),
    };
    let mut inputs = vec![];
    let resolved = resolve(&def, opts, &mut inputs)?;
    Ok((def, epoch, resolved, inputs))
}

/// The base tarball, pinned or made by mmdebstrap, with every entry checked.
fn base_rootfs(
    def: &Definition,
    epoch: u64,
    opts: &Options,
    inputs: &mut Vec<FileRecord>,
) -> Result<(PathBuf, bool), BuildError> {
    let (base, cached) = match &def.base {
        Base::Tarball { path, sha256 } => {
            inputs.insert(0, pinned("base", path, sha256)?);
            (path.clone(), true)
        }
        Base::Mmdebstrap(m) => {
            let (base, cached) = base::ensure(m, epoch, &opts.cache)?;
            let rec = manifest::record("base", &base, &base.display().to_string())
                .map_err(io_err("hashing", &base))?;
            inputs.insert(0, rec);
            (base, cached)
        }
    };
    stage::check_tarball(&base)?;
    Ok((base, cached))
}

/// Checks `path` against its pin and returns its record.
fn pinned(role: &str, path: &Path, pin: &Sha256Hex) -> Result<FileRecord, BuildError> {
    let rec = manifest::record(role, path, &path.display().to_string())
        .map_err(io_err(format!("reading {role}"), path))?;
    if rec.sha256 != pin.as_str() {
        return Err(BuildError::Mismatch {
            what: format!("{role} {}", path.display()),
            actual: rec.sha256,
            pinned: pin.to_string(),
        });
    }
    Ok(rec)
}

fn resolve(
    def: &Definition,
    opts: &Options,
    inputs: &mut Vec<FileRecord>,
) -> Result<Resolved, BuildError> {
    let workspace_bin = |name: &str| -> Result<PathBuf, BuildError> {
        let p = opts.bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(BuildError::Input(format!(
                "{} is missing: build the workspace first (cargo build --workspace)",
                p.display()
            )))
        }
    };
    let firstboot_binary = match &def.firstboot.binary {
        Some(p) => p.clone(),
        None => workspace_bin("launcher-firstboot")?,
    };
    let firstboot_unit = match &def.firstboot.unit {
        Some(p) => fs::read_to_string(p).map_err(io_err("reading firstboot unit", p))?,
        None => DEFAULT_FIRSTBOOT_UNIT.to_string(),
    };
    let (kubeadm, kubelet, kubectl) = match &def.bundle.source {
        BundleSource::Standins {
            kubectl,
            kubectl_sha256,
        } => {
            let k = match kubectl_sha256 {
                Some(pin) => pinned("kubectl", kubectl, pin)?,
                None => manifest::record("kubectl", kubectl, &kubectl.display().to_string())
                    .map_err(io_err("reading kubectl", kubectl))?,
            };
            inputs.push(k);
            (
                workspace_bin("kubeadm-standin")?,
                workspace_bin("kubelet-standin")?,
                kubectl.clone(),
            )
        }
        BundleSource::Dir { dir, sums } => (
            dir.join("kubeadm"),
            dir.join("kubelet"),
            dir.join("kubectl"),
        )
            .pipe(|(a, l, c)| -> Result<_, BuildError> {
                inputs.push(pinned("kubeadm", &a, &sums.kubeadm)?);
                inputs.push(pinned("kubelet", &l, &sums.kubelet)?);
                inputs.push(pinned("kubectl", &c, &sums.kubectl)?);
                Ok((a, l, c))
            })?,
        BundleSource::Tarball { path, .. } => {
            return Err(BuildError::Input(format!(
                "bundle tarball {}: tarball bundles are not supported yet; unpack it and use bundle.dir",
                path.display()
            )));
        }
    };
    {
        let (role, p) = ("firstboot", &firstboot_binary);
        inputs.push(
            manifest::record(role, p, &p.display().to_string()).map_err(io_err("reading", p))?,
        );
    }
    for (role, p) in [("kubeadm", &kubeadm), ("kubelet", &kubelet)] {
        if matches!(def.bundle.source, BundleSource::Standins { .. }) {
            inputs.push(
                manifest::record(&format!("{role} (stand-in)"), p, &p.display().to_string())
                    .map_err(io_err("reading", p))?,
            );
        }
    }
    let mut images = Vec::new();
    for image in &def.images {
        inputs.push(pinned("container image", &image.archive, &image.sha256)?);
        images.push((image.name.clone(), image.archive.clone()));
    }
    let overlay: Vec<OverlayItem> = match &def.overlay {
        Some(o) => stage::scan_overlay(&o.dir)?,
        None => vec![],
    };
    Ok(Resolved {
        firstboot_binary,
        firstboot_unit,
        kubeadm,
        kubelet,
        kubectl,
        images,
        overlay,
    })
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

/// `DIR/.tmp-PID`: removed on drop unless the outputs were moved out of it.
struct TempDir {
    out: PathBuf,
    path: PathBuf,
}

impl TempDir {
    fn create(out: &Path) -> Result<TempDir, BuildError> {
        fs::create_dir_all(out).map_err(io_err("creating output directory", out))?;
        // A build killed before it finished leaves only its temporary directory; clear those.
        for entry in fs::read_dir(out).map_err(io_err("reading", out))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let path = out.join(format!(".tmp-{}", std::process::id()));
        fs::create_dir(&path).map_err(io_err("creating", &path))?;
        Ok(TempDir {
            out: out.to_path_buf(),
            path,
        })
    }

    /// Moves each output into place, `manifest.json` last.
    fn commit(&self, outputs: &[FileRecord]) -> Result<(), BuildError> {
        for name in outputs
            .iter()
            .map(|o| o.path.as_str())
            .chain(["manifest.json"])
        {
            let from = self.path.join("out").join(name);
            let to = self.out.join(name);
            fs::rename(&from, &to).map_err(io_err("moving output to", &to))?;
        }
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn make(
    opts: &Options,
    c: &Checked,
    tmp: &Path,
    progress: &mut Progress,
) -> Result<Vec<FileRecord>, BuildError> {
    let root = tmp.join("root");
    let out = tmp.join("out");
    let work = tmp.join("work");
    for d in [&root, &out, &work] {
        fs::create_dir(d).map_err(io_err("creating", d))?;
    }
    let mut resolved = c.resolved.clone();
    progress.step(
        "reduce container images to linux/amd64",
        || -> Result<(), BuildError> {
            for (name, archive) in resolved.images.iter_mut() {
                let reduced = work.join(format!("image-{name}"));
                oci::reduce_to_platform(archive, "linux", "amd64", &reduced)?;
                *archive = reduced;
            }
            Ok(())
        },
    )?;
    progress.step("unpack base rootfs", || stage::unpack(&c.base, &root))?;
    let entries = layout::layout(&c.def, &resolved);
    progress.step("apply image layout", || stage::apply(&entries, &root))?;
    let nodes = progress.step("scan staged tree", || {
        archive::scan_tree(&root).map_err(io_err("scanning", &root))
    })?;
    let (kernel, debian_initrd) = boot::find_kernel(&root, &nodes).ok_or_else(|| {
        BuildError::Input(
            "the base has no kernel (/boot/vmlinuz-*): add a linux-image package".into(),
        )
    })?;
    let mut outputs = Vec::new();
    let f = opts.formats;
    if f.tar {
        progress.step("write rootfs.tar", || {
            write_file(&out.join("rootfs.tar"), |w| {
                archive::write_tar(&nodes, c.epoch, w)
            })
        })?;
        outputs.push("rootfs.tar");
    }
    let initrd = out.join("initrd.img");
    if f.pxe || f.iso {
        progress.step("write initrd.img (zstd cpio of the rootfs)", || {
            make_initrd(&nodes, c.epoch, opts.jobs, &initrd)
        })?;
        fs::copy(&kernel, out.join("vmlinuz")).map_err(io_err("copying kernel", &kernel))?;
    }
    if f.pxe {
        outputs.extend(["vmlinuz", "initrd.img"]);
    }
    let ids = Ids::derive(c.def.hash.as_str());
    let osrel = fs::read(stage::resolve_in_root(&root, "etc/os-release")).unwrap_or_default();
    let cmdline = cmdlines(&c.def, &ids);
    if f.disk {
        let initrd = debian_initrd.ok_or_else(|| BuildError::Input("the base has no /boot/initrd.img-* for its kernel: the disk image needs one (install initramfs-tools)".into()))?;
        let tree_bytes = stage::tree_size(&root)?.0;
        let rootfs = work.join("root.ext4");
        progress.step("make ext4 root filesystem", || {
            boot::make_ext4(
                &root,
                &nodes,
                tree_bytes,
                c.def.disk_free_mib,
                &rootfs,
                &ids,
                c.epoch,
            )
        })?;
        let uki = work.join("disk.efi");
        let esp = work.join("disk-esp.img");
        progress.step("make disk UKI and ESP", || -> Result<u64, BuildError> {
            boot::make_uki(
                &work,
                c.epoch,
                &osrel,
                &cmdline["disk"],
                &kernel,
                &initrd,
                &uki,
            )?;
            Ok(boot::make_esp(&uki, &esp, &ids, c.epoch)?)
        })?;
        progress.step("assemble disk.raw (GPT)", || {
            boot::make_disk(&esp, &rootfs, &out.join("disk.raw"), &ids)
        })?;
        let _ = fs::remove_file(&rootfs);
        outputs.push("disk.raw");
    }
    if f.iso {
        let uki = work.join("live.efi");
        let esp = work.join("live-esp.img");
        progress.step("make live UKI and ESP", || -> Result<u64, BuildError> {
            boot::make_uki(
                &work,
                c.epoch,
                &osrel,
                &cmdline["live"],
                &out.join("vmlinuz"),
                &initrd,
                &uki,
            )?;
            Ok(boot::make_esp(&uki, &esp, &ids, c.epoch)?)
        })?;
        progress.step("make image.iso (xorriso)", || {
            boot::make_iso(
                &work,
                &esp,
                &iso_label(&c.def),
                &out.join("image.iso"),
                c.epoch,
            )
        })?;
        outputs.push("image.iso");
    }
    if !f.pxe {
        let _ = fs::remove_file(out.join("vmlinuz"));
        let _ = fs::remove_file(&initrd);
    }
    let records = progress.step("hash outputs and write manifest.json", || {
        write_manifest(c, &root, &out, &outputs, &ids, &cmdline)
    })?;
    Ok(records)
}

/// The kernel command line of each boot: `pxe` (given by whoever boots it), `disk`, `live` (ISO).
pub fn cmdlines(def: &Definition, ids: &Ids) -> BTreeMap<String, String> {
    let common: Vec<&str> = def.cmdline.iter().map(|a| a.as_str()).collect();
    let common = common.join(" ");
    let join = |s: String| s.trim().to_string();
    BTreeMap::from([
        ("pxe".to_string(), join(common.clone())),
        ("live".to_string(), join(common.clone())),
        (
            "disk".to_string(),
            join(format!(
                "root=PARTUUID={} rw rootwait {common}",
                ids.root_partuuid
            )),
        ),
    ])
}

fn iso_label(def: &Definition) -> String {
    let label: String = def
        .name
        .as_str()
        .to_ascii_uppercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(32)
        .collect();
    if label.is_empty() {
        "LAUNCHER".into()
    } else {
        label
    }
}

/// Writes through `f` into `path`, flushing and syncing before returning.
fn write_file(
    path: &Path,
    f: impl FnOnce(&mut io::BufWriter<&fs::File>) -> io::Result<()>,
) -> Result<(), BuildError> {
    let file = fs::File::create(path).map_err(io_err("creating", path))?;
    let mut w = io::BufWriter::with_capacity(1 << 20, &file);
    f(&mut w)
        .and_then(|_| w.flush())
        .map_err(io_err("writing", path))?;
    drop(w);
    file.sync_all().map_err(io_err("syncing", path))
}

fn make_initrd(nodes: &[Node], epoch: u64, jobs: u32, path: &Path) -> Result<(), BuildError> {
    // The kernel and Debian's own initrd are not needed inside the initramfs.
    let nodes: Vec<Node> = nodes
        .iter()
        .filter(|n| !n.rel.starts_with("boot/"))
        .cloned()
        .collect();
    let extra = [Extra {
        rel: "init".into(),
        symlink: "/lib/systemd/systemd".into(),
    }];
    write_file(path, |w| {
        let mut enc = zstd::Encoder::new(w, 6)?;
        enc.multithread(jobs.max(1))?;
        archive::write_cpio(&nodes, &extra, epoch, &mut enc)?;
        enc.finish()?.flush()
    })
}

fn write_manifest(
    c: &Checked,
    root: &Path,
    out: &Path,
    names: &[&str],
    ids: &Ids,
    cmdline: &BTreeMap<String, String>,
) -> Result<Vec<FileRecord>, BuildError> {
    let mut outputs = Vec::new();
    for name in names {
        let p = out.join(name);
        outputs.push(manifest::record("output", &p, name).map_err(io_err("hashing", &p))?);
    }
    let status_path = root.join("var/lib/dpkg/status");
    let status = fs::read_to_string(&status_path).unwrap_or_default();
    let def_file = &c.def.file;
    let m = Manifest {
        image: c.def.name.as_str().to_string(),
        definition: manifest::record("definition", def_file, &def_file.display().to_string())
            .map_err(io_err("hashing", def_file))?,
        source_date_epoch: c.epoch,
        platform: "linux/amd64",
        kubernetes: manifest::Kubernetes {
            version: c.def.bundle.version.to_string(),
            standins: matches!(c.def.bundle.source, BundleSource::Standins { .. }),
        },
        components: manifest::package_versions(&status),
        kernel_cmdline: cmdline.clone(),
        identifiers: BTreeMap::from([
            ("disk_uuid".into(), ids.disk_uuid.clone()),
            ("root_partuuid".into(), ids.root_partuuid.clone()),
            ("root_fs_uuid".into(), ids.root_fs_uuid.clone()),
            ("esp_partuuid".into(), ids.esp_partuuid.clone()),
            ("fat_serial".into(), ids.fat_serial.clone()),
        ]),
        inputs: c.inputs.clone(),
        outputs: outputs.clone(),
    };
    let text =
        serde_json::to_string_pretty(&m).map_err(|e| BuildError::Input(e.to_string()))? + "\n";
    let path = out.join("manifest.json");
    write_file(&path, |w| w.write_all(text.as_bytes()))?;
    Ok(outputs)
}

/// Elapsed time since `start` in seconds, for summaries.
pub fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
