//! `standin-images`: the container images of the Kubernetes stand-ins, under kubeadm's names.

use std::path::PathBuf;

use anyhow::{Context, bail};

const HELP: &str = "standin-images: container images of the STAND-INS for Kubernetes' components.

usage:
  standin-images --registry HOST[:PORT] --kubernetes-version vX.Y.Z --out DIR [--bin-dir DIR]

Writes DIR/<component>.tar for each component a stand-in exists for (kube-apiserver,
kube-controller-manager, kube-scheduler: <component>-standin), named
<registry>/<component>:<version> as kubeadm's static Pod manifests name it: an OCI image
layout in a tar with one layer holding the stand-in at /usr/local/bin/<component> and the
shared libraries ldd lists for it. Also DIR/pause.tar, the sandbox image
<registry>/pause:<tag> with the tag kubeadm pins for the version, from pause-standin at
/pause. Import them into the seed
(`launcher-seed images import DIR/*.tar`) or containerd (`ctr -n k8s.io images import`).
--bin-dir is where the stand-ins are (default: next to this program). Same inputs, same bytes.";

fn run(args: &[String]) -> anyhow::Result<()> {
    let (mut registry, mut version, mut out, mut bin_dir) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            "--registry" => registry = Some(value()?),
            "--kubernetes-version" => version = Some(value()?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--bin-dir" => bin_dir = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other:?}\n\n{HELP}"),
        }
    }
    let (Some(registry), Some(version), Some(out)) = (registry, version, out) else {
        bail!("--registry, --kubernetes-version and --out are required\n\n{HELP}");
    };
    if !version.starts_with('v') || version[1..].split('.').count() != 3 {
        bail!("--kubernetes-version {version:?} is not vMAJOR.MINOR.PATCH");
    }
    let bin_dir = match bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()
            .context("finding this program's directory")?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    for made in standins::images::make(&bin_dir, &registry, &version, &out)? {
        println!("{} {}", made.reference, made.archive.display());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("standin-images: {e:#}");
        std::process::exit(1);
    }
}
