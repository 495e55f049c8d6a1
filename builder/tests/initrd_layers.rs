//! The layered initrd: the base's segment (cached by the base's digest) followed by the image's
//! own layer. Unpacked as the kernel unpacks concatenated archives, it must give exactly the tree
//! `rootfs.tar` holds; a build of boot files alone, which applies the layout to the base's index
//! instead of an unpacked tree, must give the same bytes; and a layout the kernel could not lay
//! over the base (a file where the base has a directory) gets a whole initrd instead.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::raw_tar;

/// What a path holds: `(kind, mode bits, uid, gid, bytes or link target)`.
type Tree = BTreeMap<String, (char, u32, u32, u32, Vec<u8>)>;

fn base(extra: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut entries: Vec<(&str, u8, &str, &[u8])> = vec![
        ("boot/", b'5', "", b""),
        ("boot/vmlinuz-6.1.0-test", b'0', "", b"not a kernel"),
        ("etc/", b'5', "", b""),
        ("etc/chrony-real/", b'5', "", b""),
        // the layout writes /etc/chrony/…: through this link, into chrony-real
        ("etc/chrony", b'2', "chrony-real", b""),
        ("etc/machine-id", b'0', "", b"base machine id\n"),
        ("etc/os-release", b'2', "../usr/lib/os-release", b""),
        ("usr/", b'5', "", b""),
        ("usr/bin/", b'5', "", b""),
        ("usr/bin/kubectl", b'0', "", b"the base's kubectl"),
        ("usr/lib/", b'5', "", b""),
        ("usr/lib/os-release", b'0', "", b"ID=test\n"),
        ("lib", b'2', "usr/lib", b""),
        ("var/", b'5', "", b""),
        ("var/lib/", b'5', "", b""),
        ("var/lib/dpkg/", b'5', "", b""),
        (
            "var/lib/dpkg/status",
            b'0',
            "",
            b"Package: chrony\nStatus: install ok installed\nVersion: 4.3-2\n\n",
        ),
    ];
    entries.extend_from_slice(extra);
    raw_tar(&entries)
}

fn definition(dir: &Path, base: &[u8]) -> PathBuf {
    let bundle = common::bundle_dir(&dir.join("bundle"));
    common::definition_with(dir, "layers", base, &bundle)
}

fn build(def: &Path, cache: &Path, out: &Path, formats: &str) -> Output {
    let _ = fs::remove_dir_all(out);
    let built = Command::new(env!("CARGO_BIN_EXE_launcher-build"))
        .arg(def)
        .arg("--out")
        .arg(out)
        .args(["--format", formats, "--cache"])
        .arg(cache)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    built
}

fn hex(field: &[u8]) -> u32 {
    u32::from_str_radix(std::str::from_utf8(field).unwrap(), 16).unwrap()
}

/// Unpacks concatenated newc archives as the kernel does: a later entry replaces an earlier one
/// of another type (a directory only when empty), rewrites a file and updates a directory's
/// owner and mode; a link does not replace a link.
fn unpack_initrd(initrd: &Path) -> Tree {
    let mut data = Vec::new();
    zstd::stream::read::Decoder::new(fs::File::open(initrd).unwrap())
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    let mut tree = Tree::new();
    let mut at = 0;
    let pad = |n: usize| n.div_ceil(4) * 4;
    while at < data.len() {
        if data[at] == 0 {
            at += 1;
            continue;
        }
        let h = &data[at..at + 110];
        assert_eq!(&h[..6], b"070701", "not a newc header at {at}");
        let mode = hex(&h[14..22]);
        let (uid, gid) = (hex(&h[22..30]), hex(&h[30..38]));
        let size = hex(&h[54..62]) as usize;
        let namesize = hex(&h[94..102]) as usize;
        let name = String::from_utf8(data[at + 110..at + 110 + namesize - 1].to_vec()).unwrap();
        let start = pad(at + 110 + namesize);
        let body = data[start..start + size].to_vec();
        at = pad(start + size);
        if name == "TRAILER!!!" {
            continue;
        }
        let kind = match mode & 0o170000 {
            0o040000 => 'd',
            0o100000 => 'f',
            0o120000 => 'l',
            _ => 'o',
        };
        let perms = mode & 0o7777;
        let has_children = |tree: &Tree| {
            let prefix = format!("{name}/");
            tree.keys().any(|k| k.starts_with(&prefix))
        };
        match tree.get(&name).map(|e| e.0) {
            Some('d') if kind == 'd' => {
                let e = tree.get_mut(&name).unwrap();
                (e.1, e.2, e.3) = (perms, uid, gid);
            }
            Some('d') if has_children(&tree) => {} // rmdir fails: the directory stays
            Some('l') if kind == 'l' => {}         // symlink() fails: the old link stays
            _ => {
                tree.insert(name, (kind, perms, uid, gid, body));
            }
        }
    }
    tree
}

/// `rootfs.tar` as the same kind of tree, without `/boot` (not in the initrd).
fn rootfs(out: &Path) -> Tree {
    let mut archive = tar::Archive::new(fs::File::open(out.join("rootfs.tar")).unwrap());
    let mut tree = Tree::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if name.is_empty() || name == "boot" || name.starts_with("boot/") {
            continue;
        }
        let h = entry.header().clone();
        let (kind, body) = match h.entry_type() {
            tar::EntryType::Directory => ('d', vec![]),
            tar::EntryType::Symlink => ('l', h.link_name_bytes().unwrap().to_vec()),
            tar::EntryType::Regular => {
                let mut body = Vec::new();
                entry.read_to_end(&mut body).unwrap();
                ('f', body)
            }
            other => panic!("{name}: unexpected {other:?} in rootfs.tar"),
        };
        let mode = if kind == 'l' {
            0o777
        } else {
            h.mode().unwrap() & 0o7777
        };
        tree.insert(
            name,
            (
                kind,
                mode,
                h.uid().unwrap() as u32,
                h.gid().unwrap() as u32,
                body,
            ),
        );
    }
    tree
}

fn assert_same_tree(initrd: &Tree, rootfs: &Tree) {
    let mut initrd = initrd.clone();
    let init = initrd.remove("init").expect("the initrd has /init");
    assert_eq!(init.4, b"/lib/systemd/systemd");
    // /boot is there, empty: the kernel and Debian's initrd are left out
    assert_eq!(initrd.remove("boot").map(|b| b.0), Some('d'));
    for (path, want) in rootfs {
        assert_eq!(initrd.get(path), Some(want), "{path} differs in the initrd");
    }
    let extra: Vec<&String> = initrd.keys().filter(|k| !rootfs.contains_key(*k)).collect();
    assert!(extra.is_empty(), "only in the initrd: {extra:?}");
}

fn segments(initrd: &Path) -> usize {
    let data = fs::read(initrd).unwrap();
    data.windows(4)
        .filter(|w| *w == [0x28, 0xb5, 0x2f, 0xfd])
        .count()
}

#[test]
fn the_layered_initrd_unpacks_to_the_image_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let def = definition(dir, &base(&[]));
    let cache = dir.join("cache");

    // the whole tree and boot files: the base's segment is made and cached
    let full = dir.join("full");
    build(&def, &cache, &full, "tar,pxe");
    let tree = rootfs(&full);
    assert_eq!(
        tree["etc/chrony-real/chrony.conf"].0, 'f',
        "the layout's chrony.conf went through the base's link"
    );
    assert_eq!(
        tree["usr/bin/kubectl"].4,
        b"#!/bin/sh\necho kubectl: test bundle\n"
    );
    assert_same_tree(&unpack_initrd(&full.join("initrd.img")), &tree);
    assert!(
        segments(&full.join("initrd.img")) >= 2,
        "the initrd is not in segments"
    );

    // boot files alone from the cached segment: the base is not unpacked, same bytes
    let pxe = dir.join("pxe");
    let built = build(&def, &cache, &pxe, "pxe");
    let said = String::from_utf8_lossy(&built.stderr);
    assert!(
        said.contains("apply image layout (to the base's index)"),
        "{said}"
    );
    assert!(!said.contains("==> unpack base rootfs"), "{said}");
    for name in ["initrd.img", "vmlinuz"] {
        assert_eq!(
            fs::read(full.join(name)).unwrap(),
            fs::read(pxe.join(name)).unwrap(),
            "{name} differs"
        );
    }
    let manifest = |d: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(d.join("manifest.json")).unwrap()).unwrap()
    };
    assert_eq!(manifest(&pxe)["components"], manifest(&full)["components"]);

    // with the segment gone from the cache it is made again, the same
    for entry in fs::read_dir(&cache).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("initrd-base-")
        {
            fs::remove_file(entry.path()).unwrap();
        }
    }
    let again = dir.join("again");
    build(&def, &cache, &again, "pxe");
    assert_eq!(
        fs::read(full.join("initrd.img")).unwrap(),
        fs::read(again.join("initrd.img")).unwrap()
    );
}

#[test]
fn a_layout_the_kernel_cannot_lay_over_the_base_gets_a_whole_initrd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // the layout writes the file /usr/share/launcher/kubernetes.toml; here it is a directory
    let def = definition(
        dir,
        &base(&[
            ("usr/share/", b'5', "", b""),
            ("usr/share/launcher/", b'5', "", b""),
            ("usr/share/launcher/kubernetes.toml/", b'5', "", b""),
            (
                "usr/share/launcher/kubernetes.toml/old",
                b'0',
                "",
                b"in the way",
            ),
        ]),
    );
    let cache = dir.join("cache");
    let full = dir.join("full");
    build(&def, &cache, &full, "tar,pxe");
    let tree = rootfs(&full);
    assert_eq!(tree["usr/share/launcher/kubernetes.toml"].0, 'f');
    assert_eq!(segments(&full.join("initrd.img")), 1);
    assert_same_tree(&unpack_initrd(&full.join("initrd.img")), &tree);

    let pxe = dir.join("pxe");
    let built = build(&def, &cache, &pxe, "pxe");
    let said = String::from_utf8_lossy(&built.stderr);
    assert!(said.contains("==> unpack base rootfs"), "{said}");
    assert_eq!(
        fs::read(full.join("initrd.img")).unwrap(),
        fs::read(pxe.join("initrd.img")).unwrap()
    );
}

/// The project's own binaries go into the image without their debug sections, which a
/// development build has more of than code: firstboot in the image is the workspace's build with
/// its `.debug_*` sections gone, still runs, and the manifest records the original it came from.
#[test]
fn the_projects_binaries_go_in_without_debug_sections() {
    if !testkit::require(&["readelf"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let original_path =
        Path::new(env!("CARGO_BIN_EXE_launcher-build")).with_file_name("launcher-firstboot");
    let def = definition(dir, &base(&[]));
    let text = fs::read_to_string(&def).unwrap().replace(
        "binary = \"firstboot\"",
        &format!("binary = {:?}", original_path.display().to_string()),
    );
    fs::write(&def, text).unwrap();
    let out = dir.join("out");
    build(&def, &dir.join("cache"), &out, "tar");
    let original = fs::read(&original_path).unwrap();
    let in_image = rootfs(&out)["usr/bin/launcher-firstboot"].4.clone();
    let copy = dir.join("launcher-firstboot");
    fs::write(&copy, &in_image).unwrap();
    let sections = |path: &Path| -> String {
        let out = Command::new("readelf")
            .arg("-SW")
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        sections(&original_path).contains(".debug_line"),
        "the workspace's build has line tables"
    );
    let slim = sections(&copy);
    for debug in [".debug_line", ".debug_info", ".debug_str"] {
        assert!(!slim.contains(debug), "{debug}: {slim}");
    }
    assert!(slim.contains(".symtab"), "symbols are kept: {slim}");
    assert!(
        in_image.len() < original.len() / 2,
        "{} of {} bytes",
        in_image.len(),
        original.len()
    );
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    let ran = Command::new(&copy).arg("--help").output().unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let recorded = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["role"] == "firstboot")
        .expect("firstboot among the inputs");
    assert_eq!(
        recorded["sha256"],
        common::sha256_hex(&original),
        "{recorded}"
    );
}
