//! Leader election as client-go's `leaderelection` with a `leases` lock does it: a
//! `coordination.k8s.io/v1` Lease whose holder renews it every retry period; a candidate takes
//! it over only once the holder's `renewTime` + `leaseDurationSeconds` has passed; every write
//! is a compare-and-swap on the `resourceVersion` read.

use std::time::Instant;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::flags::Election;
use crate::kubeclient::KubeClient;
use crate::kubeclient::{micro_time, parse_time};

/// What a candidate does with the Lease it read.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// No Lease yet: create it, held by us.
    Create(Value),
    /// Ours, or expired: write it held by us, at the revision read.
    Update(Value),
    /// Someone else holds it and it has not expired.
    Wait { holder: String },
}

fn lease(election: &Election, spec: Value) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": election.name, "namespace": election.namespace},
        "spec": spec,
    })
}

/// Decides from the Lease read (`None`: there is none) whether `me` may hold it at `now`.
pub fn decide(current: Option<&Value>, me: &str, election: &Election, now: OffsetDateTime) -> Step {
    let seconds = election.lease_duration.as_secs().max(1);
    let stamp = micro_time(now);
    let Some(current) = current else {
        return Step::Create(lease(
            election,
            json!({"holderIdentity": me, "leaseDurationSeconds": seconds,
                   "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}),
        ));
    };
    let spec = &current["spec"];
    let holder = spec["holderIdentity"].as_str().unwrap_or("");
    let transitions = spec["leaseTransitions"].as_u64().unwrap_or(0);
    let mut next = current.clone();
    if holder == me {
        next["spec"]["renewTime"] = json!(stamp);
        next["spec"]["leaseDurationSeconds"] = json!(seconds);
        return Step::Update(next);
    }
    let held_for = spec["leaseDurationSeconds"].as_i64().unwrap_or(0);
    let expires = parse_time(&spec["renewTime"]).map(|t| t + time::Duration::seconds(held_for));
    if !holder.is_empty() && expires.is_some_and(|end| end > now) {
        return Step::Wait {
            holder: holder.to_owned(),
        };
    }
    next["spec"] = json!({"holderIdentity": me, "leaseDurationSeconds": seconds,
        "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": transitions + 1});
    Step::Update(next)
}

/// The identity a candidate holds the Lease as: `<hostname>_<random UUID>`, as the real
/// components name themselves.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{host}_{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// One candidate for one Lease.
#[derive(Debug)]
pub struct Elector {
    pub client: KubeClient,
    pub election: Election,
    pub me: String,
}

impl Elector {
    fn path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.election.namespace
        )
    }

    /// One attempt: `Ok(true)` when we hold the Lease after it.
    pub fn try_acquire_or_renew(&self) -> Result<bool, String> {
        let path = self.path();
        let name = &self.election.name;
        let read = self.client.get(&format!("{path}/{name}"))?;
        let current = match read.status {
            200 => Some(read.body),
            404 => None,
            _ => return Err(format!("reading the Lease {name}: {}", read.reason())),
        };
        let now = OffsetDateTime::now_utc();
        let answer = match decide(current.as_ref(), &self.me, &self.election, now) {
            Step::Wait { holder } => {
                tracing::debug!(%holder, "the Lease is held");
                return Ok(false);
            }
            Step::Create(lease) => self.client.post(&path, &lease)?,
            Step::Update(lease) => self.client.put(&format!("{path}/{name}"), &lease)?,
        };
        match answer.status {
            200 | 201 => Ok(true),
            // Another candidate wrote first.
            409 => Ok(false),
            _ => Err(format!("writing the Lease {name}: {}", answer.reason())),
        }
    }

    /// Tries every retry period until the Lease is ours.
    pub fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew() {
                Ok(true) => return,
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "acquiring the Lease"),
            }
            std::thread::sleep(self.election.retry_period);
        }
    }

    /// Renews every retry period; returns once a renewal has not succeeded for the renew
    /// deadline (the Lease is lost, and the caller stops leading as client-go's does).
    pub fn hold(&self) -> String {
        let mut renewed = Instant::now();
        loop {
            std::thread::sleep(self.election.retry_period);
            match self.try_acquire_or_renew() {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return format!("the Lease {} was taken", self.election.name),
                Err(err) => tracing::warn!(error = %err, "renewing the Lease"),
            }
            if renewed.elapsed() > self.election.renew_deadline {
                return format!(
                    "the Lease {} was not renewed for {:?}",
                    self.election.name, self.election.renew_deadline
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn election() -> Election {
        Election {
            enabled: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            namespace: "kube-system".into(),
            name: "kube-controller-manager".into(),
        }
    }

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).unwrap()
    }

    fn held(by: &str, renewed: i64) -> Value {
        json!({"metadata": {"name": "kube-controller-manager", "namespace": "kube-system",
                            "resourceVersion": "42"},
               "spec": {"holderIdentity": by, "leaseDurationSeconds": 15,
                        "acquireTime": micro_time(at(0)), "renewTime": micro_time(at(renewed)),
                        "leaseTransitions": 3}})
    }

    #[test]
    fn a_lease_is_taken_only_when_free_ours_or_expired() {
        let e = election();
        let Step::Create(new) = decide(None, "a_1", &e, at(0)) else {
            panic!("no create");
        };
        assert_eq!(new["spec"]["holderIdentity"], "a_1");
        assert_eq!(new["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(new["spec"]["renewTime"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(new["metadata"]["namespace"], "kube-system");
        // Someone else's, renewed 14 s ago: wait.
        assert_eq!(
            decide(Some(&held("b_2", 0)), "a_1", &e, at(14)),
            Step::Wait {
                holder: "b_2".into()
            }
        );
        // Ours: renewed, same acquireTime and transitions, at the revision read.
        let Step::Update(renewed) = decide(Some(&held("a_1", 0)), "a_1", &e, at(4)) else {
            panic!("no renewal");
        };
        assert_eq!(renewed["spec"]["renewTime"], micro_time(at(4)));
        assert_eq!(renewed["spec"]["acquireTime"], micro_time(at(0)));
        assert_eq!(renewed["spec"]["leaseTransitions"], 3);
        assert_eq!(renewed["metadata"]["resourceVersion"], "42");
        // Someone else's, expired: taken over, one more transition, at the revision read.
        let Step::Update(taken) = decide(Some(&held("b_2", 0)), "a_1", &e, at(16)) else {
            panic!("no takeover");
        };
        assert_eq!(taken["spec"]["holderIdentity"], "a_1");
        assert_eq!(taken["spec"]["acquireTime"], micro_time(at(16)));
        assert_eq!(taken["spec"]["leaseTransitions"], 4);
        assert_eq!(taken["metadata"]["resourceVersion"], "42");
        // Released (no holder): taken at once.
        assert!(matches!(
            decide(Some(&held("", 0)), "a_1", &e, at(1)),
            Step::Update(_)
        ));
    }

    #[test]
    fn the_identity_is_host_underscore_uuid() {
        let id = identity();
        let (host, uuid) = id.rsplit_once('_').unwrap();
        assert!(!host.is_empty());
        assert_eq!(uuid.len(), 36, "{id}");
        assert_ne!(identity(), id);
    }
}
