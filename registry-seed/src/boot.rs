//! Network boot, as values: `/boot.ipxe` chains to a per-machine script
//! (`/ipxe?mac=…&uuid=…&serial=…`) that loads the kernel and initrd from the seed with the
//! seed's address, CA pin and NTP address on the kernel command line. The routes that serve
//! them are `http::boot`'s.

use std::path::PathBuf;

/// What the per-machine script puts on the kernel command line, and where the files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// Directory holding `vmlinuz` and `initrd.img`.
    pub dir: Option<PathBuf>,
    /// `launcher.seed=`: the seed's HTTPS URL.
    pub seed_url: String,
    /// `launcher.pin=`: the seed CA's SPKI pin.
    pub pin: String,
    /// `launcher.ntp=`: the seed's NTP address, when it serves NTP.
    pub ntp: Option<String>,
    /// More kernel arguments (`console=ttyS0`, …).
    pub extra_args: Vec<String>,
}

/// The files a machine may fetch.
pub const FILES: [&str; 2] = ["vmlinuz", "initrd.img"];

/// `#!ipxe` script that asks for this machine's own script.
pub fn chain_script(base: &str) -> String {
    format!("#!ipxe\nchain {base}/ipxe?mac=${{mac:hexhyp}}&uuid=${{uuid}}&serial=${{serial}}\n")
}

/// `#!ipxe` script that boots the seed's kernel and initrd.
pub fn boot_script(base: &str, config: &BootConfig) -> String {
    let mut args = vec![
        "initrd=initrd.img".to_string(),
        format!("launcher.seed={}", config.seed_url),
        format!("launcher.pin={}", config.pin),
    ];
    args.extend(config.ntp.iter().map(|ntp| format!("launcher.ntp={ntp}")));
    args.extend(config.extra_args.iter().cloned());
    format!(
        "#!ipxe\nkernel {base}/boot/vmlinuz {}\ninitrd {base}/boot/initrd.img\nboot\n",
        args.join(" ")
    )
}

/// `#!ipxe` script for a machine the seed does not know: say so, wait, ask again.
pub fn unknown_script(base: &str, mac: &str) -> String {
    format!(
        "#!ipxe\necho launcher: this machine ({mac}) is not in the seed's inventory; add it, \
         then it boots\nsleep 30\nchain {base}/boot.ipxe\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_chain_per_machine_and_carry_the_seed_on_the_command_line() {
        assert_eq!(
            chain_script("http://10.77.0.1:8080"),
            "#!ipxe\nchain http://10.77.0.1:8080/ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial}\n"
        );
        let config = BootConfig {
            dir: None,
            seed_url: "https://10.77.0.1:8443".into(),
            pin: "sha256:ab".into(),
            ntp: Some("10.77.0.1:123".into()),
            extra_args: vec!["console=ttyS0".into()],
        };
        let script = boot_script("http://10.77.0.1:8080", &config);
        assert_eq!(
            script,
            "#!ipxe\nkernel http://10.77.0.1:8080/boot/vmlinuz initrd=initrd.img \
             launcher.seed=https://10.77.0.1:8443 launcher.pin=sha256:ab \
             launcher.ntp=10.77.0.1:123 console=ttyS0\n\
             initrd http://10.77.0.1:8080/boot/initrd.img\nboot\n"
        );
    }
}
