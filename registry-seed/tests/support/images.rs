//! Test images made from scratch: layer tars, configs, manifests and indexes in OCI and Docker
//! media types, written as OCI layouts, OCI archives and `docker save` archives.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::Digest as _;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A tar holding one small file, the same bytes every time.
pub fn layer_tar(file: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, file, content).unwrap();
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Which family of media types an image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Oci,
    Docker,
}

impl Family {
    pub fn index(self) -> &'static str {
        match self {
            Family::Oci => OCI_INDEX,
            Family::Docker => DOCKER_LIST,
        }
    }
    pub fn manifest(self) -> &'static str {
        match self {
            Family::Oci => OCI_MANIFEST,
            Family::Docker => DOCKER_MANIFEST,
        }
    }
    fn config(self) -> &'static str {
        match self {
            Family::Oci => "application/vnd.oci.image.config.v1+json",
            Family::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }
    fn layer_gzip(self) -> &'static str {
        match self {
            Family::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
            Family::Docker => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

/// An OCI layout being written in a directory.
#[derive(Debug)]
pub struct Layout {
    pub dir: PathBuf,
    /// Every blob written, in order.
    pub blobs: Vec<String>,
}

/// What a test image is made of.
#[derive(Debug, Clone)]
pub struct Built {
    /// The digest index.json points at (an index for multi-platform images).
    pub top: String,
    pub top_media_type: String,
    /// Platform manifests: (architecture, digest).
    pub manifests: Vec<(String, String)>,
    /// Every digest reachable from `top`, itself included.
    pub digests: Vec<String>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            blobs: Vec::new(),
        }
    }

    pub fn blob(&mut self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).unwrap();
        self.blobs.push(digest.clone());
        json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() })
    }

    /// One platform's image: a gzip'd layer holding `/hello-<arch>`, a config and a manifest.
    pub fn image(&mut self, family: Family, arch: &str) -> Value {
        let tar = layer_tar(
            &format!("hello-{arch}"),
            format!("hello from {arch}\n").as_bytes(),
        );
        let layer = gzip(&tar);
        let config = json!({
            "architecture": arch, "os": "linux",
            "config": { "Cmd": ["/hello"] },
            "rootfs": { "type": "layers", "diff_ids": [sha256(&tar)] },
        });
        let config = self.blob(family.config(), &serde_json::to_vec(&config).unwrap());
        let layer = self.blob(family.layer_gzip(), &layer);
        let manifest = json!({
            "schemaVersion": 2, "mediaType": family.manifest(),
            "config": config, "layers": [layer],
        });
        self.blob(
            family.manifest(),
            &serde_json::to_vec_pretty(&manifest).unwrap(),
        )
    }

    /// A two-platform index (amd64, arm64) over [`Layout::image`]s.
    pub fn index(&mut self, family: Family) -> Value {
        let mut manifests = Vec::new();
        for arch in ["amd64", "arm64"] {
            let mut d = self.image(family, arch);
            d["platform"] = json!({ "architecture": arch, "os": "linux" });
            manifests.push(d);
        }
        let index =
            json!({ "schemaVersion": 2, "mediaType": family.index(), "manifests": manifests });
        self.blob(family.index(), &serde_json::to_vec(&index).unwrap())
    }

    /// Writes index.json naming `tops` (descriptor, full image name).
    pub fn finish(&self, tops: &[(Value, &str)]) {
        let manifests: Vec<Value> = tops
            .iter()
            .map(|(d, name)| {
                let mut d = d.clone();
                let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
                d["annotations"] = json!({
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                });
                d
            })
            .collect();
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// Writes a layout holding one image named `name`: single-platform when `multi` is false, a
/// two-platform index otherwise.
pub fn build(dir: &Path, family: Family, multi: bool, name: &str) -> Built {
    let mut layout = Layout::new(dir);
    let top = if multi {
        layout.index(family)
    } else {
        layout.image(family, "amd64")
    };
    layout.finish(&[(top.clone(), name)]);
    let manifests = if multi {
        let ix: Value =
            serde_json::from_slice(&read_blob(dir, top["digest"].as_str().unwrap())).unwrap();
        ix["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let arch = m["platform"]["architecture"].as_str().unwrap().to_string();
                (arch, m["digest"].as_str().unwrap().to_string())
            })
            .collect()
    } else {
        vec![(
            "amd64".to_string(),
            top["digest"].as_str().unwrap().to_string(),
        )]
    };
    Built {
        top: top["digest"].as_str().unwrap().to_string(),
        top_media_type: top["mediaType"].as_str().unwrap().to_string(),
        manifests,
        digests: layout.blobs.clone(),
    }
}

/// The two-platform OCI index most tests serve, named `registry.k8s.io/coredns/coredns:v1.11.1`,
/// as a layout at `dir`.
pub fn coredns(dir: &Path) -> Built {
    build(
        dir,
        Family::Oci,
        true,
        "registry.k8s.io/coredns/coredns:v1.11.1",
    )
}

pub fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// A tar of the directory `dir` (an OCI archive when `dir` is a layout), entries sorted.
pub fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.mode(tar::HeaderMode::Deterministic);
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name().min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(dir).unwrap();
        if entry.file_type().is_file() {
            b.append_path_with_name(entry.path(), rel).unwrap();
        }
    }
    b.finish().unwrap();
}

/// Entries for a hand-made tar: (path, content), written raw so that tests can put any path in.
pub fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, content) in entries {
        let mut h = tar::Header::new_old();
        let name = path.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A `docker save` archive (classic layout: `<hex>.json`, `<id>/layer.tar`, manifest.json)
/// holding one single-layer image tagged `repo_tag`. Returns (config digest, layer digest).
pub fn docker_save(out: &Path, repo_tag: &str) -> (String, String) {
    let tar = layer_tar("hello-docker", b"hello from docker save\n");
    let layer_digest = sha256(&tar);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["/hello"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .unwrap();
    let config_digest = sha256(&config);
    let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    let layer_name = format!("{}/layer.tar", layer_digest.trim_start_matches("sha256:"));
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name, "RepoTags": [repo_tag], "Layers": [layer_name],
    }]))
    .unwrap();
    let bytes = raw_tar(&[
        (&config_name, &config),
        (&layer_name, &tar),
        ("manifest.json", &manifest),
    ]);
    std::fs::write(out, bytes).unwrap();
    (config_digest, layer_digest)
}
