//! One cluster's membership coordinator: one change at a time, decided by [`super::plan`] on the
//! member list etcd reports at that moment.

use super::MembershipError;
use super::client::EtcdClient;
use super::plan::{self, AddPlan, Member, MemberId, MemberRef};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Timings of membership changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long a learner may take to start and catch up before it is removed again.
    pub learner_timeout: Duration,
    /// First and longest wait between promotion attempts.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How long an add or remove waits out etcd's "unhealthy cluster" (a member not connected
    /// for five seconds, as right after a start or a restart) before giving up.
    pub busy_timeout: Duration,
    /// How long a removal keeps reading the members' health before it refuses for want of a
    /// quorum. etcd 3.4's `/health` gives a read through raft one second, so on a loaded
    /// machine a healthy member can answer `false` for a moment, and a cluster busy with a new
    /// member can be without a leader for half a minute (seen with four TCG masters on two
    /// cores): a removal waits that out rather than fail.
    pub health_settle: Duration,
}

impl Default for Policy {
    /// Ten minutes for a learner: a master installs and starts etcd within its first boot,
    /// which takes a few minutes; past that it is not coming.
    fn default() -> Policy {
        Policy {
            learner_timeout: Duration::from_secs(600),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(30),
            health_settle: Duration::from_secs(90),
        }
    }
}

/// A learner was added (or found already added) for a joining master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    pub id: MemberId,
    /// `initial-cluster` for the joining member's config (`initial-cluster-state: existing`).
    pub initial_cluster: String,
    /// The member list after the change.
    pub members: Vec<Member>,
}

/// Membership of one etcd cluster. Keep one per cluster (in an `Arc`) for the life of the seed:
/// its lock is what makes changes to that cluster happen one at a time.
#[derive(Debug)]
pub struct EtcdMembership {
    client: EtcdClient,
    policy: Policy,
    change: Mutex<()>,
}

impl EtcdMembership {
    pub fn new(client: EtcdClient, policy: Policy) -> EtcdMembership {
        EtcdMembership {
            client,
            policy,
            change: Mutex::new(()),
        }
    }

    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Adds the master `name` at `peer_url` as a learner, unless another learner is still
    /// joining ([`MembershipError::LearnerPending`]: ask again later). Asking again for the same
    /// peer URL returns the same learner, so a retried enrollment does not add a second member.
    pub async fn add_learner(&self, name: &str, peer_url: &str) -> Result<Added, MembershipError> {
        let _one_at_a_time = self.change.lock().await;
        let members = self.client.member_list().await?;
        let (id, members) = match plan::plan_add(&members, peer_url)? {
            AddPlan::Existing(learner) => (learner.id, members),
            AddPlan::Add => {
                let (learner, members) = self
                    .while_busy(|| self.client.add_learner(peer_url))
                    .await?;
                tracing::info!(id = %learner.id, name, peer_url, "etcd learner added");
                (learner.id, members)
            }
        };
        Ok(Added {
            id,
            initial_cluster: plan::initial_cluster(&members, id, name),
            members,
        })
    }

    /// Promotes learner `id` as soon as etcd allows it (it has caught up with the leader),
    /// retrying with backoff. After [`Policy::learner_timeout`] the learner is removed and
    /// [`MembershipError::LearnerTimedOut`] returned. A member that already votes is success.
    pub async fn promote_when_ready(&self, id: MemberId) -> Result<(), MembershipError> {
        let started = Instant::now();
        let deadline = started + self.policy.learner_timeout;
        let mut wait = Duration::ZERO;
        loop {
            let attempt = {
                let _one_at_a_time = self.change.lock().await;
                self.client.promote(id).await
            };
            match attempt {
                Ok(()) => {
                    tracing::info!(%id, "etcd learner promoted");
                    return Ok(());
                }
                Err(e) if e.is_not_learner() => return Ok(()),
                Err(e) if e.is_member_not_found() => {
                    return Err(MembershipError::NotFound(id.to_string()));
                }
                Err(e) if e.is_learner_not_ready() => {
                    tracing::debug!(%id, "learner not caught up yet")
                }
                Err(e @ MembershipError::Unreachable { .. }) => {
                    tracing::warn!(%id, error = %e, "promoting")
                }
                Err(e) => return Err(e),
            }
            wait = plan::next_backoff(wait, self.policy.retry_min, self.policy.retry_max);
            if Instant::now() + wait >= deadline {
                return Err(self.give_up(id, started.elapsed()).await);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Learners etcd knows of. A seed that restarts while a learner was joining calls
    /// [`EtcdMembership::promote_when_ready`] for each again, so every learner is either
    /// promoted or removed, and never blocks later joins for good.
    pub async fn pending_learners(&self) -> Result<Vec<MemberId>, MembershipError> {
        let members = self.client.member_list().await?;
        Ok(members
            .iter()
            .filter(|m| m.is_learner)
            .map(|m| m.id)
            .collect())
    }

    /// Removes a learner that never caught up; the error to report either way.
    async fn give_up(&self, id: MemberId, waited: Duration) -> MembershipError {
        let _one_at_a_time = self.change.lock().await;
        let still_learner = match self.client.member_list().await {
            Ok(members) => members.iter().any(|m| m.id == id && m.is_learner),
            Err(e) => return e,
        };
        if still_learner {
            if let Err(e) = self.while_busy(|| self.client.remove(id)).await {
                return e;
            }
            tracing::warn!(%id, ?waited, "etcd learner never caught up; removed");
        }
        MembershipError::LearnerTimedOut { id, waited }
    }

    /// Removes a member, unless that would leave fewer healthy voting members than a quorum
    /// (see [`plan::plan_removal`]); a refusal is only given once health has read short of a
    /// quorum for [`Policy::health_settle`]. Returns the member removed.
    pub async fn remove(&self, target: &MemberRef) -> Result<Member, MembershipError> {
        let _one_at_a_time = self.change.lock().await;
        let deadline = Instant::now() + self.policy.health_settle;
        let mut wait = Duration::ZERO;
        let gone = loop {
            let members = self.client.member_list().await?;
            let healthy = self.healthy_voters(&members).await;
            match plan::plan_removal(&members, target, &healthy) {
                Ok(gone) => break gone.clone(),
                Err(
                    e @ (MembershipError::NoQuorum { .. } | MembershipError::QuorumAtRisk { .. }),
                ) if Instant::now() < deadline => {
                    tracing::info!(error = %e, "etcd health short of a quorum; reading it again");
                }
                Err(e) => return Err(e),
            }
            wait = plan::next_backoff(wait, self.policy.retry_min, self.policy.retry_max);
            tokio::time::sleep(wait).await;
        };
        if let Some(to) = self.hand_off_leadership(&gone).await {
            tracing::info!(from = %gone.name, %to, "etcd leadership moved before the removal");
        }
        match self.while_busy(|| self.client.remove(gone.id)).await {
            Ok(()) => {}
            Err(e) if e.is_member_not_found() => {}
            // The change may have been made with its answer lost (on a loaded cluster the
            // answer can take longer than the wait): etcd's member list says.
            Err(e @ MembershipError::Unreachable { .. }) => self.confirm_gone(gone.id, e).await?,
            Err(e) => return Err(e),
        }
        tracing::info!(id = %gone.id, name = %gone.name, "etcd member removed");
        Ok(gone)
    }

    /// After a removal whose answer did not come: done when `id` is no longer listed; asked
    /// again (which answers "not found" once it is done) while it still is, up to
    /// [`Policy::busy_timeout`]; `unanswered` when it never was.
    async fn confirm_gone(
        &self,
        id: MemberId,
        unanswered: MembershipError,
    ) -> Result<(), MembershipError> {
        let deadline = Instant::now() + self.policy.busy_timeout;
        let mut wait = Duration::ZERO;
        while Instant::now() < deadline {
            match self.client.member_list().await {
                Ok(members) if !members.iter().any(|m| m.id == id) => return Ok(()),
                Ok(_) => match self.client.remove(id).await {
                    Ok(()) => return Ok(()),
                    Err(e) if e.is_member_not_found() => return Ok(()),
                    Err(e) => tracing::debug!(error = %e, "removing the etcd member again"),
                },
                Err(e) => tracing::debug!(error = %e, "listing etcd members"),
            }
            wait = plan::next_backoff(wait, self.policy.retry_min, self.policy.retry_max);
            tokio::time::sleep(wait).await;
        }
        Err(unanswered)
    }

    /// When `leaving` leads the cluster, hands leadership to a healthy voting member first, so
    /// that the cluster has a leader throughout instead of electing one after the removal
    /// (etcd's own advice before removing the leader). Returns who leads now when it moved;
    /// a failure is logged and the removal goes on, as etcd copes without it.
    async fn hand_off_leadership(&self, leaving: &Member) -> Option<MemberId> {
        let members = self.client.member_list().await.ok()?;
        let leader = self.client.leader(self.client.endpoints()).await.ok()?;
        if leader != leaving.id {
            return None;
        }
        let healthy = self.healthy_voters(&members).await;
        let target = members
            .iter()
            .find(|m| m.id != leaving.id && !m.is_learner && healthy.contains(&m.id))?
            .id;
        match self.client.move_leader(&leaving.client_urls, target).await {
            Ok(()) => Some(target),
            Err(e) => {
                tracing::warn!(error = %e, "moving etcd leadership before the removal failed");
                None
            }
        }
    }

    /// Runs `change` again while etcd says the cluster is busy, up to [`Policy::busy_timeout`].
    async fn while_busy<T, F, Fut>(&self, change: F) -> Result<T, MembershipError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, MembershipError>>,
    {
        let deadline = Instant::now() + self.policy.busy_timeout;
        let mut wait = Duration::ZERO;
        loop {
            match change().await {
                Err(e) if e.is_cluster_busy() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "etcd busy; waiting");
                }
                done => return done,
            }
            wait = plan::next_backoff(wait, self.policy.retry_min, self.policy.retry_max);
            tokio::time::sleep(wait).await;
        }
    }

    /// The voting members whose `/health` says true, asked all at once.
    pub async fn healthy_voters(&self, members: &[Member]) -> BTreeSet<MemberId> {
        let mut asked = tokio::task::JoinSet::new();
        for m in members.iter().filter(|m| !m.is_learner) {
            let (client, id, urls) = (self.client.clone(), m.id, m.client_urls.clone());
            asked.spawn(async move {
                for url in &urls {
                    if client.healthy(url).await {
                        return Some(id);
                    }
                }
                None
            });
        }
        let mut healthy = BTreeSet::new();
        while let Some(answer) = asked.join_next().await {
            if let Ok(Some(id)) = answer {
                healthy.insert(id);
            }
        }
        healthy
    }
}
