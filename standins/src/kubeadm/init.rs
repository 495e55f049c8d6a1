//! The on-disk phases `kubeadm init` and `kubeadm join --control-plane` share, in kubeadm's
//! order: preflight, certs, control-plane (init's names; a join calls them preflight,
//! control-plane-prepare/certs and control-plane-prepare/control-plane). Every check
//! (preflight, the config's meaning, the API server's flags) runs before the first write, so a
//! refused command leaves the host as it was. `skipPhases` is honoured.

use super::config::{ConfigError, InitConfig};
use super::{manifests, pki, preflight};
use crate::Root;
use crate::docs::Doc;

/// Which command runs the phases: it decides their names and the preflight checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Init,
    JoinControlPlane,
}

impl Command {
    fn certs(self) -> &'static str {
        match self {
            Command::Init => "certs",
            Command::JoinControlPlane => "control-plane-prepare/certs",
        }
    }

    fn control_plane(self) -> &'static str {
        match self {
            Command::Init => "control-plane",
            Command::JoinControlPlane => "control-plane-prepare/control-plane",
        }
    }
}

/// What failed inside a phase.
#[derive(Debug, thiserror::Error)]
pub enum PhaseFailure {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error(transparent)]
    Manifests(#[from] manifests::ManifestError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

/// Why `kubeadm init` (or the shared part of a control-plane join) stopped.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("error execution phase {phase}")]
    Phase {
        phase: &'static str,
        #[source]
        source: PhaseFailure,
    },
}

fn in_phase<T>(
    phase: &'static str,
    result: Result<T, impl Into<PhaseFailure>>,
) -> Result<T, InitError> {
    result.map_err(|e| InitError::Phase {
        phase,
        source: e.into(),
    })
}

/// Checks that passed, nothing written yet.
#[derive(Debug)]
pub struct Prepared {
    pub config: InitConfig,
    pub command: Command,
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

/// Reads an init's config and runs every check: preflight, the certificates to make
/// (`missing`: what kubeadm finds absent, from [`crate::certs`]) and their CAs, the manifests.
pub fn prepare(root: &Root, docs: &[Doc], missing: &[String]) -> Result<Prepared, InitError> {
    let config = InitConfig::from_docs(docs)?;
    check(root, config, Command::Init, missing)
}

/// Every check of `command` on `config`, as [`prepare`] describes.
pub fn check(
    root: &Root,
    config: InitConfig,
    command: Command,
    missing: &[String],
) -> Result<Prepared, InitError> {
    let mut warnings = Vec::new();
    if !config.skips("preflight") {
        println!("[preflight] Running pre-flight checks");
        let found = match command {
            Command::Init => preflight::run(root, &config),
            Command::JoinControlPlane => preflight::run_join_control_plane(root, &config),
        };
        warnings.extend(in_phase("preflight", found)?);
    }
    if !config.skips(command.certs()) {
        in_phase(command.certs(), pki::check(root, &config, missing))?;
        warnings.extend(pki::api_server_alt_names(&config).1);
    }
    let manifests = if config.skips(command.control_plane()) {
        Vec::new()
    } else {
        in_phase(command.control_plane(), manifests::render(root, &config))?
    };
    Ok(Prepared {
        config,
        command,
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
        let certs = self.command.certs();
        if !self.config.skips(certs) {
            applied.made = in_phase(certs, pki::make_missing(root, &self.config, missing, now))?;
            for path in &applied.made {
                println!("[certs] Generated {path}");
            }
        }
        in_phase(
            self.command.control_plane(),
            manifests::write(root, &self.manifests),
        )?;
        for (path, _) in &self.manifests {
            println!("[control-plane] Wrote the static Pod manifest {path}");
            applied.manifests.push(path.clone());
        }
        Ok(applied)
    }
}
