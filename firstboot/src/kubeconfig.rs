//! A kubeconfig read as kubectl and the kubelet read one: the current context's cluster
//! (`server`, the CA) and user (client certificate and key). Each of the three PEM blocks is
//! inline (`*-data`, base64) or a file, a relative file name being relative to the kubeconfig's
//! own directory. kubeadm writes the CA inline and, on a node whose kubelet rotates its
//! certificate, names `/var/lib/kubelet/pki/kubelet-client-current.pem` for both the
//! certificate and the key.

use base64::Engine;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Larger than any kubeconfig a node has (a few KiB).
const MAX_BYTES: u64 = 1 << 20;

/// Where and as whom to call the API server.
#[derive(Clone, PartialEq, Eq)]
pub struct Access {
    pub server: String,
    pub ca_pem: Vec<u8>,
    /// The client certificate followed by its key, as `reqwest::Identity::from_pem` takes them.
    pub identity_pem: Vec<u8>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KubeconfigError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, String),
    #[error("{0}: not a kubeconfig: {1}")]
    Parse(PathBuf, String),
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
}

#[derive(Deserialize)]
struct File {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "context", alias = "cluster", alias = "user")]
    value: T,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<String>,
}

#[derive(Deserialize)]
struct User {
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-certificate")]
    cert_file: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(rename = "client-key")]
    key_file: Option<String>,
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    Ok(bytes)
}

fn find<'a, T>(list: &'a [Named<T>], name: &str) -> Option<&'a T> {
    list.iter().find(|n| n.name == name).map(|n| &n.value)
}

/// Reads the kubeconfig at `path`.
pub fn read(path: &Path) -> Result<Access, KubeconfigError> {
    let invalid = |why: String| KubeconfigError::Invalid(path.to_path_buf(), why);
    let bytes = read_bounded(path).map_err(|e| KubeconfigError::Read(path.to_path_buf(), e))?;
    let file: File = serde_yaml::from_slice(&bytes)
        .map_err(|e| KubeconfigError::Parse(path.to_path_buf(), e.to_string()))?;
    let context = find(&file.contexts, &file.current_context).ok_or_else(|| {
        invalid(format!(
            "current-context {:?} is not among its contexts",
            file.current_context
        ))
    })?;
    let cluster = find(&file.clusters, &context.cluster)
        .ok_or_else(|| invalid(format!("cluster {:?} is not defined", context.cluster)))?;
    let user = find(&file.users, &context.user)
        .ok_or_else(|| invalid(format!("user {:?} is not defined", context.user)))?;
    if !cluster.server.starts_with("https://") {
        return Err(invalid(format!(
            "server {:?} is not an https:// URL",
            cluster.server
        )));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let pem = |what: &str, data: &Option<String>, file: &Option<String>| {
        match (data, file) {
            (Some(data), _) => base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| format!("{what}-data is not base64: {e}")),
            (None, Some(file)) => {
                let at = dir.join(file);
                read_bounded(&at).map_err(|e| format!("{what} {}: {e}", at.display()))
            }
            (None, None) => Err(format!("neither {what}-data nor {what} is set")),
        }
        .map_err(invalid)
    };
    let ca_pem = pem("certificate-authority", &cluster.ca_data, &cluster.ca_file)?;
    let mut identity_pem = pem("client-certificate", &user.cert_data, &user.cert_file)?;
    identity_pem.push(b'\n');
    identity_pem.extend(pem("client-key", &user.key_data, &user.key_file)?);
    Ok(Access {
        server: cluster.server.trim_end_matches('/').to_string(),
        ca_pem,
        identity_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64_CA: &str = "Q0E="; // "CA"

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: k@c\n\
             contexts:\n- name: k@c\n  context: {{cluster: c, user: k}}\n\
             clusters:\n- name: c\n  cluster:\n{cluster}\
             users:\n- name: k\n  user:\n{user}"
        )
    }

    #[test]
    fn inline_data_and_files_relative_to_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pki")).unwrap();
        std::fs::write(dir.path().join("pki/client.pem"), "CERT+KEY").unwrap();
        let path = dir.path().join("kubelet.conf");
        std::fs::write(
            &path,
            kubeconfig(
                &format!(
                    "    server: https://10.77.0.10:6443/\n    certificate-authority-data: {B64_CA}\n"
                ),
                "    client-certificate: pki/client.pem\n    client-key: pki/client.pem\n",
            ),
        )
        .unwrap();
        let access = read(&path).unwrap();
        assert_eq!(access.server, "https://10.77.0.10:6443");
        assert_eq!(access.ca_pem, b"CA");
        assert_eq!(access.identity_pem, b"CERT+KEY\nCERT+KEY");
        assert!(!format!("{access:?}").contains("CERT"));
    }

    #[test]
    fn bad_kubeconfigs_each_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.conf");
        let good_cluster = format!(
            "    server: https://10.77.0.10:6443\n    certificate-authority-data: {B64_CA}\n"
        );
        let good_user = "    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";
        let missing_key = dir.path().join("missing.key");
        let cases: Vec<(String, String)> = vec![
            (
                "current-context: nowhere\n".into(),
                "current-context \"nowhere\" is not among its contexts".into(),
            ),
            (
                kubeconfig(&good_cluster, good_user).replace("cluster: c,", "cluster: d,"),
                "cluster \"d\" is not defined".into(),
            ),
            (
                kubeconfig(&good_cluster, good_user).replace("user: k}", "user: j}"),
                "user \"j\" is not defined".into(),
            ),
            (
                kubeconfig(&good_cluster.replace("https", "http"), good_user),
                "server \"http://10.77.0.10:6443\" is not an https:// URL".into(),
            ),
            (
                kubeconfig("    server: https://10.77.0.10:6443\n", good_user),
                "neither certificate-authority-data nor certificate-authority is set".into(),
            ),
            (
                kubeconfig(&good_cluster.replace(B64_CA, "not*base64"), good_user),
                "certificate-authority-data is not base64: Invalid symbol 42, offset 3.".into(),
            ),
            (
                kubeconfig(&good_cluster, "    client-key-data: S0VZ\n"),
                "neither client-certificate-data nor client-certificate is set".into(),
            ),
            (
                kubeconfig(
                    &good_cluster,
                    "    client-certificate-data: Q0VSVA==\n    client-key: missing.key\n",
                ),
                format!(
                    "client-key {}: No such file or directory (os error 2)",
                    missing_key.display()
                ),
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&path, &text).unwrap();
            assert_eq!(
                read(&path).unwrap_err(),
                KubeconfigError::Invalid(path.clone(), want),
                "{text}"
            );
        }
        std::fs::write(&path, "clusters: 7\n").unwrap();
        assert!(matches!(read(&path), Err(KubeconfigError::Parse(..))));
        std::fs::write(&path, vec![b'#'; (MAX_BYTES + 1) as usize]).unwrap();
        assert_eq!(
            read(&path).unwrap_err().to_string(),
            format!("reading {}: larger than 1048576 bytes", path.display())
        );
    }
}
