//! kubeadm's certificate profiles: file names, subjects, usages and SANs, checked against
//! kubeadm's `certlist.go` and `pkiutil`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{CaKind, KUBELET_PKI_DIR, PKI_DIR};
use crate::api::cert_names;

/// Which of kubeadm's conventions a Kubernetes minor follows. 1.29 moved admin credentials
/// from `system:masters` to `kubeadm:cluster-admins` (a group RBAC can revoke), added
/// `super-admin.conf`, and dropped the organization from the etcd client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    Before129,
    Since129,
}

impl Convention {
    pub fn for_minor(minor: u32) -> Convention {
        if minor >= 29 {
            Convention::Since129
        } else {
            Convention::Before129
        }
    }

    /// The group of `admin.conf` and `apiserver-kubelet-client`.
    pub fn admins_group(self) -> &'static str {
        match self {
            Convention::Before129 => SYSTEM_MASTERS,
            Convention::Since129 => CLUSTER_ADMINS,
        }
    }

    /// Whether `super-admin.conf` exists.
    pub fn has_super_admin(self) -> bool {
        self == Convention::Since129
    }

    fn etcd_client_org(self) -> Option<String> {
        match self {
            Convention::Before129 => Some(SYSTEM_MASTERS.to_owned()),
            Convention::Since129 => None,
        }
    }
}

pub const SYSTEM_MASTERS: &str = "system:masters";
pub const CLUSTER_ADMINS: &str = "kubeadm:cluster-admins";
pub const SYSTEM_NODES: &str = "system:nodes";

/// What a certificate may be used for (its extended key usages). Every leaf also gets
/// kubeadm's key usages, `digitalSignature`, and `keyEncipherment` when its key is RSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
    ServerAndClient,
}

/// One certificate to issue: who signs it, whom it names, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertProfile {
    /// The certificate's name, which is also its file stem (see [`cert_names`]); kubeconfig
    /// client certificates are named after their file (`admin`, `scheduler`...).
    pub name: String,
    pub issuer: CaKind,
    pub common_name: String,
    /// The subject's O, the group Kubernetes sees (kubeadm never sets more than one).
    pub organization: Option<String>,
    pub usage: Usage,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl CertProfile {
    pub(crate) fn client(name: &str, issuer: CaKind, cn: &str, org: Option<&str>) -> CertProfile {
        CertProfile {
            name: name.to_owned(),
            issuer,
            common_name: cn.to_owned(),
            organization: org.map(str::to_owned),
            usage: Usage::Client,
            dns_names: Vec::new(),
            ips: Vec::new(),
        }
    }

    /// `apiserver-kubelet-client`: the API server's identity towards kubelets.
    pub fn apiserver_kubelet_client(convention: Convention) -> CertProfile {
        CertProfile::client(
            cert_names::APISERVER_KUBELET_CLIENT,
            CaKind::Kubernetes,
            "kube-apiserver-kubelet-client",
            Some(convention.admins_group()),
        )
    }

    /// `front-proxy-client`: the API server's identity towards aggregated API servers.
    pub fn front_proxy_client() -> CertProfile {
        CertProfile::client(
            cert_names::FRONT_PROXY_CLIENT,
            CaKind::FrontProxy,
            "front-proxy-client",
            None,
        )
    }

    /// `etcd/healthcheck-client`: what probes and `etcdctl` use.
    pub fn etcd_healthcheck_client(convention: Convention) -> CertProfile {
        CertProfile::client(
            cert_names::ETCD_HEALTHCHECK_CLIENT,
            CaKind::Etcd,
            "kube-etcd-healthcheck-client",
            convention.etcd_client_org().as_deref(),
        )
    }

    /// `apiserver-etcd-client`: the API server's identity towards etcd.
    pub fn apiserver_etcd_client(convention: Convention) -> CertProfile {
        CertProfile::client(
            cert_names::APISERVER_ETCD_CLIENT,
            CaKind::Etcd,
            "kube-apiserver-etcd-client",
            convention.etcd_client_org().as_deref(),
        )
    }

    /// `etcd/server` of one member: CN and SANs name the node, its IP and loopback.
    pub fn etcd_server(node: &str, ip: IpAddr) -> CertProfile {
        CertProfile::etcd_member(cert_names::ETCD_SERVER, node, ip)
    }

    /// `etcd/peer` of one member, the same names as its server certificate.
    pub fn etcd_peer(node: &str, ip: IpAddr) -> CertProfile {
        CertProfile::etcd_member(cert_names::ETCD_PEER, node, ip)
    }

    fn etcd_member(name: &str, node: &str, ip: IpAddr) -> CertProfile {
        let mut ips = vec![
            ip,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        ips.dedup();
        CertProfile {
            name: name.to_owned(),
            issuer: CaKind::Etcd,
            common_name: node.to_owned(),
            organization: None,
            // etcd checks ClientAuth on server certificates too (etcd#9785), as kubeadm notes.
            usage: Usage::ServerAndClient,
            dns_names: vec![node.to_owned(), "localhost".to_owned()],
            ips,
        }
    }

    /// The kubelet's client certificate: `system:node:<name>` in `system:nodes`.
    pub fn kubelet_client(node: &str) -> CertProfile {
        CertProfile::client(
            cert_names::KUBELET_CLIENT,
            CaKind::Kubernetes,
            &format!("system:node:{node}"),
            Some(SYSTEM_NODES),
        )
    }

    /// The profile of a certificate a host may send a CSR for, by its [`cert_names`] name.
    /// `ip` is needed by the etcd member certificates only.
    pub fn by_name(
        name: &str,
        convention: Convention,
        node: &str,
        ip: Option<IpAddr>,
    ) -> Option<CertProfile> {
        Some(match name {
            cert_names::KUBELET_CLIENT => CertProfile::kubelet_client(node),
            cert_names::ETCD_SERVER => CertProfile::etcd_server(node, ip?),
            cert_names::ETCD_PEER => CertProfile::etcd_peer(node, ip?),
            cert_names::ETCD_HEALTHCHECK_CLIENT => CertProfile::etcd_healthcheck_client(convention),
            cert_names::APISERVER_ETCD_CLIENT => CertProfile::apiserver_etcd_client(convention),
            cert_names::APISERVER_KUBELET_CLIENT => {
                CertProfile::apiserver_kubelet_client(convention)
            }
            cert_names::FRONT_PROXY_CLIENT => CertProfile::front_proxy_client(),
            _ => return None,
        })
    }

    /// Absolute path of the certificate file on a host.
    pub fn cert_path(&self) -> String {
        format!("{}.crt", self.path_stem())
    }

    /// Absolute path of the key file on a host.
    pub fn key_path(&self) -> String {
        format!("{}.key", self.path_stem())
    }

    fn path_stem(&self) -> String {
        if self.name == cert_names::KUBELET_CLIENT {
            format!("{KUBELET_PKI_DIR}/{}", self.name)
        } else {
            format!("{PKI_DIR}/{}", self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_csr_name_has_a_profile_and_a_distinct_path() {
        let ip = Some("10.0.0.1".parse().unwrap());
        let mut paths: Vec<String> = cert_names::ALL
            .iter()
            .map(|n| {
                CertProfile::by_name(n, Convention::Since129, "m1", ip)
                    .unwrap()
                    .cert_path()
            })
            .collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), cert_names::ALL.len());
        assert!(CertProfile::by_name("apiserver", Convention::Since129, "m1", ip).is_none());
        assert!(
            CertProfile::by_name(cert_names::ETCD_PEER, Convention::Since129, "m1", None).is_none()
        );
    }

    #[test]
    fn the_admin_group_changed_in_1_29() {
        assert_eq!(
            CertProfile::apiserver_kubelet_client(Convention::for_minor(28)).organization,
            Some("system:masters".into())
        );
        assert_eq!(
            CertProfile::apiserver_kubelet_client(Convention::for_minor(29)).organization,
            Some("kubeadm:cluster-admins".into())
        );
        assert_eq!(
            CertProfile::apiserver_etcd_client(Convention::for_minor(33)).organization,
            None
        );
        assert_eq!(
            CertProfile::etcd_healthcheck_client(Convention::for_minor(22)).organization,
            Some("system:masters".into())
        );
    }

    #[test]
    fn paths_follow_kubeadm() {
        let kubelet = CertProfile::kubelet_client("w1");
        assert_eq!(
            kubelet.cert_path(),
            "/var/lib/kubelet/pki/kubelet-client.crt"
        );
        assert_eq!(kubelet.common_name, "system:node:w1");
        let peer = CertProfile::etcd_peer("m1", "10.0.0.1".parse().unwrap());
        assert_eq!(peer.key_path(), "/etc/kubernetes/pki/etcd/peer.key");
    }
}
