//! Running a [`Recipe`]: the source tarball checked against its pin and unpacked into a
//! temporary directory, the configuration, script and CA written into it, make run, and the
//! binaries and their manifest written whole into the output directory (the manifest last).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cluster::spec::{Host, SeedUrl};
use sha2::{Digest, Sha256};

use super::recipe::{
    IPXE_VERSION, LOCAL_CONFIG, MANIFEST, Manifest, Recipe, TARGETS, pinned, sha256_tag,
    source_pins,
};
use crate::tls::SeedCa;

/// Programs the iPXE build runs (gcc, make and perl; ld and objcopy from binutils; openssl for
/// `TRUST=`; tar and xz to unpack).
const TOOLS: [&str; 8] = [
    "gcc", "make", "perl", "ld", "objcopy", "openssl", "tar", "xz",
];
/// The header `util/zbin` (which compresses the BIOS image) needs, from liblzma-dev.
const LZMA_HEADER: &str = "/usr/include/lzma.h";
/// How often a running build says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "{path} is not a pinned iPXE source: its SHA-256 is {sha256}; the pinned ones are {expected}"
    )]
    NotPinned {
        path: PathBuf,
        sha256: String,
        expected: String,
    },
    #[error(
        "{0} missing; the iPXE build needs gcc, make, perl, binutils, openssl, tar, xz-utils \
         and liblzma-dev (ci/deps installs them)"
    )]
    MissingTools(String),
    #[error("{0} unpacks to no iPXE source tree (no TOP/src/Makefile)")]
    NoTree(PathBuf),
    #[error(
        "the work directory {0} has a space or a comma, which make's EMBED= and TRUST= cannot \
         take; point TMPDIR elsewhere"
    )]
    WorkPath(PathBuf),
    #[error("{what} failed ({status}); the last lines of {log}:\n{tail}")]
    Failed {
        what: &'static str,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] durable::Error),
    #[error("the seed CA: {0:#}")]
    Ca(anyhow::Error),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + use<> {
    let path = path.to_path_buf();
    move |source| BuildError::Io { what, path, source }
}

/// What `launcher-seed ipxe` was asked for, checked.
pub(super) struct Request<'a> {
    pub state_dir: &'a Path,
    pub source: &'a Path,
    pub out: &'a Path,
    pub seed_url: SeedUrl,
    pub ntp: Host,
    pub jobs: usize,
}

/// The manifest of the output directory, and whether this run built it.
pub(super) struct Built {
    pub manifest: Manifest,
    pub fresh: bool,
}

pub(super) fn build(request: &Request<'_>) -> Result<Built, BuildError> {
    let recipe = recipe(request)?;
    let toolchain = toolchain()?;
    let key = recipe.key(&toolchain);
    if let Some(manifest) = up_to_date(request.out, &key) {
        return Ok(Built {
            manifest,
            fresh: false,
        });
    }
    println!(
        "launcher-seed: building iPXE {IPXE_VERSION} from {} for {} ({}; minutes on a small \
         machine)",
        recipe.source.name,
        recipe.seed_url,
        TARGETS.map(|(_, name)| name).join(", ")
    );
    let work = tempfile::Builder::new()
        .prefix("launcher-ipxe-")
        .tempdir()
        .map_err(io("making a work directory in", &std::env::temp_dir()))?;
    let work = work.path();
    if work.to_string_lossy().contains([' ', ',', '\t', '\n']) {
        return Err(BuildError::WorkPath(work.to_path_buf()));
    }
    let src = unpack(request.source, work)?;
    let (script, ca) = (work.join("launcher.ipxe"), work.join("seed-ca.crt"));
    let local = src.join("config/local");
    std::fs::create_dir_all(&local).map_err(io("making", &local))?;
    let config = LOCAL_CONFIG.map(|(name, text)| (local.join(name), text.to_string()));
    for (path, text) in config.into_iter().chain([
        (script.clone(), recipe.script()),
        (ca.clone(), recipe.ca_pem.clone()),
    ]) {
        std::fs::write(&path, text).map_err(io("writing", &path))?;
    }
    let log = work.join("build.log");
    make(&src, &recipe, [&script, &ca, work], request.jobs, &log)?;
    let manifest = publish(&recipe, &key, &src, &log, request.out)?;
    Ok(Built {
        manifest,
        fresh: true,
    })
}

/// The recipe: the source's pin, the seed CA (made when the state directory has none).
fn recipe(request: &Request<'_>) -> Result<Recipe, BuildError> {
    let sha256 = file_sha256(request.source)?;
    let source = pinned(&sha256).ok_or_else(|| BuildError::NotPinned {
        path: request.source.to_path_buf(),
        sha256,
        expected: source_pins()
            .iter()
            .map(|p| format!("{} ({})", p.name, p.sha256))
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    if !request.state_dir.exists() {
        durable::private_dir(request.state_dir)?;
    }
    let ca = SeedCa::load_or_create(request.state_dir).map_err(BuildError::Ca)?;
    Ok(Recipe {
        source,
        seed_url: request.seed_url.clone(),
        ntp: request.ntp.clone(),
        ca_pem: ca.ca.cert_pem().to_string(),
        ca_fingerprint: sha256_tag(ca.ca.cert_der()),
        ca_pin: ca.pin(),
    })
}

fn file_sha256(path: &Path) -> Result<String, BuildError> {
    let mut file = std::fs::File::open(path).map_err(io("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Every tool present, and the compiler's and linker's versions (part of the inputs' key).
fn toolchain() -> Result<String, BuildError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = |tool: &str| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file());
    let mut missing: Vec<&str> = TOOLS.into_iter().filter(|t| !found(t)).collect();
    if !Path::new(LZMA_HEADER).is_file() {
        missing.push(LZMA_HEADER);
    }
    if !missing.is_empty() {
        return Err(BuildError::MissingTools(missing.join(", ")));
    }
    let first_line = |tool: &str| {
        let out = Command::new(tool).arg("--version").output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_string)
    };
    Ok(format!(
        "{}; {}",
        first_line("gcc").unwrap_or_default(),
        first_line("ld").unwrap_or_default()
    ))
}

/// The manifest of `out` when it was built from `key` and every binary still matches it.
fn up_to_date(out: &Path, key: &str) -> Option<Manifest> {
    let text = std::fs::read_to_string(out.join(MANIFEST)).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    let intact = TARGETS.iter().all(|(_, name)| {
        let bytes = std::fs::read(out.join(name)).ok();
        bytes.map(|b| sha256_tag(&b)).as_ref() == manifest.files.get(*name)
    });
    (manifest.inputs == format!("sha256:{key}") && intact).then_some(manifest)
}

/// Unpacks `tarball` into `work` and returns its `src` directory.
fn unpack(tarball: &Path, work: &Path) -> Result<PathBuf, BuildError> {
    let tree = work.join("tree");
    std::fs::create_dir(&tree).map_err(io("making", &tree))?;
    let log = work.join("unpack.log");
    let mut tar = Command::new("tar");
    tar.arg("-xf")
        .arg(tarball)
        .arg("-C")
        .arg(&tree)
        .args(["--no-same-owner", "--no-same-permissions"]);
    run_logged(&mut tar, "unpacking the source", &log, |_| ())?;
    let tops = std::fs::read_dir(&tree).map_err(io("reading", &tree))?;
    let mut found = tops
        .filter_map(Result::ok)
        .map(|e| e.path().join("src"))
        .filter(|src| src.join("Makefile").is_file());
    match (found.next(), found.next()) {
        (Some(src), None) => Ok(src),
        _ => Err(BuildError::NoTree(tarball.to_path_buf())),
    }
}

/// Runs make in `src` with the script, the CA and the work directory at `paths`.
fn make(
    src: &Path,
    recipe: &Recipe,
    paths: [&Path; 3],
    jobs: usize,
    log: &Path,
) -> Result<(), BuildError> {
    let [script, ca, work] = paths.map(|p| p.to_string_lossy().into_owned());
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(src)
        .arg(format!("-j{}", jobs.max(1)))
        .args(TARGETS.map(|(target, _)| target))
        .args(recipe.make_vars(&script, &ca, &work))
        // A make or a cargo above this one must not hand it its jobserver or flags.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .env("LC_ALL", "C");
    let started = Instant::now();
    run_logged(&mut make, "make", log, |text| {
        let steps = text.lines().filter(|l| l.starts_with("  [")).count();
        println!(
            "launcher-seed: building iPXE: {steps} steps in {} s",
            started.elapsed().as_secs()
        );
    })?;
    println!(
        "launcher-seed: built iPXE in {} s",
        started.elapsed().as_secs()
    );
    Ok(())
}

/// Runs `cmd` with its output in `log`, calling `progress` with the log so far now and then.
fn run_logged(
    cmd: &mut Command,
    what: &'static str,
    log: &Path,
    mut progress: impl FnMut(&str),
) -> Result<(), BuildError> {
    let file = std::fs::File::create(log).map_err(io("creating", log))?;
    let err = file.try_clone().map_err(io("opening", log))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(io("starting", Path::new(cmd.get_program())))?;
    let mut last = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io("waiting for", log))? {
            break status;
        }
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            progress(&std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    Err(BuildError::Failed {
        what,
        status,
        log: log.to_path_buf(),
        tail: lines[lines.len().saturating_sub(30)..].join("\n"),
    })
}

/// Writes each binary, the build log and then the manifest into `out`.
fn publish(
    recipe: &Recipe,
    key: &str,
    src: &Path,
    log: &Path,
    out: &Path,
) -> Result<Manifest, BuildError> {
    std::fs::create_dir_all(out).map_err(io("making", out))?;
    let mut files = BTreeMap::new();
    for (target, name) in TARGETS {
        let built = src.join(target);
        let bytes = std::fs::read(&built).map_err(io("reading", &built))?;
        durable::write_atomic(&out.join(name), &bytes, 0o644)?;
        files.insert(name.to_string(), sha256_tag(&bytes));
    }
    let log_text = std::fs::read(log).map_err(io("reading", log))?;
    durable::write_atomic(&out.join("build.log"), &log_text, 0o644)?;
    let manifest = recipe.manifest(key, files);
    let mut json = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
    json.push('\n');
    durable::write_atomic(&out.join(MANIFEST), json.as_bytes(), 0o644)?;
    Ok(manifest)
}
