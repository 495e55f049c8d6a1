//! The identify phase: MACs, DMI product UUID and serial from sysfs, and the boot interface.

use cluster::api::HostIdentity;
use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentifyError {
    #[error(
        "nothing identifies this host: no MAC under {0}/sys/class/net, no DMI product_uuid or product_serial under {0}/sys/class/dmi/id"
    )]
    Nothing(String),
}

/// Values firmware writes when it has nothing to say; they identify no machine.
const PLACEHOLDERS: [&str; 8] = [
    "",
    "0",
    "none",
    "not specified",
    "not available",
    "to be filled by o.e.m.",
    "default string",
    "system serial number",
];

/// A MAC in the wire form `aa:bb:cc:dd:ee:ff`, or `None` for anything else (and all zeros).
pub fn normalize_mac(text: &str) -> Option<String> {
    let mac = text.trim().to_ascii_lowercase().replace('-', ":");
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    (ok && mac != "00:00:00:00:00:00").then_some(mac)
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = text.trim().to_string();
    (!PLACEHOLDERS.contains(&value.to_ascii_lowercase().as_str())).then_some(value)
}

/// The boot interface from the kernel command line: PXELINUX's `BOOTIF=01-aa-bb-…` (hardware
/// type 01 first), or `launcher.bootmac=aa:bb:…`.
pub fn boot_mac(cmdline: &str) -> Option<String> {
    cmdline.split_whitespace().find_map(|word| {
        if let Some(v) = word.strip_prefix("BOOTIF=") {
            normalize_mac(v.strip_prefix("01-").unwrap_or(v))
        } else {
            word.strip_prefix("launcher.bootmac=")
                .and_then(normalize_mac)
        }
    })
}

/// Reads the host's identity from `<root>/sys`.
pub fn identify(root: &Path, cmdline: &str) -> Result<HostIdentity, IdentifyError> {
    let mut macs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("sys/class/net")) {
        for entry in entries.flatten() {
            if entry.file_name() == "lo" {
                continue;
            }
            if let Some(mac) = read_trimmed(&entry.path().join("address"))
                .as_deref()
                .and_then(normalize_mac)
            {
                macs.push(mac);
            }
        }
    }
    macs.sort();
    macs.dedup();
    let dmi = root.join("sys/class/dmi/id");
    let identity = HostIdentity {
        boot_mac: boot_mac(cmdline),
        product_uuid: read_trimmed(&dmi.join("product_uuid")).map(|u| u.to_ascii_lowercase()),
        serial: read_trimmed(&dmi.join("product_serial")),
        macs,
    };
    if identity.macs.is_empty() && identity.product_uuid.is_none() && identity.serial.is_none() {
        return Err(IdentifyError::Nothing(root.display().to_string()));
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_macs_uuid_and_serial_skipping_loopback_and_placeholders() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        put(r, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
        put(r, "sys/class/net/eth1/address", "52:54:00:AA:00:02\n");
        put(r, "sys/class/net/eth0/address", "52:54:00:aa:00:01\n");
        put(r, "sys/class/net/wg0/address", "\n");
        put(
            r,
            "sys/class/dmi/id/product_uuid",
            "4C4C4544-0000-1111-2222-333344445555\n",
        );
        put(
            r,
            "sys/class/dmi/id/product_serial",
            "To Be Filled By O.E.M.\n",
        );
        let id = identify(r, "BOOT_IMAGE=x BOOTIF=01-52-54-00-aa-00-02").unwrap();
        assert_eq!(id.macs, vec!["52:54:00:aa:00:01", "52:54:00:aa:00:02"]);
        assert_eq!(
            id.product_uuid.as_deref(),
            Some("4c4c4544-0000-1111-2222-333344445555")
        );
        assert_eq!(id.serial, None);
        assert_eq!(id.boot_mac.as_deref(), Some("52:54:00:aa:00:02"));
    }

    #[test]
    fn a_host_with_nothing_to_identify_it_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let err = identify(root.path(), "").unwrap_err();
        assert!(err.to_string().starts_with("nothing identifies this host"));
    }

    #[test]
    fn boot_macs_come_from_bootif_or_launcher_bootmac() {
        assert_eq!(
            boot_mac("launcher.bootmac=52:54:00:00:00:0A").unwrap(),
            "52:54:00:00:00:0a"
        );
        assert_eq!(boot_mac("BOOTIF=zz"), None);
        assert_eq!(normalize_mac("52:54:00:00:00"), None);
    }
}
