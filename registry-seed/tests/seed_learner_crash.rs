//! The seed dies between committing a joining master's enrollment and adding its etcd learner:
//! the host's retry against the restarted seed adds the learner once, records it, gets its
//! learner plan, and the learner is promoted.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use cluster::api::EnrollResponse;
use cluster::etcd::Member;
use registry_seed::membership::{BoxFuture, MemberId, Membership, MembershipError};
use registry_seed::seed::Seed;
use registry_seed::store::records::HostRecord;
use registry_seed::store::{Table, list_json, read_with};
use serde_json::json;
use support::seed::*;

const JOINING: &str = "52:54:00:00:00:71";

/// etcd as the seed's membership client sees it. With `hang`, an add never returns: the seed
/// is killed in the middle of it.
#[derive(Default)]
struct FakeEtcd {
    hang: bool,
    /// Peer URLs of the learners added, in order; a member's id is its place here, from 1.
    added: Mutex<Vec<String>>,
    promoted: Mutex<Vec<MemberId>>,
}

impl Membership for FakeEtcd {
    fn add_learner<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<MemberId, MembershipError>> {
        Box::pin(async move {
            if self.hang {
                std::future::pending::<()>().await;
            }
            let mut added = self.added.lock().unwrap();
            let url = member.peer_url();
            let place = match added.iter().position(|u| *u == url) {
                Some(place) => place,
                None => {
                    added.push(url);
                    added.len() - 1
                }
            };
            Ok(MemberId(place as u64 + 1))
        })
    }

    fn promote(&self, id: MemberId) -> BoxFuture<'_, Result<(), MembershipError>> {
        self.promoted.lock().unwrap().push(id);
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(&'a self, _: &'a Member) -> BoxFuture<'a, Result<(), MembershipError>> {
        Box::pin(async { Ok(()) })
    }
}

fn masters(seed: &Seed) -> Vec<HostRecord> {
    read_with(&*seed.store, |tx| list_json::<HostRecord>(tx, Table::Hosts))
        .unwrap()
        .into_iter()
        .filter(HostRecord::is_master)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_killed_before_the_learner_step_adds_the_learner_on_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let open = |etcd: Arc<FakeEtcd>| {
        let seed = Seed::open(spec(&one_master()), dir.path()).unwrap();
        let seed = Arc::new(seed.with_membership(etcd));
        (seed.clone(), registry_seed::http::app(seed))
    };

    let (seed, app) = open(Arc::new(FakeEtcd {
        hang: true,
        ..FakeEtcd::default()
    }));
    let first = enroll(&app, "52:54:00:00:00:01", None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let admin = seed.admin_token.clone();
    let token = make_token(&app, &admin, json!({"ttl_secs": 600, "role": "master"})).await;
    let killed = tokio::time::timeout(
        Duration::from_millis(500),
        enroll(&app, JOINING, Some(&token)),
    )
    .await;
    assert!(killed.is_err(), "the learner step should hang: {killed:?}");
    let joining = masters(&seed)
        .into_iter()
        .find(|h| h.master_ordinal() == Some(2));
    let joining = joining.expect("the enrollment was committed before the learner step");
    assert!(joining.etcd.is_none(), "{joining:?}");
    drop((seed, app));

    let etcd = Arc::new(FakeEtcd::default());
    let (seed, app) = open(etcd.clone());
    for _ in 0..2 {
        let again = enroll(&app, JOINING, Some(&token)).await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.text);
        assert_eq!(again.json["host_id"], joining.id.as_str());
        let EnrollResponse::Enrolled(plan) = serde_json::from_value(again.json).unwrap() else {
            panic!("not enrolled");
        };
        let plan_etcd = plan.etcd.expect("a master's plan starts etcd");
        assert_eq!(
            (plan_etcd.initial_cluster_state.as_str(), plan_etcd.learner),
            ("existing", true)
        );
    }
    assert_eq!(
        etcd.added.lock().unwrap().len(),
        1,
        "one learner, however often the host asks"
    );
    let promoted = testkit::wait_for("the learner's promotion", Duration::from_secs(10), || {
        let host = masters(&seed).into_iter().find(|h| h.id == joining.id)?;
        host.etcd.filter(|e| !e.learner)
    });
    assert_eq!(promoted.member_id.as_deref(), Some("1"));
    assert_eq!(*etcd.promoted.lock().unwrap(), [MemberId(1)]);
}
