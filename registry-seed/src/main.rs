//! `launcher-seed`: the seed server of an offline datacenter and its admin CLI.

use clap::{Parser, Subcommand};

use registry_seed::{client, generate, ipxe, oci, serve};

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
    /// Print the SPKI pin (`sha256:<hex>`) of the seed CA that images carry.
    Pin(client::PinArgs),
    /// Build an iPXE that trusts only this seed's CA and boots from the seed over HTTPS.
    ///
    /// From a pinned iPXE 2.0.0 source tarball, with gcc and make: `undionly.kpxe` (BIOS, for
    /// a PXE ROM to chainload by TFTP) and `ipxe.efi` (UEFI), whose built-in script gets an
    /// address by DHCP, sets the clock from the seed's NTP and chains to
    /// `https://SEED/boot.ipxe`, and `manifest.json` saying what they were built from. Same
    /// inputs, same bytes.
    Ipxe(ipxe::IpxeArgs),
    /// Show every host: role, hostname, MAC, phase, state and time in phase.
    Status(client::StatusArgs),
    /// List, approve and remove hosts through a running seed.
    #[command(subcommand)]
    Hosts(client::HostsCommand),
    /// Make one-time join tokens through a running seed.
    #[command(subcommand)]
    Tokens(client::TokensCommand),
    /// Look at admin jobs.
    #[command(subcommand)]
    Jobs(client::JobsCommand),
    /// List the certificates the seed gave every host, soonest to expire first.
    ///
    /// Each host's leaf certificates as its last plan carried them (kubeadm's set, etcd's, the
    /// kubelet's, and the client certificates its kubeconfigs embed): the file that holds
    /// it, subject, issuing CA, expiry and how long is left. CAs are not listed.
    Certs(client::CertsArgs),
    /// Get a short-lived etcd client certificate from a running seed, for etcdctl.
    ///
    /// The seed answers with the cluster's etcd CA and a client certificate and key it makes
    /// for this answer alone and never stores. They are written into --out (made 0700) as
    /// ca.crt, client.crt (0644) and client.key (0600), for `etcdctl --cacert OUT/ca.crt
    /// --cert OUT/client.crt --key OUT/client.key`. The certificate is for client
    /// authentication only and expires after --ttl (at most 7d); ask again for a new one.
    EtcdClient(client::EtcdClientArgs),
    /// Get a kubeconfig for an operator from a running seed, aimed at the cluster's
    /// control-plane endpoint.
    ///
    /// Its client certificate is signed by the cluster CA for this answer alone (never stored),
    /// names --user as the user and the cluster administrators' group (kubeadm's
    /// `kubeadm:cluster-admins`, `system:masters` before 1.29) or --group, and expires after
    /// --ttl (at most 7d). Printed, or written to --out with mode 0600.
    Kubeconfig(client::KubeconfigArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Gen(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Images(cmd) => oci::run(cmd),
        Command::Pin(args) => client::pin(args),
        Command::Ipxe(args) => ipxe::run(args),
        Command::Status(args) => client::status(args),
        Command::Certs(args) => client::certs(args),
        Command::Hosts(cmd) => client::hosts(cmd),
        Command::Tokens(cmd) => client::tokens(cmd),
        Command::Jobs(cmd) => client::jobs(cmd),
        Command::EtcdClient(args) => client::etcd_client(args),
        Command::Kubeconfig(args) => client::kubeconfig(args),
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
