//! Who a client is (its certificate, checked against `--client-ca-file`: CN the user, O the
//! groups) and what it may do (kubeadm's defaults: the admin groups anything, a node only its
//! own Node and Lease).

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
}

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

/// Whether `caller` may do `verb` to the `resource` named `name` (None: the collection).
pub fn allowed(caller: &Caller, verb: Verb, resource: Resource, name: Option<&str>) -> bool {
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
        use Resource::{Lease, Node};
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
        ];
        for (caller, verb, resource, name, want) in rows {
            assert_eq!(
                allowed(caller, *verb, *resource, *name),
                *want,
                "{caller:?} {verb:?} {resource:?} {name:?}"
            );
        }
    }
}
