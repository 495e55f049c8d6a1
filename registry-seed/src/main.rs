//! `launcher-seed`: the seed server of an offline datacenter and its admin CLI.

use clap::{Parser, Subcommand};

use registry_seed::{generate, oci, serve};

/// The seed: PXE boot files, enrollment, LAN time, container images and cluster state, from one
/// process.
#[derive(Debug, Parser)]
#[command(name = "launcher-seed", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write, offline, what the seed would hand each host, as one tree per host.
    Gen(generate::GenArgs),
    /// Run the seed server (HTTPS API, boot files, NTP, OCI registry).
    Serve(serve::ServeArgs),
    /// Manage the images the seed's registry serves.
    #[command(subcommand)]
    Images(oci::ImagesCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gen(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Images(cmd) => oci::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("launcher-seed: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
