//! Media types an image may use, and the parts of manifests that are read (never rewritten).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::refs::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Manifests are small documents; anything larger is refused (the distribution registry's limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

const CONFIGS: &[&str] = &[OCI_CONFIG, DOCKER_CONFIG, OCI_EMPTY];
const LAYERS: &[&str] = &[
    OCI_LAYER,
    OCI_LAYER_GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    // build attestations that BuildKit attaches to multi-platform images
    "application/vnd.in-toto+json",
    OCI_EMPTY,
];

/// What a media type makes a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
    Config,
    Layer,
}

/// The kind of a top-level or index child descriptor (must be a manifest or an index).
pub fn manifest_kind(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        _ => None,
    }
}

pub fn is_config(media_type: &str) -> bool {
    CONFIGS.contains(&media_type)
}

pub fn is_layer(media_type: &str) -> bool {
    LAYERS.contains(&media_type)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`, e.g. `linux/amd64`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?;
        let arch = parts.next().filter(|p| !p.is_empty())?;
        let variant = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return None;
        }
        Some(Platform {
            architecture: arch.to_string(),
            os: os.to_string(),
            variant,
            os_version: None,
        })
    }

    /// Whether an image for `self` runs on `wanted`: same os and architecture, and the same
    /// variant when both name one.
    pub fn matches(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && match (&self.variant, &wanted.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index or manifest list (other fields are kept in the stored bytes, not here).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// An image manifest, OCI or Docker v2.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The platform fields of an image config.
#[derive(Debug, Deserialize)]
pub struct ConfigPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// Why a manifest document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {digest} is not valid JSON for {media_type}: {source}")]
    Json {
        digest: Digest,
        media_type: String,
        source: serde_json::Error,
    },
    #[error("manifest {digest} says mediaType {inner} but is referenced as {outer}")]
    MediaTypeMismatch {
        digest: Digest,
        inner: String,
        outer: String,
    },
    #[error("manifest {digest} has unsupported schemaVersion {version}")]
    SchemaVersion { digest: Digest, version: u32 },
    #[error("unknown media type {media_type:?} for {digest} (referenced by {parent})")]
    UnknownMediaType {
        media_type: String,
        digest: Digest,
        parent: String,
    },
}

/// The descriptors a manifest or index points at, checked for known media types.
pub fn children(
    digest: &Digest,
    media_type: &str,
    bytes: &[u8],
) -> Result<Vec<Descriptor>, ManifestError> {
    let json_err = |source| ManifestError::Json {
        digest: digest.clone(),
        media_type: media_type.to_string(),
        source,
    };
    let (version, inner, kids) = match manifest_kind(media_type) {
        Some(Kind::Index) => {
            let ix: Index = serde_json::from_slice(bytes).map_err(json_err)?;
            for d in &ix.manifests {
                check_known(d, digest, manifest_kind(&d.media_type).is_some())?;
            }
            (ix.schema_version, ix.media_type, ix.manifests)
        }
        _ => {
            let m: Manifest = serde_json::from_slice(bytes).map_err(json_err)?;
            check_known(&m.config, digest, is_config(&m.config.media_type))?;
            for d in &m.layers {
                check_known(d, digest, is_layer(&d.media_type))?;
            }
            let mut kids = vec![m.config];
            kids.extend(m.layers);
            (m.schema_version, m.media_type, kids)
        }
    };
    if version != 2 {
        return Err(ManifestError::SchemaVersion {
            digest: digest.clone(),
            version,
        });
    }
    if let Some(inner) = inner.filter(|i| i != media_type) {
        return Err(ManifestError::MediaTypeMismatch {
            digest: digest.clone(),
            inner,
            outer: media_type.to_string(),
        });
    }
    Ok(kids)
}

fn check_known(d: &Descriptor, parent: &Digest, known: bool) -> Result<(), ManifestError> {
    if known {
        return Ok(());
    }
    Err(ManifestError::UnknownMediaType {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        parent: parent.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(arm.variant.as_deref(), Some("v8"));
        assert!(amd64.matches(&amd64));
        assert!(!arm.matches(&amd64));
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("linux/arm/v7/x").is_none());
    }

    #[test]
    fn children_refuse_unknown_layer_types() {
        let d = Digest::of(b"m");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"{OCI_CONFIG}","digest":"{d}","size":1}},
            "layers":[{{"mediaType":"text/plain","digest":"{d}","size":1}}]}}"#
        );
        let err = children(&d, OCI_MANIFEST, body.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown media type \"text/plain\""),
            "{err}"
        );
        let err = children(&d, DOCKER_MANIFEST, body.as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::UnknownMediaType { .. }));
    }
}
