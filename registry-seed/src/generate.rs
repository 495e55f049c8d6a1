//! `launcher-seed gen`: the offline form of what the seed hands each host.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// The cluster definition (TOML).
    #[arg(long)]
    pub cluster: PathBuf,
    /// Directory to write one tree per host into (plus `cluster/`).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(_args: GenArgs) -> anyhow::Result<()> {
    anyhow::bail!("gen is not built yet")
}
