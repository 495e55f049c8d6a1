//! Jobs step by step: each step recorded as it starts and ends; cancel stops a job after its
//! current step and resume goes on from the step that did not end; a removal that would
//! collide with another or leave too few masters is refused with nothing written; and a seed
//! that dies in any step of a removal goes on after its restart and ends as if it had not.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use cluster::etcd::Member;
use registry_seed::membership::{BoxFuture, MemberId, Membership, MembershipError};
use registry_seed::seed::Seed;
use registry_seed::store::records::{JobRecord, JobState, StepState};
use registry_seed::store::{Table, get_json, put_json, read_with, write_with};
use serde_json::{Value, json};
use support::seed::*;

/// etcd as the membership client sees it: each removal waits for a pass through `gate`.
struct FakeEtcd {
    gate: tokio::sync::Semaphore,
    /// Names of the members whose removal was asked for, in order.
    asked: Mutex<Vec<String>>,
    /// Names of the members removed.
    removed: Mutex<Vec<String>>,
}

impl FakeEtcd {
    fn new(passes: usize) -> Arc<FakeEtcd> {
        Arc::new(FakeEtcd {
            gate: tokio::sync::Semaphore::new(passes),
            asked: Mutex::default(),
            removed: Mutex::default(),
        })
    }

    fn removed(&self) -> Vec<String> {
        self.removed.lock().unwrap().clone()
    }
}

impl Membership for FakeEtcd {
    fn add_learner<'a>(
        &'a self,
        _: &'a Member,
    ) -> BoxFuture<'a, Result<MemberId, MembershipError>> {
        Box::pin(async { Ok(MemberId(9)) })
    }

    fn promote(&self, _: MemberId) -> BoxFuture<'_, Result<(), MembershipError>> {
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(&'a self, member: &'a Member) -> BoxFuture<'a, Result<(), MembershipError>> {
        Box::pin(async move {
            self.asked.lock().unwrap().push(member.name.clone());
            self.gate.acquire().await.unwrap().forget();
            self.removed.lock().unwrap().push(member.name.clone());
            Ok(())
        })
    }
}

fn open_at(dir: &std::path::Path, text: &str, etcd: Arc<FakeEtcd>) -> (Arc<Seed>, Router) {
    let seed = Arc::new(Seed::open(spec(text), dir).unwrap().with_membership(etcd));
    (seed.clone(), registry_seed::http::app(seed))
}

/// Enrolls `masters` masters (the etcd cohort, each given its plan) and one worker; returns
/// their host ids, the worker's last.
async fn masters_and_a_worker(seed: &Seed, app: &Router, masters: usize) -> Vec<String> {
    let tokens: Vec<String> = (0..=masters).map(numbered_token).collect();
    put_tokens(seed, &tokens, None);
    let mut ids = vec![String::new(); masters + 1];
    for _round in 0..20 {
        for (i, id) in ids.iter_mut().enumerate() {
            if !id.is_empty() {
                continue;
            }
            let answer = enroll(app, &numbered_mac(i), Some(&numbered_token(i))).await;
            match answer.status {
                StatusCode::OK => *id = answer.json["host_id"].as_str().unwrap().to_string(),
                StatusCode::ACCEPTED => {}
                other => panic!("host {i}: {other} {}", answer.text),
            }
        }
        if ids.iter().all(|id| !id.is_empty()) {
            return ids;
        }
    }
    panic!("the hosts did not all enroll: {ids:?}");
}

fn host_ids(seed: &Seed) -> Vec<String> {
    dump(seed)
        .into_iter()
        .filter(|(table, _, _)| table == "hosts")
        .map(|(_, key, _)| key)
        .collect()
}

fn job(seed: &Seed, id: &str) -> JobRecord {
    read_with(&*seed.store, |tx| {
        get_json::<JobRecord>(tx, Table::Jobs, id)
    })
    .unwrap()
    .expect("the job is recorded")
}

async fn until_job(
    seed: &Seed,
    id: &str,
    what: &str,
    done: impl Fn(&JobRecord) -> bool,
) -> JobRecord {
    for _ in 0..400 {
        let job = job(seed, id);
        if done(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id}: {what} never came: {:?}", job(seed, id));
}

fn step_states(job: &JobRecord) -> Vec<(&str, StepState)> {
    job.steps
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect()
}

async fn admin(app: &Router, seed: &Seed, method: &str, path: &str) -> Answer {
    send(app, request(method, path, None, Some(&seed.admin_token))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_is_cancelled_between_its_steps_and_resumed_from_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = FakeEtcd::new(0);
    let (seed, app) = open_at(dir.path(), &auto_cluster(3), etcd.clone());
    let hosts = masters_and_a_worker(&seed, &app, 3).await;
    let third = hosts[2].clone();

    // The cluster file asks for 3 masters: taking one of 3 away needs force.
    let accepted = admin(
        &app,
        &seed,
        "DELETE",
        &format!("/v1/admin/hosts/{third}?force=true"),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let id = accepted.json["job"].as_str().unwrap().to_string();
    let running = until_job(&seed, &id, "the etcd step", |j| {
        j.steps[0].state == StepState::Running && !etcd.asked.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(running.state, JobState::Running);
    assert_eq!(
        step_states(&running),
        [
            ("leave_etcd", StepState::Running),
            ("forget", StepState::Pending)
        ]
    );
    assert!(running.steps[0].started_ms.is_some());

    // Cancel: answered at once; the step in flight is not cut.
    let cancel = admin(&app, &seed, "POST", &format!("/v1/admin/jobs/{id}/cancel")).await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.text);
    assert_eq!(cancel.json["state"], "running");
    assert_eq!(cancel.json["cancel_requested"], true);
    etcd.gate.add_permits(1);
    let cancelled = until_job(&seed, &id, "the cancel", |j| j.state.ended()).await;
    assert_eq!(cancelled.state, JobState::Cancelled, "{cancelled:?}");
    assert_eq!(
        cancelled.message,
        format!(
            "cancelled after 1 of 2 steps; `launcher-seed jobs resume {id}` goes on from step forget"
        )
    );
    assert_eq!(
        step_states(&cancelled),
        [
            ("leave_etcd", StepState::Done),
            ("forget", StepState::Pending)
        ]
    );
    let first = &cancelled.steps[0];
    assert!(first.started_ms <= first.ended_ms, "{first:?}");
    assert!(
        host_ids(&seed).contains(&third),
        "a cancelled removal keeps the record"
    );

    // Resume: from `forget`; etcd is not asked again.
    let resumed = admin(&app, &seed, "POST", &format!("/v1/admin/jobs/{id}/resume")).await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{}", resumed.text);
    let ended = until_job(&seed, &id, "the end", |j| j.state.ended()).await;
    assert_eq!(ended.state, JobState::Succeeded, "{ended:?}");
    assert_eq!(ended.message, format!("host {third} removed"));
    assert_eq!(
        step_states(&ended),
        [("leave_etcd", StepState::Done), ("forget", StepState::Done)]
    );
    assert_eq!(ended.run, 1);
    assert_eq!(
        etcd.asked.lock().unwrap().len(),
        1,
        "one removal asked of etcd"
    );
    assert!(!host_ids(&seed).contains(&third));
    // Its key is retired with it: the machine is refused by it, token or not.
    let back = enroll(&app, &numbered_mac(2), Some(&numbered_token(2))).await;
    assert_eq!(
        (back.status, back.code()),
        (StatusCode::FORBIDDEN, "host_removed"),
        "{}",
        back.text
    );

    // A worker holds no etcd member: its removal skips that step.
    let worker = hosts[3].clone();
    let accepted = admin(&app, &seed, "DELETE", &format!("/v1/admin/hosts/{worker}")).await;
    let done = wait_job(&app, &seed.admin_token, &accepted).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["steps"][0]["state"], "skipped");
    assert_eq!(
        done["steps"][0]["message"],
        format!("host {worker} holds no etcd member")
    );
    assert_eq!(etcd.asked.lock().unwrap().len(), 1);
}

/// Every refusal, with its status, code and message; after each the store is as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_requests_that_cannot_be_done_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = FakeEtcd::new(0);
    let (seed, app) = open_at(dir.path(), &auto_cluster(3), etcd.clone());
    let hosts = masters_and_a_worker(&seed, &app, 3).await;
    let (m1, m2, m3) = (&hosts[0], &hosts[1], &hosts[2]);

    // A removal that waits in its etcd step, for the cases that collide with it.
    let accepted = admin(
        &app,
        &seed,
        "DELETE",
        &format!("/v1/admin/hosts/{m3}?force=true"),
    )
    .await;
    let running = accepted.json["job"].as_str().unwrap().to_string();
    until_job(&seed, &running, "the etcd step", |j| {
        !etcd.asked.lock().unwrap().is_empty() && j.state == JobState::Running
    })
    .await;

    let cases: Vec<(&str, String, StatusCode, &str, String)> = vec![
        (
            "DELETE",
            "/v1/admin/hosts/h-9999".into(),
            StatusCode::NOT_FOUND,
            "not_found",
            "no host h-9999".into(),
        ),
        (
            "DELETE",
            format!("/v1/admin/hosts/{m2}"),
            StatusCode::CONFLICT,
            "change_in_progress",
            format!(
                "job {running} (remove_host {m3}) has not ended: etcd membership changes one job at a time; wait for it, or cancel it with `launcher-seed jobs cancel {running}`"
            ),
        ),
        (
            "DELETE",
            format!("/v1/admin/hosts/{m3}?force=true"),
            StatusCode::CONFLICT,
            "change_in_progress",
            format!("job {running} already removes host {m3}"),
        ),
        (
            "DELETE",
            format!("/v1/admin/hosts/{m2}?force=yes"),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unknown query \"force=yes\": a host is removed as it is or with force=true".into(),
        ),
        (
            "POST",
            format!("/v1/admin/jobs/{running}/resume"),
            StatusCode::CONFLICT,
            "job_state",
            format!("job {running} is running: only a failed or cancelled job resumes"),
        ),
        (
            "POST",
            "/v1/admin/jobs/j-9999/cancel".into(),
            StatusCode::NOT_FOUND,
            "not_found",
            "no job j-9999".into(),
        ),
        (
            "POST",
            "/v1/admin/jobs/j-9999/resume".into(),
            StatusCode::NOT_FOUND,
            "not_found",
            "no job j-9999".into(),
        ),
        (
            "POST",
            "/v1/admin/hosts/h-9999/approve".into(),
            StatusCode::NOT_FOUND,
            "not_found",
            "no host h-9999".into(),
        ),
    ];
    for (method, path, status, code, message) in &cases {
        let before = dump(&seed);
        let answer = admin(&app, &seed, method, path).await;
        assert_eq!(
            (
                answer.status,
                answer.json["code"].as_str(),
                answer.json["message"].as_str()
            ),
            (*status, Some(*code), Some(message.as_str())),
            "{method} {path}"
        );
        assert_eq!(dump(&seed), before, "{method} {path} changed the store");
    }
    assert_eq!(etcd.asked.lock().unwrap().len(), 1);

    etcd.gate.add_permits(1);
    let ended = until_job(&seed, &running, "the end", |j| j.state.ended()).await;
    assert_eq!(ended.state, JobState::Succeeded, "{ended:?}");

    // Two masters left of the 3 the cluster file asks for; then one.
    let after: Vec<(String, StatusCode, &str, String)> = vec![
        (
            format!("/v1/admin/jobs/{running}/cancel"),
            StatusCode::CONFLICT,
            "job_state",
            format!("job {running} already succeeded: there is nothing to cancel"),
        ),
        (
            format!("/v1/admin/jobs/{running}/resume"),
            StatusCode::CONFLICT,
            "job_state",
            format!("job {running} already succeeded: only a failed or cancelled job resumes"),
        ),
    ];
    for (path, status, code, message) in &after {
        let before = dump(&seed);
        let answer = admin(&app, &seed, "POST", path).await;
        assert_eq!(
            (
                answer.status,
                answer.json["code"].as_str(),
                answer.json["message"].as_str()
            ),
            (*status, Some(*code), Some(message.as_str())),
            "{path}"
        );
        assert_eq!(dump(&seed), before, "{path} changed the store");
    }
    let before = dump(&seed);
    let unforced = admin(&app, &seed, "DELETE", &format!("/v1/admin/hosts/{m2}")).await;
    assert_eq!(
        (unforced.status, unforced.json["message"].as_str()),
        (
            StatusCode::CONFLICT,
            Some(
                format!(
                    "removing master {m2} would leave 1 of the cluster file's 3 masters; lower masters in the cluster file, or force the removal"
                )
                .as_str()
            )
        )
    );
    assert_eq!(dump(&seed), before);

    etcd.gate.add_permits(1);
    let forced = admin(
        &app,
        &seed,
        "DELETE",
        &format!("/v1/admin/hosts/{m2}?force=true"),
    )
    .await;
    assert_eq!(
        wait_job(&app, &seed.admin_token, &forced).await["state"],
        "succeeded"
    );
    let before = dump(&seed);
    let last = admin(
        &app,
        &seed,
        "DELETE",
        &format!("/v1/admin/hosts/{m1}?force=true"),
    )
    .await;
    assert_eq!(
        (last.status, last.json["code"].as_str(), last.json["message"].as_str()),
        (
            StatusCode::CONFLICT,
            Some("too_few_masters"),
            Some(
                format!(
                    "host {m1} is the cluster's only master: removing it would leave no control plane"
                )
                .as_str()
            )
        )
    );
    assert_eq!(dump(&seed), before);
    assert_eq!(etcd.removed().len(), 2);
}

/// Where a seed can die in a removal, as the store then holds it.
#[derive(Debug, Clone, Copy)]
enum KilledIn {
    /// Recorded, not started.
    Queued,
    /// While etcd was asked to remove the member (the seed's tasks dropped in the middle).
    LeaveEtcd,
    /// After the member was removed, with `forget` recorded as started.
    Forget,
}

#[test]
fn a_removal_killed_in_any_step_goes_on_after_a_restart_and_ends_the_same() {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let mut ends = Vec::new();
    for killed in [KilledIn::Queued, KilledIn::LeaveEtcd, KilledIn::Forget] {
        let dir = tempfile::tempdir().unwrap();
        let text = auto_cluster(3);

        // The first seed: its removal hangs in the etcd step, and the seed dies with it.
        let first = rt();
        let (id, third, others) = first.block_on(async {
            let etcd = FakeEtcd::new(0);
            let (seed, app) = open_at(dir.path(), &text, etcd.clone());
            let hosts = masters_and_a_worker(&seed, &app, 3).await;
            let third = hosts[2].clone();
            let accepted = admin(
                &app,
                &seed,
                "DELETE",
                &format!("/v1/admin/hosts/{third}?force=true"),
            )
            .await;
            let id = accepted.json["job"].as_str().unwrap().to_string();
            until_job(&seed, &id, "the etcd step", |_| {
                !etcd.asked.lock().unwrap().is_empty()
            })
            .await;
            let others: Vec<String> = hosts.into_iter().filter(|h| *h != third).collect();
            (id, third, others)
        });
        drop(first);

        // The state the kill left, moved to the step this case dies in.
        {
            let seed = Seed::open(spec(&text), dir.path()).unwrap();
            let mut job = job(&seed, &id);
            assert_eq!(job.state, JobState::Running);
            match killed {
                KilledIn::Queued => {
                    job.state = JobState::Queued;
                    job.steps[0].state = StepState::Pending;
                    job.steps[0].started_ms = None;
                }
                KilledIn::LeaveEtcd => {}
                KilledIn::Forget => {
                    job.steps[0].state = StepState::Done;
                    job.steps[0].ended_ms = job.steps[0].started_ms;
                    job.steps[1].state = StepState::Running;
                    job.steps[1].started_ms = job.steps[0].started_ms;
                }
            }
            write_with(&*seed.store, |tx| put_json(tx, Table::Jobs, &id, &job)).unwrap();
        }

        // The restarted seed goes on.
        let etcd = FakeEtcd::new(10);
        let end = rt().block_on(async {
            let (seed, _app) = open_at(dir.path(), &text, etcd.clone());
            registry_seed::jobs::recover(&seed).unwrap();
            let end = until_job(&seed, &id, "the end", |j| j.state.ended()).await;
            let hosts = host_ids(&seed);
            assert!(!hosts.contains(&third), "{killed:?}: {hosts:?}");
            assert_eq!(hosts, others, "{killed:?}: the other hosts are kept");
            end
        });
        let asked_again = match killed {
            KilledIn::Queued | KilledIn::LeaveEtcd => 1,
            KilledIn::Forget => 0,
        };
        assert_eq!(etcd.removed().len(), asked_again, "{killed:?}");
        let summary: Value = json!({
            "state": end.state.as_str(),
            "message": end.message,
            "steps": step_states(&end)
                .iter()
                .map(|(name, state)| format!("{name}:{}", state.as_str()))
                .collect::<Vec<_>>(),
        });
        ends.push((killed, summary));
    }
    for (killed, summary) in &ends {
        assert_eq!(
            *summary,
            json!({
                "state": "succeeded",
                "message": format!("host h-0003 removed"),
                "steps": ["leave_etcd:done", "forget:done"],
            }),
            "{killed:?}"
        );
    }
}
