//! The seed and a real etcd: three masters enroll and bootstrap etcd from their plans; a fourth
//! enrolls, the seed adds it as a learner, it joins with its plan's config and is promoted; the
//! remove-master job takes it out again. Quorum is never lost, and a seed killed between adding
//! the learner and promoting it promotes it after its restart. Raising `cluster.masters` once
//! etcd runs does not make a later master wait to bootstrap with the running ones.
//!
//! Hosts are loopback addresses (127.0.0.41–44): each client enrolls from its own address, which
//! the seed takes as the host's IP, so etcd's fixed ports do not collide.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster::api::{EnrollResponse, FileSource, Plan, Role};
use registry_seed::seed::Seed;
use support::seed::*;
use testkit::ChildGuard;

fn ip(i: usize) -> String {
    format!("127.0.0.{}", 40 + i)
}

fn prepare(state: &Path, text: &str) {
    let seed = Seed::open(spec(text), state).unwrap();
    let tokens: Vec<String> = (1..=4).map(numbered_token).collect();
    put_tokens(&seed, &tokens, Some(Role::Master));
}

/// Enrolls host `i` from its own address until the seed answers with a plan.
fn enroll_master(server: &Server, i: usize) -> Plan {
    let ca = std::fs::read(server.state_dir.join("seed-ca.crt")).unwrap();
    let mac = format!("52:54:00:00:04:{i:02x}");
    let identity = host_identity(&mac);
    let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .local_address(ip(i).parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let body = enroll_body(&mac, Some(&numbered_token(i)));
    testkit::wait_for("the master's plan", Duration::from_secs(60), || {
        let answer = client
            .post(format!("{}/v1/enroll", server.url()))
            .json(&body)
            .send()
            .ok()?;
        match answer.json::<EnrollResponse>().ok()? {
            EnrollResponse::Enrolled(plan) => Some(*plan),
            EnrollResponse::Pending { .. } => {
                std::thread::sleep(Duration::from_millis(200));
                None
            }
            EnrollResponse::Waiting { message, .. } => panic!("{message}"),
        }
    })
}

/// Writes the plan's files under `root` and starts etcd with the plan's config, its paths
/// moved under `root`.
fn start_etcd(root: &Path, plan: &Plan) -> ChildGuard {
    let mut config = None;
    for file in &plan.files {
        let FileSource::Text { text } = &file.source else {
            panic!("no CSR was sent, so every file is text: {}", file.path)
        };
        let path = root.join(file.path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        if Some(&file.path) == plan.etcd.as_ref().map(|e| &e.config_path) {
            config = Some(text.clone());
        }
    }
    let config = config.expect("the plan holds etcd's config");
    let r = root.display().to_string();
    let config = config
        .replace("/etc/kubernetes/pki", &format!("{r}/etc/kubernetes/pki"))
        .replace("/var/lib/etcd", &format!("{r}/var/lib/etcd"));
    let config_path = root.join("etcd.yaml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(root.join("etcd.log")).unwrap();
    let mut cmd = Command::new(testkit::which("etcd").unwrap());
    cmd.arg("--config-file")
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(log);
    ChildGuard::spawn("etcd", &mut cmd)
}

/// `etcdctl` against `endpoint` with the healthcheck client certificate under `root`.
fn etcdctl(root: &Path, endpoints: &str, args: &[&str]) -> Option<String> {
    let pki = root.join("etc/kubernetes/pki/etcd");
    let out = Command::new(testkit::which("etcdctl").unwrap())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", pki.join("ca.crt").display()))
        .arg(format!(
            "--cert={}",
            pki.join("healthcheck-client.crt").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("healthcheck-client.key").display()
        ))
        .arg("--dial-timeout=3s")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (name, is learner) of every member.
fn members(root: &Path, endpoints: &str) -> Option<Vec<(String, bool)>> {
    let text = etcdctl(root, endpoints, &["member", "list", "-w", "json"])?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut out: Vec<(String, bool)> = json["members"]
        .as_array()?
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    Some(out)
}

fn healthy(root: &Path, endpoints: &str) -> bool {
    etcdctl(root, endpoints, &["endpoint", "health"]).is_some()
}

fn dump_logs(roots: &[PathBuf], state: &Path) {
    for root in roots {
        if let Ok(log) = std::fs::read_to_string(root.join("etcd.log")) {
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!(
                "--- {} ---\n{}",
                root.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    if let Ok(log) = std::fs::read_to_string(state.join("seed.log")) {
        eprintln!("--- seed ---\n{log}");
    }
}

#[test]
fn a_fourth_master_joins_as_a_learner_is_promoted_and_removed() {
    if !testkit::require(&["etcd", "etcdctl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = auto_cluster(3);
    let cluster = cluster_file(dir.path(), &text);
    let state = dir.path().join("state");
    prepare(&state, &text);
    let mut server = Server::start(&cluster, &state, "127.0.0.1:0");
    let roots: Vec<PathBuf> = (1..=4).map(|i| dir.path().join(format!("m{i}"))).collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&mut server, &cluster, &roots)
    }));
    if let Err(panic) = result {
        dump_logs(&roots, &state);
        std::panic::resume_unwind(panic);
    }
}

fn run(server: &mut Server, cluster: &Path, roots: &[PathBuf]) {
    // The three bootstrap masters enroll together: each waits until all are known.
    let shared: &Server = server;
    let plans: Vec<Plan> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=3)
            .map(|i| s.spawn(move || enroll_master(shared, i)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for plan in &plans {
        let etcd = plan.etcd.as_ref().unwrap();
        assert_eq!(
            (etcd.initial_cluster_state.as_str(), etcd.learner),
            ("new", false)
        );
    }
    let mut etcds: Vec<ChildGuard> = plans
        .iter()
        .zip(roots)
        .map(|(p, r)| start_etcd(r, p))
        .collect();
    let three = (1..=3)
        .map(|i| format!("https://{}:2379", ip(i)))
        .collect::<Vec<_>>()
        .join(",");
    let root = &roots[0];
    testkit::wait_for("three healthy members", Duration::from_secs(60), || {
        healthy(root, &three).then_some(())
    });

    // The operator raises cluster.masters to 4 and restarts the seed: the three that started
    // etcd stay its first members, so the fourth still joins as a learner rather than waiting
    // to bootstrap a second cluster with them.
    std::fs::write(cluster, auto_cluster(4)).unwrap();
    server.guard.kill();
    *server = Server::start(cluster, &server.state_dir.clone(), "127.0.0.1:0");

    // The fourth: added as a learner by the seed before it starts, then promoted.
    let fourth = enroll_master(server, 4);
    let etcd = fourth.etcd.as_ref().unwrap();
    assert_eq!(
        (etcd.initial_cluster_state.as_str(), etcd.learner),
        ("existing", true)
    );
    let listed = members(root, &three).unwrap();
    assert!(
        listed.contains(&(String::new(), true)),
        "a learner not yet started: {listed:?}"
    );
    // The seed is killed after adding the learner; the restarted seed still promotes it.
    server.guard.kill();
    *server = Server::start(cluster, &server.state_dir.clone(), "127.0.0.1:0");
    etcds.push(start_etcd(&roots[3], &fourth));
    let voting = testkit::wait_for("four voting members", Duration::from_secs(120), || {
        assert!(
            healthy(root, &three),
            "quorum lost while the learner joined"
        );
        let m = members(root, &three)?;
        (m.len() == 4 && m.iter().all(|(_, learner)| !learner)).then_some(m)
    });
    let names: Vec<&str> = voting.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["auto-m1", "auto-m2", "auto-m3", "auto-m4"]);

    // The remove-master job takes it out through etcd first. The cluster file asks for 4
    // masters: leaving 3 is refused, with nothing asked of etcd, unless forced.
    let sd = server.state_dir.to_str().unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
        .args(["hosts", "rm", &fourth.host_id, "--state-dir", sd])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!(
            "removing master {} would leave 3 of the cluster file's 4 masters; lower masters in the cluster file, or force the removal",
            fourth.host_id
        )),
        "{said}"
    );
    assert_eq!(members(root, &three).unwrap().len(), 4);
    let removed = cli(&["hosts", "rm", &fourth.host_id, "--force", "--state-dir", sd]);
    assert!(removed.contains("removed"), "{removed}");
    let left = members(root, &three).unwrap();
    let names: Vec<&str> = left.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["auto-m1", "auto-m2", "auto-m3"]);
    assert!(healthy(root, &three));
    let hosts = cli(&["hosts", "ls", "--json", "--state-dir", sd]);
    assert!(!hosts.contains(&fourth.host_id), "{hosts}");
    drop(etcds);
}
