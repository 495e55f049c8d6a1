//! What a cluster pulls, and which of it the seed's registry lacks: `launcher-seed images
//! required`. The list is `cluster::kubeadm::required_images` (kubeadm's own list for the
//! cluster's version and skipped add-ons); a reference is present when the store has its
//! repository and tag.

use cluster::spec::ClusterSpec;
use serde::Serialize;

use super::refs::{ImageName, Reference};
use super::store::{Store, StoreError};

/// One image the cluster pulls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequiredImage {
    /// As the hosts pull it: `<registry>/<repository>:<tag>`.
    pub reference: String,
    /// Whether the seed's registry has it; `None` when no registry was looked at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// The whole answer, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Required {
    pub cluster: String,
    pub kubernetes_version: String,
    pub images: Vec<RequiredImage>,
    /// The references the registry lacks (empty without a registry).
    pub missing: Vec<String>,
}

/// Whether `store` serves `reference` (its registry host is dropped, as the store names
/// images without one).
pub fn present(store: &Store, reference: &str) -> Result<bool, StoreError> {
    let Ok(name) = ImageName::parse(reference) else {
        return Ok(false);
    };
    let Some(tag) = name.tag else {
        return Ok(false);
    };
    Ok(store.resolve(&name.repo, &Reference::Tag(tag))?.is_some())
}

/// The images of `spec`, each checked against `store` when one is given.
pub fn required(spec: &ClusterSpec, store: Option<&Store>) -> Result<Required, StoreError> {
    let mut images = Vec::new();
    let mut missing = Vec::new();
    for reference in cluster::kubeadm::required_images(spec) {
        let present = store.map(|s| present(s, &reference)).transpose()?;
        if present == Some(false) {
            missing.push(reference.clone());
        }
        images.push(RequiredImage { reference, present });
    }
    Ok(Required {
        cluster: spec.name.to_string(),
        kubernetes_version: spec.kubernetes_version.to_string(),
        images,
        missing,
    })
}

/// The table people read: one reference per line, with `present`/`MISSING` when a registry was
/// looked at.
pub fn render_table(required: &Required) -> String {
    let checked = required.images.iter().any(|i| i.present.is_some());
    let width = required
        .images
        .iter()
        .map(|i| i.reference.len())
        .chain(["IMAGE".len()])
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    if checked {
        out.push_str(&format!("{:<width$}  IN THE SEED'S REGISTRY\n", "IMAGE"));
    } else {
        out.push_str("IMAGE\n");
    }
    for image in &required.images {
        match image.present {
            Some(true) => out.push_str(&format!("{:<width$}  present\n", image.reference)),
            Some(false) => out.push_str(&format!("{:<width$}  MISSING\n", image.reference)),
            None => out.push_str(&format!("{}\n", image.reference)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::fixtures::ClusterFile;

    fn spec(extra: &[&str]) -> ClusterSpec {
        let text = ClusterFile {
            extra_cluster: extra.iter().map(|l| l.to_string()).collect(),
            ..ClusterFile::demo()
        }
        .render();
        ClusterSpec::parse("demo.toml", &text).unwrap().spec
    }

    #[test]
    fn without_a_registry_the_list_is_kubeadms_and_nothing_is_missing() {
        let r = required(&spec(&[]), None).unwrap();
        assert_eq!(r.kubernetes_version, "v1.33.4");
        assert!(r.missing.is_empty());
        assert_eq!(
            render_table(&r),
            "IMAGE\n\
             10.77.0.1:8443/kube-apiserver:v1.33.4\n\
             10.77.0.1:8443/kube-controller-manager:v1.33.4\n\
             10.77.0.1:8443/kube-scheduler:v1.33.4\n\
             10.77.0.1:8443/kube-proxy:v1.33.4\n\
             10.77.0.1:8443/coredns/coredns:v1.12.0\n\
             10.77.0.1:8443/pause:3.10\n"
        );
        let skipped = required(&spec(&["skip_phases = [\"addon\"]"]), None).unwrap();
        assert_eq!(skipped.images.len(), 4);
    }
}
