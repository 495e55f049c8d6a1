//! `launcher-build`: bakes a node image from an image definition.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use builder::build::{self, Formats, Options, SeedOverrides};
use cluster::pki::CaPin;
use cluster::spec::{NtpServer, SeedUrl};

/// Bakes a bootable, reproducible Launcher node image from an image definition (TOML).
///
/// Outputs in DIR: rootfs.tar, vmlinuz + initrd.img (PXE / direct kernel boot), disk.raw (GPT,
/// UEFI), image.iso (hybrid, UEFI) and manifest.json; with a Kubernetes server release archive
/// as the bundle, kubernetes-images.tar too (its control-plane images under the names kubeadm
/// pulls, for `launcher-seed images import`). Every input is checked before DIR is touched;
/// outputs appear only when the build is complete. SOURCE_DATE_EPOCH in the environment
/// overrides the definition's timestamp. To bake an image for one seed in one step:
/// `launcher-build DEF --out DIR --seed-url https://SEED:8443 --pin "$(launcher-seed pin
/// --state-dir STATE)"`.
#[derive(Debug, Parser)]
#[command(name = "launcher-build", version)]
struct Cli {
    /// The image definition, e.g. images/debian-bookworm.toml.
    definition: PathBuf,
    /// Output directory (made if missing).
    #[arg(long)]
    out: PathBuf,
    /// Comma-separated outputs to make: tar, pxe, disk, iso.
    #[arg(long, default_value = "tar,pxe,disk,iso", value_parser = Formats::parse)]
    format: Formats,
    /// Threads for compression.
    #[arg(long, default_value_t = 2)]
    jobs: u32,
    /// Where the mmdebstrap base (keyed by the hash of its inputs), the base's part of the initrd
    /// (keyed by the base's digest) and unpacked release archives (keyed by their sha256) are
    /// cached.
    #[arg(long, default_value = "/var/cache/launcher-build")]
    cache: PathBuf,
    /// Where launcher-firstboot and the kubeadm/kubelet stand-ins are (default: next to this
    /// program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The seed this image enrolls with (https://HOST:PORT), replacing the definition's
    /// `firstboot.seed_url`; the NTP server follows it (the seed's host, port 123) unless
    /// --ntp says otherwise.
    #[arg(long, value_name = "URL")]
    seed_url: Option<SeedUrl>,
    /// The seed CA's pin, replacing `firstboot.ca_pin`: what `launcher-seed pin --state-dir DIR`
    /// prints for that seed.
    #[arg(long, value_name = "PIN")]
    pin: Option<CaPin>,
    /// The NTP server (HOST[:PORT]), replacing `firstboot.ntp`.
    #[arg(long, value_name = "ADDR")]
    ntp: Option<NtpServer>,
    /// No progress or summary, only errors.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("launcher-build: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let bin_dir = match cli.bin_dir {
        Some(d) => d,
        None => std::env::current_exe()
            .context("finding this program's directory")?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    let opts = Options {
        definition: cli.definition,
        out: cli.out,
        formats: cli.format,
        jobs: cli.jobs.max(1),
        cache: cli.cache,
        bin_dir,
        quiet: cli.quiet,
        seed: SeedOverrides {
            seed_url: cli.seed_url,
            ca_pin: cli.pin,
            ntp: cli.ntp,
        },
    };
    let report = build::build(&opts)?;
    if !cli.quiet {
        eprintln!("\nsteps:");
        for (name, took) in &report.steps {
            eprintln!("  {:>7.1}s  {name}", took.as_secs_f64());
        }
        eprintln!("outputs in {}:", opts.out.display());
        for o in &report.outputs {
            eprintln!(
                "  {:>9.1} MiB  {}  sha256:{}",
                o.size as f64 / 1048576.0,
                o.path,
                o.sha256
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
