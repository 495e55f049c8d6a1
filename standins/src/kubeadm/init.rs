//! `kubeadm init`'s on-disk phases in kubeadm's order: preflight, certs, control-plane. Every
//! check (preflight, the config's meaning, the API server's flags) runs before the first
//! write, so a refused init leaves the host as it was. `skipPhases` is honoured.

use super::config::{ConfigError, InitConfig};
use super::{manifests, pki, preflight};
use crate::Root;
use crate::docs::Doc;

/// Why `kubeadm init` stopped.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("error execution phase preflight")]
    Preflight(#[from] preflight::PreflightError),
    #[error("error execution phase control-plane")]
    Manifests(#[from] manifests::ManifestError),
    #[error("error execution phase certs")]
    Pki(#[from] pki::PkiError),
}

/// An init whose checks passed, nothing written yet.
#[derive(Debug)]
pub struct Prepared {
    pub config: InitConfig,
    /// What kubeadm would print as `[WARNING …]` and go on.
    pub warnings: Vec<String>,
    manifests: Vec<(String, String)>,
}

/// What [`Prepared::apply`] wrote.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Applied {
    pub made: Vec<String>,
    pub manifests: Vec<String>,
}

/// Reads the config and runs every check: preflight, the certificates to make (`missing`:
/// what kubeadm finds absent, from [`crate::certs`]) and their CAs, the manifests.
pub fn prepare(root: &Root, docs: &[Doc], missing: &[String]) -> Result<Prepared, InitError> {
    let config = InitConfig::from_docs(docs)?;
    let mut warnings = Vec::new();
    if !config.skips("preflight") {
        println!("[preflight] Running pre-flight checks");
        warnings.extend(preflight::run(root, &config)?);
    }
    if !config.skips("certs") {
        pki::check(root, &config, missing)?;
        warnings.extend(pki::api_server_alt_names(&config).1);
    }
    let manifests = if config.skips("control-plane") {
        Vec::new()
    } else {
        manifests::render(root, &config)?
    };
    Ok(Prepared {
        config,
        warnings,
        manifests,
    })
}

impl Prepared {
    /// Makes the missing certificates and keys and writes the static Pod manifests.
    pub fn apply(
        &self,
        root: &Root,
        missing: &[String],
        now: time::OffsetDateTime,
    ) -> Result<Applied, InitError> {
        let mut applied = Applied::default();
        if !self.config.skips("certs") {
            applied.made = pki::make_missing(root, &self.config, missing, now)?;
            for path in &applied.made {
                println!("[certs] Generated {path}");
            }
        }
        manifests::write(root, &self.manifests)?;
        for (path, _) in &self.manifests {
            println!("[control-plane] Wrote the static Pod manifest {path}");
            applied.manifests.push(path.clone());
        }
        Ok(applied)
    }
}
