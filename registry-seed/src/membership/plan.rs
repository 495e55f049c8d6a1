//! Pure membership decisions over the member list etcd reported: no I/O, unit-tested.

use super::MembershipError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// An etcd member id: a uint64, sent as a decimal string by the JSON gateway and shown in hex by
/// `etcdctl`, as here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl Serialize for MemberId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for MemberId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MemberId, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(MemberId(n)),
            Raw::Text(t) => t.parse().map(MemberId).map_err(serde::de::Error::custom),
        }
    }
}

/// One member as etcd reports it. A member added but not started yet has no name and no
/// client URLs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Member {
    #[serde(rename = "ID")]
    pub id: MemberId,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(default, rename = "clientURLs")]
    pub client_urls: Vec<String>,
    #[serde(default, rename = "isLearner")]
    pub is_learner: bool,
}

impl Member {
    /// Whether the member has started and published its name and client URLs.
    pub fn started(&self) -> bool {
        !self.name.is_empty()
    }
}

/// Which member an operation is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberRef {
    Id(MemberId),
    /// The member's name (the master's hostname).
    Name(String),
    /// One of its peer URLs (known before the member has started and named itself).
    PeerUrl(String),
}

impl fmt::Display for MemberRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberRef::Id(id) => write!(f, "{id}"),
            MemberRef::Name(name) => write!(f, "named {name}"),
            MemberRef::PeerUrl(url) => write!(f, "at {url}"),
        }
    }
}

/// Finds the member `target` names.
pub fn find<'a>(members: &'a [Member], target: &MemberRef) -> Result<&'a Member, MembershipError> {
    members
        .iter()
        .find(|m| match target {
            MemberRef::Id(id) => m.id == *id,
            MemberRef::Name(name) => m.name == *name,
            MemberRef::PeerUrl(url) => m.peer_urls.iter().any(|u| u == url),
        })
        .ok_or_else(|| MembershipError::NotFound(target.to_string()))
}

/// What adding a member at a peer URL comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddPlan {
    /// Ask etcd to add a learner.
    Add,
    /// That peer URL is already a learner (an earlier attempt, or the seed restarted): reuse it.
    Existing(Member),
}

/// Whether a learner may be added at `peer_url`: one joining member at a time, and never a
/// second member for the same peer URL.
pub fn plan_add(members: &[Member], peer_url: &str) -> Result<AddPlan, MembershipError> {
    if let Ok(same) = find(members, &MemberRef::PeerUrl(peer_url.to_owned())) {
        if same.is_learner {
            return Ok(AddPlan::Existing(same.clone()));
        }
        return Err(MembershipError::AlreadyVoter {
            id: same.id,
            peer_url: peer_url.to_owned(),
        });
    }
    if let Some(learner) = members.iter().find(|m| m.is_learner) {
        return Err(MembershipError::LearnerPending { id: learner.id });
    }
    Ok(AddPlan::Add)
}

/// A majority of `voters`.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Whether removing `target` keeps quorum, given which members answered their health check.
/// A learner can always go (it does not vote). A voter can go only when the cluster has a
/// quorum now (to commit the change) and the remaining voters still have a healthy majority.
pub fn plan_removal<'a>(
    members: &'a [Member],
    target: &MemberRef,
    healthy: &BTreeSet<MemberId>,
) -> Result<&'a Member, MembershipError> {
    let gone = find(members, target)?;
    if gone.is_learner {
        return Ok(gone);
    }
    let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
    let healthy_now = voters.iter().filter(|m| healthy.contains(&m.id)).count();
    if healthy_now < quorum(voters.len()) {
        return Err(MembershipError::NoQuorum {
            healthy: healthy_now,
            voters: voters.len(),
        });
    }
    let after: Vec<&&Member> = voters.iter().filter(|m| m.id != gone.id).collect();
    if after.is_empty() {
        return Err(MembershipError::LastMember(gone.id));
    }
    let healthy_after = after.iter().filter(|m| healthy.contains(&m.id)).count();
    if healthy_after < quorum(after.len()) {
        return Err(MembershipError::QuorumAtRisk {
            id: gone.id,
            healthy: healthy_after,
            voters: after.len(),
            needed: quorum(after.len()),
        });
    }
    Ok(gone)
}

/// The `initial-cluster` a joining member starts with: every member's `name=peer-url`, the new
/// one under `new_name` (it has no name in etcd until it starts), as `etcdctl member add` prints
/// it; sorted, so the same members always give the same string.
pub fn initial_cluster(members: &[Member], new_id: MemberId, new_name: &str) -> String {
    let mut entries: Vec<String> = members
        .iter()
        .flat_map(|m| {
            let name = if m.id == new_id { new_name } else { &m.name };
            m.peer_urls.iter().map(move |u| format!("{name}={u}"))
        })
        .collect();
    entries.sort();
    entries.join(",")
}

/// The wait before the next promotion attempt: doubling from `min`, capped at `max`.
pub fn next_backoff(previous: Duration, min: Duration, max: Duration) -> Duration {
    (previous * 2).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, learner: bool) -> Member {
        Member {
            id: MemberId(id),
            name: name.into(),
            peer_urls: vec![format!("https://127.0.0.{id}:2380")],
            client_urls: if name.is_empty() {
                vec![]
            } else {
                vec![format!("https://127.0.0.{id}:2379")]
            },
            is_learner: learner,
        }
    }

    fn three() -> Vec<Member> {
        vec![
            member(11, "m1", false),
            member(12, "m2", false),
            member(13, "m3", false),
        ]
    }

    fn healthy(ids: &[u64]) -> BTreeSet<MemberId> {
        ids.iter().copied().map(MemberId).collect()
    }

    #[test]
    fn reads_the_gateway_member_list() {
        let json = r#"{"members":[{"ID":"5411188850637535873","name":"p1",
            "peerURLs":["http://127.0.0.21:2380"],"clientURLs":["http://127.0.0.21:2379"]},
            {"ID":"16693704297623622937","peerURLs":["http://127.0.0.22:2380"],"isLearner":true}]}"#;
        #[derive(Deserialize)]
        struct List {
            members: Vec<Member>,
        }
        let list: List = serde_json::from_str(json).unwrap();
        assert_eq!(list.members[0].id, MemberId(5411188850637535873));
        assert!(list.members[0].started() && !list.members[0].is_learner);
        assert_eq!(list.members[1].id.to_string(), "e7abf39c95449519");
        assert!(!list.members[1].started() && list.members[1].is_learner);
        assert_eq!(serde_json::to_string(&MemberId(7)).unwrap(), "\"7\"");
    }

    #[test]
    fn adds_one_learner_at_a_time() {
        let mut members = three();
        assert_eq!(
            plan_add(&members, "https://127.0.0.14:2380").unwrap(),
            AddPlan::Add
        );
        members.push(member(14, "", true));
        assert_eq!(
            plan_add(&members, "https://127.0.0.14:2380").unwrap(),
            AddPlan::Existing(member(14, "", true))
        );
        assert!(matches!(
            plan_add(&members, "https://127.0.0.15:2380"),
            Err(MembershipError::LearnerPending { id: MemberId(14) })
        ));
        assert!(matches!(
            plan_add(&three(), "https://127.0.0.12:2380"),
            Err(MembershipError::AlreadyVoter {
                id: MemberId(12),
                ..
            })
        ));
    }

    #[test]
    fn initial_cluster_names_the_new_member() {
        let mut members = three();
        members.push(member(14, "", true));
        assert_eq!(
            initial_cluster(&members, MemberId(14), "m4"),
            "m1=https://127.0.0.11:2380,m2=https://127.0.0.12:2380,\
             m3=https://127.0.0.13:2380,m4=https://127.0.0.14:2380"
        );
    }

    /// Name, members, target, healthy ids, expected error.
    type RemovalCase = (&'static str, Vec<Member>, MemberRef, Vec<u64>, String);

    #[test]
    fn removals_keep_quorum() {
        let mut four = three();
        four.push(member(14, "m4", false));
        let by_name = |n: &str| MemberRef::Name(n.into());
        // Allowed: every member healthy; a dead member among 4; a learner always.
        assert_eq!(
            plan_removal(&four, &by_name("m4"), &healthy(&[11, 12, 13, 14]))
                .unwrap()
                .id,
            MemberId(14)
        );
        assert_eq!(
            plan_removal(&four, &by_name("m4"), &healthy(&[11, 12, 13]))
                .unwrap()
                .id,
            MemberId(14)
        );
        // 3 voters left, 2 of them healthy: a quorum of 2 holds.
        assert_eq!(
            plan_removal(&four, &by_name("m1"), &healthy(&[11, 12, 13]))
                .unwrap()
                .id,
            MemberId(11)
        );
        let mut with_learner = three();
        with_learner.push(member(14, "", true));
        assert!(plan_removal(&with_learner, &MemberRef::Id(MemberId(14)), &healthy(&[11])).is_ok());
        // Refused, each with its reason.
        let cases: Vec<RemovalCase> = vec![
            ("healthy member of 3 with one down", three(), by_name("m1"), vec![11, 12],
             "removing member b would leave 1 healthy of 2 voting members, fewer than the 2 a quorum needs".into()),
            ("4 with two down", four.clone(), by_name("m1"), vec![11, 12],
             "only 2 of 4 voting members are healthy: no quorum to change membership".into()),
            ("no quorum now", three(), by_name("m3"), vec![11], "only 1 of 3 voting members are healthy: no quorum to change membership".into()),
            ("last member", vec![member(11, "m1", false)], by_name("m1"), vec![11], "member b is the last voting member".into()),
            ("unknown", three(), by_name("m9"), vec![11, 12, 13], "no etcd member named m9".into()),
        ];
        for (name, members, target, up, message) in cases {
            match plan_removal(&members, &target, &healthy(&up)) {
                Ok(m) => panic!("{name}: removal of {} allowed", m.id),
                Err(e) => assert_eq!(e.to_string(), message, "{name}"),
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(2));
        let mut d = Duration::ZERO;
        let seq: Vec<u128> = (0..6)
            .map(|_| {
                d = next_backoff(d, min, max);
                d.as_millis()
            })
            .collect();
        assert_eq!(seq, [200, 400, 800, 1600, 2000, 2000]);
    }
}
