//! The admin CLI: `pin`, `status`, `hosts`, `tokens`, `jobs`, `etcd-client`, talking to a running
//! seed with its admin token (or, for `status`, reading the state directory when no seed runs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use cluster::api::{ApiError, Role};

use crate::seed::{ADDR_FILE, STORE_FILE, read_admin_token};
use crate::store::records::{HostRecord, JobRecord, JobState, StepState};
use crate::store::{RedbStore, Table, list_json, read_with};
use crate::tls::{SeedCa, ca_cert_path};
use crate::views::{
    EtcdClientRequest, EtcdClientView, HostResetView, JobAccepted, KubeconfigRequest,
    KubeconfigView, StatusView, TokenCreated, TokenRequest, host_view, render_table,
};

/// Where to find the seed and its credential.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// The seed's state directory (holds `admin.token`, `seed-ca.crt` and `serve.addr`).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The seed's URL; defaults to the address in `<state-dir>/serve.addr`.
    #[arg(long)]
    pub seed: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// The seed's state directory.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Make the seed CA when the state directory has none yet, as `serve` does on its first
    /// start: images can then be baked for a seed before it first runs. Without it, a missing
    /// CA is an error, so a mistyped directory never yields a pin no seed will present.
    #[arg(long)]
    pub init: bool,
}

/// `launcher-seed certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(flatten)]
    pub seed: SeedArgs,
    /// Only the certificates that expire within this long: `12h`, `30d`.
    #[arg(long, value_parser = parse_ttl)]
    pub within: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub seed: SeedArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum HostsCommand {
    /// List every host the seed knows, pending ones included.
    Ls {
        #[command(flatten)]
        seed: SeedArgs,
        #[arg(long)]
        json: bool,
    },
    /// Let a pending host in; it gets its role at its next enrollment.
    Approve {
        id: String,
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// Remove a host, as a job: a master's etcd member is removed first (refused while that
    /// would lose etcd's quorum), then the seed forgets the host. Refused for the only master,
    /// and for a master whose removal leaves fewer than the cluster file's `masters` unless
    /// `--force`.
    Rm {
        id: String,
        /// Remove a master even if fewer than the cluster file's `masters` are left.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// Ask a host's resident agent to do something, and wait for what it says: `health` (its
    /// uptime, load and whether its cluster services are active), `reboot`, or `reset` (the
    /// seed unbinds the host's identity key; the host clears its LAUNCHER-DATA disk at the next
    /// boot and comes back under the same id, role and name with a new key). The command is
    /// kept by the seed until the agent takes it, across seed restarts; a host may have at
    /// most 8 unanswered.
    Command {
        id: String,
        #[arg(value_parser = parse_command_kind)]
        kind: cluster::api::CommandKind,
        /// How long to wait for the host's answer: `30s`, `5m`; 0 to only queue it.
        #[arg(long, value_parser = parse_ttl, default_value = "60s")]
        wait: u64,
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// List a host's commands, newest first, with what each came to.
    Commands {
        id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// Unbind a host from its identity key, so that the machine is let in again with a new
    /// one: after its disk was replaced or blanked, or it was re-imaged. Until then the seed
    /// refuses it (`identity_taken`). The host keeps its role and name.
    Reset {
        id: String,
        #[command(flatten)]
        seed: SeedArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Make a one-time join token and print it.
    Create {
        /// How long the token works: `90s`, `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        /// The role the token grants; the seed decides when unset.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        #[command(flatten)]
        seed: SeedArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// List the admin jobs, newest first: id, kind, state, age, how long each ran, its message.
    Ls {
        /// Only the jobs in this state: queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// Show a job: what it was asked to do, its state, and each step with when it started,
    /// how long it took and what it said.
    #[command(alias = "get")]
    Show {
        id: String,
        /// Print the job's record as JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// Cancel a job: a queued one at once, a running one after its current step (a step is
    /// never cut in the middle, so the cluster is left as that step leaves it).
    Cancel {
        id: String,
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// Resume a failed or cancelled job from the step that did not end, and wait for it.
    Resume {
        id: String,
        #[command(flatten)]
        seed: SeedArgs,
    },
}

/// `launcher-seed etcd-client`.
#[derive(Debug, clap::Args)]
pub struct EtcdClientArgs {
    #[command(flatten)]
    pub seed: SeedArgs,
    /// The directory to write the credential into (made, mode 0700).
    #[arg(long)]
    pub out: PathBuf,
    /// How long the certificate is valid: `90s`, `30m`, `1h`, `7d` (at most 7d).
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// Who holds the credential, named in the certificate's subject.
    #[arg(long, default_value = "admin")]
    pub holder: String,
}

/// `launcher-seed kubeconfig`.
#[derive(Debug, clap::Args)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub seed: SeedArgs,
    /// Who the credential is for: its certificate's CN, the user Kubernetes sees.
    #[arg(long)]
    pub user: String,
    /// The group Kubernetes sees (the certificate's O) instead of the cluster administrators',
    /// e.g. `--user system:node:w1 --group system:nodes` to act as that node.
    #[arg(long)]
    pub group: Option<String>,
    /// How long the certificate is valid: `90s`, `30m`, `1h`, `7d` (at most 7d).
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// Write the kubeconfig to this file (0600) instead of printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The files of an etcd client credential in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdClientFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl EtcdClientFiles {
    pub fn in_dir(dir: &Path) -> EtcdClientFiles {
        EtcdClientFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("client.crt"),
            key: dir.join("client.key"),
        }
    }

    /// Writes `credential` into `dir` (made 0700): the key 0600, the certificates 0644, each
    /// file whole or not at all.
    pub fn write(dir: &Path, credential: &EtcdClientView) -> anyhow::Result<EtcdClientFiles> {
        durable::private_dir(dir)?;
        let files = EtcdClientFiles::in_dir(dir);
        for (path, text, mode) in [
            (&files.key, &credential.key_pem, 0o600),
            (&files.cert, &credential.cert_pem, 0o644),
            (&files.ca, &credential.ca_pem, 0o644),
        ] {
            durable::write_atomic(path, text.as_bytes(), mode)?;
        }
        Ok(files)
    }
}

/// `90s`, `30m`, `1h`, `7d` or plain seconds.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 1h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(n.saturating_mul(scale))
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "master" => Ok(Role::Master),
        "worker" => Ok(Role::Worker),
        _ => Err(format!("{text:?} is not a role (master or worker)")),
    }
}

pub fn pin(args: PinArgs) -> anyhow::Result<()> {
    let ca = if args.init {
        durable::private_dir(&args.state_dir)?;
        SeedCa::load_or_create(&args.state_dir)?
    } else if !crate::tls::ca_cert_path(&args.state_dir).exists() {
        anyhow::bail!(
            "{} holds no seed CA: start the seed there once, or pass --init to make it now",
            args.state_dir.display()
        );
    } else {
        SeedCa::load(&args.state_dir)?
    };
    println!("{}", ca.pin());
    Ok(())
}

/// A seed's admin API, with the pinned CA and the admin token.
#[derive(Debug)]
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl AdminClient {
    pub fn new(args: &SeedArgs) -> anyhow::Result<AdminClient> {
        let base = match &args.seed {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let path = args.state_dir.join(ADDR_FILE);
                let addr = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))
                    .context("finding the seed (no --seed given and no running seed here)")?;
                local_url(addr.trim())
            }
        };
        let ca_path = ca_cert_path(&args.state_dir);
        let ca = std::fs::read_to_string(&ca_path)
            .with_context(|| format!("reading {}", ca_path.display()))?;
        let cert = reqwest::Certificate::from_pem(ca.as_bytes()).context("reading the seed CA")?;
        let http = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .timeout(Duration::from_secs(30))
            .build()
            .context("making the HTTPS client")?;
        Ok(AdminClient {
            base,
            token: read_admin_token(&args.state_dir)?,
            http,
        })
    }

    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> anyhow::Result<serde_json::Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("talking to the seed at {}", self.base))?;
        let status = response.status();
        let body = response.bytes().context("reading the seed's answer")?;
        if !status.is_success() {
            if let Ok(err) = serde_json::from_slice::<ApiError>(&body) {
                anyhow::bail!("the seed refused: {} ({})", err.message, err.code);
            }
            anyhow::bail!("the seed answered {status}");
        }
        serde_json::from_slice(&body).context("reading the seed's answer")
    }

    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
    }

    pub fn status(&self) -> anyhow::Result<StatusView> {
        Ok(serde_json::from_value(self.get("/v1/admin/hosts")?)?)
    }

    /// A fresh etcd client credential (`POST /v1/admin/etcd-client`).
    pub fn etcd_client(&self, request: &EtcdClientRequest) -> anyhow::Result<EtcdClientView> {
        let answer = self.post("/v1/admin/etcd-client", &serde_json::to_value(request)?)?;
        serde_json::from_value(answer).context("reading the seed's etcd client credential")
    }

    /// An operator's kubeconfig for the control-plane endpoint (`POST /v1/admin/kubeconfig`).
    pub fn kubeconfig(&self, request: &KubeconfigRequest) -> anyhow::Result<KubeconfigView> {
        let answer = self.post("/v1/admin/kubeconfig", &serde_json::to_value(request)?)?;
        serde_json::from_value(answer).context("reading the seed's kubeconfig")
    }

    /// Polls a job until it ends (at most `timeout`).
    pub fn wait_job(
        &self,
        accepted: serde_json::Value,
        timeout: Duration,
    ) -> anyhow::Result<JobRecord> {
        let accepted: JobAccepted = serde_json::from_value(accepted)?;
        let started = Instant::now();
        loop {
            let job: JobRecord =
                serde_json::from_value(self.get(&format!("/v1/admin/jobs/{}", accepted.job))?)?;
            if job.state.ended() {
                return Ok(job);
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "job {} did not end within {timeout:?}; see `launcher-seed jobs show {}`",
                job.id,
                job.id
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `https://ADDR`, with an unspecified listen address replaced by loopback.
fn local_url(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sa) if sa.ip().is_unspecified() => format!("https://127.0.0.1:{}", sa.port()),
        Ok(sa) => format!("https://{sa}"),
        Err(_) => format!("https://{addr}"),
    }
}

/// Reads the status from the store directly (when no seed runs on this state directory).
fn status_from_store(state_dir: &Path) -> anyhow::Result<StatusView> {
    let store = RedbStore::open(&state_dir.join(STORE_FILE))?;
    let hosts = read_with(&store, |tx| list_json::<HostRecord>(tx, Table::Hosts))?;
    Ok(StatusView {
        cluster: String::new(),
        now_ms: crate::store::records::now_ms(),
        hosts: hosts.iter().map(host_view).collect(),
        missing_images: vec![],
        // kept by a running seed only
        refused: vec![],
    })
}

fn print_status(view: &StatusView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(view)?);
    } else {
        print!("{}", render_table(view));
    }
    Ok(())
}

pub fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let answer = AdminClient::new(&args.seed)?.get("/v1/admin/certs")?;
    let mut list: crate::views::CertList =
        serde_json::from_value(answer).context("reading the seed's answer")?;
    if let Some(secs) = args.within {
        let horizon_ms = list
            .now_ms
            .saturating_add((secs as i64).saturating_mul(1000));
        list.certs
            .retain(|r| r.cert.not_after.saturating_mul(1000) <= horizon_ms);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", crate::views::render_certs(&list));
    }
    Ok(())
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let from_seed = AdminClient::new(&args.seed).and_then(|c| c.status());
    let view = match from_seed {
        Ok(view) => view,
        Err(err) if args.seed.seed.is_none() => {
            tracing::debug!(error = %err, "no running seed; reading the state directory");
            status_from_store(&args.seed.state_dir)
                .with_context(|| format!("{err:#}; and reading the state directory"))?
        }
        Err(err) => return Err(err),
    };
    print_status(&view, args.json)
}

fn finish(job: JobRecord) -> anyhow::Result<()> {
    match job.state {
        JobState::Succeeded => {
            println!("{}", job.message);
            Ok(())
        }
        state => anyhow::bail!("job {} {}: {}", job.id, state.as_str(), job.message),
    }
}

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

pub fn hosts(cmd: HostsCommand) -> anyhow::Result<()> {
    match cmd {
        HostsCommand::Ls { seed, json } => print_status(&AdminClient::new(&seed)?.status()?, json),
        HostsCommand::Approve { id, seed } => {
            let client = AdminClient::new(&seed)?;
            let accepted = client.post(
                &format!("/v1/admin/hosts/{id}/approve"),
                &serde_json::json!({}),
            )?;
            finish(client.wait_job(accepted, JOB_TIMEOUT)?)
        }
        HostsCommand::Rm { id, force, seed } => {
            let client = AdminClient::new(&seed)?;
            let query = if force { "?force=true" } else { "" };
            let accepted = client.delete(&format!("/v1/admin/hosts/{id}{query}"))?;
            finish(client.wait_job(accepted, JOB_TIMEOUT)?)
        }
        HostsCommand::Command {
            id,
            kind,
            wait,
            seed,
        } => command(&AdminClient::new(&seed)?, &id, kind, wait),
        HostsCommand::Commands { id, json, seed } => {
            let answer = AdminClient::new(&seed)?.get(&format!("/v1/admin/hosts/{id}/commands"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let list: crate::views::CommandList =
                    serde_json::from_value(answer).context("reading the seed's answer")?;
                print!("{}", crate::views::render_commands(&list));
            }
            Ok(())
        }
        HostsCommand::Reset { id, seed } => {
            let client = AdminClient::new(&seed)?;
            let answer = client.post(
                &format!("/v1/admin/hosts/{id}/reset"),
                &serde_json::json!({}),
            )?;
            let reset: HostResetView =
                serde_json::from_value(answer).context("reading the seed's answer")?;
            match reset.unbound_key {
                Some(key) => println!(
                    "host {} unbound from key {key}; the machine is let in with its next key",
                    reset.host
                ),
                None => println!("host {} was bound to no key", reset.host),
            }
            Ok(())
        }
    }
}

fn parse_command_kind(text: &str) -> Result<cluster::api::CommandKind, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("{text:?} is not a command: health, reboot or reset"))
}

/// Queues a command for host `id` and, unless `wait` is 0, waits for the host's answer.
fn command(
    client: &AdminClient,
    id: &str,
    kind: cluster::api::CommandKind,
    wait: u64,
) -> anyhow::Result<()> {
    use crate::commands::{CommandRecord, CommandState};
    let answer = client.post(
        &format!("/v1/admin/hosts/{id}/commands"),
        &serde_json::json!({ "kind": kind }),
    )?;
    let mut record: CommandRecord =
        serde_json::from_value(answer).context("reading the seed's answer")?;
    let what = format!("command {} ({}) of host {id}", record.id, kind.as_str());
    if wait == 0 {
        println!("{what} queued");
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(wait);
    while !record.state.ended() {
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{what} is still {} after {wait} s: the host's agent has not answered (it stays queued; see `launcher-seed hosts commands {id}`)",
                record.state.as_str()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        let answer = client.get(&format!("/v1/admin/hosts/{id}/commands/{}", record.id))?;
        record = serde_json::from_value(answer).context("reading the seed's answer")?;
    }
    match record.state {
        CommandState::Succeeded => {
            println!("{what}: {}", record.message);
            Ok(())
        }
        _ => anyhow::bail!("{what} failed: {}", record.message),
    }
}

pub fn tokens(cmd: TokensCommand) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Create { ttl, role, seed } => {
            let client = AdminClient::new(&seed)?;
            let body = serde_json::to_value(TokenRequest {
                ttl_secs: ttl,
                role,
            })?;
            let answer = client.post("/v1/admin/tokens", &body)?;
            let created: TokenCreated =
                serde_json::from_value(answer).context("reading the seed's answer")?;
            println!("{}", created.token);
            Ok(())
        }
    }
}

pub fn jobs(cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::Ls { state, json, seed } => {
            let path = match &state {
                Some(state) => format!("/v1/admin/jobs?state={state}"),
                None => "/v1/admin/jobs".to_string(),
            };
            let answer = AdminClient::new(&seed)?.get(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let list: crate::views::JobList =
                    serde_json::from_value(answer).context("reading the seed's answer")?;
                print!("{}", crate::views::render_jobs(&list));
            }
            Ok(())
        }
        JobsCommand::Show { id, json, seed } => {
            let job = AdminClient::new(&seed)?.get(&format!("/v1/admin/jobs/{id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                let job: JobRecord =
                    serde_json::from_value(job).context("reading the seed's answer")?;
                print!(
                    "{}",
                    crate::views::render_job(&job, crate::store::records::now_ms())
                );
            }
            Ok(())
        }
        JobsCommand::Cancel { id, seed } => {
            let answer = AdminClient::new(&seed)?.post(
                &format!("/v1/admin/jobs/{id}/cancel"),
                &serde_json::json!({}),
            )?;
            let job: JobRecord =
                serde_json::from_value(answer).context("reading the seed's answer")?;
            match job.state {
                JobState::Cancelled => println!("job {} cancelled", job.id),
                _ => {
                    let current = job.steps.iter().find(|s| s.state == StepState::Running);
                    println!(
                        "job {} stops after its current step{}; see `launcher-seed jobs show {}`",
                        job.id,
                        current
                            .map(|s| format!(" ({})", s.name))
                            .unwrap_or_default(),
                        job.id
                    );
                }
            }
            Ok(())
        }
        JobsCommand::Resume { id, seed } => {
            let client = AdminClient::new(&seed)?;
            let answer = client.post(
                &format!("/v1/admin/jobs/{id}/resume"),
                &serde_json::json!({}),
            )?;
            let job: JobRecord =
                serde_json::from_value(answer).context("reading the seed's answer")?;
            let accepted = serde_json::json!({ "job": job.id });
            finish(client.wait_job(accepted, JOB_TIMEOUT)?)
        }
    }
}

pub fn kubeconfig(args: KubeconfigArgs) -> anyhow::Result<()> {
    let view = AdminClient::new(&args.seed)?.kubeconfig(&KubeconfigRequest {
        user: args.user,
        ttl_secs: Some(args.ttl),
        group: args.group,
    })?;
    match &args.out {
        Some(path) => {
            durable::write_atomic(path, view.kubeconfig.as_bytes(), 0o600)?;
            eprintln!(
                "{}: {} ({}) at {}",
                path.display(),
                view.user,
                view.group,
                view.server
            );
        }
        None => print!("{}", view.kubeconfig),
    }
    Ok(())
}

pub fn etcd_client(args: EtcdClientArgs) -> anyhow::Result<()> {
    let request = EtcdClientRequest {
        ttl_secs: Some(args.ttl),
        holder: Some(args.holder),
    };
    let credential = AdminClient::new(&args.seed)?.etcd_client(&request)?;
    let files = EtcdClientFiles::write(&args.out, &credential)?;
    let until = time::OffsetDateTime::from_unix_timestamp(credential.not_after_ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{} ms after the epoch", credential.not_after_ms));
    println!(
        "{} (CN {}), valid until {until}",
        files.cert.display(),
        credential.common_name,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units_and_bad_ones_are_refused() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("120"), Ok(120));
        assert!(parse_ttl("1w").unwrap_err().contains("unit"));
        assert!(parse_ttl("h").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn an_unspecified_listen_address_is_reached_on_loopback() {
        assert_eq!(local_url("0.0.0.0:8443"), "https://127.0.0.1:8443");
        assert_eq!(local_url("10.77.0.1:8443"), "https://10.77.0.1:8443");
    }
}
