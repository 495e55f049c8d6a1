//! The seed's pull-only OCI registry: image import into a content-addressed store, and the pull
//! half of the distribution API. Reading images (references, media types, layouts, archives)
//! is the `oci` crate's; this module stores and serves what it read.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

pub mod bundle;
pub mod import;
pub mod required;
pub mod router;
pub mod store;

pub use ::oci::{media, refs};
pub use import::{ImportError, Imported, import};
pub use router::router;
pub use store::{Catalog, Store, StoreError};

#[derive(Debug, clap::Subcommand)]
pub enum ImagesCommand {
    /// Import images into the registry's store, all inputs or none. Each FILE is an OCI archive
    /// (a tar of an OCI layout, gzip'd or not), an OCI layout directory, or a `docker save`
    /// archive. Names come from the `io.containerd.image.name` or
    /// `org.opencontainers.image.ref.name` annotations, or docker's RepoTags; a registry host in a
    /// name is dropped (`registry.k8s.io/pause:3.9` is served as `pause:3.9`).
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The seed's state directory; the store lives in its `registry/`.
        #[arg(long)]
        state_dir: PathBuf,
        /// Name (and tag) for the single image of a single FILE, replacing the names it carries.
        #[arg(long)]
        name: Option<String>,
    },
    /// List every image the cluster of FILE pulls (kubeadm's list for its Kubernetes version,
    /// with the add-ons its `skip_phases` leave out), and with --state-dir whether the seed's
    /// registry has each: exit code 1 when any is missing.
    Required {
        /// The cluster file.
        #[arg(long)]
        cluster: PathBuf,
        /// The seed's state directory, to check its registry.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print JSON (`images`, each with `reference` and `present`; `missing`).
        #[arg(long)]
        json: bool,
    },
    /// Write every image the cluster of FILE pulls, from the seed's registry, into one OCI
    /// image layout at OUT (a new directory), to carry to another seed and `images import`
    /// there. Refused, writing nothing, while the registry lacks any of them.
    Bundle {
        /// The cluster file.
        #[arg(long)]
        cluster: PathBuf,
        /// The seed's state directory, whose registry the images come from.
        #[arg(long)]
        state_dir: PathBuf,
        /// The directory to make; it must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// List stored images: name, tag, manifest digest, media type and total size in bytes.
    Ls {
        /// The seed's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
}

pub fn run(cmd: ImagesCommand) -> anyhow::Result<()> {
    crate::seed::private_umask();
    match cmd {
        ImagesCommand::Import {
            files,
            state_dir,
            name,
        } => {
            let store = Store::open(&state_dir)?;
            let imported = import(&store, &files, name.as_deref()).context("import refused")?;
            for i in imported {
                println!("imported {} {}", i.name, i.digest);
            }
            Ok(())
        }
        ImagesCommand::Required {
            cluster,
            state_dir,
            json,
        } => {
            let spec = crate::cluster_file::load_spec(&cluster)?;
            let store = match state_dir {
                Some(dir) if !dir.join("registry").is_dir() => anyhow::bail!(
                    "{} holds no seed registry (no registry/ in it): check --state-dir",
                    dir.display()
                ),
                Some(dir) => Some(Store::open(&dir)?),
                None => None,
            };
            let answer = required::required(&spec, store.as_ref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{}", required::render_table(&answer));
            }
            if !answer.missing.is_empty() {
                anyhow::bail!(
                    "{} of the {} images the cluster pulls are missing from the seed's registry: \
                     import them with `launcher-seed images import`",
                    answer.missing.len(),
                    answer.images.len()
                );
            }
            Ok(())
        }
        ImagesCommand::Bundle {
            cluster,
            state_dir,
            out,
        } => {
            let spec = crate::cluster_file::load_spec(&cluster)?;
            if !state_dir.join("registry").is_dir() {
                anyhow::bail!(
                    "{} holds no seed registry (no registry/ in it): check --state-dir",
                    state_dir.display()
                );
            }
            let store = Store::open(&state_dir)?;
            let done = bundle::bundle(&store, &spec, &out).context("bundle refused")?;
            for image in &done.images {
                println!("bundled {image}");
            }
            println!(
                "{} images, {} blobs, {} bytes in {}",
                done.images.len(),
                done.blobs,
                done.bytes,
                out.display()
            );
            Ok(())
        }
        ImagesCommand::Ls { state_dir } => {
            let store = Arc::new(Store::open(&state_dir)?);
            print!("{}", render_table(&listing(&store)?));
            Ok(())
        }
    }
}

/// One row of `images ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// Every tag of every repository, sorted by name then tag.
pub fn listing(store: &Store) -> Result<Vec<Listed>, StoreError> {
    let catalog = store.catalog()?;
    let mut rows = Vec::new();
    for (name, repo) in &catalog.repositories {
        for (tag, digest) in &repo.tags {
            let media_type = catalog
                .manifests
                .get(digest)
                .map(|m| m.media_type.clone())
                .unwrap_or_default();
            rows.push(Listed {
                name: name.to_string(),
                tag: tag.to_string(),
                digest: digest.to_string(),
                media_type,
                size: store.image_size(digest)?,
            });
        }
    }
    Ok(rows)
}

fn render_table(rows: &[Listed]) -> String {
    let header = ["NAME", "TAG", "DIGEST", "MEDIA TYPE", "SIZE"].map(String::from);
    let mut table = vec![header];
    for r in rows {
        table.push([
            r.name.clone(),
            r.tag.clone(),
            r.digest.clone(),
            r.media_type.clone(),
            r.size.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &table {
        let cells: Vec<String> = (0..5)
            .map(|c| format!("{:<w$}", row[c], w = widths[c]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
