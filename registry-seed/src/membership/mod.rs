//! etcd membership, done by the seed: add a master as a learner, promote it once it has caught
//! up, remove members without ever losing quorum.
//!
//! - [`EtcdClient`] speaks etcd 3.4's JSON gateway (`/v3/cluster/member/*`) over mutual TLS.
//! - [`plan`] holds the pure decisions: may this member be added or removed, what is the
//!   `initial-cluster` string of a joining member.
//! - [`EtcdMembership`] is one cluster's coordinator: it makes one change at a time and applies
//!   [`plan`]'s rules to what etcd reports at that moment.
//! - [`Membership`] is the changes the seed asks for, [`EtcdApi`] their implementation over the
//!   coordinator with a client certificate the seed signs for itself.
//! - [`MembershipService`] is the seed's use of it, handed to routes and jobs: a joining
//!   master's learner (added, recorded, promoted; promotions resumed after a restart) and a
//!   leaving master's removal, one change at a time, with [`ChangeError`] for what went wrong.

mod client;
mod coordinator;
mod etcd_api;
pub mod plan;
mod service;

pub use self::client::{EtcdClient, EtcdTls, seed_client_profile};
pub use self::coordinator::{Added, EtcdMembership, Policy};
pub use self::etcd_api::{BoxFuture, EtcdApi, Membership, MembershipCache};
pub use self::plan::{Member, MemberId, MemberRef};
pub use self::service::{ChangeError, MembershipService};

use std::time::Duration;

/// Everything membership changes can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("building the etcd client: {0}")]
    Tls(String),
    #[error("no etcd endpoint answered {path} (tried {tried}): {last}")]
    Unreachable {
        path: String,
        tried: String,
        last: String,
    },
    #[error("etcd refused {path}: {message} (grpc code {code})")]
    Etcd {
        path: String,
        code: i32,
        message: String,
    },
    #[error("reading etcd's answer to {path}: {reason}")]
    BadResponse { path: String, reason: String },
    #[error("no etcd member {0}")]
    NotFound(String),
    #[error("{peer_url} is already voting member {id}")]
    AlreadyVoter { id: MemberId, peer_url: String },
    #[error("learner {id} is still joining; one member joins at a time")]
    LearnerPending { id: MemberId },
    #[error(
        "removing member {id} would leave {healthy} healthy of {voters} voting members, \
         fewer than the {needed} a quorum needs"
    )]
    QuorumAtRisk {
        id: MemberId,
        healthy: usize,
        voters: usize,
        needed: usize,
    },
    #[error(
        "only {healthy} of {voters} voting members are healthy: no quorum to change membership"
    )]
    NoQuorum { healthy: usize, voters: usize },
    #[error("member {0} is the last voting member")]
    LastMember(MemberId),
    #[error("learner {id} did not catch up within {waited:?}; it was removed")]
    LearnerTimedOut { id: MemberId, waited: Duration },
}

impl MembershipError {
    /// etcd's answer to promoting a learner that has not caught up yet: worth retrying.
    pub fn is_learner_not_ready(&self) -> bool {
        matches!(self, MembershipError::Etcd { message, .. } if message.contains("in sync with leader"))
    }

    /// etcd's answer to promoting a member that already votes.
    pub fn is_not_learner(&self) -> bool {
        matches!(self, MembershipError::Etcd { message, .. }
            if message.ends_with("can only promote a learner member"))
    }

    /// etcd refusing a change for now: a member was not connected for the last five seconds
    /// (`unhealthy cluster`, its strict reconfiguration check), or not enough members started.
    pub fn is_cluster_busy(&self) -> bool {
        matches!(self, MembershipError::Etcd { message, .. }
            if message.ends_with("unhealthy cluster") || message.contains("not enough started members"))
    }

    /// etcd's `member not found` (gRPC NotFound).
    pub fn is_member_not_found(&self) -> bool {
        matches!(self, MembershipError::Etcd { code: 5, .. })
    }
}
