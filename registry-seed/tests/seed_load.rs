//! A thousand hosts enrolling at once: distinct names, exactly `masters` masters, no identity
//! twice.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::http::StatusCode;
use registry_seed::store::records::HostRecord;
use registry_seed::store::{Table, list_json, read_with};
use support::seed::*;

const HOSTS: usize = 1000;
const MASTERS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_simultaneous_enrollments() {
    let (_dir, seed, app) = open(&auto_cluster(MASTERS));
    put_tokens(
        &seed,
        &(0..HOSTS).map(numbered_token).collect::<Vec<_>>(),
        None,
    );

    let mut tasks = Vec::new();
    for i in 0..HOSTS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let body = enroll_body(&numbered_mac(i), Some(&numbered_token(i)));
            let peer = format!("10.78.{}.{}:4000", i / 250, i % 250 + 1);
            // Bootstrap masters are told to come back until all of them are known.
            for _ in 0..400 {
                let mut req = request("POST", "/v1/enroll", Some(&body), None);
                req.extensions_mut()
                    .insert(registry_seed::http::PeerAddr(peer.parse().unwrap()));
                let answer = send(&app, req).await;
                match answer.status {
                    StatusCode::OK => return (i, answer.json),
                    StatusCode::ACCEPTED => tokio::time::sleep(Duration::from_millis(20)).await,
                    other => panic!("host {i}: {other} {}", answer.text),
                }
            }
            panic!("host {i} never enrolled");
        }));
    }
    let all = async {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    };
    let answers = tokio::time::timeout(Duration::from_secs(300), all)
        .await
        .expect("1000 enrollments finish within 5 minutes");

    let mut hostnames = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut roles: BTreeMap<String, usize> = BTreeMap::new();
    for (i, plan) in &answers {
        assert!(
            hostnames.insert(plan["hostname"].as_str().unwrap().to_string()),
            "host {i}: duplicate hostname"
        );
        assert!(
            ids.insert(plan["host_id"].as_str().unwrap().to_string()),
            "host {i}: duplicate id"
        );
        *roles
            .entry(plan["role"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(roles["master"], MASTERS as usize, "{roles:?}");
    assert_eq!(roles["worker"], HOSTS - MASTERS as usize);
    let masters: BTreeSet<&str> = answers
        .iter()
        .filter(|(_, p)| p["role"] == "master")
        .map(|(_, p)| p["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(masters, BTreeSet::from(["auto-m1", "auto-m2", "auto-m3"]));

    // The store agrees: one record per host, each MAC once.
    let records = read_with(&*seed.store, |tx| list_json::<HostRecord>(tx, Table::Hosts)).unwrap();
    assert_eq!(records.len(), HOSTS);
    let macs: BTreeSet<&String> = records.iter().flat_map(|r| &r.identity.macs).collect();
    assert_eq!(macs.len(), HOSTS);
}
