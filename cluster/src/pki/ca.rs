//! The cluster's certificate authorities and service-account key pair, and how the seed stores
//! them (a map of kubeadm's file names to PEM text).

use std::collections::BTreeMap;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa};

use super::der;
use super::{BACKDATE, CA_VALIDITY, KeyAlgorithm, PkiError, PrivateKey, cert_der_from_pem};

/// The three CAs kubeadm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaKind {
    /// `ca`, CN=kubernetes: the API server, kubelets and every Kubernetes client.
    Kubernetes,
    /// `etcd/ca`, CN=etcd-ca: etcd members and their clients.
    Etcd,
    /// `front-proxy-ca`, CN=front-proxy-ca: the aggregation layer.
    FrontProxy,
}

impl CaKind {
    pub const ALL: [CaKind; 3] = [CaKind::Kubernetes, CaKind::Etcd, CaKind::FrontProxy];

    pub fn common_name(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "kubernetes",
            CaKind::Etcd => "etcd-ca",
            CaKind::FrontProxy => "front-proxy-ca",
        }
    }

    /// The file stem under `/etc/kubernetes/pki`.
    pub fn file_stem(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "ca",
            CaKind::Etcd => "etcd/ca",
            CaKind::FrontProxy => "front-proxy-ca",
        }
    }
}

/// A CA certificate with its key, ready to sign.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: PrivateKey,
    /// rcgen's view of the CA, used as the issuer when signing.
    pub(crate) signer: rcgen::Certificate,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("pin", &self.spki_pin())
            .field("key", &self.key)
            .finish()
    }
}

impl Ca {
    /// A new self-signed CA valid for ten years from `now` (backdated five minutes).
    pub fn generate(
        common_name: &str,
        algorithm: KeyAlgorithm,
        now: time::OffsetDateTime,
    ) -> Result<Ca, PkiError> {
        let key = PrivateKey::generate(algorithm)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Written here rather than as `key_usages`, which rcgen pads against DER (see `der`).
        params.custom_extensions = vec![der::key_usage(algorithm, true)];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(super::cert::random_serial());
        let signer = params
            .self_signed(key.pair())
            .map_err(|e| PkiError::Signing {
                name: common_name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Ca {
            cert_pem: signer.pem(),
            cert_der: signer.der().to_vec(),
            key,
            signer,
        })
    }

    /// A CA read back from its PEM certificate and key; `what` names it in errors.
    pub fn from_pem(what: &str, cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let bad = |reason: String| PkiError::BadCertificate {
            what: what.to_owned(),
            reason,
        };
        let key = PrivateKey::from_pem(what, key_pem)?;
        let cert_der = cert_der_from_pem(what, cert_pem)?;
        let params = CertificateParams::from_ca_cert_der(&cert_der.as_slice().into())
            .map_err(|e| bad(e.to_string()))?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err(bad("it is not a CA certificate".into()));
        }
        // Only the issuer's name, key identifier and key are used from this re-signed copy;
        // the certificate handed out stays the original one.
        let signer = params
            .self_signed(key.pair())
            .map_err(|e| bad(e.to_string()))?;
        if signer.params().distinguished_name.iter().count() == 0 {
            return Err(bad("it has an empty subject".into()));
        }
        check_key_matches(what, &cert_der, &key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            key,
            signer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// `sha256:<hex>` of the CA's SubjectPublicKeyInfo (kubeadm's `caCertHashes`).
    pub fn spki_pin(&self) -> String {
        super::spki_pin(&self.cert_der).expect("a CA's own certificate parses")
    }
}

/// Refuses a certificate whose public key is not the key's.
fn check_key_matches(what: &str, cert_der: &[u8], key: &PrivateKey) -> Result<(), PkiError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).map_err(|e| {
        PkiError::BadCertificate {
            what: what.to_owned(),
            reason: e.to_string(),
        }
    })?;
    if cert.tbs_certificate.subject_pki.raw != key.pair().public_key_der().as_slice() {
        return Err(PkiError::BadKey {
            what: what.to_owned(),
            reason: "it does not belong to the certificate".into(),
        });
    }
    Ok(())
}

/// Everything a cluster's PKI starts from: its three CAs and the service-account key pair.
#[derive(Debug)]
pub struct CaSet {
    pub ca: Ca,
    pub etcd_ca: Ca,
    pub front_proxy_ca: Ca,
    /// Signs service-account tokens (`sa.key`; `sa.pub` is its public half).
    pub sa_key: PrivateKey,
}

impl CaSet {
    /// The file names of [`CaSet::to_files`], relative to `/etc/kubernetes/pki`.
    pub const FILES: [&'static str; 8] = [
        "ca.crt",
        "ca.key",
        "etcd/ca.crt",
        "etcd/ca.key",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "sa.key",
        "sa.pub",
    ];

    /// Makes a new set, every key of `algorithm`.
    pub fn generate(algorithm: KeyAlgorithm, now: time::OffsetDateTime) -> Result<CaSet, PkiError> {
        Ok(CaSet {
            ca: Ca::generate(CaKind::Kubernetes.common_name(), algorithm, now)?,
            etcd_ca: Ca::generate(CaKind::Etcd.common_name(), algorithm, now)?,
            front_proxy_ca: Ca::generate(CaKind::FrontProxy.common_name(), algorithm, now)?,
            sa_key: PrivateKey::generate(algorithm)?,
        })
    }

    pub fn get(&self, kind: CaKind) -> &Ca {
        match kind {
            CaKind::Kubernetes => &self.ca,
            CaKind::Etcd => &self.etcd_ca,
            CaKind::FrontProxy => &self.front_proxy_ca,
        }
    }

    /// The algorithm of the set's keys (that of the Kubernetes CA).
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.ca.key().algorithm()
    }

    /// kubeadm's discovery hash of the cluster CA.
    pub fn discovery_hash(&self) -> String {
        self.ca.spki_pin()
    }

    /// The set as PEM texts by kubeadm's file names (see [`CaSet::FILES`]).
    pub fn to_files(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        for kind in CaKind::ALL {
            let ca = self.get(kind);
            files.insert(
                format!("{}.crt", kind.file_stem()),
                ca.cert_pem().to_owned(),
            );
            files.insert(
                format!("{}.key", kind.file_stem()),
                ca.key().pem().to_owned(),
            );
        }
        files.insert("sa.key".into(), self.sa_key.pem().to_owned());
        files.insert("sa.pub".into(), self.sa_key.public_key_pem());
        files
    }

    /// Reads a set back from [`CaSet::to_files`]' map; `sa.pub` is derived from `sa.key`.
    pub fn from_files(files: &BTreeMap<String, String>) -> Result<CaSet, PkiError> {
        let file = |name: &str| {
            files.get(name).ok_or_else(|| PkiError::MissingFile {
                file: name.to_owned(),
            })
        };
        let ca = |kind: CaKind| {
            let stem = kind.file_stem();
            let cert = file(&format!("{stem}.crt"))?;
            Ca::from_pem(&format!("{stem}.crt"), cert, file(&format!("{stem}.key"))?)
        };
        let set = CaSet {
            ca: ca(CaKind::Kubernetes)?,
            etcd_ca: ca(CaKind::Etcd)?,
            front_proxy_ca: ca(CaKind::FrontProxy)?,
            sa_key: PrivateKey::from_pem("sa.key", file("sa.key")?)?,
        };
        set.check_one_algorithm()?;
        Ok(set)
    }

    fn check_one_algorithm(&self) -> Result<(), PkiError> {
        let expected = self.key_algorithm();
        let others = [
            ("etcd/ca.key", self.etcd_ca.key()),
            ("front-proxy-ca.key", self.front_proxy_ca.key()),
            ("sa.key", &self.sa_key),
        ];
        for (file, key) in others {
            if key.algorithm() != expected {
                return Err(PkiError::MixedAlgorithms {
                    file: file.to_owned(),
                    found: key.algorithm().as_str(),
                    expected: expected.as_str(),
                });
            }
        }
        Ok(())
    }
}
