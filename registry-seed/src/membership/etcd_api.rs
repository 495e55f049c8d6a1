//! The membership changes the seed asks of etcd ([`Membership`]), and their implementation over
//! the coordinator with a client certificate the seed signs for itself ([`EtcdApi`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cluster::etcd::Member;
use cluster::pki::{CaSet, SubjectKey};

use super::{
    EtcdClient, EtcdMembership, EtcdTls, MemberId, MemberRef, MembershipError, Policy,
    seed_client_profile,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Membership changes of the cluster's etcd. The seed's membership service holds its lock
/// around each add and remove, so at most one change it asks for runs at a time.
pub trait Membership: Send + Sync {
    /// Adds `member` as a learner and returns its member id. Adding a member that is already
    /// there (same peer URL) returns its id rather than failing, so that a retried enrollment
    /// after a seed crash does not add it twice.
    fn add_learner<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<MemberId, MembershipError>>;

    /// Waits until learner `id` has caught up and promotes it; gives up (and removes it) after
    /// the learner timeout.
    fn promote(&self, id: MemberId) -> BoxFuture<'_, Result<(), MembershipError>>;

    /// Removes `member`, refusing when that would lose quorum; one that is not there is success.
    fn remove<'a>(&'a self, member: &'a Member) -> BoxFuture<'a, Result<(), MembershipError>>;
}

/// [`Membership`] over etcd's API with mutual TLS.
#[derive(Debug)]
pub struct EtcdApi {
    coordinator: EtcdMembership,
    pub endpoints: Vec<String>,
}

impl EtcdApi {
    /// A client of the etcd reachable at `endpoints`, with a client certificate the seed signs
    /// for itself with the cluster's etcd CA.
    pub fn new(cas: &CaSet, endpoints: Vec<String>) -> Result<EtcdApi, MembershipError> {
        let now = time::OffsetDateTime::now_utc();
        let issued = cas
            .etcd_ca
            .issue(
                &seed_client_profile(),
                SubjectKey::Fresh(cas.key_algorithm()),
                now,
            )
            .map_err(|e| {
                MembershipError::Tls(format!("signing the seed's etcd client certificate: {e}"))
            })?;
        let key = issued.key.ok_or_else(|| {
            MembershipError::Tls("the etcd client certificate came without its key".into())
        })?;
        let tls = EtcdTls {
            ca_pem: cas.etcd_ca.cert_pem().to_owned(),
            client_cert_pem: issued.cert_pem,
            client_key_pem: key.pem().to_owned(),
        };
        let client = EtcdClient::new(endpoints.clone(), &tls)?;
        Ok(EtcdApi {
            coordinator: EtcdMembership::new(client, Policy::default()),
            endpoints,
        })
    }
}

impl Membership for EtcdApi {
    fn add_learner<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<MemberId, MembershipError>> {
        Box::pin(async move {
            match self
                .coordinator
                .add_learner(&member.name, &member.peer_url())
                .await
            {
                Ok(added) => Ok(added.id),
                // A retried enrollment of a master promoted meanwhile.
                Err(MembershipError::AlreadyVoter { id, .. }) => Ok(id),
                Err(err) => Err(err),
            }
        })
    }

    fn promote(&self, id: MemberId) -> BoxFuture<'_, Result<(), MembershipError>> {
        Box::pin(self.coordinator.promote_when_ready(id))
    }

    fn remove<'a>(&'a self, member: &'a Member) -> BoxFuture<'a, Result<(), MembershipError>> {
        Box::pin(async move {
            let target = MemberRef::PeerUrl(member.peer_url());
            match self.coordinator.remove(&target).await {
                Ok(_) => Ok(()),
                Err(err)
                    if matches!(err, MembershipError::NotFound(_)) || err.is_member_not_found() =>
                {
                    Ok(())
                }
                Err(err) => Err(err),
            }
        })
    }
}

/// A membership client and the endpoints it was made for.
type Cached = Option<(Vec<String>, Arc<dyn Membership>)>;

/// The membership client for the current masters, made once their client URLs are known and
/// remade when they change.
#[derive(Default)]
pub struct MembershipCache {
    current: std::sync::Mutex<Cached>,
}

impl std::fmt::Debug for MembershipCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MembershipCache")
    }
}

impl MembershipCache {
    pub fn get(
        &self,
        cas: &CaSet,
        endpoints: Vec<String>,
    ) -> Result<Arc<dyn Membership>, MembershipError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, membership)) = current.as_ref()
            && *known == endpoints
        {
            return Ok(membership.clone());
        }
        let membership: Arc<dyn Membership> = Arc::new(EtcdApi::new(cas, endpoints.clone())?);
        *current = Some((endpoints, membership.clone()));
        Ok(membership)
    }
}
