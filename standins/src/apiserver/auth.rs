//! Who a client is (its certificate, checked against `--client-ca-file`: CN the user, O the
//! groups) and what it may do (kubeadm's defaults: the admin groups anything, a node only its
//! own Node and Lease, and reading the ConfigMaps kubeadm's Roles name).

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::sync::Arc;

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No client certificate.
    Anonymous,
    /// A certificate the client CA signed.
    User { name: String, groups: Vec<String> },
    /// A certificate the client CA did not sign: every request is 401.
    Refused,
}

/// Groups that may do anything: `system:masters` (super-admin.conf) and kubeadm's
/// `kubeadm:cluster-admins` (admin.conf, bound to cluster-admin by `kubeadm init`).
const ADMIN_GROUPS: &[&str] = &["system:masters", "kubeadm:cluster-admins"];

/// What a request does to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Create,
    Update,
    Patch,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Node,
    Lease,
    ConfigMap,
}

/// The ConfigMaps `system:nodes` may GET, by namespace and name: kubeadm's Roles
/// `kubeadm:nodes-kubeadm-config` and `kubeadm:kubelet-config` (both bound to the group by
/// `kubeadm init`'s upload-config phase), and `cluster-info`, which file discovery reads.
pub const NODE_READABLE_CONFIG_MAPS: [(&str, &str); 3] = [
    ("kube-system", "kubeadm-config"),
    ("kube-system", "kubelet-config"),
    ("kube-public", "cluster-info"),
];

/// Checks a presented chain against the client CA; the verdict the handshake did not give.
#[derive(Debug, Clone)]
pub struct ClientCa {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCa {
    pub fn new(verifier: Arc<dyn ClientCertVerifier>) -> ClientCa {
        ClientCa { verifier }
    }

    /// The caller a connection's chain names.
    pub fn caller(&self, chain: Option<&[CertificateDer<'static>]>) -> Caller {
        let Some((leaf, rest)) = chain.and_then(|c| c.split_first()) else {
            return Caller::Anonymous;
        };
        if let Err(err) = self
            .verifier
            .verify_client_cert(leaf, rest, UnixTime::now())
        {
            tracing::info!(error = %err, "client certificate refused");
            return Caller::Refused;
        }
        names(leaf).unwrap_or(Caller::Refused)
    }
}

/// CN and every O of a certificate.
fn names(der: &[u8]) -> Option<Caller> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(Caller::User { name, groups })
}

/// Whether `caller` may do `verb` to the `resource` named `name` (None: the collection) in
/// `namespace` (None: cluster-scoped).
pub fn allowed(
    caller: &Caller,
    verb: Verb,
    resource: Resource,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let Caller::User { name: user, groups } = caller else {
        return false;
    };
    if groups.iter().any(|g| ADMIN_GROUPS.contains(&g.as_str())) {
        return true;
    }
    let Some(node) = user.strip_prefix("system:node:") else {
        return false;
    };
    if !groups.iter().any(|g| g == "system:nodes") {
        return false;
    }
    match (resource, verb) {
        (Resource::Node, Verb::Get | Verb::List) => true,
        (Resource::Node | Resource::Lease, Verb::Create | Verb::Update | Verb::Patch) => {
            name == Some(node)
        }
        (Resource::Lease, Verb::Get) => name == Some(node),
        (Resource::ConfigMap, Verb::Get) => namespace
            .zip(name)
            .is_some_and(|place| NODE_READABLE_CONFIG_MAPS.contains(&place)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> Caller {
        Caller::User {
            name: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    #[test]
    fn kubeadm_default_authorization() {
        let admin = user("kubernetes-admin", &["kubeadm:cluster-admins"]);
        let node = user("system:node:w1", &["system:nodes"]);
        let not_a_node = user("system:node:w1", &[]);
        let other = user("jane", &["devs"]);
        use Resource::{ConfigMap, Lease, Node};
        use Verb::*;
        let rows: &[(&Caller, Verb, Resource, Option<&str>, bool)] = &[
            (&admin, Delete, Node, Some("w2"), true),
            (
                &user("x", &["system:masters"]),
                Patch,
                Node,
                Some("w2"),
                true,
            ),
            (&node, List, Node, None, true),
            (&node, Get, Node, Some("w2"), true),
            (&node, Create, Node, Some("w1"), true),
            (&node, Patch, Node, Some("w1"), true),
            (&node, Patch, Node, Some("w2"), false),
            (&node, Update, Lease, Some("w1"), true),
            (&node, Create, Lease, Some("w2"), false),
            (&node, Delete, Node, Some("w1"), false),
            (&not_a_node, Get, Node, Some("w1"), false),
            (&other, List, Node, None, false),
            (&Caller::Anonymous, Get, Node, Some("w1"), false),
            (&admin, Update, ConfigMap, Some("kubeadm-config"), true),
        ];
        for (caller, verb, resource, name, want) in rows {
            let namespace = (*resource == Lease).then_some("kube-node-lease");
            assert_eq!(
                allowed(caller, *verb, *resource, namespace, *name),
                *want,
                "{caller:?} {verb:?} {resource:?} {name:?}"
            );
        }
    }

    #[test]
    fn nodes_read_only_the_config_maps_kubeadms_roles_name() {
        let node = user("system:node:m2", &["system:nodes"]);
        use Verb::*;
        let rows: &[(&Caller, Verb, &str, &str, bool)] = &[
            (&node, Get, "kube-system", "kubeadm-config", true),
            (&node, Get, "kube-system", "kubelet-config", true),
            (&node, Get, "kube-public", "cluster-info", true),
            (&node, Get, "kube-system", "kube-proxy", false),
            (&node, Get, "kube-public", "kubeadm-config", false),
            (&node, Update, "kube-system", "kubeadm-config", false),
            (&node, Create, "kube-system", "kubeadm-config", false),
            (
                &user("system:node:m2", &[]),
                Get,
                "kube-system",
                "kubeadm-config",
                false,
            ),
            (
                &Caller::Anonymous,
                Get,
                "kube-public",
                "cluster-info",
                false,
            ),
            (
                &user("jane", &["system:masters"]),
                Create,
                "kube-system",
                "x",
                true,
            ),
        ];
        for (caller, verb, ns, name, want) in rows {
            let got = allowed(caller, *verb, Resource::ConfigMap, Some(ns), Some(name));
            assert_eq!(got, *want, "{caller:?} {verb:?} {ns}/{name}");
        }
    }
}
