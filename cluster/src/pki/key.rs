//! Private keys: made with ring (ECDSA P-256) or the `rsa` crate (RSA-2048), kept as PKCS#8 PEM.

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256};

use super::{KeyAlgorithm, PkiError};

/// A private key and its algorithm. The PEM form is PKCS#8 (`PRIVATE KEY`), which kubeadm,
/// the kubelet and etcd all read. `Debug` shows the algorithm only.
pub struct PrivateKey {
    algorithm: KeyAlgorithm,
    pem: String,
    pair: KeyPair,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.algorithm.as_str())
    }
}

impl PrivateKey {
    /// Makes a new random key.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<PrivateKey, PkiError> {
        let failed = |reason: String| PkiError::KeyGeneration {
            algorithm: algorithm.as_str(),
            reason,
        };
        let pair = match algorithm {
            KeyAlgorithm::EcdsaP256 => {
                KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| failed(e.to_string()))?
            }
            KeyAlgorithm::Rsa2048 => {
                use rsa::pkcs8::{EncodePrivateKey, LineEnding};
                let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
                    .map_err(|e| failed(e.to_string()))?;
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| failed(e.to_string()))?;
                KeyPair::from_pem(&pem).map_err(|e| failed(e.to_string()))?
            }
        };
        let pem = pair.serialize_pem();
        Ok(PrivateKey {
            algorithm,
            pem,
            pair,
        })
    }

    /// Reads a PKCS#8 PEM key; `what` names it in errors.
    pub fn from_pem(what: &str, pem: &str) -> Result<PrivateKey, PkiError> {
        let bad = |reason: String| PkiError::BadKey {
            what: what.to_owned(),
            reason,
        };
        let pair = KeyPair::from_pem(pem).map_err(|e| bad(e.to_string()))?;
        let algorithm = if pair.algorithm() == &PKCS_ECDSA_P256_SHA256 {
            KeyAlgorithm::EcdsaP256
        } else if pair.algorithm() == &PKCS_RSA_SHA256 {
            KeyAlgorithm::Rsa2048
        } else {
            return Err(bad("only ECDSA P-256 and RSA keys are used here".into()));
        };
        Ok(PrivateKey {
            algorithm,
            pem: pair.serialize_pem(),
            pair,
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The key as PKCS#8 PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The public half as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), the form of `sa.pub`.
    pub fn public_key_pem(&self) -> String {
        self.pair.public_key_pem()
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }
}
