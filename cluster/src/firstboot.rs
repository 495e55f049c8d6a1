//! `/etc/launcher/firstboot.toml`: what an image tells its agent. The builder writes it with
//! [`FirstbootFile::render`], firstboot reads it with [`FirstbootFile::parse`]; both sides share
//! this one type, so a field cannot mean one thing to one and another to the other.
//!
//! Kernel command line words and firstboot's flags override the file at boot; that layering is
//! firstboot's. Everything here is what the file itself may say.

use serde::{Deserialize, Serialize};

use crate::pki::CaPin;
use crate::spec::{JoinToken, NtpServer, SeedUrl, SpecError};

/// Where the image keeps the file.
pub const PATH: &str = "/etc/launcher/firstboot.toml";
/// Where the builder puts OCI archives to preload, and where firstboot looks by default.
pub const DEFAULT_PRELOAD_DIR: &str = "/usr/share/launcher/images";
/// containerd's socket, unless the file says otherwise.
pub const DEFAULT_CONTAINERD_ADDRESS: &str = "/run/containerd/containerd.sock";
/// Largest clock skew to the seed allowed after the clock is stepped, unless the file says.
pub const DEFAULT_MAX_SKEW_MS: u32 = 500;
/// How long the time phase asks a silent NTP server before it fails, unless the file says.
pub const DEFAULT_NTP_WAIT_SECS: u32 = 60;

/// The file's fields; every one may be left out (the kernel command line may carry the seed and
/// the pin instead). Unknown fields are refused: the image and its agent are built together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstbootFile {
    /// Seed base URLs, tried in turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seed: Vec<SeedUrl>,
    /// The seed CA's pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<CaPin>,
    /// The seed's NTP server; the first seed's host on port 123 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp: Option<NtpServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<JoinToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_skew_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp_wait_secs: Option<u32>,
    /// Directory of OCI archives the preload phase imports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd_address: Option<String>,
    /// Format an empty `LAUNCHER-DATA` partition (never a formatted one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wipe: bool,
    /// The Kubernetes release the image carries, sent at enrollment for the seed to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<crate::spec::KubeVersion>,
}

impl FirstbootFile {
    /// Parses the file's text; `file` names it in errors, which point at line, column and field.
    pub fn parse(file: &str, text: &str) -> Result<FirstbootFile, SpecError> {
        toml::from_str(text).map_err(|e| crate::spec::error::Locator { file, text }.toml_error(&e))
    }

    /// The file's text, each field on its own line after a `#` comment line per `header` line.
    pub fn render(&self, header: &[&str]) -> String {
        let mut out: String = header.iter().map(|l| format!("# {l}\n")).collect();
        out.push_str(&toml::to_string(self).expect("every field is a string, number or bool"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn what_the_builder_renders_firstboot_parses_back() {
        let full = FirstbootFile {
            seed: vec![
                "https://10.77.0.1:8443".parse().unwrap(),
                "https://[fd00::1]:8443".parse().unwrap(),
            ],
            pin: Some(PIN.parse().unwrap()),
            ntp: Some("10.77.0.1:1123".parse().unwrap()),
            token: Some("abc.def".parse().unwrap()),
            max_skew_ms: Some(250),
            ntp_wait_secs: Some(5),
            preload_dir: Some(DEFAULT_PRELOAD_DIR.into()),
            containerd_address: Some(DEFAULT_CONTAINERD_ADDRESS.into()),
            wipe: true,
            kubernetes_version: Some("v1.33.4".parse().unwrap()),
        };
        for file in [full, FirstbootFile::default()] {
            let text = file.render(&["written by a test"]);
            assert!(text.starts_with("# written by a test\n"), "{text}");
            assert_eq!(
                FirstbootFile::parse("fb.toml", &text).unwrap(),
                file,
                "{text}"
            );
        }
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../firstboot/dist/firstboot.toml.example");
        let file = FirstbootFile::parse("example", text).unwrap();
        assert_eq!(file.seed[0].to_string(), "https://10.77.0.1:8443");
        assert_eq!(file.ntp.unwrap().to_string(), "10.77.0.1:123");
    }

    #[test]
    fn bad_files_are_refused_at_the_field() {
        let cases = [
            (
                "seed = [\"https://a\"]\n",
                "fb.toml:1:8: field `seed`: \"https://a\" has no port; expected https://HOST:PORT like https://10.77.0.1:8443",
            ),
            (
                "seed = [\"http://a:1\"]\n",
                "fb.toml:1:8: field `seed`: \"http://a:1\" is not an https URL; expected https://HOST:PORT like https://10.77.0.1:8443",
            ),
            (
                "\n\npin = \"md5:00\"\n",
                "fb.toml:3:7: field `pin`: \"md5:00\" is not a CA pin: expected \"sha256:\" and 64 hex digits of the seed CA's SubjectPublicKeyInfo (`launcher-seed pin` prints it)",
            ),
            (
                "ntp = \"a:99999\"\n",
                "fb.toml:1:7: field `ntp`: \"a:99999\" has port \"99999\"; expected a number from 1 to 65535",
            ),
            (
                "token = \"a b\"\n",
                "fb.toml:1:9: field `token`: a token is 1-256 printable characters without spaces",
            ),
            (
                "max_skew_ms = -1\n",
                "fb.toml:1:15: field `max_skew_ms`: invalid value: integer `-1`, expected u32",
            ),
            (
                "kubernetes_version = \"1.33.4\"\n",
                "fb.toml:1:22: field `kubernetes_version`: \"1.33.4\" is not a version: expected vMAJOR.MINOR.PATCH like v1.33.4",
            ),
            (
                "pinn = \"x\"\n",
                "fb.toml:1:1: field `pinn`: unknown field `pinn`, expected one of `seed`, `pin`, `ntp`, `token`, `max_skew_ms`, `ntp_wait_secs`, `preload_dir`, `containerd_address`, `wipe`, `kubernetes_version`",
            ),
            (
                "\"\" = \"\"\n",
                "fb.toml:1:1: field ``: unknown field ``, expected one of `seed`, `pin`, `ntp`, `token`, `max_skew_ms`, `ntp_wait_secs`, `preload_dir`, `containerd_address`, `wipe`, `kubernetes_version`",
            ),
        ];
        for (text, want) in cases {
            let got = FirstbootFile::parse("fb.toml", text)
                .unwrap_err()
                .to_string();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn ntp_servers_take_port_123_unless_told() {
        let cases = [
            ("10.77.0.1", "10.77.0.1:123"),
            ("10.77.0.1:1123", "10.77.0.1:1123"),
            ("fd00::1", "[fd00::1]:123"),
            ("[fd00::1]:123", "[fd00::1]:123"),
            ("ntp.lan", "ntp.lan:123"),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<NtpServer>().unwrap().to_string(), want);
        }
    }
}
