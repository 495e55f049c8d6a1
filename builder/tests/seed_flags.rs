//! An image baked for the seed at hand in one step: `--seed-url`, `--pin` and `--ntp` replace
//! the definition's `[firstboot]` values in the image's `firstboot.toml` and its manifest; bad
//! values are refused with the value's own error and nothing is written.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use cluster::firstboot::FirstbootFile;
use common::bundle_dir;

const PIN: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// A tiny base tarball and a definition around it, trusting a seed at 10.77.0.1.
fn definition(dir: &Path) -> std::path::PathBuf {
    let bundle = bundle_dir(&dir.join("bundle"));
    common::definition_with(dir, "seeded", &common::kernel_base(), &bundle)
}

fn build(dir: &Path, out: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_launcher-build"))
        .arg(definition(dir))
        .arg("--out")
        .arg(out)
        .args(["--format", "tar", "--quiet", "--cache"])
        .arg(dir.join("cache"))
        .args(flags)
        .output()
        .unwrap()
}

/// `etc/launcher/firstboot.toml` in `rootfs.tar`.
fn firstboot_file(out: &Path) -> FirstbootFile {
    let mut archive = tar::Archive::new(fs::File::open(out.join("rootfs.tar")).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if path.trim_start_matches("./") == "etc/launcher/firstboot.toml" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            return FirstbootFile::parse("firstboot.toml", &text).unwrap();
        }
    }
    panic!("no etc/launcher/firstboot.toml in rootfs.tar");
}

#[test]
fn the_seed_given_on_the_command_line_is_the_one_the_image_trusts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases: [(&[&str], &str, &str, &str); 3] = [
        (&[], "https://10.77.0.1:8443", "10.77.0.1:123", "11"),
        (
            &["--seed-url", "https://10.9.0.1:9443", "--pin", PIN],
            "https://10.9.0.1:9443",
            "10.9.0.1:123",
            "22",
        ),
        (
            &[
                "--seed-url",
                "https://10.9.0.1:9443",
                "--ntp",
                "10.9.0.5:1123",
            ],
            "https://10.9.0.1:9443",
            "10.9.0.5:1123",
            "11",
        ),
    ];
    for (i, (flags, seed, ntp, pin_start)) in cases.into_iter().enumerate() {
        let out = dir.join(format!("out-{i}"));
        let made = build(dir, &out, flags);
        assert!(
            made.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let file = firstboot_file(&out);
        assert_eq!(file.seed[0].to_string(), seed, "{flags:?}");
        assert_eq!(file.ntp.unwrap().to_string(), ntp, "{flags:?}");
        let pin = file.pin.unwrap().to_string();
        assert!(pin.starts_with(&format!("sha256:{pin_start}")), "{pin}");
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(
            manifest["firstboot"],
            serde_json::json!({"seed_url": seed, "ntp": ntp, "ca_pin": pin}),
            "{flags:?}"
        );
    }
}

#[test]
fn bad_seed_flags_are_refused_with_the_values_error_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--pin", "md5:00"],
            "\"md5:00\" is not a CA pin: expected \"sha256:\" and 64 hex digits of the seed CA's SubjectPublicKeyInfo (`launcher-seed pin` prints it)",
        ),
        (
            &["--seed-url", "http://10.9.0.1:8443"],
            "\"http://10.9.0.1:8443\" is not an https URL; expected https://HOST:PORT like https://10.77.0.1:8443",
        ),
        (
            &["--ntp", "10.9.0.1:0"],
            "\"10.9.0.1:0\" has port \"0\"; expected a number from 1 to 65535",
        ),
    ];
    for (flags, want) in cases {
        let out = dir.join("out");
        let refused = build(dir, &out, flags);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(want), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?}: the output directory was made");
    }
}
