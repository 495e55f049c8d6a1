//! The trusted iPXE a lab boots with `--trusted-ipxe DIR`: its manifest read and checked
//! against the lab's seed URL before anything starts, and its CA against the seed's once the
//! seed has one.

use std::path::Path;

use anyhow::Context;
use registry_seed::ipxe::recipe::{MANIFEST, Manifest, TARGETS};

/// The manifest of the trusted iPXE in `dir`, when it holds every binary and boots from
/// `seed_url`.
pub fn check(dir: &Path, seed_url: &str) -> anyhow::Result<Manifest> {
    let build = format!(
        "launcher-seed ipxe --seed-url {seed_url} --out {}",
        dir.display()
    );
    for name in TARGETS.map(|(_, name)| name).iter().chain(&[MANIFEST]) {
        anyhow::ensure!(
            dir.join(name).is_file(),
            "{} holds no trusted iPXE ({name} is missing); build one with `{build}`",
            dir.display()
        );
    }
    let path = dir.join(MANIFEST);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        manifest.seed_url == seed_url,
        "the trusted iPXE in {} boots from {}, not from this lab's seed; build it with `{build}`",
        dir.display(),
        manifest.seed_url
    );
    Ok(manifest)
}

/// A warning when the trusted iPXE trusts another CA than the seed's (in `seed_dir`): its
/// VMs will refuse the seed.
pub fn other_ca(manifest: &Manifest, seed_dir: &Path) -> Option<String> {
    let path = registry_seed::tls::ca_cert_path(seed_dir);
    let pem = std::fs::read_to_string(path).ok()?;
    let pin = registry_seed::tls::pin_of_pem(&pem).ok()?;
    (pin != manifest.ca_pin).then(|| {
        format!(
            "the trusted iPXE trusts the CA with pin {}, the seed's CA is {pin}: the VMs will \
             refuse the seed",
            manifest.ca_pin
        )
    })
}
