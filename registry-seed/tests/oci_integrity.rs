//! The store holds only what the digests say: a blob linked to other bytes is refused with the
//! store unchanged, a blob file corrupted on disk is replaced by the next import of it, and the
//! staging of an import that died is removed when the store is opened, and nothing else is.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use registry_seed::oci::{Store, import};
use support::images::{self, Family, build, sha256};

fn seed() -> &'static str {
    env!("CARGO_BIN_EXE_launcher-seed")
}

/// Writes a single-platform OCI layout named `name`; returns its layer's digest.
fn layout_with_layer(dir: &Path, name: &str) -> String {
    let built = build(dir, Family::Oci, false, name);
    let manifest: serde_json::Value =
        serde_json::from_slice(&images::read_blob(dir, &built.top)).unwrap();
    manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// A tar of `layout` in which the file `blob` is replaced by a link of `kind` to `target`.
fn tar_with_link(layout: &Path, blob: &str, kind: tar::EntryType, target: &str, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    for entry in walkdir::WalkDir::new(layout)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(layout).unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        if rel == Path::new(blob) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o644);
            b.append_link(&mut h, rel, target).unwrap();
        } else {
            b.append_path_with_name(entry.path(), rel).unwrap();
        }
    }
    b.finish().unwrap();
}

struct LinkCase {
    what: &'static str,
    input: PathBuf,
}

/// An image whose layer `blobs/sha256/<layer>` is a link to a decoy: other bytes of the same
/// size, stored under their own digest. Returns the cases (archives with a symlink and a hard
/// link, a layout directory with a symlink), the layer's digest and the decoy's.
fn linked_layer_cases(dir: &Path) -> (Vec<LinkCase>, String, String) {
    let layout = dir.join("linked");
    let layer = layout_with_layer(&layout, "example.org/test/app:1");
    let mut decoy = images::read_blob(&layout, &layer);
    decoy.reverse();
    decoy[0] ^= 0xff;
    let decoy_digest = sha256(&decoy);
    let decoy_name = blob_name(&decoy_digest);
    std::fs::write(layout.join(&decoy_name), &decoy).unwrap();
    let layer_name = blob_name(&layer);
    let decoy_hex = decoy_digest.trim_start_matches("sha256:");

    let symlinked = dir.join("symlinked.tar");
    tar_with_link(
        &layout,
        &layer_name,
        tar::EntryType::Symlink,
        decoy_hex,
        &symlinked,
    );
    let hardlinked = dir.join("hardlinked.tar");
    tar_with_link(
        &layout,
        &layer_name,
        tar::EntryType::Link,
        &decoy_name,
        &hardlinked,
    );
    std::fs::remove_file(layout.join(&layer_name)).unwrap();
    std::os::unix::fs::symlink(decoy_hex, layout.join(&layer_name)).unwrap();
    let cases = vec![
        LinkCase {
            what: "symlink in an archive",
            input: symlinked,
        },
        LinkCase {
            what: "hard link in an archive",
            input: hardlinked,
        },
        LinkCase {
            what: "symlink in a layout directory",
            input: layout,
        },
    ];
    (cases, layer, decoy_digest)
}

#[test]
fn a_blob_linked_to_other_bytes_of_its_size_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let existing = tmp.path().join("existing");
    build(&existing, Family::Docker, true, "example.org/existing:1");
    import(&store, &[existing], None).unwrap();
    let before = support::snapshot(store.root());
    let (cases, layer, decoy) = linked_layer_cases(tmp.path());
    for case in &cases {
        let err = import(&store, std::slice::from_ref(&case.input), None)
            .expect_err(case.what)
            .to_string();
        let want = format!(
            "{}: {} does not match its digest: its content hashes to {decoy}",
            case.input.display(),
            blob_name(&layer)
        );
        assert_eq!(err, want, "{}", case.what);
        assert_eq!(
            before,
            support::snapshot(store.root()),
            "{} changed the store",
            case.what
        );
    }
    // the genuine image is then stored with its own bytes
    let genuine = tmp.path().join("genuine");
    assert_eq!(layout_with_layer(&genuine, "example.org/test/app:1"), layer);
    import(&store, &[genuine], None).unwrap();
    let stored = std::fs::read(store.root().join(blob_name(&layer))).unwrap();
    assert_eq!(sha256(&stored), layer);
}

#[test]
fn a_corrupt_blob_file_is_replaced_by_the_next_import() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = Store::open(&state).unwrap();
    let layout = tmp.path().join("layout");
    let layer = layout_with_layer(&layout, "example.org/test/app:1");
    import(&store, std::slice::from_ref(&layout), None).unwrap();
    let good = support::snapshot(store.root());

    // same size, other bytes: only a full hash tells them apart
    let path = store.root().join(blob_name(&layer));
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![0x5a; size]).unwrap();
    import(&store, &[layout], None).unwrap();
    assert_eq!(good, support::snapshot(store.root()));

    let server = support::server::serve_plain(&state);
    let url = format!("http://{}/v2/test/app/blobs/{layer}", server.host());
    let pulled = reqwest::blocking::get(url).unwrap();
    assert_eq!(pulled.status(), reqwest::StatusCode::OK);
    assert_eq!(sha256(&pulled.bytes().unwrap()), layer);
}

/// `snapshot` without the staging directories in `tmp/`.
fn without_staging(snapshot: BTreeMap<String, String>) -> BTreeMap<String, String> {
    snapshot
        .into_iter()
        .filter(|(path, _)| !path.starts_with("tmp/import-"))
        .collect()
}

/// The staging directories in the store's `tmp/`.
fn staging_dirs(store: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(store.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("import-"))
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Opens the FIFO `path` for writing once a reader has it open, without hanging if none comes.
fn open_writer(path: &Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => return f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no import read {}: {e}", path.display()),
        }
    }
}

/// Waits until the import has staged `bytes` bytes of its first file.
fn wait_for_staged(store: &Path, bytes: u64) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let [dir] = staging_dirs(store).as_slice()
            && std::fs::metadata(dir.join("in0/f0")).is_ok_and(|m| m.len() == bytes)
        {
            return dir.clone();
        }
        assert!(Instant::now() < deadline, "the import staged nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn staging_of_a_killed_import_is_removed_when_the_store_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = Store::open(&state).unwrap();
    let layout = tmp.path().join("layout");
    layout_with_layer(&layout, "example.org/test/app:1");
    import(&store, &[layout], None).unwrap();

    // an import reading a large layer from a pipe, stopped halfway through it
    let fifo = tmp.path().join("image.tar");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut child = Command::new(seed())
        .args(["images", "import", "--state-dir"])
        .arg(&state)
        .arg(&fifo)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut writer = open_writer(&fifo);
    let mut header = tar::Header::new_gnu();
    header.set_path("layer.tar").unwrap();
    header.set_size(1 << 30);
    header.set_mode(0o644);
    header.set_cksum();
    writer.write_all(header.as_bytes()).unwrap();
    writer.write_all(&[7u8; 4096]).unwrap();
    let staging = wait_for_staged(store.root(), 4096);

    // while it runs, opening the store leaves its staging alone
    Store::open(&state).unwrap();
    assert!(staging.join("in0/f0").exists());

    child.kill().unwrap();
    child.wait().unwrap();
    drop(writer);
    let before = without_staging(support::snapshot(store.root()));
    Store::open(&state).unwrap();
    assert!(!staging.exists());
    assert_eq!(before, support::snapshot(store.root()));
}

#[test]
fn only_the_staging_of_dead_imports_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = Store::open(&state).unwrap();
    let layout = tmp.path().join("layout");
    layout_with_layer(&layout, "example.org/test/app:1");
    import(&store, &[layout], None).unwrap();

    // left as an import leaves it: one directory per input, files f0, f1, …
    let dead = store.root().join("tmp/import-crashed");
    std::fs::create_dir_all(dead.join("in0")).unwrap();
    std::fs::write(dead.join("in0/f0"), b"partial").unwrap();
    let running = store.staging_dir().unwrap();
    std::fs::write(running.path().join("f0"), b"in progress").unwrap();
    std::fs::create_dir(store.root().join("tmp/other")).unwrap();
    std::fs::write(store.root().join("tmp/other/file"), b"not ours").unwrap();
    std::fs::write(store.root().join("tmp/import-note"), b"a file, not staging").unwrap();
    let before = support::snapshot(store.root());

    Store::open(&state).unwrap();
    assert!(!dead.exists());
    let after = support::snapshot(store.root());
    let expected: BTreeMap<String, String> = before
        .into_iter()
        .filter(|(path, _)| !path.starts_with("tmp/import-crashed"))
        .collect();
    assert_eq!(expected, after);
    assert!(running.path().join("f0").exists());

    let running_path = running.path().to_path_buf();
    drop(running);
    assert!(!running_path.exists());
}
