//! Sealing what the store must not hold in the clear: AES-256-GCM under a key kept apart from
//! the store, in `<state-dir>/seal.key` (32 random bytes, 0600). A copy of `state.redb` alone
//! opens nothing; the key file must be backed up with it.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The seal key's file name in the state directory.
pub const SEAL_KEY_FILE: &str = "seal.key";
const KEY_LEN: usize = 32;

/// What a sealed value is for. It is bound to the ciphertext as associated data: a value sealed
/// for one purpose does not open as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purpose(&'static str);

impl Purpose {
    /// The private keys of the cluster's CA set (`meta/ca_set`).
    pub const CA_KEYS: Purpose = Purpose("launcher-seed meta/ca_set keys");
}

/// The format of a sealed value; a later one gets a new name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    /// AES-256-GCM, a random 96-bit nonce per sealing, the purpose as associated data.
    #[serde(rename = "v1")]
    V1,
}

/// A sealed value as stored: `{"sealed":"v1","nonce":…,"ciphertext":…}` (base64; the
/// ciphertext ends with the 16-byte tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub sealed: Version,
    pub nonce: String,
    pub ciphertext: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("reading the seal key {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the seal key {} is {len} bytes long, not {KEY_LEN}", path.display())]
    KeyLength { path: PathBuf, len: usize },
    #[error(transparent)]
    Write(#[from] durable::Error),
    #[error("the system's random source failed")]
    Random,
    #[error("a value of {0} bytes is too large to seal")]
    TooLarge(usize),
    #[error("a sealed value's {field} is not base64")]
    Encoding { field: &'static str },
    /// A wrong key, another purpose, or a changed nonce or ciphertext: AES-GCM cannot tell.
    #[error("the sealed value does not open with this key")]
    Open,
}

/// The key values are sealed with. Its bytes are never printed.
pub struct SealKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    fn from_bytes(bytes: &[u8]) -> SealKey {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key");
        SealKey {
            key: LessSafeKey::new(unbound),
        }
    }

    /// The key in `path`, or `None` when there is no such file.
    pub fn load(path: &Path) -> Result<Option<SealKey>, SealError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SealError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if bytes.len() != KEY_LEN {
            return Err(SealError::KeyLength {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        Ok(Some(SealKey::from_bytes(&bytes)))
    }

    /// Makes a new random key and writes it whole to `path`, owner-only.
    pub fn create(path: &Path) -> Result<SealKey, SealError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        durable::write_atomic(path, &bytes, 0o600)?;
        Ok(SealKey::from_bytes(&bytes))
    }

    /// Seals `plaintext` for `purpose` under a fresh random nonce.
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut data = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.0.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::TooLarge(plaintext.len()))?;
        Ok(Sealed {
            sealed: Version::V1,
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(&data),
        })
    }

    /// Opens a value sealed for `purpose` with this key.
    pub fn open(&self, purpose: Purpose, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let Version::V1 = sealed.sealed;
        let nonce = STANDARD
            .decode(&sealed.nonce)
            .map_err(|_| SealError::Encoding { field: "nonce" })?;
        let nonce = Nonce::try_assume_unique_for_key(&nonce).map_err(|_| SealError::Open)?;
        let mut data = STANDARD
            .decode(&sealed.ciphertext)
            .map_err(|_| SealError::Encoding {
                field: "ciphertext",
            })?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.0.as_bytes()), &mut data)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &Path, name: &str) -> SealKey {
        SealKey::create(&dir.join(name)).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path(), SEAL_KEY_FILE);
        let sealed = key
            .seal(Purpose::CA_KEYS, b"-----BEGIN PRIVATE KEY-----")
            .unwrap();
        assert_eq!(
            key.open(Purpose::CA_KEYS, &sealed).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(text.starts_with(r#"{"sealed":"v1","nonce":""#), "{text}");
        assert!(!text.contains("PRIVATE"), "{text}");
        // Each sealing draws its own nonce.
        let again = key
            .seal(Purpose::CA_KEYS, b"-----BEGIN PRIVATE KEY-----")
            .unwrap();
        assert_ne!(again.nonce, sealed.nonce);
        assert_ne!(again.ciphertext, sealed.ciphertext);
        // The key read back from its file is the same key.
        let loaded = SealKey::load(&dir.path().join(SEAL_KEY_FILE))
            .unwrap()
            .unwrap();
        assert_eq!(
            loaded.open(Purpose::CA_KEYS, &sealed).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
    }

    #[test]
    fn another_key_does_not_open_it() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = key(dir.path(), "a")
            .seal(Purpose::CA_KEYS, b"secret")
            .unwrap();
        let err = key(dir.path(), "b")
            .open(Purpose::CA_KEYS, &sealed)
            .unwrap_err();
        assert!(matches!(err, SealError::Open), "{err}");
    }

    #[test]
    fn a_changed_ciphertext_or_nonce_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path(), SEAL_KEY_FILE);
        let sealed = key.seal(Purpose::CA_KEYS, b"secret").unwrap();
        let flip = |text: &str| {
            let mut bytes = STANDARD.decode(text).unwrap();
            bytes[0] ^= 1;
            STANDARD.encode(bytes)
        };
        let tampered = Sealed {
            ciphertext: flip(&sealed.ciphertext),
            ..sealed.clone()
        };
        assert!(matches!(
            key.open(Purpose::CA_KEYS, &tampered),
            Err(SealError::Open)
        ));
        let renonced = Sealed {
            nonce: flip(&sealed.nonce),
            ..sealed.clone()
        };
        assert!(matches!(
            key.open(Purpose::CA_KEYS, &renonced),
            Err(SealError::Open)
        ));
        let truncated = Sealed {
            ciphertext: STANDARD.encode(b"short"),
            ..sealed
        };
        assert!(matches!(
            key.open(Purpose::CA_KEYS, &truncated),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn a_value_sealed_for_one_purpose_does_not_open_as_another() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path(), SEAL_KEY_FILE);
        let sealed = key
            .seal(Purpose("another purpose"), b"abcdef.0123456789abcdef")
            .unwrap();
        assert!(matches!(
            key.open(Purpose::CA_KEYS, &sealed),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn the_key_file_is_owner_only_and_exactly_32_bytes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEAL_KEY_FILE);
        assert!(SealKey::load(&path).unwrap().is_none());
        SealKey::create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 32);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, [7u8; 31]).unwrap();
        assert_eq!(
            SealKey::load(&path).unwrap_err().to_string(),
            format!("the seal key {} is 31 bytes long, not 32", path.display())
        );
    }

    #[test]
    fn an_unknown_format_is_refused_by_name() {
        let err = serde_json::from_str::<Sealed>(r#"{"sealed":"v2","nonce":"","ciphertext":""}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown variant `v2`"), "{err}");
    }
}
