//! The seed's etcd membership service: a joining master's learner (added over etcd's API,
//! recorded, promoted once caught up), promotions resumed after a restart, a leaving master's
//! removal. Routes and jobs are handed it; it decides nothing about roles, which enrollment
//! committed before.

use std::sync::Arc;

use cluster::etcd::Member;
use cluster::pki::CaSet;

use super::{MemberId, Membership, MembershipCache, MembershipError};
use crate::enroll::decide::ClusterFacts;
use crate::enroll::plan::{MasterSeat, master_seats};
use crate::store::records::{EtcdMembership, HostRecord, now_ms};
use crate::store::{
    Store, StoreError, Table, get_json, list_json, put_json, read_with, write_with,
};

/// Why a membership step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no etcd member is known to talk to")]
    NoEndpoints,
    #[error("host {host} has no role assignment")]
    Unassigned { host: String },
    #[error("master {host} has no IP address")]
    NoAddress { host: String },
    #[error("{id:?} is not an etcd member id")]
    BadMemberId { id: String },
    #[error("host {host} was removed meanwhile")]
    HostGone { host: String },
    #[error(transparent)]
    Etcd(#[from] MembershipError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a blocking store task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// etcd membership as the seed does it; one per seed, shared by routes, jobs and the server.
pub struct MembershipService {
    store: Arc<dyn Store>,
    facts: Arc<ClusterFacts>,
    cas: Arc<CaSet>,
    /// A fixed client; when `None`, one is made for the masters' client URLs when first needed.
    fixed: Option<Arc<dyn Membership>>,
    cache: MembershipCache,
    /// One etcd membership change at a time.
    change: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for MembershipService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipService")
            .field("fixed", &self.fixed.is_some())
            .finish_non_exhaustive()
    }
}

impl MembershipService {
    pub fn new(
        store: Arc<dyn Store>,
        facts: Arc<ClusterFacts>,
        cas: Arc<CaSet>,
        fixed: Option<Arc<dyn Membership>>,
    ) -> MembershipService {
        MembershipService {
            store,
            facts,
            cas,
            fixed,
            cache: MembershipCache::default(),
            change: tokio::sync::Mutex::new(()),
        }
    }

    /// Adds an enrolled master beyond etcd's first members as a learner, records the member on
    /// its host record and starts its promotion. A retry after a crash finds the learner etcd
    /// already has (same peer URL) and records it then.
    pub async fn add_learner(self: &Arc<Self>, host: &HostRecord) -> Result<(), ChangeError> {
        let member = member_of(host)?;
        let ordinal = host.master_ordinal().unwrap_or(u32::MAX);
        let endpoints = client_urls(&self.seats().await?, |s| s.ordinal < ordinal);
        let client = self.client(endpoints)?;
        let id = {
            let _one_change = self.change.lock().await;
            client.add_learner(&member).await?
        };
        self.record(&host.id, move |record| {
            record.etcd = Some(EtcdMembership {
                member_id: Some(id.to_string()),
                learner: true,
                added_ms: now_ms(),
            });
        })
        .await?
        .ok_or_else(|| ChangeError::HostGone {
            host: host.id.clone(),
        })?;
        self.spawn_promotion(client, host.id.clone(), id);
        Ok(())
    }

    /// Removes a master's etcd member, through the other members.
    pub async fn remove(&self, host: &HostRecord) -> Result<(), ChangeError> {
        let member = member_of(host)?;
        let endpoints = client_urls(&self.seats().await?, |s| s.member != member);
        let client = self.client(endpoints)?;
        let _one_change = self.change.lock().await;
        client.remove(&member).await?;
        Ok(())
    }

    /// Learners added before a restart are promoted (or given up on) by this run.
    pub async fn resume_promotions(self: &Arc<Self>) -> Result<(), ChangeError> {
        let seats = self.seats().await?;
        for host in self.hosts().await? {
            let Some(stored) = host.etcd.as_ref().filter(|e| e.learner) else {
                continue;
            };
            let Some(id) = stored.member_id.as_deref() else {
                continue;
            };
            let id = match parse_id(id) {
                Ok(id) => id,
                Err(err) => {
                    tracing::warn!(host = %host.id, error = %err, "cannot resume promotion");
                    continue;
                }
            };
            let ordinal = host.master_ordinal().unwrap_or(0);
            match self.client(client_urls(&seats, |s| s.ordinal < ordinal)) {
                Ok(client) => self.spawn_promotion(client, host.id.clone(), id),
                Err(err) => {
                    tracing::warn!(host = %host.id, error = %err, "cannot resume promotion")
                }
            }
        }
        Ok(())
    }

    /// Promotes the learner once it has caught up, and records it. A learner that never comes
    /// up is removed by the membership client; its record then forgets the membership, so
    /// that the host is added again when it enrolls again.
    fn spawn_promotion(self: &Arc<Self>, client: Arc<dyn Membership>, host: String, id: MemberId) {
        let service = self.clone();
        tokio::spawn(async move {
            let promoted = match client.promote(id).await {
                Ok(()) => {
                    tracing::info!(%host, member = %id, "etcd learner promoted");
                    true
                }
                Err(err) => {
                    tracing::warn!(%host, member = %id, error = %err, "etcd learner not promoted");
                    false
                }
            };
            let recorded = service
                .record(&host, move |record| match record.etcd.as_mut() {
                    Some(etcd) if promoted => etcd.learner = false,
                    _ => record.etcd = None,
                })
                .await;
            if let Err(err) = recorded {
                tracing::error!(%host, error = %err, "recording the learner's promotion");
            }
        });
    }

    /// The client that changes membership through the members at `endpoints`.
    fn client(&self, endpoints: Vec<String>) -> Result<Arc<dyn Membership>, ChangeError> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        if endpoints.is_empty() {
            return Err(ChangeError::NoEndpoints);
        }
        Ok(self.cache.get(&self.cas, endpoints)?)
    }

    /// Every master seat known now (see [`master_seats`]).
    async fn seats(&self) -> Result<Vec<MasterSeat>, ChangeError> {
        let masters: Vec<HostRecord> = self
            .hosts()
            .await?
            .into_iter()
            .filter(HostRecord::is_master)
            .collect();
        Ok(master_seats(&self.facts, &masters))
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, ChangeError> {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            read_with(&*store, |tx| list_json::<HostRecord>(tx, Table::Hosts))
        });
        Ok(read.await??)
    }

    /// Changes a host record in one transaction; `None` when the host is gone.
    async fn record(
        &self,
        id: &str,
        change: impl FnMut(&mut HostRecord) + Send + 'static,
    ) -> Result<Option<HostRecord>, ChangeError> {
        let (store, id) = (self.store.clone(), id.to_string());
        let mut change = change;
        let write = tokio::task::spawn_blocking(move || {
            write_with(&*store, |tx| {
                let Some(mut host) = get_json::<HostRecord>(&*tx, Table::Hosts, &id)? else {
                    return Ok(None);
                };
                change(&mut host);
                put_json(tx, Table::Hosts, &id, &host)?;
                Ok(Some(host))
            })
        });
        Ok(write.await??)
    }
}

/// The etcd member a master host runs.
fn member_of(host: &HostRecord) -> Result<Member, ChangeError> {
    let a = host
        .assignment
        .as_ref()
        .ok_or_else(|| ChangeError::Unassigned {
            host: host.id.clone(),
        })?;
    let ip =
        a.ip.as_deref()
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| ChangeError::NoAddress {
                host: host.id.clone(),
            })?;
    Ok(Member::new(a.hostname.clone(), ip))
}

fn client_urls(seats: &[MasterSeat], keep: impl Fn(&MasterSeat) -> bool) -> Vec<String> {
    seats
        .iter()
        .filter(|s| keep(s))
        .map(|s| s.member.client_url())
        .collect()
}

fn parse_id(id: &str) -> Result<MemberId, ChangeError> {
    u64::from_str_radix(id, 16)
        .map(MemberId)
        .map_err(|_| ChangeError::BadMemberId { id: id.to_string() })
}
