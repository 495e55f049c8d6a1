//! The one harness of the seed's integration tests: test images and in-process registries
//! ([`images`], [`server`]), and the seed itself ([`seed`]).
#![allow(dead_code)]

pub mod images;
pub mod seed;
pub mod server;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `cmd` and returns its output, failing the test with the command line and what it
/// printed when it exits non-zero.
pub fn succeed(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every path under `dir` with the hash of its content (or a marker for directories), to compare
/// a store before and after an operation.
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            let what = if e.file_type().is_file() {
                images::sha256(&std::fs::read(e.path()).unwrap())
            } else {
                "dir".to_string()
            };
            (rel, what)
        })
        .collect()
}
