//! The default image, built once per test binary from a cached mmdebstrap base: rebuilt
//! byte-identically, and booted under qemu as PXE pair, UEFI disk and UEFI ISO, each reaching
//! launcher-firstboot with containerd listing the preloaded image.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use testkit::ChildGuard;

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const TEST_UNIT: &str = "[Unit]\nDescription=Launcher test: list the preloaded images\n\
Requires=containerd.service\nAfter=containerd.service\n\n[Service]\nType=oneshot\n\
ExecStart=/bin/sh -c 'for f in /usr/share/launcher/images/*; do ctr -n k8s.io images import \"$f\" >/dev/null || echo \"launcher-test: import of $f failed\"; done; ctr -n k8s.io images ls -q | sed \"s/^/launcher-test: image /\"'\n\
StandardOutput=journal+console\nStandardError=journal+console\n\n[Install]\nWantedBy=multi-user.target\n";

struct Built {
    dir: PathBuf,
    definition: PathBuf,
    cache: PathBuf,
    image_name: &'static str,
}

fn tools() -> bool {
    testkit::require(&[
        "mmdebstrap",
        "tar",
        "objcopy",
        "mkfs.fat",
        "mcopy",
        "mke2fs",
        "debugfs",
        "sfdisk",
        "xorriso",
        "qemu-system-x86_64",
    ]) && testkit::require_root("mmdebstrap and owners in the staged tree")
}

fn work() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("builder-image-test")
}

/// The test's definition: the default image with a bundle dir, the test image and an overlay
/// holding a unit that lists containerd's images on the console.
fn definition(dir: &Path) -> (PathBuf, &'static str) {
    let text =
        fs::read_to_string(testkit::workspace_root().join("images/debian-bookworm.toml")).unwrap();
    let mut def: toml::Table = toml::from_str(&text).unwrap();
    let bundle: toml::Table = toml::from_str(&common::bundle_dir(&dir.join("bundle"))).unwrap();
    def.insert("bundle".into(), bundle["bundle"].clone());
    let (archive, name) = common::multi_platform_oci(dir);
    let image = toml::toml! { archive = (archive.display().to_string()) sha256 = (common::sha256_file(&archive)) };
    def.insert(
        "images".into(),
        toml::Value::Array(vec![toml::Value::Table(image)]),
    );
    let overlay = dir.join("overlay");
    let units = overlay.join("etc/systemd/system");
    fs::create_dir_all(units.join("multi-user.target.wants")).unwrap();
    fs::write(units.join("launcher-test-images.service"), TEST_UNIT).unwrap();
    let wants = units.join("multi-user.target.wants/launcher-test-images.service");
    let _ = fs::remove_file(&wants);
    std::os::unix::fs::symlink("/etc/systemd/system/launcher-test-images.service", &wants).unwrap();
    let table = toml::toml! { dir = (overlay.display().to_string()) };
    def.insert("overlay".into(), toml::Value::Table(table));
    let path = dir.join("image.toml");
    fs::write(&path, toml::to_string(&def).unwrap()).unwrap();
    (path, name)
}

fn build(definition: &Path, cache: &Path, out: &Path) -> f64 {
    build_formats(definition, cache, out, &[])
}

fn build_formats(definition: &Path, cache: &Path, out: &Path, flags: &[&str]) -> f64 {
    let _ = fs::remove_dir_all(out);
    let bin_dir = testkit::workspace_bin("launcher-firstboot")
        .parent()
        .unwrap()
        .to_path_buf();
    let start = Instant::now();
    let res = Command::new(env!("CARGO_BIN_EXE_launcher-build"))
        .arg(definition)
        .arg("--out")
        .arg(out)
        .arg("--cache")
        .arg(cache)
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--jobs")
        .arg("2")
        .args(flags)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "launcher-build failed:\n{stderr}");
    eprintln!("{stderr}");
    start.elapsed().as_secs_f64()
}

fn built() -> Option<&'static Built> {
    static BUILT: OnceLock<Option<Built>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !tools() {
                return None;
            }
            let dir = work();
            fs::create_dir_all(&dir).unwrap();
            let (definition, image_name) = definition(&dir);
            let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("launcher-build-cache");
            let secs = build(&definition, &cache, &dir.join("out-a"));
            eprintln!("TIMING first build (mmdebstrap when not cached): {secs:.1}s");
            Some(Built {
                dir: dir.join("out-a"),
                definition,
                cache,
                image_name,
            })
        })
        .as_ref()
}

fn output_digests(dir: &Path) -> Vec<(String, String)> {
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    m["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["path"].as_str().unwrap().to_string(),
                o["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn second_build_is_byte_identical() {
    let Some(b) = built() else { return };
    let again = work().join("out-b");
    let secs = build(&b.definition, &b.cache, &again);
    eprintln!("TIMING second build (cached base): {secs:.1}s");
    let first = output_digests(&b.dir);
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "rootfs.tar",
            "vmlinuz",
            "initrd.img",
            "disk.raw",
            "image.iso"
        ]
    );
    for (name, sha) in &first {
        assert_eq!(
            common::sha256_file(&b.dir.join(name)),
            *sha,
            "{name} does not match the manifest"
        );
        assert_eq!(
            common::sha256_file(&again.join(name)),
            *sha,
            "{name} differs between builds"
        );
    }
    assert_eq!(
        fs::read(b.dir.join("manifest.json")).unwrap(),
        fs::read(again.join("manifest.json")).unwrap()
    );
    let _ = fs::remove_dir_all(&again);

    // boot files alone: the base is not unpacked, the layout is applied to its index and the
    // initrd is the cached base segment and the layer, the same bytes
    let pxe = work().join("out-pxe");
    let secs = build_formats(&b.definition, &b.cache, &pxe, &["--format", "pxe"]);
    eprintln!("TIMING boot files only (cached base and segment): {secs:.1}s");
    for (name, sha) in first
        .iter()
        .filter(|(n, _)| n == "initrd.img" || n == "vmlinuz")
    {
        assert_eq!(
            common::sha256_file(&pxe.join(name)),
            *sha,
            "{name} of a PXE-only build differs from the full build's"
        );
    }
    let _ = fs::remove_dir_all(&pxe);
}

/// One VM at a time: on two cores parallel TCG guests only slow each other down.
static VM: Mutex<()> = Mutex::new(());

/// Boots qemu with `args` until the console shows firstboot's first line and the test image.
fn boot(what: &str, args: &[String]) {
    let Some(b) = built() else { return };
    let _one = VM.lock().unwrap_or_else(|e| e.into_inner());
    let log = work().join(format!("console-{what}.log"));
    let console = fs::File::create(&log).unwrap();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-net",
        "none",
        // A DMI product UUID, so that firstboot can identify the host without a NIC.
        "-uuid",
        "6c4f0b2e-4d8a-4a53-9a55-6c61756e6368",
    ])
    .args(args)
    .stdin(Stdio::null())
    .stdout(console.try_clone().unwrap())
    .stderr(console);
    let start = Instant::now();
    let mut vm = ChildGuard::spawn(&format!("qemu ({what})"), &mut cmd);
    let image_line = format!("launcher-test: image {}", b.image_name);
    let mut firstboot_at = None;
    loop {
        let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
        if firstboot_at.is_none() && text.contains("launcher-firstboot[") {
            firstboot_at = Some(start.elapsed());
        }
        if let (Some(fb), true) = (firstboot_at, text.contains(&image_line)) {
            eprintln!(
                "TIMING {what} boot: firstboot's first line after {:.1}s, image listed after {:.1}s",
                fb.as_secs_f64(),
                start.elapsed().as_secs_f64()
            );
            return;
        }
        if start.elapsed() > BOOT_TIMEOUT || !vm.running() {
            vm.kill();
            let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
            panic!(
                "{what}: no firstboot line and image listing within {BOOT_TIMEOUT:?} (firstboot seen: {}); console:\n{text}",
                firstboot_at.is_some()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn ovmf(what: &str) -> Vec<String> {
    let vars = work().join(format!("OVMF_VARS-{what}.fd"));
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    vec![
        "-drive".into(),
        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ]
}

#[test]
fn pxe_pair_boots_by_direct_kernel_boot() {
    let Some(b) = built() else { return };
    let cmdline = "console=ttyS0,115200 panic=-1";
    boot(
        "pxe",
        &[
            "-m".into(),
            "2048".into(),
            "-kernel".into(),
            b.dir.join("vmlinuz").display().to_string(),
            "-initrd".into(),
            b.dir.join("initrd.img").display().to_string(),
            "-append".into(),
            cmdline.into(),
        ],
    );
}

#[test]
fn disk_boots_under_ovmf() {
    let Some(b) = built() else { return };
    if !testkit::require(&["qemu-system-x86_64"]) {
        return;
    }
    let mut args = ovmf("disk");
    args.extend([
        "-m".into(),
        "1024".into(),
        "-drive".into(),
        format!(
            "file={},format=raw,if=virtio,snapshot=on",
            b.dir.join("disk.raw").display()
        ),
    ]);
    boot("disk", &args);
}

#[test]
fn iso_boots_under_ovmf() {
    let Some(b) = built() else { return };
    let mut args = ovmf("iso");
    args.extend([
        "-m".into(),
        "2048".into(),
        "-cdrom".into(),
        b.dir.join("image.iso").display().to_string(),
    ]);
    boot("iso", &args);
}
