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
        "build one with `launcher-seed ipxe --seed-url {seed_url} --out {}`",
        dir.display()
    );
    for name in TARGETS.map(|(_, name)| name).iter().chain(&[MANIFEST]) {
        anyhow::ensure!(
            dir.join(name).is_file(),
            "{} holds no trusted iPXE ({name} is missing); {build}",
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
        "the trusted iPXE in {} boots from {}, not from this lab's seed; {build}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(seed_url: &str) -> String {
        serde_json::json!({
            "ipxe": "2.0.0",
            "source": {"name": "ipxe-2.0.0.tar", "sha256": "ab"},
            "seed_url": seed_url,
            "ca_pin": "sha256:cd",
            "ca_fingerprint": "sha256:ef",
            "script": "#!ipxe\n",
            "inputs": "sha256:01",
            "files": {},
        })
        .to_string()
    }

    #[test]
    fn a_directory_is_taken_only_whole_and_built_for_this_seed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let build = format!(
            "build one with `launcher-seed ipxe --seed-url https://10.77.0.1:8443 --out {}`",
            d.display()
        );
        let err = |files: &[(&str, &str)]| {
            for (name, text) in files {
                std::fs::write(d.join(name), text).unwrap();
            }
            format!("{:#}", check(d, "https://10.77.0.1:8443").unwrap_err())
        };
        assert_eq!(
            err(&[]),
            format!(
                "{} holds no trusted iPXE (undionly.kpxe is missing); {build}",
                d.display()
            )
        );
        assert_eq!(
            err(&[("undionly.kpxe", "x"), ("ipxe.efi", "x")]),
            format!(
                "{} holds no trusted iPXE (manifest.json is missing); {build}",
                d.display()
            )
        );
        assert_eq!(
            err(&[("manifest.json", &manifest("https://10.0.0.1:8443"))]),
            format!(
                "the trusted iPXE in {} boots from https://10.0.0.1:8443, not from this lab's \
                 seed; {build}",
                d.display()
            )
        );
        std::fs::write(d.join(MANIFEST), manifest("https://10.77.0.1:8443")).unwrap();
        let found = check(d, "https://10.77.0.1:8443").unwrap();
        assert_eq!(found.ca_pin, "sha256:cd");
        // No seed CA yet: nothing to compare.
        assert_eq!(other_ca(&found, &d.join("seed")), None);
    }
}
