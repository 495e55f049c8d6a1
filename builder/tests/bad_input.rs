//! Bad inputs: each row is refused with its exact error, and the output directory is never made.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bundle_dir, raw_tar, sha256_hex};

/// A small valid base tarball and a definition around it; `edit` changes the case's part.
struct Case {
    name: &'static str,
    base: Vec<u8>,
    extra_toml: String,
    /// Replacements applied to the definition text.
    replace: Vec<(String, String)>,
    overlay: fn(&Path),
    path_env: Option<&'static str>,
    /// The whole definition instead of the valid one with `replace` applied.
    whole: Option<&'static str>,
    /// The error, with `{dir}` standing for the case's directory.
    want: String,
}

fn good_base() -> Vec<u8> {
    raw_tar(&[
        ("etc/", b'5', "", b""),
        ("etc/os-release", b'0', "", b"ID=test\n"),
        ("usr/", b'5', "", b""),
        ("usr/lib/", b'5', "", b""),
        ("lib", b'2', "usr/lib", b""),
        ("etc/hostname", b'1', "etc/os-release", b""),
    ])
}

fn definition(dir: &Path, base_sha: &str, extra: &str) -> String {
    fs::write(dir.join("firstboot"), "#!/bin/sh\n").unwrap();
    format!(
        "name = \"bad-input\"\n[base.tarball]\npath = \"base.tar\"\nsha256 = \"{base_sha}\"\n\
         [firstboot]\nseed_url = \"https://10.77.0.1:8443\"\nntp = \"10.77.0.1\"\n\
         ca_pin = \"sha256:{pin}\"\nbinary = \"firstboot\"\n{bundle}{extra}",
        pin = "1".repeat(64),
        bundle = bundle_dir(&dir.join("bundle")),
    )
}

/// Runs `cmd` to the end, failing the test if it takes longer than `limit` (a parser that spins).
fn output_within(mut cmd: Command, limit: Duration, name: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: launcher-build still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn run_case(case: &Case) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("base.tar"), &case.base).unwrap();
    fs::create_dir(dir.join("overlay")).unwrap();
    (case.overlay)(&dir.join("overlay"));
    let mut text = definition(dir, &sha256_hex(&case.base), &case.extra_toml);
    for (from, to) in &case.replace {
        assert!(
            text.contains(from.as_str()),
            "{}: {from:?} not in the definition",
            case.name
        );
        text = text.replacen(from.as_str(), to, 1);
    }
    if let Some(whole) = case.whole {
        text = whole.to_string();
    }
    fs::write(dir.join("image.toml"), &text).unwrap();
    let out = dir.join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_launcher-build"));
    cmd.arg(dir.join("image.toml"))
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(dir.join("cache"));
    if let Some(path) = case.path_env {
        cmd.env("PATH", path);
    }
    let res = output_within(cmd, Duration::from_secs(60), case.name);
    let stderr = String::from_utf8_lossy(&res.stderr);
    let want = case.want.replace("{dir}", &dir.display().to_string());
    assert!(!res.status.success(), "{}: the build succeeded", case.name);
    assert!(
        stderr.contains(&format!("launcher-build: error: {want}")),
        "{}: stderr was\n{stderr}\nwanted\n{want}",
        case.name
    );
    assert!(
        !out.exists(),
        "{}: the output directory was made",
        case.name
    );
}

fn no_overlay(_: &Path) {}

#[test]
fn every_bad_input_is_refused_before_anything_is_written() {
    let overlay = "[overlay]\ndir = \"overlay\"\n".to_string();
    let cases = vec![
        Case {
            name: "sha256 mismatch",
            base: good_base(),
            extra_toml: String::new(),
            replace: vec![("sha256 = \"".into(), format!("sha256 = \"{}", "0".repeat(64)))],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: String::new(), // filled below: depends on the real digest
        },
        Case {
            name: "entry with ..",
            base: raw_tar(&[("etc/", b'5', "", b""), ("../evil", b'0', "", b"x")]),
            extra_toml: String::new(),
            replace: vec![],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: "{dir}/base.tar: entry \"../evil\" has a '..' component".into(),
        },
        Case {
            name: "absolute entry",
            base: raw_tar(&[("/etc/evil", b'0', "", b"x")]),
            extra_toml: String::new(),
            replace: vec![],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: "{dir}/base.tar: entry \"/etc/evil\" is an absolute path".into(),
        },
        Case {
            name: "symlink escaping",
            base: raw_tar(&[("etc/", b'5', "", b""), ("etc/evil", b'2', "../../outside", b"")]),
            extra_toml: String::new(),
            replace: vec![],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: "{dir}/base.tar: entry \"etc/evil\" is a symlink to \"../../outside\", which leaves the tree".into(),
        },
        Case {
            name: "hard link escaping",
            base: raw_tar(&[("etc/", b'5', "", b""), ("etc/hard", b'1', "../outside", b"")]),
            extra_toml: String::new(),
            replace: vec![],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: "{dir}/base.tar: entry \"etc/hard\" is a hard link to \"../outside\", which leaves the tree".into(),
        },
        Case {
            name: "entry written through a symlink",
            base: raw_tar(&[("etc", b'2', "/", b""), ("etc/passwd", b'0', "", b"x")]),
            extra_toml: String::new(),
            replace: vec![],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: "{dir}/base.tar: entry \"etc/passwd\" is written through the symlink \"etc\"".into(),
        },
        Case {
            name: "device node in overlay",
            base: good_base(),
            extra_toml: overlay.clone(),
            replace: vec![],
            overlay: |dir| {
                fs::create_dir(dir.join("dev")).unwrap();
                let ok = Command::new("mknod").arg(dir.join("dev/null0")).args(["c", "1", "3"]).status().unwrap();
                assert!(ok.success(), "mknod needs root");
            },
            path_env: None,
            whole: None,
            want: "overlay {dir}/overlay: \"dev/null0\" is a character device; an overlay holds only files, directories and symlinks".into(),
        },
        Case {
            name: "symlink escaping the overlay",
            base: good_base(),
            extra_toml: overlay.clone(),
            replace: vec![],
            overlay: |dir| {
                fs::create_dir(dir.join("etc")).unwrap();
                std::os::unix::fs::symlink("../../../x", dir.join("etc/x")).unwrap();
            },
            path_env: None,
            whole: None,
            want: "overlay {dir}/overlay: symlink \"etc/x\" points to \"../../../x\", which leaves the tree".into(),
        },
        Case {
            name: "unknown field",
            base: good_base(),
            extra_toml: String::new(),
            replace: vec![("name = \"bad-input\"\n".into(), "name = \"bad-input\"\ncolour = \"blue\"\n".into())],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: "{dir}/image.toml:2:1: field colour: unknown field `colour`, expected one of".into(),
        },
        Case {
            name: "bundle version 2.0",
            base: good_base(),
            extra_toml: String::new(),
            replace: vec![("version = \"v1.30.2\"".into(), "version = \"v2.0.0\"".into())],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: "{dir}/image.toml:11:11: field bundle.version: v2.0.0 cannot be rendered: kubeadm config v1beta3 needs v1.22.0 or later".into(),
        },
        Case {
            name: "bundle version 1.5",
            base: good_base(),
            extra_toml: String::new(),
            replace: vec![("version = \"v1.30.2\"".into(), "version = \"v1.5.0\"".into())],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: "{dir}/image.toml:11:11: field bundle.version: v1.5.0 cannot be rendered: kubeadm config v1beta3 needs v1.22.0 or later".into(),
        },
        Case {
            name: "seed URL without a port",
            base: good_base(),
            extra_toml: String::new(),
            replace: vec![("seed_url = \"https://10.77.0.1:8443\"".into(), "seed_url = \"https://10.77.0.1\"".into())],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: "{dir}/image.toml:6:12: field firstboot.seed_url: \"https://10.77.0.1\" has no port; expected https://HOST:PORT like https://10.77.0.1:8443".into(),
        },
        Case {
            name: "CA pin of another hash",
            base: good_base(),
            extra_toml: String::new(),
            replace: vec![("ca_pin = \"sha256:".into(), "ca_pin = \"md5:".into())],
            overlay: no_overlay,
            path_env: None,
            whole: None,
            want: "{dir}/image.toml:8:10: field firstboot.ca_pin: \"md5:1111111111111111111111111111111111111111111111111111111111111111\" is not a CA pin: expected \"sha256:\" and 64 hex digits of the seed CA's SubjectPublicKeyInfo (`launcher-seed pin` prints it)".into(),
        },
        Case {
            name: "only an empty key",
            base: good_base(),
            extra_toml: String::new(),
            replace: vec![],
            overlay: no_overlay,
            path_env: None,
            whole: Some("\"\"=\"\""),
            want: "{dir}/image.toml:1:1: field : unknown field ``, expected one of `name`, `platform`, `source_date_epoch`, `base`, `kernel`, `bundle`, `images`, `firstboot`, `overlay`, `disk`".into(),
        },
        Case {
            name: "missing tool",
            base: good_base(),
            extra_toml: String::new(),
            replace: vec![],
            overlay: no_overlay,
            path_env: Some("/nonexistent"),
            whole: None,
            want: "missing tool(s): tar (package tar), objcopy (package binutils), objdump (package binutils), \
                   mkfs.fat (package dosfstools), mmd (package mtools), mcopy (package mtools), mke2fs (package e2fsprogs), \
                   debugfs (package e2fsprogs), sfdisk (package fdisk), xorriso (package xorriso) (install the Debian packages named, e.g. with ci/deps)".into(),
        },
    ];
    let base_sha = sha256_hex(&good_base());
    for mut case in cases {
        if case.name == "sha256 mismatch" {
            let zeros = "0".repeat(64);
            case.want =
                format!("base {{dir}}/base.tar: sha256 is {base_sha}, the definition pins {zeros}");
            case.replace = vec![(
                format!("sha256 = \"{base_sha}\""),
                format!("sha256 = \"{zeros}\""),
            )];
        }
        if case.name == "device node in overlay"
            && !testkit::require_root("mknod for a device node")
        {
            continue;
        }
        run_case(&case);
    }
}

#[test]
fn pinned_container_image_mismatch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = good_base();
    fs::write(dir.join("base.tar"), &base).unwrap();
    fs::write(dir.join("image.tar"), b"not really an image").unwrap();
    let extra = format!(
        "[[images]]\narchive = \"image.tar\"\nsha256 = \"{}\"\n",
        "2".repeat(64)
    );
    fs::write(
        dir.join("image.toml"),
        definition(dir, &sha256_hex(&base), &extra),
    )
    .unwrap();
    let out = dir.join("out");
    let res = Command::new(env!("CARGO_BIN_EXE_launcher-build"))
        .arg(dir.join("image.toml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    let want = format!(
        "launcher-build: error: container image {}/image.tar: sha256 is {}, the definition pins {}",
        dir.display(),
        sha256_hex(b"not really an image"),
        "2".repeat(64)
    );
    assert!(
        stderr.contains(&want),
        "stderr was\n{stderr}\nwanted\n{want}"
    );
    assert!(!out.exists());
}
