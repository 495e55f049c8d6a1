//! A whole build: check every input, then stage, archive and make the boot images in a temporary
//! directory inside the output directory, and move the outputs into place only when complete.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::archive::{self, Node};
use crate::boot::{self, Ids, Uki};
use crate::definition::{self, Base, BundleSource, Definition};
use crate::inputs::{self, pinned};
use crate::layout::{self, Resolved};
use crate::manifest::{self, FileRecord, Manifest};
use crate::progress::Progress;
use crate::{base, layer, release, stage, tools};

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
    Image(#[from] oci::PlatformError),
    #[error(transparent)]
    Inputs(#[from] inputs::InputError),
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
    /// Values of the definition's `[firstboot]` given on the command line instead.
    pub seed: SeedOverrides,
}

/// The seed an image trusts, given on the command line instead of in the definition: an
/// image baked for the seed at hand in one step.
#[derive(Debug, Clone, Default)]
pub struct SeedOverrides {
    pub seed_url: Option<cluster::spec::SeedUrl>,
    pub ca_pin: Option<cluster::pki::CaPin>,
    pub ntp: Option<cluster::spec::NtpServer>,
}

impl SeedOverrides {
    /// The definition's `[firstboot]` with these values in; a new seed URL brings the NTP
    /// server on its host unless one is given too.
    pub fn apply(&self, fb: &mut crate::definition::Firstboot) {
        if let Some(url) = &self.seed_url {
            fb.ntp = cluster::spec::NtpServer::on(url.endpoint().host());
            fb.seed_url = url.clone();
        }
        if let Some(pin) = self.ca_pin {
            fb.ca_pin = pin;
        }
        if let Some(ntp) = &self.ntp {
            fb.ntp = ntp.clone();
        }
    }
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
    let mut def = definition::load(&opts.definition)?;
    opts.seed.apply(&mut def.firstboot);
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
    let resolved = inputs::resolve(&def, &opts.bin_dir, &opts.cache, &mut inputs)?;
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
            // hashed and checked once: the cache is the builder's own
            if let Some(sha256) = base::remembered(&base) {
                let size = fs::metadata(&base).map_err(io_err("reading", &base))?.len();
                inputs.insert(
                    0,
                    FileRecord {
                        role: "base".into(),
                        path: base.display().to_string(),
                        size,
                        sha256,
                    },
                );
                return Ok((base, cached));
            }
            let rec = manifest::record("base", &base, &base.display().to_string())
                .map_err(io_err("hashing", &base))?;
            stage::check_tarball(&base)?;
            base::remember(&base, &rec.sha256)?;
            inputs.insert(0, rec);
            return Ok((base, cached));
        }
    };
    stage::check_tarball(&base)?;
    Ok((base, cached))
}

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

/// The control-plane images of a server release, for `launcher-seed images import`.
pub const KUBERNETES_IMAGES: &str = "kubernetes-images.tar";

/// The platform every image is built for: container images are reduced to it.
const PLATFORM: &str = "linux/amd64";

/// The outputs `opts.formats` asks for, made under `tmp` (`root/`, `work/`, `out/`).
fn make(
    opts: &Options,
    c: &Checked,
    tmp: &Path,
    progress: &mut Progress,
) -> Result<Vec<FileRecord>, BuildError> {
    let (root, out, work) = (tmp.join("root"), tmp.join("out"), tmp.join("work"));
    for d in [&root, &out, &work] {
        fs::create_dir(d).map_err(io_err("creating", d))?;
    }
    let images = progress.step("reduce container images to linux/amd64", || {
        reduce_images(&c.resolved.images, &work)
    })?;
    let resolved = Resolved {
        images,
        ..c.resolved.clone()
    };
    let f = opts.formats;
    let base_segment = (f.pxe || f.iso)
        .then(|| base_segment_path(opts, c))
        .transpose()?;
    let entries = layout::layout(&c.def, &resolved);
    // With the base's part of the initrd cached and no output that holds the whole tree, the
    // base is not unpacked: the layout is applied to an index of its directories and links.
    let layer = if base_segment.as_ref().is_some_and(|p| p.is_file()) && !f.tar && !f.disk {
        let mut index = progress.step(
            "read the base's directories and links; unpack its /boot, os-release, dpkg status",
            || {
                stage::unpack_only(&c.base, &root, READ_FROM_BASE)?;
                layer::BaseIndex::read(&c.base)
            },
        )?;
        let (layer_nodes, applied) = progress
            .step("apply image layout (to the base's index)", || {
                layer::apply(&entries, &mut index, &work.join("layer"))
            })?;
        // a layout that replaces a directory or a link needs the whole tree
        applied.layerable.then_some((layer_nodes, applied))
    } else {
        None
    };
    let (nodes, applied) = match layer {
        Some((layer_nodes, applied)) => {
            let nodes = archive::scan_tree(&root).map_err(io_err("scanning", &root))?;
            (nodes, Some((layer_nodes, applied)))
        }
        None => {
            if fs::read_dir(&root)
                .map_err(io_err("reading", &root))?
                .next()
                .is_some()
            {
                fs::remove_dir_all(&root).map_err(io_err("removing", &root))?;
                fs::create_dir(&root).map_err(io_err("creating", &root))?;
            }
            progress.step("unpack base rootfs", || stage::unpack(&c.base, &root))?;
            if let Some(segment) = base_segment.as_ref().filter(|p| !p.is_file()) {
                progress.step("initrd segment of the base (cached by its digest)", || {
                    write_base_segment(opts, c, &root, segment)
                })?;
            }
            let applied = progress.step("apply image layout", || stage::apply(&entries, &root))?;
            let nodes = progress.step("scan staged tree", || {
                archive::scan_tree(&root).map_err(io_err("scanning", &root))
            })?;
            let layer_nodes = nodes.clone();
            (nodes, applied.layerable.then_some((layer_nodes, applied)))
        }
    };
    let boot = Boot::find(c, &root, &nodes, &work)?;
    let mut outputs = Vec::new();
    if !resolved.release_images.is_empty() {
        progress.step(
            "write kubernetes-images.tar (the release's images as kubeadm pulls them)",
            || {
                write_file(&out.join(KUBERNETES_IMAGES), |w| {
                    release::write_images(&resolved.release_images, c.epoch, w)
                })
            },
        )?;
        outputs.push(KUBERNETES_IMAGES);
    }
    if f.tar {
        progress.step("write rootfs.tar", || {
            write_file(&out.join("rootfs.tar"), |w| {
                archive::write_tar(&nodes, c.epoch, w)
            })
        })?;
        outputs.push("rootfs.tar");
    }
    // the ISO's UKI carries the same initrd that PXE serves
    let initrd = if f.pxe { &out } else { &work }.join("initrd.img");
    if let Some(base_segment) = &base_segment {
        progress.step(
            "write initrd.img (the base's segment, then the image's)",
            || {
                write_file(&initrd, |w| match &applied {
                    Some((layer_nodes, applied)) => {
                        io::copy(&mut fs::File::open(base_segment)?, w)?;
                        archive::write_initrd_layer(
                            layer_nodes,
                            &applied.touched,
                            c.epoch,
                            opts.jobs,
                            w,
                        )
                    }
                    None => archive::write_initrd(&nodes, c.epoch, opts.jobs, w),
                })
            },
        )?;
    }
    if f.pxe {
        fs::copy(&boot.kernel, out.join("vmlinuz"))
            .map_err(io_err("copying kernel", &boot.kernel))?;
        outputs.extend(["vmlinuz", "initrd.img"]);
    }
    if f.disk {
        make_disk(c, &boot, &root, &nodes, &out.join("disk.raw"), progress)?;
        outputs.push("disk.raw");
    }
    if f.iso {
        make_iso(c, &boot, &initrd, &out.join("image.iso"), progress)?;
        outputs.push("image.iso");
    }
    progress.step("hash outputs and write manifest.json", || {
        write_manifest(c, &root, &out, &outputs, &boot.ids, &boot.cmdline)
    })
}

/// What a build reads from the base's files besides the kernel: the OS release for the UKI
/// and the package list for the manifest.
const READ_FROM_BASE: &[&str] = &[
    "boot/",
    "etc/os-release",
    "usr/lib/os-release",
    "var/lib/dpkg/status",
];

/// Where the initrd's first segment, the base's tree as a zstd cpio
/// ([`archive::write_initrd_base`]), is cached: under the digest of what makes it (the base's
/// sha256, the timestamp, the level and this format's version).
fn base_segment_path(opts: &Options, c: &Checked) -> Result<PathBuf, BuildError> {
    use sha2::Digest as _;
    let base = c
        .inputs
        .iter()
        .find(|r| r.role == "base")
        .ok_or_else(|| BuildError::Input("the base is not among the recorded inputs".into()))?;
    let key = format!(
        "launcher initrd base segment v1\nbase {}\nepoch {}\nzstd level {}\n",
        base.sha256,
        c.epoch,
        archive::BASE_LEVEL
    );
    let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    Ok(opts.cache.join(format!("initrd-base-{digest}.zst")))
}

/// Writes the base's segment from the unpacked base at `root` (before the layout is applied)
/// beside `path`, and renames it into place whole.
fn write_base_segment(
    opts: &Options,
    c: &Checked,
    root: &Path,
    path: &Path,
) -> Result<(), BuildError> {
    fs::create_dir_all(&opts.cache).map_err(io_err("creating cache directory", &opts.cache))?;
    let nodes = archive::scan_tree(root).map_err(io_err("scanning", root))?;
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let written = write_file(&tmp, |w| {
        archive::write_initrd_base(&nodes, c.epoch, opts.jobs, w)
    })
    .and_then(|_| fs::rename(&tmp, path).map_err(io_err("moving into the cache", path)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Each container image archive reduced to [`PLATFORM`] as `<work>/image-<name>`, every blob it
/// keeps checked against its digest and size.
pub fn reduce_images(
    images: &[(String, PathBuf)],
    work: &Path,
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    let platform = oci::Platform::parse(PLATFORM).expect("a valid platform");
    let mut reduced = Vec::new();
    for (name, archive) in images {
        let to = work.join(format!("image-{name}"));
        oci::reduce_to_platform(archive, &platform, &to)?;
        reduced.push((name.clone(), to));
    }
    Ok(reduced)
}

/// What the bootable outputs are made from, found in the staged tree.
struct Boot<'a> {
    kernel: PathBuf,
    /// The distribution's own initrd, which the disk boots with.
    debian_initrd: Option<PathBuf>,
    osrel: Vec<u8>,
    ids: Ids,
    cmdline: BTreeMap<String, String>,
    work: &'a Path,
}

impl<'a> Boot<'a> {
    fn find(
        c: &Checked,
        root: &Path,
        nodes: &[Node],
        work: &'a Path,
    ) -> Result<Boot<'a>, BuildError> {
        let (kernel, debian_initrd) = boot::find_kernel(root, nodes).ok_or_else(|| {
            BuildError::Input(
                "the base has no kernel (/boot/vmlinuz-*): add a linux-image package".into(),
            )
        })?;
        let ids = Ids::derive(c.def.hash.as_str());
        let args: Vec<&str> = c.def.cmdline.iter().map(|a| a.as_str()).collect();
        Ok(Boot {
            kernel,
            debian_initrd,
            osrel: fs::read(stage::resolve_in_root(root, "etc/os-release")).unwrap_or_default(),
            cmdline: boot::cmdlines(&args, &ids.root_partuuid),
            ids,
            work,
        })
    }

    /// The UKI for the boot `kind` (`disk`, `live`) with `initrd`, in its ESP.
    fn uki_esp(&self, epoch: u64, kind: &str, initrd: &Path) -> Result<PathBuf, BuildError> {
        let uki = Uki {
            work: self.work,
            epoch,
            osrel: &self.osrel,
            cmdline: &self.cmdline[kind],
            kernel: &self.kernel,
            initrd,
        };
        Ok(boot::make_uki_esp(&uki, kind, &self.ids)?)
    }
}

/// `disk.raw`: GPT with the ESP (a UKI booting the distribution's initrd) and an ext4 root.
fn make_disk(
    c: &Checked,
    b: &Boot,
    root: &Path,
    nodes: &[Node],
    to: &Path,
    progress: &mut Progress,
) -> Result<(), BuildError> {
    let initrd = b.debian_initrd.as_deref().ok_or_else(|| {
        BuildError::Input(
            "the base has no /boot/initrd.img-* for its kernel: the disk image needs one \
             (install initramfs-tools)"
                .into(),
        )
    })?;
    let tree_bytes = stage::tree_size(root)?.0;
    let rootfs = b.work.join("root.ext4");
    progress.step("make ext4 root filesystem", || {
        boot::make_ext4(
            root,
            nodes,
            tree_bytes,
            c.def.disk_free_mib,
            &rootfs,
            &b.ids,
            c.epoch,
        )
    })?;
    let esp = progress.step("make disk UKI and ESP", || {
        b.uki_esp(c.epoch, "disk", initrd)
    })?;
    progress.step("assemble disk.raw (GPT)", || {
        boot::make_disk(&esp, &rootfs, to, &b.ids)
    })?;
    let _ = fs::remove_file(&rootfs);
    Ok(())
}

/// `image.iso`: a hybrid ISO whose ESP holds a UKI booting the whole rootfs from `initrd`.
fn make_iso(
    c: &Checked,
    b: &Boot,
    initrd: &Path,
    to: &Path,
    progress: &mut Progress,
) -> Result<(), BuildError> {
    let esp = progress.step("make live UKI and ESP", || {
        b.uki_esp(c.epoch, "live", initrd)
    })?;
    let label = boot::iso_label(c.def.name.as_str());
    progress.step("make image.iso (xorriso)", || {
        boot::make_iso(b.work, &esp, &label, to, c.epoch)
    })?;
    Ok(())
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
            images: c
                .resolved
                .release_images
                .iter()
                .map(|i| i.reference())
                .collect(),
        },
        firstboot: manifest::Seed {
            seed_url: c.def.firstboot.seed_url.to_string(),
            ntp: c.def.firstboot.ntp.to_string(),
            ca_pin: c.def.firstboot.ca_pin.to_string(),
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
