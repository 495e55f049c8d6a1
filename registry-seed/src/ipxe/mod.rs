//! `launcher-seed ipxe`: builds an iPXE that trusts only this seed's CA and carries a script
//! that boots from the seed over HTTPS, from a pinned iPXE source ([`recipe`] decides,
//! `build` runs the compiler).
//!
//! It belongs to the seed because the seed holds what it embeds: its CA (in the state
//! directory) and its URL (the cluster file). Machines get the binaries by TFTP or on local
//! media; from then on nothing they fetch travels in the clear.

mod build;
pub mod recipe;

use std::path::PathBuf;

use anyhow::Context;
use cluster::spec::{NtpServer, SeedUrl};

#[derive(Debug, clap::Args)]
pub struct IpxeArgs {
    /// The seed's state directory: its CA (`seed-ca.crt`) becomes the only root iPXE trusts.
    /// A state directory without a CA gets one, as on the seed's first start.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The iPXE 2.0.0 source tarball (ci/deps puts it in /var/cache/launcher/ipxe/); refused
    /// unless its SHA-256 is one of the pinned ones.
    #[arg(long)]
    pub source: PathBuf,
    /// Where `undionly.kpxe` (BIOS, chainloaded by PXE), `ipxe.efi` (UEFI), `manifest.json`
    /// and `build.log` are written. A directory already built from the same inputs is left
    /// as it is.
    #[arg(long)]
    pub out: PathBuf,
    /// The seed's URL (`https://HOST:PORT`) the script boots from; its host must be in the
    /// seed's server certificate. Either this or --cluster.
    #[arg(long, required_unless_present = "cluster")]
    pub seed_url: Option<SeedUrl>,
    /// The cluster file whose `[seed] url` the script boots from.
    #[arg(long, conflicts_with = "seed_url")]
    pub cluster: Option<PathBuf>,
    /// The NTP server (port 123) iPXE sets its clock from before it checks the seed's
    /// certificate. Default: the seed URL's host.
    #[arg(long)]
    pub ntp: Option<NtpServer>,
    /// Parallel compiler jobs. Default: the number of CPUs.
    #[arg(long)]
    pub jobs: Option<usize>,
}

pub fn run(args: IpxeArgs) -> anyhow::Result<()> {
    let seed_url = match (&args.seed_url, &args.cluster) {
        (Some(url), _) => url.clone(),
        (None, Some(cluster)) => crate::cluster_file::load_spec(cluster)?.seed.url,
        (None, None) => anyhow::bail!("give --seed-url or --cluster"),
    };
    let ntp = recipe::Recipe::ntp_host(&seed_url, args.ntp.as_ref())?;
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let built = build::build(&build::Request {
        state_dir: &args.state_dir,
        source: &args.source,
        out: &args.out,
        seed_url,
        ntp,
        jobs,
    })
    .with_context(|| format!("building the trusted iPXE into {}", args.out.display()))?;
    let manifest = &built.manifest;
    if built.fresh {
        println!(
            "launcher-seed: built the trusted iPXE for {} (seed CA pin {}) in {}",
            manifest.seed_url,
            manifest.ca_pin,
            args.out.display()
        );
    } else {
        println!(
            "launcher-seed: {} already holds the trusted iPXE for {} (seed CA pin {}), built \
             from the same inputs",
            args.out.display(),
            manifest.seed_url,
            manifest.ca_pin
        );
    }
    Ok(())
}
