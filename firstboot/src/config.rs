//! Firstboot's configuration: the image's `firstboot.toml`, then kernel command line words, then
//! flags.
//!
//! The file is [`cluster::firstboot::FirstbootFile`], the type the builder writes it with; the
//! words and flags go through the same value types (`SeedUrl`, `CaPin`, `NtpServer`,
//! `JoinToken`), so every source accepts exactly what the others do. Errors say where a value
//! came from: the file's line and field, the kernel word or the flag.

use cluster::firstboot::{self as file, FirstbootFile};
use cluster::pki::CaPin;
use cluster::spec::{JoinToken, KubeVersion, NtpServer, SeedUrl, SpecError, ValueError};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// [`cluster::firstboot::PATH`] relative to the root.
pub const CONFIG_PATH: &str = "etc/launcher/firstboot.toml";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] SpecError),
    #[error("kernel command line word `{word}`: {message}")]
    Cmdline { word: String, message: String },
    #[error("flag --{flag}: {message}")]
    Flag { flag: String, message: String },
    #[error("no seed URL: set `seed` in {CONFIG_PATH}, launcher.seed= or --seed")]
    NoSeed,
    #[error("no CA pin: set `pin` in {CONFIG_PATH}, launcher.pin= or --pin")]
    NoPin,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub seeds: Vec<SeedUrl>,
    pub ntp: NtpServer,
    pub pin: CaPin,
    pub token: Option<JoinToken>,
    pub max_skew: Duration,
    /// How long the time phase keeps asking a silent server before it fails.
    pub ntp_wait: Duration,
    pub preload_dir: String,
    pub containerd_address: String,
    pub wipe: bool,
    /// The Kubernetes release the image carries, from `firstboot.toml` only.
    pub kubernetes_version: Option<KubeVersion>,
}

/// Values given on the command line; each one set overrides the file and the kernel words.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub seed: Vec<String>,
    pub ntp: Option<String>,
    pub pin: Option<String>,
    pub token: Option<String>,
    pub max_skew_ms: Option<u32>,
    pub ntp_wait_secs: Option<u32>,
    pub preload_dir: Option<String>,
    pub containerd_address: Option<String>,
    pub wipe: bool,
}

/// Where a value that is not in the file came from.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Cmdline(&'a str),
    Flag(&'static str),
}

impl Source<'_> {
    fn error(self, message: String) -> ConfigError {
        match self {
            Source::Cmdline(word) => ConfigError::Cmdline {
                word: word.to_string(),
                message,
            },
            Source::Flag(flag) => ConfigError::Flag {
                flag: flag.to_string(),
                message,
            },
        }
    }

    fn parse<T: FromStr<Err = ValueError>>(self, text: &str) -> Result<T, ConfigError> {
        text.parse().map_err(|e: ValueError| self.error(e.0))
    }

    fn parse_all<T: FromStr<Err = ValueError>>(
        self,
        texts: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Vec<T>, ConfigError> {
        texts.into_iter().map(|t| self.parse(t.as_ref())).collect()
    }
}

/// Builds the validated config from the file (`(name, text)`, `None` when absent), the kernel
/// command line and the flags, in increasing precedence.
pub fn resolve(
    file: Option<(&str, &str)>,
    cmdline: &str,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let mut layered = match file {
        Some((name, text)) => FirstbootFile::parse(name, text)?,
        None => FirstbootFile::default(),
    };
    apply_cmdline(&mut layered, cmdline)?;
    apply_flags(&mut layered, flags)?;
    finish(layered)
}

fn apply_cmdline(l: &mut FirstbootFile, cmdline: &str) -> Result<(), ConfigError> {
    for word in cmdline.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let src = Source::Cmdline(word);
        match key {
            "launcher.seed" => l.seed = src.parse_all(value.split(','))?,
            "launcher.pin" => l.pin = Some(src.parse(value)?),
            "launcher.token" => l.token = Some(src.parse(value)?),
            "launcher.ntp" => l.ntp = Some(src.parse(value)?),
            "launcher.wipe" => {
                l.wipe = match value {
                    "1" | "yes" | "true" => true,
                    "0" | "no" | "false" => false,
                    _ => {
                        return Err(src.error("expected launcher.wipe=1 or launcher.wipe=0".into()));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn apply_flags(l: &mut FirstbootFile, f: &Overrides) -> Result<(), ConfigError> {
    if !f.seed.is_empty() {
        l.seed = Source::Flag("seed").parse_all(&f.seed)?;
    }
    if let Some(ntp) = &f.ntp {
        l.ntp = Some(Source::Flag("ntp").parse(ntp)?);
    }
    if let Some(pin) = &f.pin {
        l.pin = Some(Source::Flag("pin").parse(pin)?);
    }
    if let Some(token) = &f.token {
        l.token = Some(Source::Flag("token").parse(token)?);
    }
    l.max_skew_ms = f.max_skew_ms.or(l.max_skew_ms);
    l.ntp_wait_secs = f.ntp_wait_secs.or(l.ntp_wait_secs);
    l.preload_dir = f.preload_dir.clone().or(l.preload_dir.take());
    l.containerd_address = f.containerd_address.clone().or(l.containerd_address.take());
    l.wipe |= f.wipe;
    Ok(())
}

fn finish(l: FirstbootFile) -> Result<Config, ConfigError> {
    let first = l.seed.first().ok_or(ConfigError::NoSeed)?;
    let ntp = l
        .ntp
        .unwrap_or_else(|| NtpServer::on(first.endpoint().host()));
    Ok(Config {
        ntp,
        pin: l.pin.ok_or(ConfigError::NoPin)?,
        token: l.token,
        max_skew: Duration::from_millis(l.max_skew_ms.unwrap_or(file::DEFAULT_MAX_SKEW_MS).into()),
        ntp_wait: Duration::from_secs(
            l.ntp_wait_secs
                .unwrap_or(file::DEFAULT_NTP_WAIT_SECS)
                .into(),
        ),
        preload_dir: l
            .preload_dir
            .unwrap_or_else(|| file::DEFAULT_PRELOAD_DIR.to_string()),
        containerd_address: l
            .containerd_address
            .unwrap_or_else(|| file::DEFAULT_CONTAINERD_ADDRESS.to_string()),
        wipe: l.wipe,
        kubernetes_version: l.kubernetes_version,
        seeds: l.seed,
    })
}

/// Reads `<root>/etc/launcher/firstboot.toml` (absent is fine) and the kernel command line
/// (`cmdline_file`, or `<root>/proc/cmdline`), then resolves with the flags.
pub fn load(root: &Path, cmdline_file: Option<&Path>, flags: &Overrides) -> anyhow::Result<Config> {
    use anyhow::Context;
    let path = root.join(CONFIG_PATH);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let cmdline_path: PathBuf = cmdline_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("proc/cmdline"));
    let cmdline = match std::fs::read_to_string(&cmdline_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && cmdline_file.is_none() => {
            String::new()
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", cmdline_path.display())),
    };
    let name = path.display().to_string();
    Ok(resolve(
        text.as_deref().map(|t| (name.as_str(), t)),
        &cmdline,
        flags,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn file(text: &str) -> Result<Config, ConfigError> {
        resolve(Some(("fb.toml", text)), "", &Overrides::default())
    }

    #[test]
    fn a_full_file_resolves_with_defaults() {
        let cfg = file(&format!(
            "seed = [\"https://10.77.0.1:8443\"]\npin = \"{PIN}\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.seeds[0].to_string(), "https://10.77.0.1:8443");
        assert_eq!(cfg.ntp.to_string(), "10.77.0.1:123");
        assert_eq!(cfg.pin.to_string(), PIN);
        assert_eq!(cfg.max_skew, Duration::from_millis(500));
        assert!(!cfg.wipe);
    }

    #[test]
    fn cmdline_overrides_file_and_flags_override_cmdline() {
        let text = format!("seed = [\"https://a:1\"]\npin = \"{PIN}\"\ntoken = \"file\"\n");
        let cmd = "quiet launcher.seed=https://b:2,https://c:3 launcher.token=cmd launcher.ntp=b:1123 launcher.wipe=1";
        let cfg = resolve(Some(("f", &text)), cmd, &Overrides::default()).unwrap();
        assert_eq!(cfg.seeds.len(), 2);
        assert_eq!(cfg.seeds[1].to_string(), "https://c:3");
        assert_eq!(cfg.token.as_ref().unwrap().as_str(), "cmd");
        assert_eq!(cfg.ntp.to_string(), "b:1123");
        assert!(cfg.wipe);
        let flags = Overrides {
            token: Some("flag".into()),
            seed: vec!["https://d:443".into()],
            ..Default::default()
        };
        let cfg = resolve(Some(("f", &text)), cmd, &flags).unwrap();
        assert_eq!(cfg.token.unwrap().as_str(), "flag");
        assert_eq!(cfg.seeds[0].endpoint().to_string(), "d:443");
    }

    #[test]
    fn bad_input_names_where_it_came_from() {
        let good_cmdline = format!("launcher.seed=https://a:1 launcher.pin={PIN}");
        let bad_token = format!("seed = [\"https://a:1\"]\npin = \"{PIN}\"\ntoken = \"a b\"");
        let pin_message = "is not a CA pin: expected \"sha256:\" and 64 hex digits of the seed CA's SubjectPublicKeyInfo (`launcher-seed pin` prints it)";
        let cases: Vec<(Option<&str>, &str, Overrides, String)> = vec![
            (
                Some("seed = [\"https://a:1\"]\n\npin = \"md5:00\"\n"),
                "",
                Overrides::default(),
                format!("fb.toml:3:7: field `pin`: \"md5:00\" {pin_message}"),
            ),
            (
                Some("seed = [\"http://a\"]\n"),
                "",
                Overrides::default(),
                "fb.toml:1:8: field `seed`: \"http://a\" is not an https URL; expected https://HOST:PORT like https://10.77.0.1:8443".into(),
            ),
            (
                // The spec requires a port; firstboot does not make one up.
                Some("seed = [\"https://a\"]\n"),
                "",
                Overrides::default(),
                "fb.toml:1:8: field `seed`: \"https://a\" has no port; expected https://HOST:PORT like https://10.77.0.1:8443".into(),
            ),
            (
                Some("seed = []\npinn = \"x\"\n"),
                "",
                Overrides::default(),
                "fb.toml:2:1: field `pinn`: unknown field `pinn`, expected one of `seed`, `pin`, `ntp`, `token`, `max_skew_ms`, `ntp_wait_secs`, `preload_dir`, `containerd_address`, `wipe`, `kubernetes_version`".into(),
            ),
            (
                None,
                "launcher.seed=https://a:1 launcher.pin=sha256:abcd",
                Overrides::default(),
                format!("kernel command line word `launcher.pin=sha256:abcd`: \"sha256:abcd\" {pin_message}"),
            ),
            (
                None,
                "launcher.seed=https://a:1,https://b",
                Overrides::default(),
                "kernel command line word `launcher.seed=https://a:1,https://b`: \"https://b\" has no port; expected https://HOST:PORT like https://10.77.0.1:8443".into(),
            ),
            (
                None,
                "launcher.seed=https://a:1 launcher.wipe=maybe",
                Overrides::default(),
                "kernel command line word `launcher.wipe=maybe`: expected launcher.wipe=1 or launcher.wipe=0".into(),
            ),
            (
                None,
                "",
                Overrides::default(),
                "no seed URL: set `seed` in etc/launcher/firstboot.toml, launcher.seed= or --seed".into(),
            ),
            (
                None,
                "launcher.seed=https://a:1",
                Overrides::default(),
                "no CA pin: set `pin` in etc/launcher/firstboot.toml, launcher.pin= or --pin".into(),
            ),
            (
                None,
                &good_cmdline,
                Overrides {
                    ntp: Some("a:99999".into()),
                    ..Default::default()
                },
                "flag --ntp: \"a:99999\" has port \"99999\"; expected a number from 1 to 65535".into(),
            ),
            (
                Some(&bad_token),
                "",
                Overrides::default(),
                "fb.toml:3:9: field `token`: a token is 1-256 printable characters without spaces".into(),
            ),
        ];
        for (text, cmdline, flags, want) in cases {
            let err = resolve(text.map(|t| ("fb.toml", t)), cmdline, &flags).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn a_file_the_builder_renders_resolves() {
        let written = FirstbootFile {
            seed: vec!["https://10.77.0.1:8443".parse().unwrap()],
            pin: Some(PIN.parse().unwrap()),
            ntp: Some("10.77.0.1:1123".parse().unwrap()),
            preload_dir: Some(file::DEFAULT_PRELOAD_DIR.into()),
            ..Default::default()
        };
        let text = written.render(&["image demo"]);
        let cfg = file(&text).unwrap();
        assert_eq!(cfg.seeds, written.seed);
        assert_eq!(Some(cfg.pin), written.pin);
        assert_eq!(Some(cfg.ntp), written.ntp);
        assert_eq!(cfg.preload_dir, file::DEFAULT_PRELOAD_DIR);
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../dist/firstboot.toml.example");
        let cfg = file(text).unwrap();
        assert_eq!(cfg.ntp.to_string(), "10.77.0.1:123");
        assert_eq!(cfg.ntp_wait, Duration::from_secs(60));
    }

    #[test]
    fn the_ntp_server_defaults_to_the_first_seeds_host() {
        let cfg = resolve(
            None,
            &format!("launcher.seed=https://[fd00::1]:8443/ launcher.pin={PIN}"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.seeds[0].endpoint().to_string(), "[fd00::1]:8443");
        assert_eq!(cfg.ntp.to_string(), "[fd00::1]:123");
    }
}
