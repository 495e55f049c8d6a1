//! Who a client is (its certificate, checked against `--client-ca-file`: CN the user, O the
//! groups) and what it may do (kubeadm's defaults: the admin groups anything, a node only its
//! own Node and Lease and reading the ConfigMaps kubeadm's Roles name, the controller-manager
//! and the scheduler what their stand-ins need).

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

/// The users of kubeadm's `controller-manager.conf` and `scheduler.conf`.
const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";
const SCHEDULER: &str = "system:kube-scheduler";

/// The namespace of the components' leader-election Leases, and of the nodes' Leases.
const LEADER_NAMESPACE: &str = "kube-system";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Whether `caller` may do `verb` to the `resource` named `name` (None: the collection) in
/// `namespace` (None: cluster-scoped).
pub fn allowed(
    caller: &Caller,
    verb: Verb,
    resource: Resource,
    name: Option<&str>,
    namespace: Option<&str>,
) -> bool {
    let Caller::User { name: user, groups } = caller else {
        return false;
    };
    if groups.iter().any(|g| ADMIN_GROUPS.contains(&g.as_str())) {
        return true;
    }
    match user.as_str() {
        CONTROLLER_MANAGER | SCHEDULER => component(user, verb, resource, name, namespace),
        _ => node(user, groups, verb, resource, name, namespace),
    }
}

/// A node's rights: every Node readable, its own Node and Lease writable.
fn node(
    user: &str,
    groups: &[String],
    verb: Verb,
    resource: Resource,
    name: Option<&str>,
    namespace: Option<&str>,
) -> bool {
    let Some(node) = user.strip_prefix("system:node:") else {
        return false;
    };
    if !groups.iter().any(|g| g == "system:nodes") {
        return false;
    }
    let own_lease = namespace == Some(NODE_LEASE_NAMESPACE) && name == Some(node);
    match (resource, verb) {
        (Resource::Node, Verb::Get | Verb::List) => true,
        (Resource::Node, Verb::Create | Verb::Update | Verb::Patch) => name == Some(node),
        (Resource::Lease, Verb::Get | Verb::Create | Verb::Update | Verb::Patch) => own_lease,
        (Resource::ConfigMap, Verb::Get) => namespace
            .zip(name)
            .is_some_and(|place| NODE_READABLE_CONFIG_MAPS.contains(&place)),
        _ => false,
    }
}

/// The controller-manager's and the scheduler's rights: read Nodes, hold their own
/// leader-election Lease; the controller-manager also writes Nodes (status, taints) and reads
/// every Lease (the nodes' heartbeats).
fn component(
    user: &str,
    verb: Verb,
    resource: Resource,
    name: Option<&str>,
    namespace: Option<&str>,
) -> bool {
    let own_name = user.strip_prefix("system:");
    let own_lease = namespace == Some(LEADER_NAMESPACE) && name.is_some() && name == own_name;
    let manager = user == CONTROLLER_MANAGER;
    match (resource, verb) {
        (Resource::Node, Verb::Get | Verb::List) => true,
        (Resource::Node, Verb::Update | Verb::Patch) => manager,
        (Resource::Lease, Verb::Get) => manager || own_lease,
        (Resource::Lease, Verb::Create | Verb::Update) => own_lease,
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
        let cm = user("system:kube-controller-manager", &[]);
        let sched = user("system:kube-scheduler", &[]);
        let nl = Some("kube-node-lease");
        let ks = Some("kube-system");
        use Resource::{Lease, Node};
        use Verb::*;
        type Row<'a> = (
            &'a Caller,
            Verb,
            Resource,
            Option<&'a str>,
            Option<&'a str>,
            bool,
        );
        let rows: &[Row] = &[
            (&admin, Delete, Node, Some("w2"), None, true),
            (
                &user("x", &["system:masters"]),
                Patch,
                Node,
                Some("w2"),
                None,
                true,
            ),
            (&node, List, Node, None, None, true),
            (&node, Get, Node, Some("w2"), None, true),
            (&node, Create, Node, Some("w1"), None, true),
            (&node, Patch, Node, Some("w1"), None, true),
            (&node, Patch, Node, Some("w2"), None, false),
            (&node, Update, Lease, Some("w1"), nl, true),
            (&node, Create, Lease, Some("w2"), nl, false),
            // A node's name is no claim on a leader-election Lease.
            (
                &user("system:node:kube-scheduler", &["system:nodes"]),
                Update,
                Lease,
                Some("kube-scheduler"),
                ks,
                false,
            ),
            (&node, Delete, Node, Some("w1"), None, false),
            (&not_a_node, Get, Node, Some("w1"), None, false),
            (&other, List, Node, None, None, false),
            (&Caller::Anonymous, Get, Node, Some("w1"), None, false),
            // The controller-manager.
            (&cm, List, Node, None, None, true),
            (&cm, Get, Node, Some("w1"), None, true),
            (&cm, Update, Node, Some("w1"), None, true),
            (&cm, Patch, Node, Some("w1"), None, true),
            (&cm, Create, Node, Some("w1"), None, false),
            (&cm, Delete, Node, Some("w1"), None, false),
            (&cm, Get, Lease, Some("w1"), nl, true),
            (&cm, Get, Lease, Some("kube-scheduler"), ks, true),
            (
                &cm,
                Create,
                Lease,
                Some("kube-controller-manager"),
                ks,
                true,
            ),
            (
                &cm,
                Update,
                Lease,
                Some("kube-controller-manager"),
                ks,
                true,
            ),
            (
                &cm,
                Update,
                Lease,
                Some("kube-controller-manager"),
                nl,
                false,
            ),
            (&cm, Update, Lease, Some("kube-scheduler"), ks, false),
            (&cm, Update, Lease, Some("w1"), nl, false),
            (&cm, Create, Lease, Some("w1"), nl, false),
            // The scheduler.
            (&sched, List, Node, None, None, true),
            (&sched, Get, Node, Some("w1"), None, true),
            (&sched, Update, Node, Some("w1"), None, false),
            (&sched, Patch, Node, Some("w1"), None, false),
            (&sched, Get, Lease, Some("kube-scheduler"), ks, true),
            (&sched, Create, Lease, Some("kube-scheduler"), ks, true),
            (&sched, Update, Lease, Some("kube-scheduler"), ks, true),
            (
                &sched,
                Get,
                Lease,
                Some("kube-controller-manager"),
                ks,
                false,
            ),
            (
                &sched,
                Update,
                Lease,
                Some("kube-controller-manager"),
                ks,
                false,
            ),
            (&sched, Get, Lease, Some("w1"), nl, false),
            // The components' names, with a group, are still only the components.
            (
                &user("system:kube-scheduler", &["devs"]),
                Delete,
                Node,
                Some("w1"),
                None,
                false,
            ),
        ];
        for (caller, verb, resource, name, namespace, want) in rows {
            assert_eq!(
                allowed(caller, *verb, *resource, *name, *namespace),
                *want,
                "{caller:?} {verb:?} {resource:?} {name:?} {namespace:?}"
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
            (
                &user("system:kube-controller-manager", &[]),
                Get,
                "kube-system",
                "kubeadm-config",
                false,
            ),
        ];
        for (caller, verb, ns, name, want) in rows {
            let got = allowed(caller, *verb, Resource::ConfigMap, Some(name), Some(ns));
            assert_eq!(got, *want, "{caller:?} {verb:?} {ns}/{name}");
        }
    }
}
