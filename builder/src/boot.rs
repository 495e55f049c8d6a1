//! Bootable outputs: a unified kernel image (systemd's EFI stub + kernel + initrd + cmdline),
//! the FAT ESP, the ext4 root, the GPT disk and the hybrid ISO, all without loop devices or
//! mounts and with fixed identifiers.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::archive::{Kind, Node};
use crate::tools::{ToolError, run};

pub const EFI_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The Discoverable Partitions type of an x86-64 root.
const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("reading objdump's view of {0}: no sections found")]
    Stub(PathBuf),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BootError + 'a {
    move |source| BootError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Identifiers derived from the definition's hash, so one definition always gets the same ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub disk_uuid: String,
    pub esp_partuuid: String,
    pub root_partuuid: String,
    pub root_fs_uuid: String,
    pub hash_seed: String,
    pub fat_serial: String,
}

impl Ids {
    pub fn derive(definition_hash: &str) -> Ids {
        let uuid = |purpose: &str| {
            let d = Sha256::digest(format!("{definition_hash}/{purpose}"));
            let mut b: [u8; 16] = d[..16].try_into().unwrap();
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let h = hex::encode(b);
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        };
        Ids {
            disk_uuid: uuid("disk"),
            esp_partuuid: uuid("esp"),
            root_partuuid: uuid("root-part"),
            root_fs_uuid: uuid("root-fs"),
            hash_seed: uuid("ext4-hash-seed"),
            fat_serial: uuid("fat")[..8].to_string(),
        }
    }
}

/// What a unified kernel image is made of.
#[derive(Debug, Clone, Copy)]
pub struct Uki<'a> {
    /// Scratch directory for the sections' files.
    pub work: &'a Path,
    pub epoch: u64,
    pub osrel: &'a [u8],
    pub cmdline: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
}

/// The step the disk and the ISO share: the UKI `<work>/<name>.efi` inside the FAT ESP
/// `<work>/<name>-esp.img`, which is returned.
pub fn make_uki_esp(uki: &Uki, name: &str, ids: &Ids) -> Result<PathBuf, BootError> {
    let efi = uki.work.join(format!("{name}.efi"));
    let esp = uki.work.join(format!("{name}-esp.img"));
    make_uki(uki, &efi)?;
    make_esp(&efi, &esp, ids, uki.epoch)?;
    Ok(esp)
}

/// Builds a UKI at `out` from the stub and the given parts.
pub fn make_uki(uki: &Uki, out: &Path) -> Result<(), BootError> {
    let Uki {
        work,
        epoch,
        osrel,
        cmdline,
        kernel,
        initrd,
    } = *uki;
    let osrel_file = work.join("uki-osrel");
    let cmdline_file = work.join("uki-cmdline");
    fs::write(&osrel_file, osrel).map_err(io_err("writing", &osrel_file))?;
    fs::write(&cmdline_file, cmdline).map_err(io_err("writing", &cmdline_file))?;
    let headers = String::from_utf8_lossy(&run(Command::new("objdump").arg("-h").arg(EFI_STUB))?)
        .into_owned();
    let private = String::from_utf8_lossy(&run(Command::new("objdump").arg("-p").arg(EFI_STUB))?)
        .into_owned();
    let align = private
        .lines()
        .find_map(|l| {
            l.strip_prefix("SectionAlignment")
                .map(|v| u64::from_str_radix(v.trim(), 16))
        })
        .and_then(Result::ok)
        .unwrap_or(0x1000);
    let mut next = stub_end(&headers).ok_or_else(|| BootError::Stub(EFI_STUB.into()))?;
    let mut cmd = Command::new("objcopy");
    for (name, file) in [
        (".osrel", &osrel_file),
        (".cmdline", &cmdline_file),
        (".linux", &kernel.to_path_buf()),
        (".initrd", &initrd.to_path_buf()),
    ] {
        next = next.div_ceil(align) * align;
        let size = fs::metadata(file).map_err(io_err("reading", file))?.len();
        cmd.arg("--add-section")
            .arg(format!("{name}={}", file.display()));
        cmd.arg("--change-section-vma")
            .arg(format!("{name}={next:#x}"));
        next += size;
    }
    run(cmd.arg(EFI_STUB).arg(out))?;
    // objcopy stamps the PE header with the current time; make it the build's epoch.
    let mut image = fs::read(out).map_err(io_err("reading", out))?;
    set_pe_timestamp(&mut image, epoch as u32).ok_or_else(|| BootError::Stub(out.to_path_buf()))?;
    fs::write(out, &image).map_err(io_err("writing", out))?;
    Ok(())
}

/// Sets a PE image's COFF `TimeDateStamp` and recomputes its optional-header checksum.
pub fn set_pe_timestamp(image: &mut [u8], stamp: u32) -> Option<()> {
    let pe = u32::from_le_bytes(image.get(0x3c..0x40)?.try_into().ok()?) as usize;
    if image.get(pe..pe + 4)? != b"PE\0\0" {
        return None;
    }
    image
        .get_mut(pe + 8..pe + 12)?
        .copy_from_slice(&stamp.to_le_bytes());
    let sum_at = pe + 24 + 64;
    image.get_mut(sum_at..sum_at + 4)?.copy_from_slice(&[0; 4]);
    let mut sum: u64 = 0;
    for (i, chunk) in image.chunks(2).enumerate() {
        if i * 2 >= sum_at && i * 2 < sum_at + 4 {
            continue;
        }
        let word = u16::from_le_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]) as u64;
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = ((sum & 0xffff) + (sum >> 16)) as u32 + image.len() as u32;
    image
        .get_mut(sum_at..sum_at + 4)?
        .copy_from_slice(&sum.to_le_bytes());
    Some(())
}

/// The first free address after the stub's sections (`objdump -h`: size and VMA columns).
fn stub_end(headers: &str) -> Option<u64> {
    headers
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 7 && f[0].parse::<u32>().is_ok()).then_some(f)
        })
        .filter_map(|f| {
            Some(u64::from_str_radix(f[2], 16).ok()? + u64::from_str_radix(f[3], 16).ok()?)
        })
        .max()
}

/// A FAT ESP image holding `uki` as `EFI/BOOT/BOOTX64.EFI`, sized to fit.
pub fn make_esp(uki: &Path, out: &Path, ids: &Ids, epoch: u64) -> Result<u64, BootError> {
    let uki_size = fs::metadata(uki).map_err(io_err("reading", uki))?.len();
    let size = (uki_size + uki_size / 10 + 4 * MIB).div_ceil(MIB) * MIB;
    let _ = fs::remove_file(out);
    run(Command::new("mkfs.fat")
        .args(["-C", "--invariant", "-i", &ids.fat_serial, "-n", "ESP"])
        .arg(out)
        .arg((size / 1024).to_string()))?;
    set_mtime(uki, epoch)?;
    let image = out.display().to_string();
    run(Command::new("mmd")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["-i", &image, "::/EFI", "::/EFI/BOOT"]))?;
    run(Command::new("mcopy")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["-m", "-i", &image])
        .arg(uki)
        .arg("::/EFI/BOOT/BOOTX64.EFI"))?;
    Ok(size)
}

fn set_mtime(path: &Path, epoch: u64) -> Result<(), BootError> {
    let t = nix::sys::time::TimeSpec::new(epoch as i64, 0);
    nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| BootError::Io {
        what: "setting mtime of",
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// An ext4 image of `root` with fixed UUID, hash seed and timestamps; returns its size.
pub fn make_ext4(
    root: &Path,
    nodes: &[Node],
    tree_bytes: u64,
    free_mib: u64,
    out: &Path,
    ids: &Ids,
    epoch: u64,
) -> Result<u64, BootError> {
    let size = ((tree_bytes + tree_bytes / 5) / MIB + free_mib + 64) * MIB;
    let _ = fs::remove_file(out);
    let fake = epoch.to_string();
    run(Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", &fake)
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-L",
            "root",
            "-U",
            &ids.root_fs_uuid,
        ])
        .arg("-E")
        .arg(format!("hash_seed={},root_owner=0:0", ids.hash_seed))
        .arg("-d")
        .arg(root)
        .arg(out)
        .arg(format!("{}k", size / 1024)))?;
    let cmds = out.with_extension("debugfs");
    fs::write(&cmds, debugfs_times(nodes, epoch)).map_err(io_err("writing", &cmds))?;
    run(Command::new("debugfs")
        .env("E2FSPROGS_FAKE_TIME", &fake)
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(out))?;
    let _ = fs::remove_file(&cmds);
    Ok(size)
}

/// debugfs commands setting every inode's times to `epoch` (mke2fs copies atime and ctime from
/// the staging tree, which differ between builds).
pub fn debugfs_times(nodes: &[Node], epoch: u64) -> String {
    let mut out = String::new();
    let paths = ["/".to_string(), "/lost+found".to_string()]
        .into_iter()
        .chain(
            nodes
                .iter()
                .filter(|n| !n.rel.contains('"') && !n.rel.contains('\n'))
                .map(|n| format!("/{}", n.rel)),
        );
    for path in paths {
        for field in ["atime", "mtime", "ctime", "crtime"] {
            out.push_str(&format!("sif \"{path}\" {field} {epoch:#x}\n"));
        }
    }
    out
}

/// A GPT disk at `out`: ESP image then root image, 1 MiB aligned, sparse where zero.
pub fn make_disk(esp: &Path, root: &Path, out: &Path, ids: &Ids) -> Result<u64, BootError> {
    let esp_len = fs::metadata(esp).map_err(io_err("reading", esp))?.len();
    let root_len = fs::metadata(root).map_err(io_err("reading", root))?.len();
    let esp_start = MIB;
    let root_start = esp_start + esp_len.div_ceil(MIB) * MIB;
    let total = root_start + root_len.div_ceil(MIB) * MIB + MIB;
    let file = fs::File::create(out).map_err(io_err("creating", out))?;
    file.set_len(total).map_err(io_err("sizing", out))?;
    drop(file);
    let script = format!(
        "label: gpt\nlabel-id: {disk}\nunit: sectors\nfirst-lba: 2048\n\
         start={es}, size={esz}, type={ESP_TYPE}, uuid={eu}, name=\"ESP\"\n\
         start={rs}, size={rsz}, type={ROOT_TYPE}, uuid={ru}, name=\"root\"\n",
        disk = ids.disk_uuid,
        es = esp_start / SECTOR,
        esz = esp_len.div_ceil(SECTOR),
        eu = ids.esp_partuuid,
        rs = root_start / SECTOR,
        rsz = root_len.div_ceil(SECTOR),
        ru = ids.root_partuuid,
    );
    let mut child = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| ToolError::Spawn {
            program: "sfdisk".into(),
            source,
        })?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .map_err(io_err("writing partition table of", out))?;
    let res = child
        .wait_with_output()
        .map_err(io_err("partitioning", out))?;
    if !res.status.success() {
        return Err(ToolError::Failed {
            command: format!("sfdisk {}", out.display()),
            status: res.status.to_string(),
            stderr: String::from_utf8_lossy(&res.stderr).into_owned(),
        }
        .into());
    }
    copy_sparse(esp, out, esp_start)?;
    copy_sparse(root, out, root_start)?;
    Ok(total)
}

/// Copies `from` into `to` at `offset`, skipping blocks of zeros (the target is already zero).
fn copy_sparse(from: &Path, to: &Path, offset: u64) -> Result<(), BootError> {
    let mut src = fs::File::open(from).map_err(io_err("opening", from))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .open(to)
        .map_err(io_err("opening", to))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = offset;
    loop {
        let n = read_full(&mut src, &mut buf).map_err(io_err("reading", from))?;
        if n == 0 {
            break;
        }
        for chunk in buf[..n].chunks(4096) {
            if chunk.iter().any(|b| *b != 0) {
                dst.seek(SeekFrom::Start(pos))
                    .map_err(io_err("seeking in", to))?;
                dst.write_all(chunk).map_err(io_err("writing", to))?;
            }
            pos += chunk.len() as u64;
        }
    }
    dst.sync_all().map_err(io_err("syncing", to))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A hybrid ISO whose El Torito EFI image and appended GPT ESP are `esp`.
pub fn make_iso(
    work: &Path,
    esp: &Path,
    label: &str,
    out: &Path,
    epoch: u64,
) -> Result<(), BootError> {
    let tree = work.join("iso-tree");
    let boot = tree.join("boot");
    fs::create_dir_all(&boot).map_err(io_err("creating", &boot))?;
    let efi_img = boot.join("efi.img");
    fs::rename(esp, &efi_img).map_err(io_err("moving", esp))?;
    set_mtime(&efi_img, epoch)?;
    set_mtime(&boot, epoch)?;
    set_mtime(&tree, epoch)?;
    run(Command::new("xorriso")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(out)
        .args([
            "-V",
            label,
            "-e",
            "boot/efi.img",
            "-no-emul-boot",
            "-append_partition",
            "2",
            "0xef",
        ])
        .arg(&efi_img)
        .arg("-appended_part_as_gpt")
        .arg(&tree))?;
    Ok(())
}

/// The kernel command line of each boot: `pxe` (given by whoever boots it), `disk`, `live` (ISO).
/// `args` are the definition's; the disk's root is the partition `root_partuuid`.
pub fn cmdlines(args: &[&str], root_partuuid: &str) -> BTreeMap<String, String> {
    let common = args.join(" ");
    let join = |s: String| s.trim().to_string();
    BTreeMap::from([
        ("pxe".to_string(), join(common.clone())),
        ("live".to_string(), join(common.clone())),
        (
            "disk".to_string(),
            join(format!(
                "root=PARTUUID={root_partuuid} rw rootwait {common}"
            )),
        ),
    ])
}

/// The ISO's volume label: the image name in ISO 9660's characters, at most 32 of them.
pub fn iso_label(name: &str) -> String {
    let label: String = name
        .to_ascii_uppercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(32)
        .collect();
    if label.is_empty() {
        "LAUNCHER".into()
    } else {
        label
    }
}

/// The kernel and its Debian initrd under `/boot` of the staged tree (newest version).
pub fn find_kernel(root: &Path, nodes: &[Node]) -> Option<(PathBuf, Option<PathBuf>)> {
    let mut kernels: Vec<&str> = nodes
        .iter()
        .filter(|n| matches!(n.kind, Kind::File { .. }))
        .filter_map(|n| n.rel.strip_prefix("boot/vmlinuz-"))
        .collect();
    kernels.sort_by(|a, b| version_cmp(a, b));
    let version = kernels.last()?;
    let initrd = root.join(format!("boot/initrd.img-{version}"));
    Some((
        root.join(format!("boot/vmlinuz-{version}")),
        initrd.is_file().then_some(initrd),
    ))
}

/// Compares versions by their numeric runs, so 6.1.0-10 sorts after 6.1.0-9.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_uuids() {
        let a = Ids::derive("abc");
        assert_eq!(a, Ids::derive("abc"));
        assert_ne!(a.root_fs_uuid, Ids::derive("abd").root_fs_uuid);
        assert_eq!(a.root_fs_uuid.len(), 36);
        assert_eq!(&a.root_fs_uuid[14..15], "4");
        assert_eq!(a.fat_serial.len(), 8);
    }

    #[test]
    fn stub_end_reads_objdump_sections() {
        let h = "Idx Name Size VMA LMA File off Algn\n  0 .text 00001000 0000000000401000 0000000000401000 00000400 2**4\n                  CONTENTS\n  1 .data 00000200 0000000000403000 0000000000403000 00001400 2**4\n";
        assert_eq!(stub_end(h), Some(0x403200));
    }

    #[test]
    fn pe_timestamp_is_set_and_checksum_matches_the_stub() {
        let Ok(stub) = fs::read(EFI_STUB) else { return };
        let pe = u32::from_le_bytes(stub[0x3c..0x40].try_into().unwrap()) as usize;
        let stamp = u32::from_le_bytes(stub[pe + 8..pe + 12].try_into().unwrap());
        let mut copy = stub.clone();
        set_pe_timestamp(&mut copy, stamp).unwrap();
        let sum = |b: &[u8]| u32::from_le_bytes(b[pe + 88..pe + 92].try_into().unwrap());
        if sum(&stub) != 0 {
            assert_eq!(
                sum(&copy),
                sum(&stub),
                "recomputed checksum differs from the linker's"
            );
        }
        set_pe_timestamp(&mut copy, 1_704_067_200).unwrap();
        assert_eq!(&copy[pe + 8..pe + 12], &1_704_067_200u32.to_le_bytes());
    }

    #[test]
    fn each_boot_gets_its_command_line() {
        let c = cmdlines(&["console=ttyS0", "quiet"], "1234");
        assert_eq!(c["pxe"], "console=ttyS0 quiet");
        assert_eq!(c["live"], "console=ttyS0 quiet");
        assert_eq!(
            c["disk"],
            "root=PARTUUID=1234 rw rootwait console=ttyS0 quiet"
        );
        assert_eq!(cmdlines(&[], "1")["disk"], "root=PARTUUID=1 rw rootwait");
        assert_eq!(cmdlines(&[], "1")["pxe"], "");
    }

    #[test]
    fn iso_labels_keep_iso_9660_characters() {
        let cases = [
            ("debian-bookworm", "DEBIAN_BOOKWORM"),
            ("a.b c", "A_B_C"),
            ("", "LAUNCHER"),
            (&"x".repeat(40), &"X".repeat(32)),
        ];
        for (name, want) in cases {
            assert_eq!(iso_label(name), want, "{name}");
        }
    }

    #[test]
    fn versions_sort_numerically() {
        assert!(version_cmp("6.1.0-10-cloud-amd64", "6.1.0-9-cloud-amd64").is_gt());
    }
}
