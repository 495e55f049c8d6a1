//! Image definitions: parsed in two stages (raw serde structs, then validated domain types), with
//! errors that point at `FILE:LINE:COL` and the field.

mod raw;
pub mod values;

use std::ops::Range;
use std::path::{Path, PathBuf};

use cluster::pki::CaPin;
use cluster::spec::{KubeVersion, NtpServer, SeedUrl};
use sha2::{Digest, Sha256};

use raw::{RawBundle, RawDefinition, RawOverlay, S};
pub use values::{ConfigWord, DebianName, ImagePath, KernelArg, Mode, Sha256Hex, ValueError};

/// Why a definition was refused.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("reading image definition {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: field {field}: {message}")]
    Invalid {
        file: String,
        line: usize,
        col: usize,
        field: String,
        message: String,
    },
}

/// A validated image definition. Paths are resolved against the definition's directory.
#[derive(Debug, Clone)]
pub struct Definition {
    pub file: PathBuf,
    /// sha256 of the definition file's bytes.
    pub hash: Sha256Hex,
    pub name: ConfigWord,
    pub source_date_epoch: Option<u64>,
    pub base: Base,
    pub cmdline: Vec<KernelArg>,
    pub bundle: Bundle,
    pub images: Vec<ImageInput>,
    pub firstboot: Firstboot,
    pub overlay: Option<Overlay>,
    /// Free space left in the disk image's root filesystem.
    pub disk_free_mib: u64,
}

#[derive(Debug, Clone)]
pub enum Base {
    Tarball { path: PathBuf, sha256: Sha256Hex },
    Mmdebstrap(Mmdebstrap),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mmdebstrap {
    pub suite: DebianName,
    pub variant: DebianName,
    pub mirror: ConfigWord,
    pub packages: Vec<DebianName>,
    pub dpkg_options: Vec<ConfigWord>,
}

/// Where kubeadm, kubelet and kubectl come from.
#[derive(Debug, Clone)]
pub enum BundleSource {
    /// The workspace's `kubeadm-standin`/`kubelet-standin` and a kubectl from the build machine.
    Standins {
        kubectl: PathBuf,
        kubectl_sha256: Option<Sha256Hex>,
    },
    Dir {
        dir: PathBuf,
        sums: BundleSums,
    },
    /// A Kubernetes release archive as published: its binaries go into the image and its
    /// control-plane image archives (server archives only) into `kubernetes-images.tar`.
    Release {
        kind: ReleaseKind,
        archive: Pinned,
    },
}

/// Which Kubernetes release archive: where its binaries are, and whether it carries images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseKind {
    /// `kubernetes-server-linux-amd64.tar.gz`: `kubernetes/server/bin/`, with image archives.
    Server,
    /// `kubernetes-node-linux-amd64.tar.gz`: `kubernetes/node/bin/`, binaries only.
    Node,
}

impl ReleaseKind {
    pub fn field(self) -> &'static str {
        match self {
            ReleaseKind::Server => "server",
            ReleaseKind::Node => "node",
        }
    }
}

/// A file named in the definition with the sha256 it must have.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub path: PathBuf,
    pub sha256: Sha256Hex,
}

#[derive(Debug, Clone)]
pub struct BundleSums {
    pub kubeadm: Sha256Hex,
    pub kubelet: Sha256Hex,
    pub kubectl: Sha256Hex,
}

#[derive(Debug, Clone)]
pub struct Bundle {
    pub version: KubeVersion,
    pub source: BundleSource,
    /// The cri-tools archive: `crictl` into `/usr/bin` (kubeadm's preflight asks for it).
    pub crictl: Option<Pinned>,
    /// The CNI plugins archive: every plugin into `/opt/cni/bin`.
    pub cni: Option<Pinned>,
}

#[derive(Debug, Clone)]
pub struct ImageInput {
    pub archive: PathBuf,
    pub sha256: Sha256Hex,
    /// File name under `/usr/share/launcher/images/`.
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Firstboot {
    pub seed_url: SeedUrl,
    pub ntp: NtpServer,
    pub ca_pin: CaPin,
    /// `None`: `launcher-firstboot` next to `launcher-build`.
    pub binary: Option<PathBuf>,
    /// `None`: the unit shipped with firstboot (or the builder's copy).
    pub unit: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Overlay {
    pub dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub file_mode: Mode,
    pub dir_mode: Mode,
    pub entries: Vec<OverlayEntry>,
}

#[derive(Debug, Clone)]
pub struct OverlayEntry {
    pub path: ImagePath,
    pub mode: Option<Mode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Reads and validates the definition at `path`.
pub fn load(path: &Path) -> Result<Definition, DefinitionError> {
    let text = std::fs::read_to_string(path).map_err(|source| DefinitionError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates definition `text` read from `file` (used for messages and relative paths).
pub fn parse(text: &str, file: &Path) -> Result<Definition, DefinitionError> {
    let ctx = Ctx { text, file };
    let raw: RawDefinition = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
    ctx.validate(raw)
}

/// What a stage-two check needs to point at the definition.
struct Ctx<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Ctx<'_> {
    fn at(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> DefinitionError {
        let (line, col) = cluster::text::line_col(self.text, span.start);
        DefinitionError::Invalid {
            file: self.file.display().to_string(),
            line,
            col,
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> DefinitionError {
        let mut span = e.span().unwrap_or(0..0);
        let message = e.message().to_string();
        let field = quoted_field(&message).unwrap_or_else(|| key_at(self.text, span.start));
        if message.starts_with("unknown field") {
            // Point at the key itself rather than at the table holding it.
            if let Some(at) = key_offset(self.text, span.start, &field) {
                span = at..at + field.len();
            }
        }
        self.at(span, &field, message)
    }

    fn value<T>(
        &self,
        v: &S<String>,
        field: &str,
        f: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Result<T, DefinitionError> {
        f(v.get_ref()).map_err(|e| self.at(v.span(), field, e.0))
    }

    /// A value of one of `cluster`'s types, refused with that type's own message.
    fn typed<T>(&self, v: &S<String>, field: &str) -> Result<T, DefinitionError>
    where
        T: std::str::FromStr<Err = cluster::spec::ValueError>,
    {
        v.get_ref()
            .parse()
            .map_err(|e: cluster::spec::ValueError| self.at(v.span(), field, e.0))
    }

    fn path(&self, v: &S<String>, field: &str) -> Result<PathBuf, DefinitionError> {
        if v.get_ref().is_empty() {
            return Err(self.at(v.span(), field, "empty path"));
        }
        let dir = self.file.parent().unwrap_or(Path::new("."));
        Ok(dir.join(v.get_ref()))
    }

    fn validate(&self, raw: RawDefinition) -> Result<Definition, DefinitionError> {
        let name = self.value(&raw.name, "name", |s| ConfigWord::parse(s, "image name"))?;
        if let Some(p) = &raw.platform
            && p.get_ref() != "linux/amd64"
        {
            return Err(self.at(p.span(), "platform", "only \"linux/amd64\" is supported"));
        }
        let source_date_epoch = match &raw.source_date_epoch {
            Some(e) if *e.get_ref() < 0 => {
                return Err(self.at(e.span(), "source_date_epoch", "must not be negative"));
            }
            Some(e) => Some(*e.get_ref() as u64),
            None => None,
        };
        let cmdline = raw
            .kernel
            .cmdline
            .iter()
            .map(|a| self.value(a, "kernel.cmdline", KernelArg::parse))
            .collect::<Result<_, _>>()?;
        let images = raw
            .images
            .iter()
            .map(|i| self.image(i))
            .collect::<Result<Vec<_>, _>>()?;
        self.unique_image_names(&raw.images, &images)?;
        Ok(Definition {
            file: self.file.to_path_buf(),
            hash: Sha256Hex::from_digest(&Sha256::digest(self.text.as_bytes())),
            name,
            source_date_epoch,
            base: self.base(&raw.base)?,
            cmdline,
            bundle: self.bundle(&raw.bundle)?,
            images,
            firstboot: self.firstboot(&raw.firstboot)?,
            overlay: raw.overlay.as_ref().map(|o| self.overlay(o)).transpose()?,
            disk_free_mib: raw.disk.free_mib.unwrap_or(512),
        })
    }

    fn base(&self, raw: &raw::RawBase) -> Result<Base, DefinitionError> {
        match (&raw.tarball, &raw.mmdebstrap) {
            (Some(t), None) => Ok(Base::Tarball {
                path: self.path(&t.path, "base.tarball.path")?,
                sha256: self.value(&t.sha256, "base.tarball.sha256", Sha256Hex::parse)?,
            }),
            (None, Some(m)) => {
                let names = |list: &[S<String>], field: &str| {
                    list.iter()
                        .map(|p| self.value(p, field, DebianName::parse))
                        .collect::<Result<Vec<_>, _>>()
                };
                let mut packages = names(&m.packages, "base.mmdebstrap.packages")?;
                packages.sort();
                packages.dedup();
                Ok(Base::Mmdebstrap(Mmdebstrap {
                    suite: self.value(&m.suite, "base.mmdebstrap.suite", DebianName::parse)?,
                    variant: self.value(
                        &m.variant,
                        "base.mmdebstrap.variant",
                        DebianName::parse,
                    )?,
                    mirror: self.value(&m.mirror, "base.mmdebstrap.mirror", |s| {
                        ConfigWord::parse(s, "mirror URL")
                    })?,
                    packages,
                    dpkg_options: m
                        .dpkg_options
                        .iter()
                        .map(|o| {
                            self.value(o, "base.mmdebstrap.dpkg_options", |s| {
                                ConfigWord::parse(s, "dpkg option")
                            })
                        })
                        .collect::<Result<_, _>>()?,
                }))
            }
            _ => Err(self.at(
                table_span(self.text, "base"),
                "base",
                "give exactly one of base.tarball and base.mmdebstrap",
            )),
        }
    }

    fn bundle(&self, raw: &RawBundle) -> Result<Bundle, DefinitionError> {
        let b = raw;
        let span = || table_span(self.text, "bundle");
        let version = self.typed(&b.version, "bundle.version")?;
        let sums = || -> Result<BundleSums, DefinitionError> {
            let Some(s) = &b.sha256 else {
                return Err(self.at(
                    span(),
                    "bundle.sha256",
                    "a dir bundle pins kubeadm, kubelet and kubectl by sha256",
                ));
            };
            Ok(BundleSums {
                kubeadm: self.value(&s.kubeadm, "bundle.sha256.kubeadm", Sha256Hex::parse)?,
                kubelet: self.value(&s.kubelet, "bundle.sha256.kubelet", Sha256Hex::parse)?,
                kubectl: self.value(&s.kubectl, "bundle.sha256.kubectl", Sha256Hex::parse)?,
            })
        };
        let release = |raw: &raw::RawArchive, kind: ReleaseKind| -> Result<_, DefinitionError> {
            Ok(BundleSource::Release {
                kind,
                archive: self.archive(raw, &format!("bundle.{}", kind.field()))?,
            })
        };
        let sources = [
            b.standins == Some(true),
            b.dir.is_some(),
            b.server.is_some(),
            b.node.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(self.at(
                span(),
                "bundle",
                "give exactly one of standins = true, dir, server and node",
            ));
        }
        let source = if let Some(dir) = &b.dir {
            BundleSource::Dir {
                dir: self.path(dir, "bundle.dir")?,
                sums: sums()?,
            }
        } else if let Some(server) = &b.server {
            release(server, ReleaseKind::Server)?
        } else if let Some(node) = &b.node {
            release(node, ReleaseKind::Node)?
        } else {
            let Some(kubectl) = &b.kubectl else {
                return Err(self.at(
                    span(),
                    "bundle.kubectl",
                    "stand-ins need the path of a real kubectl",
                ));
            };
            BundleSource::Standins {
                kubectl: self.path(kubectl, "bundle.kubectl")?,
                kubectl_sha256: b
                    .kubectl_sha256
                    .as_ref()
                    .map(|s| self.value(s, "bundle.kubectl_sha256", Sha256Hex::parse))
                    .transpose()?,
            }
        };
        let crictl = b
            .crictl
            .as_ref()
            .map(|a| self.archive(a, "bundle.crictl"))
            .transpose()?;
        let cni = b
            .cni
            .as_ref()
            .map(|a| self.archive(a, "bundle.cni"))
            .transpose()?;
        Ok(Bundle {
            version,
            source,
            crictl,
            cni,
        })
    }

    fn archive(&self, raw: &raw::RawArchive, field: &str) -> Result<Pinned, DefinitionError> {
        Ok(Pinned {
            path: self.path(&raw.archive, &format!("{field}.archive"))?,
            sha256: self.value(&raw.sha256, &format!("{field}.sha256"), Sha256Hex::parse)?,
        })
    }

    fn image(&self, raw: &raw::RawImage) -> Result<ImageInput, DefinitionError> {
        let archive = self.path(&raw.archive, "images.archive")?;
        let name = match &raw.name {
            Some(n) => self.value(n, "images.name", file_name)?,
            None => self.value(&raw.archive, "images.archive", |s| {
                file_name(
                    Path::new(s)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or(""),
                )
            })?,
        };
        Ok(ImageInput {
            archive,
            sha256: self.value(&raw.sha256, "images.sha256", Sha256Hex::parse)?,
            name,
        })
    }

    fn unique_image_names(
        &self,
        raw: &[raw::RawImage],
        images: &[ImageInput],
    ) -> Result<(), DefinitionError> {
        for (i, image) in images.iter().enumerate() {
            if images[..i].iter().any(|o| o.name == image.name) {
                let span = raw[i]
                    .name
                    .as_ref()
                    .map_or(raw[i].archive.span(), |n| n.span());
                return Err(self.at(
                    span,
                    "images.name",
                    format!("two images are named {:?}", image.name),
                ));
            }
        }
        Ok(())
    }

    fn firstboot(&self, raw: &raw::RawFirstboot) -> Result<Firstboot, DefinitionError> {
        Ok(Firstboot {
            seed_url: self.typed(&raw.seed_url, "firstboot.seed_url")?,
            ntp: self.typed(&raw.ntp, "firstboot.ntp")?,
            ca_pin: self.typed(&raw.ca_pin, "firstboot.ca_pin")?,
            binary: raw
                .binary
                .as_ref()
                .map(|b| self.path(b, "firstboot.binary"))
                .transpose()?,
            unit: raw
                .unit
                .as_ref()
                .map(|u| self.path(u, "firstboot.unit"))
                .transpose()?,
        })
    }

    fn overlay(&self, raw: &RawOverlay) -> Result<Overlay, DefinitionError> {
        let mode = |m: &Option<S<String>>, field: &str, default: u32| {
            m.as_ref()
                .map_or(Ok(Mode(default)), |m| self.value(m, field, Mode::parse))
        };
        let entries = raw
            .entries
            .iter()
            .map(|e| {
                Ok(OverlayEntry {
                    path: self.value(&e.path, "overlay.entries.path", ImagePath::parse)?,
                    mode: e
                        .mode
                        .as_ref()
                        .map(|m| self.value(m, "overlay.entries.mode", Mode::parse))
                        .transpose()?,
                    uid: e.uid,
                    gid: e.gid,
                })
            })
            .collect::<Result<_, DefinitionError>>()?;
        Ok(Overlay {
            dir: self.path(&raw.dir, "overlay.dir")?,
            uid: raw.uid.unwrap_or(0),
            gid: raw.gid.unwrap_or(0),
            file_mode: mode(&raw.file_mode, "overlay.file_mode", 0o644)?,
            dir_mode: mode(&raw.dir_mode, "overlay.dir_mode", 0o755)?,
            entries,
        })
    }
}

/// A plain file name: no `/`, not `.` or `..`, printable.
fn file_name(s: &str) -> Result<String, ValueError> {
    if s.is_empty()
        || s == "."
        || s == ".."
        || s.contains('/')
        || !s.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(ValueError(format!("{s:?} is not a plain file name")));
    }
    Ok(s.to_string())
}

/// Where table `name` starts: its `[name]` or `[name.…]` header, or a `name = {` line.
fn table_span(text: &str, name: &str) -> Range<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let header = t.strip_prefix('[').is_some_and(|h| {
            h.strip_prefix(name)
                .is_some_and(|r| r.starts_with(']') || r.starts_with('.'))
        });
        let inline = t
            .strip_prefix(name)
            .is_some_and(|r| r.trim_start().starts_with('='));
        if header || inline {
            let start = offset + (line.len() - t.len());
            return start..start + 1;
        }
        offset += line.len();
    }
    0..0
}

/// The field named in a serde message such as "unknown field `x`, expected …".
fn quoted_field(message: &str) -> Option<String> {
    let rest = message.split_once("field `")?.1;
    Some(rest.split_once('`')?.0.to_string())
}

/// The first offset at or after `from` where a line (or inline table item) sets `key`; `None`
/// for an empty key (`"" = …`), which no search could step past.
fn key_offset(text: &str, from: usize, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let rest = &text[from.min(text.len())..];
    let mut i = 0;
    while let Some(pos) = rest[i..].find(key) {
        let at = i + pos;
        let before = rest[..at].chars().next_back();
        let after = rest[at + key.len()..].trim_start_matches([' ', '\t']);
        if before.is_none_or(|c| c == '\n' || c == ' ' || c == '{' || c == ',' || c == '\t')
            && after.starts_with('=')
        {
            return Some(from + at);
        }
        i = at + key.len();
    }
    None
}

/// The key written on the line holding `offset` (`key = …` or `[table]`).
fn key_at(text: &str, offset: usize) -> String {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("").trim();
    let key = match line.split_once('=') {
        Some((k, _)) => k,
        None => line.trim_matches(|c| c == '[' || c == ']'),
    };
    key.trim().to_string()
}

#[cfg(test)]
mod tests;
