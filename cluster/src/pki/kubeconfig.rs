//! kubeadm's kubeconfig files (`admin.conf`, `kubelet.conf`...): who they name and their YAML.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use super::profile::{Convention, SYSTEM_MASTERS};
use super::{CaKind, CertProfile};

/// The kubeconfig files kubeadm expects in `/etc/kubernetes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigKind {
    /// `admin.conf`, the operator's credential.
    Admin,
    /// `super-admin.conf` (1.29+), the break-glass `system:masters` credential.
    SuperAdmin,
    ControllerManager,
    Scheduler,
    /// `kubelet.conf` of the named node.
    Kubelet {
        node: String,
    },
}

impl KubeconfigKind {
    pub fn file_name(&self) -> &'static str {
        match self {
            KubeconfigKind::Admin => "admin.conf",
            KubeconfigKind::SuperAdmin => "super-admin.conf",
            KubeconfigKind::ControllerManager => "controller-manager.conf",
            KubeconfigKind::Scheduler => "scheduler.conf",
            KubeconfigKind::Kubelet { .. } => "kubelet.conf",
        }
    }

    /// Absolute path on a host.
    pub fn path(&self) -> String {
        format!("/etc/kubernetes/{}", self.file_name())
    }

    /// The client certificate's profile: its CN is also the kubeconfig's user name.
    pub fn profile(&self, convention: Convention) -> CertProfile {
        let (name, cn, org) = match self {
            KubeconfigKind::Admin => (
                "admin",
                "kubernetes-admin".to_owned(),
                Some(convention.admins_group()),
            ),
            KubeconfigKind::SuperAdmin => (
                "super-admin",
                "kubernetes-super-admin".to_owned(),
                Some(SYSTEM_MASTERS),
            ),
            KubeconfigKind::ControllerManager => (
                "controller-manager",
                "system:kube-controller-manager".to_owned(),
                None,
            ),
            KubeconfigKind::Scheduler => ("scheduler", "system:kube-scheduler".to_owned(), None),
            KubeconfigKind::Kubelet { node } => {
                return CertProfile::kubelet_client(node);
            }
        };
        CertProfile::client(name, CaKind::Kubernetes, &cn, org)
    }
}

/// How a kubeconfig's user proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredential {
    /// Certificate and key embedded (`client-certificate-data`, `client-key-data`).
    Embedded { cert_pem: String, key_pem: String },
    /// Certificate and key in files on the host, as the kubelet keeps a key it made itself.
    Files { cert_path: String, key_path: String },
}

/// One kubeconfig: a cluster, a user and the context joining them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubeconfig {
    /// The cluster's name in the file (kubeadm's `clusterName`).
    pub cluster_name: String,
    /// `https://host:port` of the API server.
    pub server: String,
    /// PEM of the cluster CA, always embedded (kubeadm compares it when it reuses a file).
    pub ca_pem: String,
    pub user: String,
    pub credential: ClientCredential,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct File<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: [Named<ClusterEntry<'a>>; 1],
    contexts: [Named<ContextEntry<'a>>; 1],
    current_context: &'a str,
    preferences: std::collections::BTreeMap<String, String>,
    users: [Named<UserEntry>; 1],
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct ClusterEntry<'a> {
    cluster: Cluster<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster<'a> {
    certificate_authority_data: String,
    server: &'a str,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    context: Context<'a>,
}

#[derive(Serialize)]
struct Context<'a> {
    cluster: &'a str,
    user: &'a str,
}

#[derive(Serialize)]
struct UserEntry {
    user: User,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
}

impl Kubeconfig {
    /// The context's name, kubeadm's `<user>@<cluster>`.
    pub fn context_name(&self) -> String {
        format!("{}@{}", self.user, self.cluster_name)
    }

    /// The file's YAML text.
    pub fn render(&self) -> String {
        let context = self.context_name();
        let user = match &self.credential {
            ClientCredential::Embedded { cert_pem, key_pem } => User {
                client_certificate: None,
                client_certificate_data: Some(STANDARD.encode(cert_pem)),
                client_key: None,
                client_key_data: Some(STANDARD.encode(key_pem)),
            },
            ClientCredential::Files {
                cert_path,
                key_path,
            } => User {
                client_certificate: Some(cert_path.clone()),
                client_certificate_data: None,
                client_key: Some(key_path.clone()),
                client_key_data: None,
            },
        };
        let file = File {
            api_version: "v1",
            kind: "Config",
            clusters: [Named {
                name: self.cluster_name.clone(),
                value: ClusterEntry {
                    cluster: Cluster {
                        certificate_authority_data: STANDARD.encode(&self.ca_pem),
                        server: &self.server,
                    },
                },
            }],
            contexts: [Named {
                name: context.clone(),
                value: ContextEntry {
                    context: Context {
                        cluster: &self.cluster_name,
                        user: &self.user,
                    },
                },
            }],
            current_context: &context,
            preferences: Default::default(),
            users: [Named {
                name: self.user.clone(),
                value: UserEntry { user },
            }],
        };
        serde_yaml::to_string(&file).expect("a kubeconfig always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(credential: ClientCredential) -> Kubeconfig {
        Kubeconfig {
            cluster_name: "demo".into(),
            server: "https://10.77.0.10:6443".into(),
            ca_pem: "CA".into(),
            user: "system:node:demo-w1".into(),
            credential,
        }
    }

    #[test]
    fn an_embedded_credential_renders_as_data() {
        let text = config(ClientCredential::Embedded {
            cert_pem: "C".into(),
            key_pem: "K".into(),
        })
        .render();
        let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(value["apiVersion"], "v1");
        assert_eq!(value["kind"], "Config");
        assert_eq!(value["current-context"], "system:node:demo-w1@demo");
        assert_eq!(
            value["clusters"][0]["cluster"]["server"],
            "https://10.77.0.10:6443"
        );
        assert_eq!(
            value["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(value["users"][0]["user"]["client-certificate-data"], "Qw==");
        assert_eq!(
            value["contexts"][0]["context"]["user"],
            "system:node:demo-w1"
        );
    }

    #[test]
    fn a_file_credential_renders_as_paths() {
        let text = config(ClientCredential::Files {
            cert_path: "/var/lib/kubelet/pki/kubelet-client.crt".into(),
            key_path: "/var/lib/kubelet/pki/kubelet-client.key".into(),
        })
        .render();
        let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let user = &value["users"][0]["user"];
        assert_eq!(
            user["client-key"],
            "/var/lib/kubelet/pki/kubelet-client.key"
        );
        assert!(user.get("client-key-data").is_none());
    }

    #[test]
    fn profiles_name_kubeadm_users() {
        let since = Convention::Since129;
        assert_eq!(
            KubeconfigKind::Admin.profile(since).organization.as_deref(),
            Some("kubeadm:cluster-admins")
        );
        assert_eq!(
            KubeconfigKind::Admin
                .profile(Convention::Before129)
                .organization
                .as_deref(),
            Some("system:masters")
        );
        assert_eq!(
            KubeconfigKind::SuperAdmin.profile(since).common_name,
            "kubernetes-super-admin"
        );
        assert_eq!(
            KubeconfigKind::Scheduler.profile(since).common_name,
            "system:kube-scheduler"
        );
        let kubelet = KubeconfigKind::Kubelet { node: "w1".into() }.profile(since);
        assert_eq!(kubelet.organization.as_deref(), Some("system:nodes"));
    }
}
