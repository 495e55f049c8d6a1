//! The leaf certificates a plan hands a host, read back from the plan's files: what the seed
//! records of each host's last plan and `launcher-seed certs` lists with their expiry.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::api::{FileSource, PlanFile};

/// One leaf certificate of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafCert {
    /// Where the host keeps it: the certificate file, or the kubeconfig that embeds it.
    pub path: String,
    /// The subject's common name.
    pub subject: String,
    /// The issuer's common name (which CA signed it).
    pub issuer: String,
    /// The serial number in lowercase hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// NotAfter, Unix seconds.
    pub not_after: i64,
}

/// Every leaf certificate among `files`: each `.crt` file whose certificate is no CA, and each
/// client certificate a kubeconfig (`.conf`) embeds. CA certificates, keys and other files are
/// left out. A file that says it holds a certificate and does not is an error naming it.
pub fn leaf_certs(files: &[PlanFile]) -> Result<Vec<LeafCert>, String> {
    let mut leaves = Vec::new();
    for file in files {
        let FileSource::Text { text } = &file.source else {
            continue;
        };
        let path = file.path.as_str();
        let found = if path.ends_with(".crt") {
            first_pem_cert(text.as_bytes())
                .and_then(|der| read_cert(path, &der))
                .map_err(|e| format!("{path}: {e}"))?
        } else if path.ends_with(".conf") {
            kubeconfig_cert(text)
                .map_err(|e| format!("{path}: {e}"))?
                .map(|der| read_cert(path, &der))
                .transpose()
                .map_err(|e| format!("{path}: {e}"))?
                .flatten()
        } else {
            None
        };
        leaves.extend(found);
    }
    Ok(leaves)
}

/// The DER of the first certificate in `pem_text`.
fn first_pem_cert(pem_text: &[u8]) -> Result<Vec<u8>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("not PEM ({e})"))?;
    blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .ok_or_else(|| "no CERTIFICATE block".to_string())
}

/// The client certificate (DER) a kubeconfig embeds in `client-certificate-data`, if any: a
/// kubeconfig whose user names certificate files instead embeds none.
fn kubeconfig_cert(text: &str) -> Result<Option<Vec<u8>>, String> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("not a kubeconfig ({e})"))?;
    let data = doc
        .get("users")
        .and_then(|u| u.as_sequence())
        .into_iter()
        .flatten()
        .find_map(|u| u.get("user")?.get("client-certificate-data")?.as_str());
    let Some(data) = data else {
        return Ok(None);
    };
    let pem_text = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("client-certificate-data is not base64 ({e})"))?;
    first_pem_cert(&pem_text).map(Some)
}

/// The certificate in `der` as a [`LeafCert`] kept at `path`, or `None` for a CA.
fn read_cert(path: &str, der: &[u8]) -> Result<Option<LeafCert>, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate ({e})"))?;
    if cert.tbs_certificate.is_ca() {
        return Ok(None);
    }
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    Ok(Some(LeafCert {
        path: path.to_string(),
        subject: cn(cert.subject()),
        issuer: cn(cert.issuer()),
        serial: serial_hex(cert.tbs_certificate.raw_serial()),
        not_after: cert.validity().not_after.timestamp(),
    }))
}

/// The serial number's bytes in hex without the zero bytes DER puts before a positive number
/// whose first bit is set, as `openssl x509 -serial` prints it (there in capitals).
fn serial_hex(raw: &[u8]) -> String {
    let first = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[first..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str, text: &str) -> PlanFile {
        PlanFile {
            path: path.to_string(),
            mode: 0o644,
            source: FileSource::Text {
                text: text.to_string(),
            },
        }
    }

    #[test]
    fn files_that_say_they_hold_a_certificate_and_do_not_are_named() {
        let cases = [
            (
                text("/etc/kubernetes/pki/apiserver.crt", "hello"),
                "/etc/kubernetes/pki/apiserver.crt: no CERTIFICATE block",
            ),
            (
                text(
                    "/etc/kubernetes/pki/apiserver.crt",
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ),
                "/etc/kubernetes/pki/apiserver.crt: not an X.509 certificate (Parsing Error: Der(UnexpectedTag { expected: Some(Tag(16)), actual: Tag(0) }))",
            ),
            (
                text("/etc/kubernetes/admin.conf", "users: ["),
                "/etc/kubernetes/admin.conf: not a kubeconfig (did not find expected node content at line 2 column 1, while parsing a flow node)",
            ),
            (
                text(
                    "/etc/kubernetes/admin.conf",
                    "users:\n- user:\n    client-certificate-data: '***'\n",
                ),
                "/etc/kubernetes/admin.conf: client-certificate-data is not base64 (Invalid symbol 42, offset 0.)",
            ),
        ];
        for (file, error) in cases {
            assert_eq!(leaf_certs(&[file]), Err(error.to_string()));
        }
    }

    #[test]
    fn serials_read_as_openssl_prints_them() {
        let cases: [(&[u8], &str); 4] = [
            (&[0x00, 0x9f, 0x01], "9f01"),
            (&[0x7f, 0x00], "7f00"),
            (&[0x00], "00"),
            (&[0x00, 0x00, 0x01], "01"),
        ];
        for (raw, want) in cases {
            assert_eq!(serial_hex(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn keys_other_files_and_kubeconfigs_naming_files_hold_no_leaf() {
        let files = [
            text("/etc/kubernetes/pki/apiserver.key", "not read"),
            text("/etc/kubernetes/kubeadm.yaml", "kind: InitConfiguration"),
            text(
                "/etc/kubernetes/kubelet.conf",
                "users:\n- user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n",
            ),
            PlanFile {
                path: "/etc/kubernetes/pki/etcd/server.crt".into(),
                mode: 0o644,
                source: FileSource::HostKey {
                    name: "etcd/server".into(),
                },
            },
        ];
        assert_eq!(leaf_certs(&files), Ok(vec![]));
    }
}
