//! The cluster file as the seed's commands read it.

use anyhow::Context;
use cluster::spec::ClusterSpec;
use std::path::Path;

/// Reads and validates a cluster file, logging its warnings.
pub fn load_spec(path: &Path) -> anyhow::Result<ClusterSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = ClusterSpec::parse(&path.display().to_string(), &text)?;
    for warning in &parsed.warnings {
        tracing::warn!("{warning}");
    }
    Ok(parsed.spec)
}
