//! The seed's pull-only OCI registry: image import into a content-addressed store, and the pull
//! half of the distribution API.

#[derive(Debug, clap::Subcommand)]
pub enum ImagesCommand {}

pub fn run(cmd: ImagesCommand) -> anyhow::Result<()> {
    match cmd {}
}
