//! The seed's admin API as the lab reaches it: from a thread inside the lab's network namespace,
//! where the seed listens, with the seed's CA and admin token from its state directory. The lab
//! never opens the seed's store: hosts and the etcd client credential both come from here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sched::{CloneFlags, setns};
use registry_seed::client::{AdminClient, EtcdClientFiles, SeedArgs};
use registry_seed::views::{EtcdClientRequest, KubeconfigRequest, StatusView};

use crate::plan::LabPlan;

/// Runs `f` on a thread that entered the network namespace `namespace` first (threads it starts,
/// such as an HTTP client's, are in it too).
fn in_namespace<T: Send + 'static>(
    namespace: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = Path::new("/run/netns").join(namespace);
    std::thread::spawn(move || {
        let ns =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering the network namespace {}", path.display()))?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread that asked the seed panicked"))?
}

fn seed_args(seed_dir: &Path) -> SeedArgs {
    SeedArgs {
        state_dir: PathBuf::from(seed_dir),
        seed: None,
    }
}

/// Every host as the seed sees it (`GET /v1/admin/hosts`), asked inside `namespace` of the seed
/// whose state directory is `seed_dir`.
pub fn status(namespace: &str, seed_dir: &Path) -> anyhow::Result<StatusView> {
    let args = seed_args(seed_dir);
    in_namespace(namespace, move || AdminClient::new(&args)?.status())
}

/// Asks the seed for a fresh etcd client credential (`POST /v1/admin/etcd-client`, valid a
/// day) and writes it into `out`, as `launcher-seed etcd-client` does.
pub fn etcd_client(namespace: &str, seed_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let (args, out) = (seed_args(seed_dir), out.to_path_buf());
    let request = EtcdClientRequest {
        ttl_secs: None,
        holder: Some("launcher-lab".to_string()),
    };
    in_namespace(namespace, move || {
        let credential = AdminClient::new(&args)?.etcd_client(&request)?;
        EtcdClientFiles::write(&out, &credential)?;
        Ok(())
    })
    .context("getting an etcd client certificate from the seed")
}

/// Asks the seed for an administrator's kubeconfig aimed at the control-plane endpoint (valid
/// an hour) and writes it to `out` (0600).
pub fn kubeconfig(namespace: &str, seed_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let (args, out) = (seed_args(seed_dir), out.to_path_buf());
    let request = KubeconfigRequest {
        user: "launcher-lab".to_string(),
        ttl_secs: Some(3600),
        group: None,
    };
    in_namespace(namespace, move || {
        let view = AdminClient::new(&args)?.kubeconfig(&request)?;
        durable::write_atomic(&out, view.kubeconfig.as_bytes(), 0o600)?;
        Ok(())
    })
    .context("getting a kubeconfig from the seed")
}

/// The lab's seed's view of every host; `None` while the seed does not answer.
pub fn read_status(plan: &LabPlan) -> Option<StatusView> {
    status(&plan.namespace, &plan.seed_dir())
        .inspect_err(|err| tracing::debug!("the seed's status: {err:#}"))
        .ok()
}
