//! From the seed's decision about a host to its sealed plan (`cluster::plan::plan_host`): where
//! its etcd member stands among the masters, and whether every bootstrap master is known yet.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cluster::api::{self, Role};
use cluster::etcd::{ClusterState, Member};
use cluster::pki::CaSet;
use cluster::plan::{EtcdPlacement, HostInput, PlanError, plan_host};
use cluster::spec::{ClusterSpec, Hostname};

use super::decide::ClusterFacts;
use crate::store::records::HostRecord;

/// A plan, or why the host must come back later.
#[derive(Debug)]
pub enum PlanOutcome {
    Ready(Box<api::Plan>),
    /// A bootstrap master waits until every bootstrap master is known (etcd's
    /// `initial-cluster` names them all).
    Waiting(String),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("host {id} has no assignment")]
    Unassigned { id: String },
    #[error("{what} {value:?} is not valid: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
}

/// A master as etcd sees it: its ordinal, name and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterSeat {
    pub ordinal: u32,
    pub member: Member,
}

/// The masters known now: enrolled ones from the store, and inventory masters with an address
/// that have not arrived yet (their seat and name are fixed by the spec).
pub fn master_seats(facts: &ClusterFacts, masters: &[HostRecord]) -> Vec<MasterSeat> {
    let mut seats: BTreeMap<u32, MasterSeat> = BTreeMap::new();
    for entry in facts.inventory.iter().filter(|e| e.role == Role::Master) {
        if let Some(ip) = entry.ip.as_deref().and_then(|ip| ip.parse().ok()) {
            seats.insert(
                entry.role_index,
                MasterSeat {
                    ordinal: entry.role_index,
                    member: Member::new(entry.hostname.clone(), ip),
                },
            );
        }
    }
    for record in masters {
        let Some(a) = &record.assignment else {
            continue;
        };
        let (Some(ordinal), Some(ip)) = (a.master_ordinal, a.ip.as_deref()) else {
            continue;
        };
        if let Ok(ip) = ip.parse::<IpAddr>() {
            seats.insert(
                ordinal,
                MasterSeat {
                    ordinal,
                    member: Member::new(a.hostname.clone(), ip),
                },
            );
        }
    }
    seats.into_values().collect()
}

/// Where a master's etcd member stands, or why it must wait.
pub fn placement(
    bootstrap: u32,
    ordinal: u32,
    seats: &[MasterSeat],
) -> Result<EtcdPlacement, String> {
    if ordinal <= bootstrap {
        let members: Vec<Member> = seats
            .iter()
            .filter(|s| s.ordinal <= bootstrap)
            .map(|s| s.member.clone())
            .collect();
        let missing = bootstrap as usize - members.len();
        if missing > 0 {
            return Err(format!(
                "waiting for {missing} more master(s) to enroll: the first {bootstrap} start \
                 etcd together"
            ));
        }
        return Ok(EtcdPlacement {
            members,
            state: ClusterState::New,
            learner: false,
        });
    }
    let members = seats
        .iter()
        .filter(|s| s.ordinal <= ordinal)
        .map(|s| s.member.clone())
        .collect();
    Ok(EtcdPlacement {
        members,
        state: ClusterState::Existing,
        learner: true,
    })
}

/// Inputs of [`build`] besides the host itself.
#[derive(Debug)]
pub struct PlanContext<'a> {
    pub spec: &'a ClusterSpec,
    /// How many masters start etcd together (`meta/etcd_cohort`, else `cluster.masters`).
    pub bootstrap: u32,
    pub facts: &'a ClusterFacts,
    pub cas: &'a CaSet,
    /// Every enrolled master record.
    pub masters: &'a [HostRecord],
    pub now: time::OffsetDateTime,
}

/// The host's plan from its assignment and CSRs.
pub fn build(
    ctx: &PlanContext<'_>,
    record: &HostRecord,
    csrs: &BTreeMap<String, String>,
) -> Result<PlanOutcome, BuildError> {
    let a = record
        .assignment
        .as_ref()
        .ok_or_else(|| BuildError::Unassigned {
            id: record.id.clone(),
        })?;
    let hostname: Hostname = a.hostname.parse().map_err(|e| BuildError::Invalid {
        what: "hostname",
        value: a.hostname.clone(),
        reason: format!("{e}"),
    })?;
    let ip = match a.ip.as_deref() {
        Some(ip) => Some(ip.parse::<IpAddr>().map_err(|e| BuildError::Invalid {
            what: "ip",
            value: ip.to_string(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let etcd = match (a.role, a.master_ordinal) {
        (Role::Master, Some(ordinal)) => {
            let seats = master_seats(ctx.facts, ctx.masters);
            match placement(ctx.bootstrap, ordinal, &seats) {
                Ok(placement) => Some(placement),
                Err(why) => return Ok(PlanOutcome::Waiting(why)),
            }
        }
        _ => None,
    };
    let input = HostInput {
        spec: ctx.spec,
        cas: ctx.cas,
        host_id: &record.id,
        hostname: &hostname,
        role: a.role,
        ip,
        first_master: a.role == Role::Master && a.master_ordinal == Some(1),
        etcd,
        csrs,
        now: ctx.now,
    };
    Ok(PlanOutcome::Ready(Box::new(plan_host(&input)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(ordinal: u32, ip: &str) -> MasterSeat {
        MasterSeat {
            ordinal,
            member: Member::new(format!("demo-m{ordinal}"), ip.parse().unwrap()),
        }
    }

    #[test]
    fn bootstrap_masters_wait_for_every_peer_then_start_new() {
        let two = [seat(1, "10.0.0.1"), seat(2, "10.0.0.2")];
        let err = placement(3, 1, &two).unwrap_err();
        assert!(err.contains("waiting for 1 more master"), "{err}");
        let three = [
            seat(1, "10.0.0.1"),
            seat(2, "10.0.0.2"),
            seat(3, "10.0.0.3"),
        ];
        let p = placement(3, 2, &three).unwrap();
        assert_eq!(p.state, ClusterState::New);
        assert!(!p.learner);
        assert_eq!(p.members.len(), 3);
    }

    #[test]
    fn a_later_master_joins_the_running_members_as_a_learner() {
        let seats = [
            seat(1, "10.0.0.1"),
            seat(2, "10.0.0.2"),
            seat(3, "10.0.0.3"),
            seat(4, "10.0.0.4"),
            seat(5, "10.0.0.5"),
        ];
        let p = placement(3, 4, &seats).unwrap();
        assert_eq!(p.state, ClusterState::Existing);
        assert!(p.learner);
        let names: Vec<&str> = p.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["demo-m1", "demo-m2", "demo-m3", "demo-m4"]);
    }
}
