//! Firstboot's configuration: the image's TOML file, then kernel command line words, then flags.
//!
//! Two stages: [`RawConfig`] is what the file says (unknown fields refused), [`Config`] is the
//! validated result. Errors name the file, the line and the field.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Where the image keeps firstboot's configuration, under the root.
pub const CONFIG_PATH: &str = "etc/launcher/firstboot.toml";
/// Default directory of OCI archives to preload, under the root.
pub const DEFAULT_PRELOAD_DIR: &str = "/usr/share/launcher/images";
/// Default containerd socket.
pub const DEFAULT_CONTAINERD_ADDRESS: &str = "/run/containerd/containerd.sock";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}:{line}: field `{field}`: {message}")]
    Field {
        file: String,
        line: usize,
        field: String,
        message: String,
    },
    #[error("kernel command line word `{word}`: {message}")]
    Cmdline { word: String, message: String },
    #[error("flag --{flag}: {message}")]
    Flag { flag: String, message: String },
    #[error("no seed URL: set `seed` in {CONFIG_PATH}, launcher.seed= or --seed")]
    NoSeed,
    #[error("no CA pin: set `pin` in {CONFIG_PATH}, launcher.pin= or --pin")]
    NoPin,
}

/// The file as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub seed: Vec<Spanned<String>>,
    pub ntp: Option<Spanned<String>>,
    pub pin: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
    pub max_skew_ms: Option<Spanned<u64>>,
    pub ntp_wait_secs: Option<Spanned<u64>>,
    pub preload_dir: Option<Spanned<String>>,
    pub containerd_address: Option<Spanned<String>>,
    pub pause_image: Option<Spanned<String>>,
    pub wipe: Option<Spanned<bool>>,
}

/// A seed's base URL: `https://host[:port]`, no path, no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedUrl(String);

impl SeedUrl {
    pub fn parse(text: &str) -> Result<SeedUrl, String> {
        let text = text.trim_end_matches('/');
        let rest = text
            .strip_prefix("https://")
            .ok_or_else(|| format!("{text:?} is not an https:// URL"))?;
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
            return Err(format!("{text:?} must be https://HOST[:PORT] with no path"));
        }
        Ok(SeedUrl(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `host:port` of the URL (port 443 when absent).
    pub fn authority(&self) -> String {
        let rest = &self.0["https://".len()..];
        if rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !rest.ends_with(']')
        {
            rest.to_string()
        } else {
            format!("{rest}:443")
        }
    }

    /// The host part, without port or brackets.
    pub fn host(&self) -> String {
        let auth = self.authority();
        let (host, _) = auth.rsplit_once(':').unwrap_or((&auth, ""));
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    }
}

impl fmt::Display for SeedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SHA-256 of the seed CA's SubjectPublicKeyInfo, written `sha256:<64 hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    pub fn parse(text: &str) -> Result<Pin, String> {
        let hex_part = text
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("{text:?} must start with sha256:"))?;
        let bytes = hex::decode(hex_part)
            .map_err(|_| format!("{text:?} is not sha256: followed by hex"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("{text:?} must have 64 hex digits after sha256:"))?;
        Ok(Pin(arr))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

/// A one-time join token: printable ASCII without spaces, at most 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn parse(text: &str) -> Result<Token, String> {
        if text.is_empty() || text.len() > 256 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token is 1-256 printable characters without spaces".into());
        }
        Ok(Token(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub seeds: Vec<SeedUrl>,
    /// `host:port` of the seed's NTP server.
    pub ntp: String,
    pub pin: Pin,
    pub token: Option<Token>,
    pub max_skew: Duration,
    /// How long the time phase keeps asking a silent server before it fails.
    pub ntp_wait: Duration,
    pub preload_dir: String,
    pub containerd_address: String,
    pub pause_image: Option<String>,
    pub wipe: bool,
}

/// Values given on the command line; each one set overrides the file and the kernel words.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub seed: Vec<String>,
    pub ntp: Option<String>,
    pub pin: Option<String>,
    pub token: Option<String>,
    pub max_skew_ms: Option<u64>,
    pub ntp_wait_secs: Option<u64>,
    pub preload_dir: Option<String>,
    pub containerd_address: Option<String>,
    pub wipe: bool,
}

/// Values gathered from all sources before validation, each with where it came from.
#[derive(Debug, Default)]
struct Layered {
    seed: Vec<(String, Source)>,
    ntp: Option<(String, Source)>,
    pin: Option<(String, Source)>,
    token: Option<(String, Source)>,
    max_skew_ms: Option<u64>,
    ntp_wait_secs: Option<u64>,
    preload_dir: Option<String>,
    containerd_address: Option<String>,
    pause_image: Option<(String, Source)>,
    wipe: bool,
}

#[derive(Debug, Clone)]
enum Source {
    File { line: usize, field: &'static str },
    Cmdline(String),
    Flag(&'static str),
}

/// Parses the file's text into a raw config; `file` names it in errors.
pub fn parse_file(file: &str, text: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_string(),
        message: e.to_string().trim_end().replace('\n', " | "),
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Builds the validated config from the file (`None` when absent), the kernel command line and
/// the flags, in increasing precedence.
pub fn resolve(
    file: Option<(&str, &str)>,
    cmdline: &str,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let mut layered = Layered::default();
    let file_name = file.map(|(name, _)| name.to_string()).unwrap_or_default();
    if let Some((name, text)) = file {
        apply_file(&mut layered, name, text)?;
    }
    apply_cmdline(&mut layered, cmdline)?;
    apply_flags(&mut layered, flags);
    validate(layered, &file_name)
}

fn apply_file(l: &mut Layered, name: &str, text: &str) -> Result<(), ConfigError> {
    let raw = parse_file(name, text)?;
    let at = |s: &Spanned<String>, field: &'static str| {
        (
            s.get_ref().clone(),
            Source::File {
                line: line_of(text, s.span().start),
                field,
            },
        )
    };
    l.seed = raw.seed.iter().map(|s| at(s, "seed")).collect();
    l.ntp = raw.ntp.as_ref().map(|s| at(s, "ntp"));
    l.pin = raw.pin.as_ref().map(|s| at(s, "pin"));
    l.token = raw.token.as_ref().map(|s| at(s, "token"));
    l.pause_image = raw.pause_image.as_ref().map(|s| at(s, "pause_image"));
    l.max_skew_ms = raw.max_skew_ms.map(Spanned::into_inner);
    l.ntp_wait_secs = raw.ntp_wait_secs.map(Spanned::into_inner);
    l.preload_dir = raw.preload_dir.map(Spanned::into_inner);
    l.containerd_address = raw.containerd_address.map(Spanned::into_inner);
    l.wipe = raw.wipe.is_some_and(Spanned::into_inner);
    Ok(())
}

fn apply_cmdline(l: &mut Layered, cmdline: &str) -> Result<(), ConfigError> {
    for word in cmdline.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let src = Source::Cmdline(word.to_string());
        match key {
            "launcher.seed" => {
                l.seed = value
                    .split(',')
                    .map(|v| (v.to_string(), src.clone()))
                    .collect();
            }
            "launcher.pin" => l.pin = Some((value.to_string(), src)),
            "launcher.token" => l.token = Some((value.to_string(), src)),
            "launcher.ntp" => l.ntp = Some((value.to_string(), src)),
            "launcher.wipe" => {
                l.wipe = match value {
                    "1" | "yes" | "true" => true,
                    "0" | "no" | "false" => false,
                    _ => {
                        return Err(ConfigError::Cmdline {
                            word: word.to_string(),
                            message: "expected launcher.wipe=1 or launcher.wipe=0".into(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn apply_flags(l: &mut Layered, f: &Overrides) {
    if !f.seed.is_empty() {
        l.seed = f
            .seed
            .iter()
            .map(|s| (s.clone(), Source::Flag("seed")))
            .collect();
    }
    let flag = |v: &Option<String>, name| v.clone().map(|v| (v, Source::Flag(name)));
    l.ntp = flag(&f.ntp, "ntp").or(l.ntp.take());
    l.pin = flag(&f.pin, "pin").or(l.pin.take());
    l.token = flag(&f.token, "token").or(l.token.take());
    l.max_skew_ms = f.max_skew_ms.or(l.max_skew_ms);
    l.ntp_wait_secs = f.ntp_wait_secs.or(l.ntp_wait_secs);
    l.preload_dir = f.preload_dir.clone().or(l.preload_dir.take());
    l.containerd_address = f.containerd_address.clone().or(l.containerd_address.take());
    l.wipe |= f.wipe;
}

fn error_at(file: &str, src: &Source, message: String) -> ConfigError {
    match src {
        Source::File { line, field } => ConfigError::Field {
            file: file.to_string(),
            line: *line,
            field: field.to_string(),
            message,
        },
        Source::Cmdline(word) => ConfigError::Cmdline {
            word: word.clone(),
            message,
        },
        Source::Flag(flag) => ConfigError::Flag {
            flag: flag.to_string(),
            message,
        },
    }
}

fn validate(l: Layered, file: &str) -> Result<Config, ConfigError> {
    let mut seeds = Vec::new();
    for (text, src) in &l.seed {
        seeds.push(SeedUrl::parse(text).map_err(|m| error_at(file, src, m))?);
    }
    let first = seeds.first().ok_or(ConfigError::NoSeed)?.clone();
    let (pin_text, pin_src) = l.pin.as_ref().ok_or(ConfigError::NoPin)?;
    let pin = Pin::parse(pin_text).map_err(|m| error_at(file, pin_src, m))?;
    let token = match &l.token {
        Some((t, src)) => Some(Token::parse(t).map_err(|m| error_at(file, src, m))?),
        None => None,
    };
    let ntp = match &l.ntp {
        Some((t, src)) => parse_ntp(t).map_err(|m| error_at(file, src, m))?,
        None => format!("{}:123", bracket(&first.host())),
    };
    let pause_image = match &l.pause_image {
        Some((t, src)) if t.is_empty() || t.contains(char::is_whitespace) => {
            return Err(error_at(
                file,
                src,
                "an image reference has no spaces".into(),
            ));
        }
        Some((t, _)) => Some(t.clone()),
        None => None,
    };
    Ok(Config {
        seeds,
        ntp,
        pin,
        token,
        max_skew: Duration::from_millis(l.max_skew_ms.unwrap_or(500)),
        ntp_wait: Duration::from_secs(l.ntp_wait_secs.unwrap_or(60)),
        preload_dir: l
            .preload_dir
            .unwrap_or_else(|| DEFAULT_PRELOAD_DIR.to_string()),
        containerd_address: l
            .containerd_address
            .unwrap_or_else(|| DEFAULT_CONTAINERD_ADDRESS.to_string()),
        pause_image,
        wipe: l.wipe,
    })
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `host`, `host:port` or `[v6]:port`; the port defaults to 123.
fn parse_ntp(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains(['/', ' ']) {
        return Err(format!("{text:?} must be HOST or HOST:PORT"));
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && (!host.contains(':') || host.ends_with(']'))
    {
        port.parse::<u16>()
            .map_err(|_| format!("{text:?} has a bad port"))?;
        return Ok(text.to_string());
    }
    Ok(format!("{}:123", bracket(text)))
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
        assert_eq!(cfg.seeds[0].as_str(), "https://10.77.0.1:8443");
        assert_eq!(cfg.ntp, "10.77.0.1:123");
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
        assert_eq!(cfg.seeds[1].as_str(), "https://c:3");
        assert_eq!(cfg.token.as_ref().unwrap().as_str(), "cmd");
        assert_eq!(cfg.ntp, "b:1123");
        assert!(cfg.wipe);
        let flags = Overrides {
            token: Some("flag".into()),
            seed: vec!["https://d".into()],
            ..Default::default()
        };
        let cfg = resolve(Some(("f", &text)), cmd, &flags).unwrap();
        assert_eq!(cfg.token.unwrap().as_str(), "flag");
        assert_eq!(cfg.seeds[0].authority(), "d:443");
    }

    #[test]
    fn bad_input_names_where_it_came_from() {
        let good_cmdline = format!("launcher.seed=https://a launcher.pin={PIN}");
        let bad_token = format!("seed = [\"https://a\"]\npin = \"{PIN}\"\ntoken = \"a b\"");
        let cases: Vec<(Option<&str>, &str, Overrides, &str)> = vec![
            (
                Some("seed = [\"https://a\"]\n\npin = \"md5:00\"\n"),
                "",
                Overrides::default(),
                "fb.toml:3: field `pin`: \"md5:00\" must start with sha256:",
            ),
            (
                Some("seed = [\"http://a\"]\n"),
                "",
                Overrides::default(),
                "fb.toml:1: field `seed`: \"http://a\" is not an https:// URL",
            ),
            (
                Some("seed = []\npinn = \"x\"\n"),
                "",
                Overrides::default(),
                "unknown field `pinn`",
            ),
            (
                None,
                "launcher.seed=https://a launcher.pin=sha256:abcd",
                Overrides::default(),
                "kernel command line word `launcher.pin=sha256:abcd`: \"sha256:abcd\" must have 64 hex digits after sha256:",
            ),
            (
                None,
                "launcher.seed=https://a launcher.wipe=maybe",
                Overrides::default(),
                "kernel command line word `launcher.wipe=maybe`: expected launcher.wipe=1 or launcher.wipe=0",
            ),
            (
                None,
                "",
                Overrides::default(),
                "no seed URL: set `seed` in etc/launcher/firstboot.toml, launcher.seed= or --seed",
            ),
            (
                None,
                "launcher.seed=https://a",
                Overrides::default(),
                "no CA pin: set `pin` in etc/launcher/firstboot.toml, launcher.pin= or --pin",
            ),
            (
                None,
                &good_cmdline,
                Overrides {
                    ntp: Some("a:99999".into()),
                    ..Default::default()
                },
                "flag --ntp: \"a:99999\" has a bad port",
            ),
            (
                Some(&bad_token),
                "",
                Overrides::default(),
                "fb.toml:3: field `token`: a token is 1-256 printable characters without spaces",
            ),
        ];
        for (text, cmdline, flags, want) in cases {
            let err = resolve(text.map(|t| ("fb.toml", t)), cmdline, &flags).unwrap_err();
            let got = err.to_string();
            assert!(got.contains(want), "want {want:?}\n got {got:?}");
        }
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../dist/firstboot.toml.example");
        let cfg = file(text).unwrap();
        assert_eq!(cfg.ntp, "10.77.0.1:123");
        assert_eq!(cfg.ntp_wait, Duration::from_secs(60));
    }

    #[test]
    fn seed_urls_split_into_host_and_authority() {
        let u = SeedUrl::parse("https://[fd00::1]:8443/").unwrap();
        assert_eq!(u.authority(), "[fd00::1]:8443");
        assert_eq!(u.host(), "fd00::1");
        assert_eq!(parse_ntp("fd00::1").unwrap(), "[fd00::1]:123");
        assert_eq!(parse_ntp("[fd00::1]:123").unwrap(), "[fd00::1]:123");
        assert_eq!(parse_ntp("ntp.lan").unwrap(), "ntp.lan:123");
    }
}
