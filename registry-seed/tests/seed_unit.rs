//! The seed's systemd unit, `dist/launcher-seed.service`: systemd-analyze finds nothing to say
//! about it, its sandbox keeps its exposure low, and its command line is one `serve` accepts.

use std::path::PathBuf;
use std::process::Command;

fn unit() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist/launcher-seed.service")
}

fn exec_start() -> Vec<String> {
    let text = std::fs::read_to_string(unit()).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn systemd_analyze_verify_has_nothing_to_say() {
    if !testkit::require(&["systemd-analyze"]) {
        return;
    }
    // verify checks that the command exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit()).unwrap().replace(
        "/usr/local/bin/launcher-seed",
        env!("CARGO_BIN_EXE_launcher-seed"),
    );
    let copy = dir.path().join("launcher-seed.service");
    std::fs::write(&copy, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    // A directive it cannot parse is only a warning: any output fails the test.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.is_empty(),
        "{}: {said}",
        out.status
    );
}

#[test]
fn the_sandbox_keeps_the_exposure_below_2() {
    if !testkit::require(&["systemd-analyze"]) {
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(unit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_command_line_is_one_serve_accepts() {
    let argv = exec_start();
    assert_eq!(argv[..2], ["/usr/local/bin/launcher-seed", "serve"]);
    assert!(argv.contains(&"--state-dir".to_string()));
    // clap refuses an unknown flag or a bad value before it gets to --help.
    let out = Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
        .args(&argv[1..])
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
