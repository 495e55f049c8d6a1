//! The host's tools the lab drives: `ip` for the namespace, `sfdisk` for a VM's blank disk, and
//! `launcher-build` when the image is missing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::plan::{LabPlan, MediaBoot, Vm};

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

/// Makes the stand-in container images of the lab's Kubernetes version under the seed's
/// registry (`standin-images`, beside `launcher-seed`) in `out`, and imports them into the
/// seed's store at `seed_dir` (`launcher-seed images import`), before the seed serves: the
/// masters' kubelets pull their static Pods' images from there. Images the options hold back
/// are made and left out.
pub fn import_standin_images(plan: &LabPlan, out: &Path) -> anyhow::Result<()> {
    let seed_bin = &plan.options.seed_bin;
    let bin_dir = seed_bin.parent().unwrap_or(Path::new("."));
    let tool = bin_dir.join("standin-images");
    anyhow::ensure!(
        tool.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        tool.display()
    );
    let made = Command::new(&tool)
        .args(["--registry", &plan.registry(), "--kubernetes-version"])
        .arg(crate::plan::KUBERNETES_VERSION)
        .arg("--out")
        .arg(out)
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    if !made.status.success() {
        bail!(
            "standin-images failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        );
    }
    let listed = std::str::from_utf8(&made.stdout).unwrap_or("");
    let archives: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|archive| {
            let name = Path::new(archive).file_stem().unwrap_or_default();
            !plan
                .options
                .held_images
                .iter()
                .any(|held| name == held.as_str())
        })
        .collect();
    for held in &plan.options.held_images {
        let archive = out.join(format!("{held}.tar"));
        anyhow::ensure!(
            archive.is_file(),
            "--hold-image {held}: standin-images made no such image (it made: {})",
            listed.trim().replace('\n', "; ")
        );
        println!(
            "launcher-lab: {held} held back from the seed's registry; hosts wait until \
             `launcher-seed images import --state-dir {} {}`",
            plan.seed_dir().display(),
            archive.display()
        );
    }
    let imported = Command::new(seed_bin)
        .args(["images", "import", "--state-dir"])
        .arg(plan.seed_dir())
        .args(&archives)
        .output()
        .with_context(|| format!("running {} images import", seed_bin.display()))?;
    if !imported.status.success() {
        bail!(
            "launcher-seed images import failed: {}",
            String::from_utf8_lossy(&imported.stderr).trim()
        );
    }
    print!("{}", String::from_utf8_lossy(&imported.stdout));
    Ok(())
}

pub fn run_ip(args: &[String]) -> anyhow::Result<()> {
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

pub fn namespace_exists(namespace: &str) -> bool {
    Path::new("/run/netns").join(namespace).exists()
}

pub fn make_disk(vm: &Vm, size_mib: u32) -> anyhow::Result<()> {
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

/// Readies what a VM booted from `media` needs before its first power-on: its own copy of the
/// firmware's variable store, and its own copy of a raw disk (sparse, as `cp` keeps it), so the
/// image as built stays as it was. Both are kept across power cycles, as a machine keeps its
/// NVRAM and its disk.
pub fn prepare_media(plan: &LabPlan, vm: &Vm, media: &MediaBoot) -> anyhow::Result<()> {
    let copies = [
        (PathBuf::from(crate::plan::OVMF_VARS), plan.uefi_vars(vm)),
        (media.path.clone(), plan.media_file(vm, media)),
    ];
    for (from, to) in copies {
        if to == from || to.exists() {
            continue;
        }
        anyhow::ensure!(
            from.is_file(),
            "{} is missing{}",
            from.display(),
            if from.starts_with("/usr/share/OVMF") {
                " (Debian's ovmf: ci/deps installs it)"
            } else {
                ""
            }
        );
        let partial = to.with_extension("partial");
        let out = Command::new("cp")
            .args(["--sparse=always", "--"])
            .arg(&from)
            .arg(&partial)
            .output()
            .context("running cp")?;
        anyhow::ensure!(
            out.status.success(),
            "copying {} to {}: {}",
            from.display(),
            partial.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::fs::rename(&partial, &to).with_context(|| format!("renaming to {}", to.display()))?;
    }
    Ok(())
}

/// Deletes the namespace `namespace` if it exists (an error is printed, not returned: `down`
/// goes on).
pub fn remove_namespace(namespace: &str) {
    if namespace_exists(namespace)
        && let Err(err) = run_ip(&["netns".into(), "del".into(), namespace.into()])
    {
        eprintln!("launcher-lab: {err:#}");
    }
}

/// The seed CA's pin (`launcher-seed pin --state-dir RUN_DIR/seed`), for a VM's kernel
/// command line.
pub fn seed_pin(plan: &LabPlan) -> anyhow::Result<String> {
    let seed_bin = &plan.options.seed_bin;
    let out = Command::new(seed_bin)
        .args(["pin", "--state-dir"])
        .arg(plan.seed_dir())
        .output()
        .with_context(|| format!("running {} pin", seed_bin.display()))?;
    if !out.status.success() {
        bail!(
            "launcher-seed pin failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
