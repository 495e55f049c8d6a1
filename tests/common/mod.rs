//! What the VM scenarios share: the image to boot, the lab binary, logs on failure, a check that
//! nothing of a lab is left after `down`, and a look at a VM's `LAUNCHER-DATA` disk from outside.

#![allow(dead_code)]

pub mod kube;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lab::procs::Procfs;
use lab::state::LabState;

/// The `launcher-lab` binary `cargo build --workspace` made.
pub fn lab_bin() -> PathBuf {
    testkit::workspace_bin("launcher-lab")
}

/// The node image, or `None` (with the reason printed; a failure under CI) when there is none
/// or the machine cannot run VMs.
pub fn image_or_skip() -> Option<PathBuf> {
    if !testkit::require_root("network namespaces, taps and qemu")
        || !testkit::require(&[
            "qemu-system-x86_64",
            "dnsmasq",
            "ip",
            "etcdctl",
            "sfdisk",
            "debugfs",
            "e2fsck",
        ])
    {
        return None;
    }
    let image = std::env::var_os("LAUNCHER_LAB_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::workspace_root().join("out"));
    if !image.join("vmlinuz").is_file() || !image.join("initrd.img").is_file() {
        let reason = format!(
            "no node image in {} (make it with `launcher-build images/debian-bookworm.toml \
             --out out/` or point LAUNCHER_LAB_IMAGE at one; ci/test bakes one)",
            image.display()
        );
        assert!(!testkit::under_ci(), "{reason}");
        eprintln!("SKIPPED: {reason}");
        return None;
    }
    let _ = testkit::workspace_bin("launcher-seed");
    let _ = lab_bin();
    Some(image)
}

/// The default image's definition changed by `edit`, written beside `out` and built into
/// `out` with `args` (`--format …`, `--seed-url …`) and the lab image's build cache: the base
/// and its initrd segment are cached there, so only what differs is made.
pub fn bake(out: &Path, edit: impl FnOnce(&mut toml::Table), args: &[&str]) -> PathBuf {
    let root = testkit::workspace_root();
    let default = std::fs::read_to_string(root.join("images/debian-bookworm.toml")).unwrap();
    let mut def: toml::Table = toml::from_str(&default).unwrap();
    edit(&mut def);
    let path = out.with_extension("toml");
    std::fs::write(&path, toml::to_string(&def).unwrap()).unwrap();
    let bin_dir = testkit::workspace_bin("launcher-firstboot")
        .parent()
        .unwrap()
        .to_path_buf();
    let built = Command::new(testkit::workspace_bin("launcher-build"))
        .arg(&path)
        .arg("--out")
        .arg(out)
        .args(args)
        .args(["--quiet", "--cache"])
        .arg(root.join("target/tmp/launcher-build-cache"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    out.to_path_buf()
}

/// Runs `launcher-lab ARGS… --run-dir RUN`.
pub fn lab(run: &Path, args: &[&str]) -> Output {
    Command::new(lab_bin())
        .args(args)
        .arg("--run-dir")
        .arg(run)
        .output()
        .unwrap()
}

/// `launcher-lab up ARGS --image IMAGE --run-dir RUN` in the background, its standard output
/// and error in `RUN/up.out` and `RUN/up.err`.
pub fn spawn_up(run: &Path, image: &Path, args: &[&str]) -> testkit::ChildGuard {
    testkit::ChildGuard::spawn(
        "launcher-lab up",
        Command::new(lab_bin())
            .arg("up")
            .args(args)
            .arg("--image")
            .arg(image)
            .arg("--run-dir")
            .arg(run)
            .stdout(std::fs::File::create(run.join("up.out")).unwrap())
            .stderr(std::fs::File::create(run.join("up.err")).unwrap()),
    )
}

/// `launcher-lab exec VM -- COMMAND…`: the command run inside the VM by its guest agent.
pub fn exec_in(run: &Path, vm: &str, command: &[&str]) -> Output {
    Command::new(lab_bin())
        .args(["exec", "--run-dir"])
        .arg(run)
        .args([vm, "--"])
        .args(command)
        .output()
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The last lines of every log and console in the run directory, for a failed test.
pub fn print_logs(run: &Path) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(run)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    for path in names {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".console") || name.ends_with(".console.prev") || name.ends_with(".log") {
            let text = text(&std::fs::read(&path).unwrap_or_default());
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            eprintln!("===== {} (last 80 lines) =====", path.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    text(&out.stdout)
}

/// Every running process whose working directory, binary or arguments point into `run`.
fn processes_using(run: &Path) -> Vec<String> {
    let run = run.to_string_lossy().into_owned();
    let own = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let dir = entry.path();
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == own {
            continue;
        }
        let running = pid
            .parse()
            .ok()
            .and_then(|p| Procfs::system().stat(p))
            .is_some_and(|s| s.running());
        let link = |name: &str| {
            std::fs::read_link(dir.join(name))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let args = text(&std::fs::read(dir.join("cmdline")).unwrap_or_default()).replace('\0', " ");
        if running
            && [link("cwd"), link("exe"), args.clone()]
                .iter()
                .any(|s| s.contains(&run))
        {
            found.push(format!("{pid}: {args}"));
        }
    }
    found
}

/// Asserts that nothing of the lab `state` described in `run` is left after `down`: no process
/// pointing into the run directory, none in the lab's network namespace, no namespace by its name.
pub fn assert_nothing_left(run: &Path, state: &LabState) {
    let left = processes_using(run);
    assert!(
        left.is_empty(),
        "processes of the run dir after down: {left:#?}"
    );
    if let Some(inode) = state.namespace_inode {
        let inside = Procfs::system().in_net_namespace(inode);
        assert!(
            inside.is_empty(),
            "processes in the lab's namespace after down: {inside:?}"
        );
    }
    assert!(
        !namespaces().contains(&state.namespace),
        "the namespace {} is left",
        state.namespace
    );
}

/// A copy of a VM's `LAUNCHER-DATA` filesystem with its journal replayed (the VM was not shut
/// down cleanly), read with e2fsprogs rather than mounted.
pub struct DataDisk {
    _dir: tempfile::TempDir,
    pub fs: PathBuf,
}

impl DataDisk {
    pub fn open(disk: &Path) -> DataDisk {
        let layout = Command::new("sfdisk")
            .arg("--json")
            .arg(disk)
            .output()
            .unwrap();
        assert!(layout.status.success(), "{}", text(&layout.stderr));
        let json: serde_json::Value = serde_json::from_slice(&layout.stdout).unwrap();
        let part = &json["partitiontable"]["partitions"][0];
        assert_eq!(part["name"], "LAUNCHER-DATA", "{json}");
        let (start, size) = (
            part["start"].as_u64().unwrap(),
            part["size"].as_u64().unwrap(),
        );
        assert_eq!(start % 2048, 0, "the partition starts on a MiB boundary");
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("data.ext4");
        let dd = Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", fs.display()))
            .args(["bs=1M", "conv=sparse", "status=none"])
            .arg(format!("skip={}", start / 2048))
            .arg(format!("count={}", size.div_ceil(2048)))
            .output()
            .unwrap();
        assert!(dd.status.success(), "{}", text(&dd.stderr));
        let fsck = Command::new("e2fsck")
            .args(["-y", "-E", "journal_only"])
            .arg(&fs)
            .output()
            .unwrap();
        assert!(
            matches!(fsck.status.code(), Some(0 | 1)),
            "e2fsck: {}{}",
            text(&fsck.stdout),
            text(&fsck.stderr)
        );
        DataDisk { _dir: dir, fs }
    }

    /// A file of the data disk (`launcher/…` is the host's `/var/lib/launcher/…`).
    pub fn read(&self, path: &str) -> Option<String> {
        let out = self.fs.with_extension("out");
        let _ = std::fs::remove_file(&out);
        let status = Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump -p /{path} {}", out.display()))
            .arg(&self.fs)
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", text(&status.stderr));
        std::fs::read(&out).ok().map(|b| text(&b))
    }

    /// Whether `needle` occurs anywhere in the filesystem's bytes, files or free space.
    pub fn holds_bytes(&self, needle: &str) -> bool {
        let grep = Command::new("grep")
            .args(["-q", "-a", "-F", "--", needle])
            .arg(&self.fs)
            .status()
            .unwrap();
        assert!(matches!(grep.code(), Some(0 | 1)), "grep failed");
        grep.code() == Some(0)
    }
}

/// The plan firstboot keeps in its journal on the data disk.
pub fn journal_plan(disk: &DataDisk) -> serde_json::Value {
    let journal = disk
        .read("launcher/firstboot.json")
        .expect("the data disk holds firstboot's journal");
    let journal: serde_json::Value = serde_json::from_str(&journal).unwrap();
    journal["plan"].clone()
}

/// The text of the plan file at `path`, if the plan has it.
pub fn plan_file(plan: &serde_json::Value, path: &str) -> Option<String> {
    plan["files"]
        .as_array()?
        .iter()
        .find(|f| f["path"] == path)
        .and_then(|f| f["source"]["text"].as_str().map(str::to_string))
}
