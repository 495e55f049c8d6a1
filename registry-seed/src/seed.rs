//! The running seed's shared state: the spec, the store, the cluster's CA set, the admin
//! credential and the metrics, opened from a state directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cluster::pki::CaSet;
use cluster::spec::ClusterSpec;

use crate::enroll::decide::{ClusterFacts, InventoryEntry};
use crate::limits::SourceLimiter;
use crate::membership::{Membership, MembershipService};
use crate::metrics::Metrics;
use crate::ntp::NtpStats;
use crate::seal::SealKey;
use crate::store::records::meta;
use crate::store::{RedbStore, Store, Table, read_with, write_with};

pub const STORE_FILE: &str = "state.redb";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const ADDR_FILE: &str = "serve.addr";

/// Everything request handlers share.
pub struct Seed {
    pub spec: ClusterSpec,
    pub facts: Arc<ClusterFacts>,
    pub store: Arc<dyn Store>,
    pub cas: Arc<CaSet>,
    pub admin_token: String,
    /// Seals what the store keeps secret: the CA keys (at open) and join tokens in job results.
    pub seal: SealKey,
    pub metrics: Metrics,
    pub ntp_stats: Option<Arc<NtpStats>>,
    /// Enrollments let through per source address; none: no limit.
    pub enroll_limit: Option<SourceLimiter>,
    /// etcd membership changes: joining masters' learners, leaving masters' removal.
    pub membership: Arc<MembershipService>,
    pub state_dir: PathBuf,
    /// Network boot: what `/ipxe` scripts carry and where the boot files are.
    pub boot: Option<crate::boot::BootConfig>,
    /// The images the cluster pulls that the seed's registry lacks, asked at every enrollment
    /// (`serve` reads its registry; see `oci::required`). None: enrollment does not wait on
    /// images (`serve --allow-missing-images`).
    pub missing_images: Option<MissingImages>,
    /// Hosts refused for their image's release, which the store does not record.
    pub refusals: crate::refusals::Refusals,
    /// Woken when a command is queued for some host: every agent's held poll looks again.
    pub commands_queued: tokio::sync::Notify,
}

/// Says which images the cluster pulls are not in the seed's registry now.
pub type MissingImages = Arc<dyn Fn() -> anyhow::Result<Vec<String>> + Send + Sync>;

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("cluster", &self.facts.name)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Narrows this process's umask to 077: what the seed creates in its state directory (the store,
/// the registry's directories and blobs, the address files) is owner-only from the start.
pub fn private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Makes the state directory 0700 and whatever a former run left in it owner-only: it holds the
/// cluster's CA keys (sealed in the store), their seal key and the admin token. New files come
/// out 0600 by the umask `launcher-seed` sets at start and by explicit modes.
fn private_state_dir(state_dir: &Path) -> anyhow::Result<()> {
    durable::private_dir(state_dir)?;
    for entry in walk(state_dir)? {
        let meta = std::fs::symlink_metadata(&entry)
            .with_context(|| format!("reading {}", entry.display()))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        let private = if meta.is_dir() {
            mode & 0o700
        } else {
            mode & 0o600
        };
        if private != mode {
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(private))
                .with_context(|| format!("making {} owner-only", entry.display()))?;
        }
    }
    Ok(())
}

/// Every entry below `dir`, without following links.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry.with_context(|| format!("reading {}", d.display()))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
            found.push(entry.path());
        }
    }
    Ok(found)
}

impl Seed {
    /// Opens the seed's state in `state_dir` for the cluster `spec`: the store, the cluster's
    /// CA set (made once and kept in the store, its keys sealed with `seal.key`) and the admin
    /// credential (made once, 0600). A state it must refuse is left as it was.
    pub fn open(spec: ClusterSpec, state_dir: &Path) -> anyhow::Result<Seed> {
        private_state_dir(state_dir)?;
        let store = RedbStore::open(&state_dir.join(STORE_FILE))?;
        claim_for_cluster(&store, &spec, state_dir)?;
        let (cas, seal) = crate::cluster_ca::load_or_create(&store, &spec, state_dir)?;
        let store = crate::cluster_ca::scrub(store)?;
        let admin_token = load_or_create_admin_token(state_dir)?;
        let store: Arc<dyn Store> = Arc::new(store);
        let (facts, cas) = (Arc::new(facts_of(&spec)), Arc::new(cas));
        let membership = MembershipService::new(store.clone(), facts.clone(), cas.clone(), None);
        Ok(Seed {
            facts,
            spec,
            store,
            cas,
            admin_token,
            seal,
            metrics: Metrics::default(),
            ntp_stats: None,
            enroll_limit: None,
            membership: Arc::new(membership),
            state_dir: state_dir.to_path_buf(),
            boot: None,
            missing_images: None,
            refusals: Default::default(),
            commands_queued: tokio::sync::Notify::new(),
        })
    }

    /// This seed with every etcd membership change going through `client`, whatever the
    /// masters' addresses (tests point it at an etcd of their own, or at none).
    pub fn with_membership(mut self, client: Arc<dyn Membership>) -> Seed {
        let (store, facts, cas) = (self.store.clone(), self.facts.clone(), self.cas.clone());
        self.membership = Arc::new(MembershipService::new(store, facts, cas, Some(client)));
        self
    }

    /// What enrollments are decided and planned against.
    pub fn cluster(&self) -> crate::enroll::apply::Cluster<'_> {
        crate::enroll::apply::Cluster {
            spec: &self.spec,
            facts: &self.facts,
            cas: &self.cas,
        }
    }
}

/// The planner's view of the spec: its inventory with the roles and names the spec gives.
pub fn facts_of(spec: &ClusterSpec) -> ClusterFacts {
    let inventory = spec
        .plan_inventory()
        .into_iter()
        .enumerate()
        .map(|(index, planned)| InventoryEntry {
            index,
            macs: vec![planned.host.mac.to_string()],
            product_uuid: planned.host.uuid.as_ref().map(|u| u.to_string()),
            serial: planned.host.serial.as_ref().map(|s| s.to_string()),
            role: planned.role,
            role_index: planned.index,
            hostname: planned.hostname.to_string(),
            ip: planned.host.ip.map(|ip| ip.to_string()),
        })
        .collect();
    ClusterFacts::new(spec.name.to_string(), spec.masters, inventory)
}

/// Records which cluster a state directory belongs to, and refuses another one: its CAs,
/// hosts and tokens are that cluster's.
fn claim_for_cluster(
    store: &dyn Store,
    spec: &ClusterSpec,
    state_dir: &Path,
) -> anyhow::Result<()> {
    let name = spec.name.to_string();
    let recorded = read_with(store, |tx| {
        crate::store::get_json::<String>(tx, Table::Meta, meta::CLUSTER)
    })?;
    let owner = match recorded {
        Some(owner) => owner,
        None => write_with(store, |tx| {
            match crate::store::get_json::<String>(&*tx, Table::Meta, meta::CLUSTER)? {
                Some(owner) => Ok(owner),
                None => {
                    crate::store::put_json(tx, Table::Meta, meta::CLUSTER, &name)?;
                    Ok(name.clone())
                }
            }
        })?,
    };
    anyhow::ensure!(
        owner == name,
        "the state directory {} belongs to cluster {owner:?}, not {name:?}; give each cluster \
         its own state directory",
        state_dir.display()
    );
    Ok(())
}

fn load_or_create_admin_token(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        let token = read_token(&path)?;
        anyhow::ensure!(token.len() >= 32, "{} is too short", path.display());
        return Ok(token);
    }
    let token = random_secret(32);
    durable::write_atomic(&path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(token)
}

/// `len` random characters from `[a-z0-9]`.
pub fn random_secret(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Reads the admin credential a seed wrote into its state directory.
pub fn read_admin_token(state_dir: &Path) -> anyhow::Result<String> {
    read_token(&state_dir.join(ADMIN_TOKEN_FILE))
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enroll::decide::default_hostname;
    use cluster::api::Role;

    use testkit::fixtures::{ClusterFile, Host, host};

    /// An inventory master with an address, and a worker named by the operator without one.
    fn spec_text() -> String {
        let worker = Host {
            ip: None,
            hostname: Some("db-1".into()),
            ..host(2, Some("worker"))
        };
        ClusterFile {
            schedulable_masters: true,
            seed: "10.77.0.1:8443".into(),
            hosts: vec![host(1, None), worker],
            ..ClusterFile::demo()
        }
        .render()
    }

    #[test]
    fn a_state_directory_serves_one_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ClusterSpec::parse("demo.toml", &spec_text()).unwrap().spec;
        let first = Seed::open(spec.clone(), dir.path()).unwrap();
        let ca = first.cas.ca.cert_pem().to_owned();
        let token = first.admin_token.clone();
        drop(first);
        let again = Seed::open(spec, dir.path()).unwrap();
        assert_eq!(again.cas.ca.cert_pem(), ca, "the CA set is kept");
        assert_eq!(again.admin_token, token, "the admin token is kept");
        drop(again);
        let other = ClusterSpec::parse("other.toml", &spec_text().replace("\"demo\"", "\"other\""))
            .unwrap()
            .spec;
        let err = Seed::open(other, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("belongs to cluster \"demo\""),
            "{err}"
        );
    }

    #[test]
    fn the_planner_sees_the_inventory_as_the_spec_plans_it() {
        let spec = ClusterSpec::parse("demo.toml", &spec_text()).unwrap().spec;
        let facts = facts_of(&spec);
        let seen: Vec<(Role, u32, &str, Option<&str>)> = facts
            .inventory
            .iter()
            .map(|e| (e.role, e.role_index, e.hostname.as_str(), e.ip.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (Role::Master, 1, "demo-m1", Some("10.77.0.11")),
                (Role::Worker, 1, "db-1", None),
            ]
        );
        assert_eq!(facts.inventory[0].macs, ["52:54:00:00:00:01"]);
        // Generated names follow the spec's pattern and skip the names the inventory uses.
        assert_eq!(
            default_hostname(&facts, Role::Master, 1),
            spec.default_hostname(Role::Master, 2).to_string()
        );
        assert_eq!(
            default_hostname(&facts, Role::Worker, 1),
            spec.default_hostname(Role::Worker, 1).to_string()
        );
    }
}
