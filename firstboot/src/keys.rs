//! The host's own private keys (ECDSA P-256) and the CSRs sent for them.
//!
//! Keys live under `/var/lib/launcher/keys/<name>.key` (0600, directories 0700) and never leave
//! the host. A rerun reuses the keys it finds, so enrolling again asks for the same keys.

use crate::fsutil::{self, FsError};
use cluster::api::cert_names;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Directory of the host's keys, under the root.
pub const KEYS_DIR: &str = "/var/lib/launcher/keys";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the key {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the key {0} is not a PEM private key: {1}")]
    Parse(PathBuf, String),
    #[error("making a key or csr for {0}: {1}")]
    Generate(String, String),
    #[error("no host key named {0:?} (known: {known})", known = cert_names::ALL.join(", "))]
    Unknown(String),
    #[error(transparent)]
    Write(#[from] FsError),
    #[error(transparent)]
    Durable(#[from] durable::Error),
}

/// Path of the key for certificate `name` under `root`.
pub fn key_path(root: &Path, name: &str) -> Result<PathBuf, KeyError> {
    if !cert_names::ALL.contains(&name) {
        return Err(KeyError::Unknown(name.to_string()));
    }
    Ok(fsutil::under_root(root, &format!("{KEYS_DIR}/{name}.key"))?)
}

fn load_or_make(root: &Path, name: &str) -> Result<rcgen::KeyPair, KeyError> {
    let path = key_path(root, name)?;
    match std::fs::read_to_string(&path) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| KeyError::Parse(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| KeyError::Generate(name.to_string(), e.to_string()))?;
            let dir = path.parent().expect("a key path has a directory");
            durable::private_dir(dir)?;
            durable::write_atomic(&path, key.serialize_pem().as_bytes(), 0o600)?;
            Ok(key)
        }
        Err(e) => Err(KeyError::Read(path, e)),
    }
}

fn csr(name: &str, key: &rcgen::KeyPair) -> Result<String, KeyError> {
    let fail = |e: rcgen::Error| KeyError::Generate(name.to_string(), e.to_string());
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    // The seed ignores the subject and decides names itself; this only says what is asked for.
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
        .serialize_request(key)
        .map_err(fail)?
        .pem()
        .map_err(fail)
}

/// Makes (or reuses) a key for every certificate name and returns a PEM CSR for each.
pub fn ensure_keys_and_csrs(root: &Path) -> Result<BTreeMap<String, String>, KeyError> {
    durable::private_dir(&fsutil::under_root(root, KEYS_DIR)?)?;
    let mut csrs = BTreeMap::new();
    for name in cert_names::ALL {
        let key = load_or_make(root, name)?;
        csrs.insert(name.to_string(), csr(name, &key)?);
    }
    Ok(csrs)
}

/// The PEM text of the host key for `name`.
pub fn read_key(root: &Path, name: &str) -> Result<String, KeyError> {
    let path = key_path(root, name)?;
    std::fs::read_to_string(&path).map_err(|e| KeyError::Read(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::prelude::FromDer;

    #[test]
    fn keys_are_private_and_reused_and_csrs_carry_their_public_key() {
        let root = tempfile::tempdir().unwrap();
        let first = ensure_keys_and_csrs(root.path()).unwrap();
        assert_eq!(first.len(), cert_names::ALL.len());
        let path = key_path(root.path(), "etcd/peer").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let dir = path.parent().unwrap();
        assert_eq!(
            std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let key_before = read_key(root.path(), "kubelet-client").unwrap();
        ensure_keys_and_csrs(root.path()).unwrap();
        assert_eq!(read_key(root.path(), "kubelet-client").unwrap(), key_before);

        let pem = first["kubelet-client"].clone();
        let der = pem::parse(pem).unwrap();
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.contents())
                .unwrap();
        let key = rcgen::KeyPair::from_pem(&key_before).unwrap();
        assert_eq!(
            req.certification_request_info.subject_pki.raw,
            key.public_key_der()
        );
    }

    #[test]
    fn unknown_key_names_are_refused() {
        let err = key_path(Path::new("/"), "../../etc/shadow").unwrap_err();
        assert!(err.to_string().starts_with("no host key named"), "{err}");
    }
}
