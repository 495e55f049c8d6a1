//! The seed's admin API as the lab reaches it: from a thread inside the lab's network namespace,
//! where the seed listens, with the seed's CA and admin token from its state directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sched::{CloneFlags, setns};
use registry_seed::client::{AdminClient, SeedArgs};
use registry_seed::views::StatusView;

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

/// Every host as the seed sees it (`GET /v1/admin/hosts`), asked inside `namespace` of the seed
/// whose state directory is `seed_dir`.
pub fn status(namespace: &str, seed_dir: &Path) -> anyhow::Result<StatusView> {
    let args = SeedArgs {
        state_dir: PathBuf::from(seed_dir),
        seed: None,
    };
    in_namespace(namespace, move || AdminClient::new(&args)?.status())
}

/// The lab's seed's view of every host; `None` while the seed does not answer.
pub fn read_status(plan: &LabPlan) -> Option<StatusView> {
    status(&plan.namespace, &plan.seed_dir())
        .inspect_err(|err| tracing::debug!("the seed's status: {err:#}"))
        .ok()
}
