//! SIGKILL the seed in the middle of a burst of enrollments, restart it on the same state
//! directory, let the clients retry: every host ends enrolled exactly once.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_seed::seed::Seed;
use support::seed::*;

const HOSTS: usize = 240;
const CLIENTS: usize = 12;
/// Every simulated host enrolls from 127.0.0.1.
const UNLIMITED: &[&str] = &["--enroll-rate", "0"];

/// Prepares a state directory with one join token per host.
fn prepare(state: &std::path::Path, cluster_text: &str) {
    let seed = Seed::open(spec(cluster_text), state).unwrap();
    put_tokens(
        &seed,
        &(0..HOSTS).map(numbered_token).collect::<Vec<_>>(),
        None,
    );
}

/// Enrolls host `i` until the seed answers with a plan; every answer seen is recorded.
fn enroll_until_done(
    state_dir: &std::path::Path,
    url: &str,
    i: usize,
    seen: &Mutex<BTreeMap<usize, Vec<String>>>,
) -> serde_json::Value {
    let client = host_client(state_dir, &numbered_mac(i));
    let body = enroll_body(&numbered_mac(i), Some(&numbered_token(i)));
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        let answer = client.post(format!("{url}/v1/enroll")).json(&body).send();
        let Ok(answer) = answer else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let status = answer.status().as_u16();
        let Ok(json) = answer.json::<serde_json::Value>() else {
            continue;
        };
        if let Some(id) = json["host_id"].as_str() {
            seen.lock()
                .unwrap()
                .entry(i)
                .or_default()
                .push(id.to_string());
        }
        match status {
            200 => return json,
            202 => std::thread::sleep(Duration::from_millis(50)),
            _ => panic!("host {i}: {status} {json}"),
        }
    }
    panic!("host {i} did not enroll in time");
}

#[test]
fn a_seed_killed_mid_burst_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let text = auto_cluster(3);
    let cluster = cluster_file(dir.path(), &text);
    let state = dir.path().join("state");
    prepare(&state, &text);
    let listen = format!("127.0.0.1:{}", testkit::free_tcp_port());
    let mut server = Server::start_with(&cluster, &state, &listen, UNLIMITED);
    let url = server.url();

    let enrolled = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let results = Arc::new(Mutex::new(BTreeMap::new()));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (state, url) = (state.clone(), url.clone());
            let (enrolled, seen, results) = (enrolled.clone(), seen.clone(), results.clone());
            std::thread::spawn(move || {
                for i in (c..HOSTS).step_by(CLIENTS) {
                    let plan = enroll_until_done(&state, &url, i, &seen);
                    results.lock().unwrap().insert(i, plan);
                    enrolled.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    testkit::wait_for(
        "a third of the hosts to enroll",
        Duration::from_secs(120),
        || (enrolled.load(Ordering::SeqCst) >= HOSTS / 3).then_some(()),
    );
    server.guard.kill();
    let at_kill = enrolled.load(Ordering::SeqCst);
    assert!(at_kill < HOSTS, "the burst ended before the kill");
    std::thread::sleep(Duration::from_millis(300));
    let server = Server::start_with(&cluster, &state, &listen, UNLIMITED);
    for worker in workers {
        worker.join().unwrap();
    }

    let results = results.lock().unwrap();
    assert_eq!(results.len(), HOSTS);
    // Every answer a host ever got named the same host id.
    for (i, ids) in seen.lock().unwrap().iter() {
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "host {i} was answered with several ids: {ids:?}"
        );
    }
    let hostnames: BTreeSet<&str> = results
        .values()
        .map(|p| p["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hostnames.len(), HOSTS, "duplicate hostnames");
    let masters = results.values().filter(|p| p["role"] == "master").count();
    assert_eq!(masters, 3);

    // The restarted seed knows each host once, under the id the host was given.
    let admin = std::fs::read_to_string(state.join("admin.token")).unwrap();
    let status: serde_json::Value = server
        .client()
        .get(format!("{url}/v1/admin/hosts"))
        .bearer_auth(admin.trim())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let hosts = status["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), HOSTS, "lost or duplicated hosts");
    let by_mac: BTreeMap<&str, &str> = hosts
        .iter()
        .map(|h| (h["mac"].as_str().unwrap(), h["id"].as_str().unwrap()))
        .collect();
    for (i, plan) in results.iter() {
        assert_eq!(
            by_mac.get(numbered_mac(*i).as_str()).copied(),
            plan["host_id"].as_str(),
            "host {i}"
        );
    }
}
