//! The trusted iPXE as values: the pinned sources, the build configuration, the script it
//! carries, the key of all its inputs and the manifest written beside the binaries. Nothing
//! here touches a disk; [`super::build`] does.

use std::collections::BTreeMap;

use cluster::spec::{Host, NtpServer, SeedUrl};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `HASH  NAME` lines of the accepted source tarballs (ci/deps reads the same file).
const SOURCE_PINS: &str = include_str!("../../ipxe/source.sha256");

/// The iPXE release the pins hold.
pub const IPXE_VERSION: &str = "2.0.0";

/// The release's own date (tag v2.0.0), as the build timestamp: the same inputs give the same
/// bytes.
pub const SOURCE_DATE_EPOCH: u64 = 1_772_812_135;

/// What the embedded script sends as its DHCP user class, so that a DHCP server can tell the
/// trusted iPXE from the firmware's or NIC ROM's and give it no boot file (it needs none).
pub const USER_CLASS: &str = "launcher-trusted-ipxe";

/// The make targets, and the name each binary gets in the output directory.
pub const TARGETS: [(&str, &str); 2] = [
    // BIOS: chainloaded by a PXE ROM over TFTP.
    ("bin/undionly.kpxe", "undionly.kpxe"),
    // UEFI x86-64, every driver.
    ("bin-x86_64-efi/ipxe.efi", "ipxe.efi"),
];

/// `config/local/general.h`: HTTPS in every build (BIOS builds leave it out by default) and
/// the `ntp` command.
pub const GENERAL_H: &str = "/* launcher: HTTPS also in BIOS builds, and the ntp command. */\n\
#define DOWNLOAD_PROTO_HTTPS\n\
#define NTP_CMD\n";

/// `config/local/crypto.h`: the seed CA is the only root, and nothing is asked of the
/// internet (no cross-signed certificates, no OCSP).
pub const CRYPTO_H: &str = "/* launcher: the seed CA is the only root; nothing is fetched to \
check a certificate. */\n\
#undef CROSSCERT\n\
#define CROSSCERT \"\"\n\
#undef OCSP_CHECK\n";

/// `config/local/console.h`: BIOS builds also write to the first serial port, where a lab
/// VM's console log or a BMC's serial-over-LAN shows what iPXE did (UEFI firmware already
/// copies its console there).
pub const CONSOLE_H: &str = "/* launcher: iPXE's messages also on the first serial port. */\n\
#if defined ( PLATFORM_pcbios )\n\
#define CONSOLE_SERIAL\n\
#endif\n";

/// The files written into `config/local/`, read after iPXE's own defaults.
pub const LOCAL_CONFIG: [(&str, &str); 3] = [
    ("general.h", GENERAL_H),
    ("crypto.h", CRYPTO_H),
    ("console.h", CONSOLE_H),
];

/// One accepted source tarball.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePin {
    /// The name it is published under.
    pub name: String,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
}

/// Every accepted source tarball, in the order of the pin file.
pub fn source_pins() -> Vec<SourcePin> {
    SOURCE_PINS
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once("  "))
        .map(|(hash, name)| SourcePin {
            name: name.trim().to_string(),
            sha256: hash.to_string(),
        })
        .collect()
}

/// The pin a tarball with this SHA-256 matches.
pub fn pinned(sha256: &str) -> Option<SourcePin> {
    source_pins().into_iter().find(|p| p.sha256 == sha256)
}

/// Why a recipe cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecipeError {
    #[error("iPXE's ntp command asks port 123 only; {0} names another port")]
    NtpPort(NtpServer),
}

/// Everything a trusted iPXE is built from, but the source tree and the compiler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub source: SourcePin,
    /// The seed the embedded script chains to.
    pub seed_url: SeedUrl,
    /// The host iPXE sets its clock from before it checks the seed's certificate.
    pub ntp: Host,
    /// The seed CA, PEM: its fingerprint is the only root iPXE trusts.
    pub ca_pem: String,
    /// `sha256:` of the CA certificate's DER, the fingerprint iPXE compares.
    pub ca_fingerprint: String,
    /// The seed CA's SPKI pin, as machines get it on their kernel command line.
    pub ca_pin: String,
}

impl Recipe {
    /// The NTP host of `ntp`, or the seed's own host when none is given.
    pub fn ntp_host(seed_url: &SeedUrl, ntp: Option<&NtpServer>) -> Result<Host, RecipeError> {
        match ntp {
            None => Ok(seed_url.endpoint().host().clone()),
            Some(server) if server.endpoint().port() == NtpServer::PORT => {
                Ok(server.endpoint().host().clone())
            }
            Some(server) => Err(RecipeError::NtpPort(server.clone())),
        }
    }

    /// The script built into iPXE. It asks DHCP for an address until it gets one, sets the
    /// clock (a machine whose clock is years off would find the seed's certificate not yet or
    /// no longer valid), and chains to the seed's boot script over HTTPS, trying again every
    /// 30 s when that fails. It ignores any boot file name DHCP offers.
    pub fn script(&self) -> String {
        let url = &self.seed_url;
        // iPXE's ntp command takes an address without IPv6 brackets.
        let ntp = match self.ntp.ip() {
            Some(ip) => ip.to_string(),
            None => self.ntp.to_string(),
        };
        format!(
            "#!ipxe\n\
             # launcher: boot from the seed at {url} over HTTPS; its CA is the only root.\n\
             set user-class {USER_CLASS}\n\
             :net\n\
             dhcp && goto boot || echo launcher: no DHCP answer, trying again in 10 s\n\
             sleep 10\n\
             goto net\n\
             :boot\n\
             ntp {ntp} || echo launcher: no time from {ntp}, the clock stays as it is\n\
             chain {url}/boot.ipxe || echo launcher: cannot boot from {url} (${{errno}}), trying again in 30 s\n\
             sleep 30\n\
             goto boot\n"
        )
    }

    /// The make arguments after the targets, given where the script and the CA were written
    /// and the work directory they and the source tree are in. The debug information of the
    /// objects names the work directory as `/build`: the build ID iPXE puts in ipxe.efi is a
    /// checksum of the objects, so a path there would change the bytes from one build to the
    /// next.
    pub fn make_vars(&self, script: &str, ca: &str, work: &str) -> Vec<String> {
        vec![
            format!("EMBED={script}"),
            format!("TRUST={ca}"),
            format!("SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}"),
            format!("EXTRA_CFLAGS=-ffile-prefix-map={work}=/build"),
        ]
    }

    /// `sha256` hex of every input, with the compiler's and linker's versions: an output
    /// directory built from the same key is up to date.
    pub fn key(&self, toolchain: &str) -> String {
        let targets: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
        let config: String = LOCAL_CONFIG
            .iter()
            .map(|(name, text)| format!("{name}={text}\n"))
            .collect();
        let text = format!(
            "launcher-ipxe v1\nsource={}\nca={}\nscript={}\n{config}targets={}\nmake={}\n\
             toolchain={}\n",
            self.source.sha256,
            self.ca_fingerprint,
            self.script(),
            targets.join(","),
            self.make_vars("SCRIPT", "CA", "WORK").join(" "),
            toolchain.trim(),
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// The manifest of a build with this key, given each output's name and bytes' SHA-256.
    pub fn manifest(&self, key: &str, files: BTreeMap<String, String>) -> Manifest {
        Manifest {
            ipxe: IPXE_VERSION.to_string(),
            source: self.source.clone(),
            seed_url: self.seed_url.to_string(),
            ca_pin: self.ca_pin.clone(),
            ca_fingerprint: self.ca_fingerprint.clone(),
            script: self.script(),
            inputs: format!("sha256:{key}"),
            files,
        }
    }
}

/// `manifest.json` beside the binaries: what they were built from and what they trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The iPXE release.
    pub ipxe: String,
    pub source: SourcePin,
    /// The seed the embedded script chains to.
    pub seed_url: String,
    /// The seed CA's SPKI pin (`launcher.pin=`).
    pub ca_pin: String,
    /// `sha256:` of the seed CA certificate: the only root iPXE trusts.
    pub ca_fingerprint: String,
    /// The embedded script.
    pub script: String,
    /// `sha256:` of every input ([`Recipe::key`]).
    pub inputs: String,
    /// Each binary's name and `sha256:` of its bytes.
    pub files: BTreeMap<String, String>,
}

/// The manifest's file name in the output directory.
pub const MANIFEST: &str = "manifest.json";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_tag(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(url: &str) -> Recipe {
        let seed_url: SeedUrl = url.parse().unwrap();
        Recipe {
            source: source_pins()[0].clone(),
            ntp: Recipe::ntp_host(&seed_url, None).unwrap(),
            seed_url,
            ca_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            ca_fingerprint: "sha256:aa".into(),
            ca_pin: "sha256:bb".into(),
        }
    }

    #[test]
    fn the_pins_are_the_debian_repack_and_the_release_tag() {
        let pins = source_pins();
        let names: Vec<&str> = pins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ipxe_2.0.0+dfsg.orig.tar.xz", "ipxe-2.0.0.tar"]);
        for pin in &pins {
            assert!(
                pin.sha256.len() == 64 && pin.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "{pin:?}"
            );
            assert_eq!(pinned(&pin.sha256).as_ref(), Some(pin));
        }
        assert_eq!(pinned(&"0".repeat(64)), None);
    }

    #[test]
    fn the_script_gets_an_address_sets_the_clock_and_chains_to_the_seed_over_https() {
        assert_eq!(
            recipe("https://10.77.0.1:8443").script(),
            "#!ipxe\n\
             # launcher: boot from the seed at https://10.77.0.1:8443 over HTTPS; its CA is the only root.\n\
             set user-class launcher-trusted-ipxe\n\
             :net\n\
             dhcp && goto boot || echo launcher: no DHCP answer, trying again in 10 s\n\
             sleep 10\n\
             goto net\n\
             :boot\n\
             ntp 10.77.0.1 || echo launcher: no time from 10.77.0.1, the clock stays as it is\n\
             chain https://10.77.0.1:8443/boot.ipxe || echo launcher: cannot boot from \
             https://10.77.0.1:8443 (${errno}), trying again in 30 s\n\
             sleep 30\n\
             goto boot\n"
        );
    }

    #[test]
    fn the_ntp_host_is_the_seed_unless_given_and_only_on_port_123() {
        let url: SeedUrl = "https://[fd00::1]:8443".parse().unwrap();
        let v6 = Recipe {
            ntp: Recipe::ntp_host(&url, None).unwrap(),
            seed_url: url.clone(),
            ..recipe("https://10.77.0.1:8443")
        };
        assert!(v6.script().contains("\nntp fd00::1 ||"), "{}", v6.script());
        assert!(
            v6.script()
                .contains("chain https://[fd00::1]:8443/boot.ipxe")
        );
        let named: NtpServer = "time.lab:123".parse().unwrap();
        assert_eq!(
            Recipe::ntp_host(&url, Some(&named)).unwrap().to_string(),
            "time.lab"
        );
        let other: NtpServer = "10.0.0.5:1123".parse().unwrap();
        assert_eq!(
            Recipe::ntp_host(&url, Some(&other))
                .unwrap_err()
                .to_string(),
            "iPXE's ntp command asks port 123 only; 10.0.0.5:1123 names another port"
        );
    }

    #[test]
    fn the_key_changes_with_every_input_and_the_manifest_records_them() {
        let base = recipe("https://10.77.0.1:8443");
        let key = base.key("gcc 12");
        assert_eq!(key, base.key("gcc 12\n"));
        let changed = [
            base.key("gcc 14"),
            recipe("https://10.77.0.2:8443").key("gcc 12"),
            Recipe {
                ca_fingerprint: "sha256:cc".into(),
                ..base.clone()
            }
            .key("gcc 12"),
            Recipe {
                source: source_pins()[1].clone(),
                ..base.clone()
            }
            .key("gcc 12"),
        ];
        for other in changed {
            assert_ne!(other, key);
        }
        let files = BTreeMap::from([("ipxe.efi".to_string(), "sha256:dd".to_string())]);
        let manifest = base.manifest(&key, files);
        assert_eq!(manifest.inputs, format!("sha256:{key}"));
        assert_eq!(manifest.seed_url, "https://10.77.0.1:8443");
        assert_eq!(manifest.script, base.script());
        let json = serde_json::to_string(&manifest).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), manifest);
        assert_eq!(
            base.make_vars("/w/launcher.ipxe", "/w/seed-ca.crt", "/w"),
            [
                "EMBED=/w/launcher.ipxe",
                "TRUST=/w/seed-ca.crt",
                "SOURCE_DATE_EPOCH=1772812135",
                "EXTRA_CFLAGS=-ffile-prefix-map=/w=/build",
            ]
        );
    }
}
