//! Helpers for the builder's integration tests: small inputs made on the fly.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> String {
    sha256_hex(&fs::read(path).unwrap())
}

/// Writes a bundle dir of three tiny kubeadm/kubelet/kubectl scripts; returns the TOML table.
pub fn bundle_dir(dir: &Path) -> String {
    fs::create_dir_all(dir).unwrap();
    let mut sums = Vec::new();
    for name in ["kubeadm", "kubelet", "kubectl"] {
        let body = format!("#!/bin/sh\necho {name}: test bundle\n");
        fs::write(dir.join(name), &body).unwrap();
        sums.push(format!("{name} = \"{}\"", sha256_hex(body.as_bytes())));
    }
    format!(
        "[bundle]\nversion = \"v1.30.2\"\ndir = \"{}\"\nsha256 = {{ {} }}\n",
        dir.display(),
        sums.join(", ")
    )
}

/// A base tarball with just enough to build from: an os-release and a kernel file.
pub fn kernel_base() -> Vec<u8> {
    raw_tar(&[
        ("etc/", b'5', "", b""),
        ("etc/os-release", b'0', "", b"ID=test\n"),
        ("boot/", b'5', "", b""),
        ("boot/vmlinuz-6.1.0-test", b'0', "", b"not a kernel"),
    ])
}

/// `DIR/image.toml`: image `name` from the base tarball `base` (written beside it), trusting a
/// seed at 10.77.0.1, with a shell script as firstboot and `bundle` as its `[bundle]` table.
pub fn definition_with(dir: &Path, name: &str, base: &[u8], bundle: &str) -> PathBuf {
    fs::write(dir.join("base.tar"), base).unwrap();
    fs::write(dir.join("firstboot"), "#!/bin/sh\n").unwrap();
    let text = format!(
        "name = \"{name}\"\n[base.tarball]\npath = \"base.tar\"\nsha256 = \"{}\"\n\
         [firstboot]\nseed_url = \"https://10.77.0.1:8443\"\nntp = \"10.77.0.1\"\n\
         ca_pin = \"sha256:{}\"\nbinary = \"firstboot\"\n{bundle}",
        sha256_hex(base),
        "1".repeat(64),
    );
    let path = dir.join("image.toml");
    fs::write(&path, text).unwrap();
    path
}

/// One raw tar entry: `(name, type flag, link target, data)`, written without the checks the
/// tar crate applies, so that bad archives can be made.
pub fn raw_tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000755");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = *kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Appends a regular file, mode 0644 and time 0, so that equal inputs give equal archives.
fn append_file(b: &mut tar::Builder<impl std::io::Write>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    b.append_data(&mut h, name, data).unwrap();
}

/// A single-layer OCI image (one small file) for linux/amd64, wrapped in an index that also
/// names an arm64 manifest whose blobs are absent — the multi-platform archive containerd
/// cannot import as is. Returns the archive path and the image name.
pub fn multi_platform_oci(dir: &Path) -> (PathBuf, &'static str) {
    const NAME: &str = "docker.io/launcher/test:1";
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        append_file(&mut b, "hello.txt", b"preloaded by launcher-build\n");
        b.into_inner().unwrap()
    };
    let layer_d = sha256_hex(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_d}"]}}}}"#
    );
    let config_d = sha256_hex(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_d}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_d = sha256_hex(manifest.as_bytes());
    let absent = "a".repeat(64);
    let nested = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_d}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{absent}","size":500,"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        manifest.len()
    );
    let nested_d = sha256_hex(nested.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{nested_d}","size":{},"annotations":{{"io.containerd.image.name":"{NAME}","org.opencontainers.image.ref.name":"1"}}}}]}}"#,
        nested.len()
    );
    let path = dir.join("test-image.oci.tar");
    let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8]| append_file(&mut b, name, data);
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", index.as_bytes());
    add(&format!("blobs/sha256/{nested_d}"), nested.as_bytes());
    add(&format!("blobs/sha256/{manifest_d}"), manifest.as_bytes());
    add(&format!("blobs/sha256/{config_d}"), config.as_bytes());
    add(&format!("blobs/sha256/{layer_d}"), &layer);
    b.finish().unwrap();
    (path, NAME)
}

/// A single-platform OCI image, with knobs that make it bad in one way each.
pub struct OciParts {
    pub layer: Vec<u8>,
    pub arch: &'static str,
    /// Stored under the layer's digest instead of the layer.
    pub layer_bytes_in_archive: Option<Vec<u8>>,
    pub layer_size_in_manifest: Option<usize>,
    pub omit_layer: bool,
    pub omit_oci_layout: bool,
}

impl OciParts {
    pub fn new() -> OciParts {
        OciParts {
            layer: b"not really a tar, but a layer's bytes".to_vec(),
            arch: "amd64",
            layer_bytes_in_archive: None,
            layer_size_in_manifest: None,
            omit_layer: false,
            omit_oci_layout: false,
        }
    }
}

/// Writes `parts` as an OCI archive whose index names the manifest without a platform, so the
/// platform comes from the config.
pub fn oci_archive(dir: &Path, parts: &OciParts) -> PathBuf {
    let layer_d = sha256_hex(&parts.layer);
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{layer_d}"]}}}}"#,
        parts.arch
    );
    let config_d = sha256_hex(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_d}","size":{}}}]}}"#,
        config.len(),
        parts.layer_size_in_manifest.unwrap_or(parts.layer.len())
    );
    let manifest_d = sha256_hex(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_d}","size":{}}}]}}"#,
        manifest.len()
    );
    let path = dir.join("image.oci.tar");
    let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8]| append_file(&mut b, name, data);
    if !parts.omit_oci_layout {
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    }
    add("index.json", index.as_bytes());
    add(&format!("blobs/sha256/{manifest_d}"), manifest.as_bytes());
    add(&format!("blobs/sha256/{config_d}"), config.as_bytes());
    if !parts.omit_layer {
        let bytes = parts
            .layer_bytes_in_archive
            .as_ref()
            .unwrap_or(&parts.layer);
        add(&format!("blobs/sha256/{layer_d}"), bytes);
    }
    b.finish().unwrap();
    path
}
