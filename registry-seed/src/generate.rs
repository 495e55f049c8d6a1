//! `launcher-seed gen`: the offline form of what the seed hands each host, written as one tree
//! per host rooted at that host's `/`, plus `cluster/` with the CA set and `admin.conf`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cluster::api::{FileSource, Role};
use cluster::etcd::{ClusterState, Member};
use cluster::pki::CaSet;
use cluster::plan::{self, EtcdPlacement, HostInput};
use cluster::spec::ClusterSpec;

/// The file that marks a directory as written by `gen`, so a rerun may replace it.
pub const MARKER: &str = ".launcher-gen";

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// The cluster definition (TOML).
    #[arg(long)]
    pub cluster: PathBuf,
    /// Directory to write one tree per host into (plus `cluster/`). It must not exist, be
    /// empty, or have been written by an earlier `gen`, which is then replaced whole.
    #[arg(long)]
    pub out: PathBuf,
}

/// One file of the output, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFile {
    pub path: PathBuf,
    pub mode: u32,
    pub text: String,
}

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let text = fs::read_to_string(&args.cluster)
        .with_context(|| format!("reading {}", args.cluster.display()))?;
    let parsed = ClusterSpec::parse(&args.cluster.display().to_string(), &text)?;
    for warning in &parsed.warnings {
        eprintln!("warning: {warning}");
    }
    check_out_dir(&args.out)?;
    let files = render(&parsed.spec, time::OffsetDateTime::now_utc())?;
    write_tree(&args.out, &files)?;
    println!("wrote {} files to {}", files.len(), args.out.display());
    Ok(())
}

/// Every file of the output, decided without touching the disk.
pub fn render(spec: &ClusterSpec, now: time::OffsetDateTime) -> anyhow::Result<Vec<OutFile>> {
    let cas = CaSet::generate(spec.key_algorithm, now).context("making the cluster's CAs")?;
    let inventory = spec.plan_inventory();
    let mut members = Vec::new();
    for planned in inventory.iter().filter(|p| p.role == Role::Master) {
        let Some(ip) = planned.host.ip else {
            bail!(
                "master {} has no ip in the cluster file; etcd needs one",
                planned.hostname
            );
        };
        members.push(Member::new(planned.hostname.to_string(), ip.into()));
    }
    let placement = EtcdPlacement {
        members,
        state: ClusterState::New,
        learner: false,
    };
    let no_csrs = BTreeMap::new();
    let mut out = Vec::new();
    let mut first_master = true;
    for planned in &inventory {
        let is_master = planned.role == Role::Master;
        let input = HostInput {
            spec,
            cas: &cas,
            host_id: &planned.host.mac.hyphenated(),
            hostname: &planned.hostname,
            role: planned.role,
            ip: planned.host.ip.map(Into::into),
            first_master: is_master && first_master,
            etcd: is_master.then(|| placement.clone()),
            csrs: &no_csrs,
            now,
        };
        first_master &= !is_master;
        let host_plan = plan::plan_host(&input)
            .with_context(|| format!("planning host {}", planned.hostname))?;
        out.extend(host_files(planned.hostname.as_str(), &host_plan)?);
    }
    out.extend(cluster_files(spec, &cas, now)?);
    Ok(out)
}

fn host_files(hostname: &str, plan: &cluster::api::Plan) -> anyhow::Result<Vec<OutFile>> {
    plan.files
        .iter()
        .map(|file| {
            let FileSource::Text { text } = &file.source else {
                bail!("{} of {hostname} needs a key the host holds", file.path);
            };
            let relative = file.path.trim_start_matches('/');
            Ok(OutFile {
                path: Path::new(hostname).join(relative),
                mode: file.mode,
                text: text.clone(),
            })
        })
        .collect()
}

fn cluster_files(
    spec: &ClusterSpec,
    cas: &CaSet,
    now: time::OffsetDateTime,
) -> anyhow::Result<Vec<OutFile>> {
    let mut out: Vec<OutFile> = cas
        .to_files()
        .into_iter()
        .map(|(name, text)| OutFile {
            mode: if name.ends_with(".key") { 0o600 } else { 0o644 },
            path: Path::new("cluster/pki").join(name),
            text,
        })
        .collect();
    out.push(OutFile {
        path: "cluster/admin.conf".into(),
        mode: 0o600,
        text: plan::admin_kubeconfig(spec, cas, now)?,
    });
    out.push(OutFile {
        path: "cluster/discovery-hash".into(),
        mode: 0o644,
        text: format!("{}\n", cas.discovery_hash()),
    });
    Ok(out)
}

/// Refuses an output directory that holds anything `gen` did not write.
fn check_out_dir(out: &Path) -> anyhow::Result<()> {
    let mut entries = match fs::read_dir(out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    };
    if entries.next().is_none() || out.join(MARKER).is_file() {
        return Ok(());
    }
    bail!(
        "{} is not empty and was not written by `launcher-seed gen`; refusing to write into it",
        out.display()
    )
}

/// Writes the files into a new directory next to `out`, then puts it in `out`'s place, so `out`
/// is never half-written.
pub fn write_tree(out: &Path, files: &[OutFile]) -> anyhow::Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".launcher-gen-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    for file in files {
        write_file(&staging.path().join(&file.path), file.mode, &file.text)?;
    }
    write_file(
        &staging.path().join(MARKER),
        0o644,
        "written by launcher-seed gen\n",
    )?;
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", staging.path().display()))?;
    replace_dir(&staging.keep(), out)
}

fn write_file(path: &Path, mode: u32, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().expect("every output file is in a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    // The umask may have narrowed the mode given at creation.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Moves `staging` to `out`; an existing `out` (empty, or an earlier `gen`) is moved aside
/// first and removed once the new tree is in place.
fn replace_dir(staging: &Path, out: &Path) -> anyhow::Result<()> {
    let old = staging.with_extension("old");
    let had_old = out.exists();
    if had_old {
        fs::rename(out, &old)
            .with_context(|| format!("moving the earlier {} aside", out.display()))?;
    }
    if let Err(e) = fs::rename(staging, out) {
        if had_old {
            let _ = fs::rename(&old, out);
        }
        let _ = fs::remove_dir_all(staging);
        return Err(e).with_context(|| format!("moving the new tree to {}", out.display()));
    }
    if had_old {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}
