//! The base rootfs: a pinned tarball, or an `mmdebstrap` result cached under the hash of what it
//! was made from.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::definition::Mmdebstrap;
use crate::tools::{ToolError, run};

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] durable::Error),
}

/// The text the cache key hashes: every input of the mmdebstrap run, one per line.
pub fn cache_inputs(m: &Mmdebstrap, epoch: u64, mmdebstrap_version: &str) -> String {
    let list = |v: &[String]| v.join(",");
    format!(
        "launcher-base v1\nmmdebstrap={}\nsuite={}\nvariant={}\nmirror={}\npackages={}\ndpkg_options={}\nsource_date_epoch={epoch}\n",
        mmdebstrap_version.trim(),
        m.suite.as_str(),
        m.variant.as_str(),
        m.mirror.as_str(),
        list(
            &m.packages
                .iter()
                .map(|p| p.as_str().to_string())
                .collect::<Vec<_>>()
        ),
        list(
            &m.dpkg_options
                .iter()
                .map(|p| p.as_str().to_string())
                .collect::<Vec<_>>()
        ),
    )
}

pub fn cache_key(inputs: &str) -> String {
    hex::encode(Sha256::digest(inputs.as_bytes()))
}

/// The mmdebstrap command that makes `out`.
pub fn command(m: &Mmdebstrap, epoch: u64, out: &Path) -> Command {
    let mut cmd = Command::new("mmdebstrap");
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .arg("--quiet")
        .arg(format!("--variant={}", m.variant.as_str()));
    if !m.packages.is_empty() {
        let list: Vec<&str> = m.packages.iter().map(|p| p.as_str()).collect();
        cmd.arg(format!("--include={}", list.join(",")));
    }
    for opt in &m.dpkg_options {
        cmd.arg(format!("--dpkgopt={}", opt.as_str()));
    }
    cmd.arg(m.suite.as_str()).arg(out).arg(m.mirror.as_str());
    cmd
}

/// Returns the cached base for `m`, running mmdebstrap first when it is not cached yet.
/// The second value says whether it was already cached.
pub fn ensure(m: &Mmdebstrap, epoch: u64, cache: &Path) -> Result<(PathBuf, bool), BaseError> {
    let version =
        String::from_utf8_lossy(&run(Command::new("mmdebstrap").arg("--version"))?).into_owned();
    let inputs = cache_inputs(m, epoch, &version);
    let key = cache_key(&inputs);
    let path = cache.join(format!("base-{key}.tar"));
    if path.is_file() {
        return Ok((path, true));
    }
    fs::create_dir_all(cache).map_err(|source| BaseError::Io {
        what: "creating cache",
        path: cache.into(),
        source,
    })?;
    let tmp = cache.join(format!(".tmp-base-{key}-{}.tar", std::process::id()));
    let result = run(&mut command(m, epoch, &tmp));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    durable::write_atomic(
        &cache.join(format!("base-{key}.inputs")),
        inputs.as_bytes(),
        0o644,
    )?;
    fs::rename(&tmp, &path).map_err(|source| BaseError::Io {
        what: "renaming",
        path: tmp.clone(),
        source,
    })?;
    // The cached base survives a power cut, not only its inputs file.
    durable::sync_dir(cache)?;
    Ok((path, false))
}

/// The sidecar that keeps a cached base's sha256 once it was hashed and its entries checked:
/// `<sha256> <size> <mtime in ns>`, trusted only while the base keeps that size and time.
fn sidecar(base: &Path) -> PathBuf {
    base.with_extension("checked")
}

fn stamp(meta: &fs::Metadata) -> (u64, i128) {
    use std::os::unix::fs::MetadataExt as _;
    (
        meta.len(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
    )
}

/// The sha256 of a cached base that an earlier build hashed and checked, if it has not changed
/// since.
pub fn remembered(base: &Path) -> Option<String> {
    let text = fs::read_to_string(sidecar(base)).ok()?;
    let mut words = text.split_whitespace();
    let (sha, size, mtime) = (words.next()?, words.next()?, words.next()?);
    let now = stamp(&fs::metadata(base).ok()?);
    (sha.len() == 64
        && sha.bytes().all(|b| b.is_ascii_hexdigit())
        && size.parse::<u64>().ok()? == now.0
        && mtime.parse::<i128>().ok()? == now.1)
        .then(|| sha.to_string())
}

/// Records that `base` hashes to `sha256` and its entries were checked.
pub fn remember(base: &Path, sha256: &str) -> Result<(), BaseError> {
    let meta = fs::metadata(base).map_err(|source| BaseError::Io {
        what: "reading",
        path: base.into(),
        source,
    })?;
    let (size, mtime) = stamp(&meta);
    durable::write_atomic(
        &sidecar(base),
        format!("{sha256} {size} {mtime}\n").as_bytes(),
        0o644,
    )?;
    Ok(())
}
