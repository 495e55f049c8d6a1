//! The seed's etcd membership client against a real etcd cluster with mutual TLS: a fourth
//! member joins as a learner, is promoted, and is removed again, without quorum ever being lost.

use cluster::pki::{Ca, CaKind, CertProfile, KeyAlgorithm, SubjectKey};
use registry_seed::membership::{
    EtcdClient, EtcdMembership, EtcdTls, MemberRef, MembershipError, Policy, seed_client_profile,
};
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::ChildGuard;

const ALGORITHM: KeyAlgorithm = KeyAlgorithm::EcdsaP256;

/// One etcd member of the test: its address, ports and files.
struct Node {
    name: String,
    ip: IpAddr,
    client_port: u16,
    peer_port: u16,
}

impl Node {
    fn new(i: u8) -> Node {
        Node {
            name: format!("m{i}"),
            ip: format!("127.0.0.1{i}").parse().unwrap(),
            client_port: testkit::free_tcp_port(),
            peer_port: testkit::free_tcp_port(),
        }
    }
    fn client_url(&self) -> String {
        format!("https://{}:{}", self.ip, self.client_port)
    }
    fn peer_url(&self) -> String {
        format!("https://{}:{}", self.ip, self.peer_port)
    }
}

/// The etcd CA and the files every process reads.
struct Pki {
    ca: Ca,
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca = Ca::generate(
            CaKind::Etcd.common_name(),
            ALGORITHM,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
        let pki = Pki {
            ca,
            dir: dir.to_owned(),
        };
        let (cert, key) = pki.issue(&seed_client_profile());
        std::fs::write(dir.join("seed.crt"), cert).unwrap();
        std::fs::write(dir.join("seed.key"), key).unwrap();
        pki
    }

    fn issue(&self, profile: &CertProfile) -> (String, String) {
        let issued = self
            .ca
            .issue(
                profile,
                SubjectKey::Fresh(ALGORITHM),
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        (issued.cert_pem, issued.key.unwrap().pem().to_owned())
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// Server and peer certificates of `node`, written next to the CA.
    fn for_node(&self, node: &Node) {
        for (kind, profile) in [
            ("server", CertProfile::etcd_server(&node.name, node.ip)),
            ("peer", CertProfile::etcd_peer(&node.name, node.ip)),
        ] {
            let (cert, key) = self.issue(&profile);
            std::fs::write(self.dir.join(format!("{}-{kind}.crt", node.name)), cert).unwrap();
            std::fs::write(self.dir.join(format!("{}-{kind}.key", node.name)), key).unwrap();
        }
    }

    fn tls(&self) -> EtcdTls {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap();
        EtcdTls {
            ca_pem: read("ca.crt"),
            client_cert_pem: read("seed.crt"),
            client_key_pem: read("seed.key"),
        }
    }
}

/// Starts etcd for `node`, logging to `<dir>/<name>.log`.
fn start_etcd(pki: &Pki, node: &Node, initial_cluster: &str, state: &str) -> ChildGuard {
    pki.for_node(node);
    let log = std::fs::File::create(pki.dir.join(format!("{}.log", node.name))).unwrap();
    let n = &node.name;
    let mut cmd = Command::new(testkit::which("etcd").unwrap());
    cmd.arg(format!("--name={n}"))
        .arg(format!("--data-dir={}", pki.path(&format!("{n}.data"))))
        .arg(format!("--listen-client-urls={}", node.client_url()))
        .arg(format!("--advertise-client-urls={}", node.client_url()))
        .arg(format!("--listen-peer-urls={}", node.peer_url()))
        .arg(format!("--initial-advertise-peer-urls={}", node.peer_url()))
        .arg(format!("--initial-cluster={initial_cluster}"))
        .arg(format!("--initial-cluster-state={state}"))
        .arg("--initial-cluster-token=launcher-test")
        .arg("--client-cert-auth")
        .arg(format!("--trusted-ca-file={}", pki.path("ca.crt")))
        .arg(format!(
            "--cert-file={}",
            pki.path(&format!("{n}-server.crt"))
        ))
        .arg(format!(
            "--key-file={}",
            pki.path(&format!("{n}-server.key"))
        ))
        .arg("--peer-client-cert-auth")
        .arg(format!("--peer-trusted-ca-file={}", pki.path("ca.crt")))
        .arg(format!(
            "--peer-cert-file={}",
            pki.path(&format!("{n}-peer.crt"))
        ))
        .arg(format!(
            "--peer-key-file={}",
            pki.path(&format!("{n}-peer.key"))
        ))
        // A loaded two-core machine: slower heartbeats keep elections rare.
        .args([
            "--heartbeat-interval=250",
            "--election-timeout=2500",
            "--logger=zap",
        ])
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::spawn(&format!("etcd {n}"), &mut cmd)
}

/// Runs etcdctl with the seed's client certificate against `endpoints`.
fn etcdctl(pki: &Pki, endpoints: &[&Node], args: &[&str]) -> Result<String, String> {
    let endpoints: Vec<String> = endpoints.iter().map(|n| n.client_url()).collect();
    let out = Command::new(testkit::which("etcdctl").unwrap())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg(format!("--cacert={}", pki.path("ca.crt")))
        .arg(format!("--cert={}", pki.path("seed.crt")))
        .arg(format!("--key={}", pki.path("seed.key")))
        .args(["--command-timeout=5s", "--dial-timeout=2s"])
        .args(args)
        .output()
        .expect("running etcdctl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Asserts that every member at `endpoints` reports healthy now.
fn assert_healthy(pki: &Pki, endpoints: &[&Node], when: &str) {
    let health = etcdctl(pki, endpoints, &["endpoint", "health"]);
    assert!(health.is_ok(), "{when}: {health:?}");
}

/// `(name, is_learner)` of every member, from `etcdctl member list -w json`.
fn member_list(pki: &Pki, endpoints: &[&Node]) -> Vec<(String, bool)> {
    let json: Value =
        serde_json::from_str(&etcdctl(pki, endpoints, &["member", "list", "-w", "json"]).unwrap())
            .unwrap();
    let mut members: Vec<(String, bool)> = json["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap_or("").to_owned();
            (name, m["isLearner"].as_bool().unwrap_or(false))
        })
        .collect();
    members.sort();
    members
}

/// The leader's member id, as `etcdctl endpoint status` reports it.
fn leader_of(pki: &Pki, endpoints: &[&Node]) -> u64 {
    let json: Value = serde_json::from_str(
        &etcdctl(pki, &endpoints[..1], &["endpoint", "status", "-w", "json"]).unwrap(),
    )
    .unwrap();
    json[0]["Status"]["leader"].as_u64().unwrap()
}

/// The id of the member named `name`.
fn member_id(pki: &Pki, endpoints: &[&Node], name: &str) -> u64 {
    let json: Value =
        serde_json::from_str(&etcdctl(pki, endpoints, &["member", "list", "-w", "json"]).unwrap())
            .unwrap();
    json["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["ID"].as_u64())
        .unwrap()
}

fn voters(names: &[&str]) -> Vec<(String, bool)> {
    names.iter().map(|n| (n.to_string(), false)).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A dead endpoint is skipped; no live endpoint is an error; a client certificate from another
/// CA is refused by etcd.
fn check_endpoints_and_mutual_tls(rt: &tokio::runtime::Runtime, pki: &Pki, three: &[&Node]) {
    let dead = format!("https://{}:{}", three[0].ip, testkit::free_tcp_port());
    let failover = EtcdClient::new(vec![dead.clone(), three[0].client_url()], &pki.tls()).unwrap();
    assert_eq!(rt.block_on(failover.member_list()).unwrap().len(), 3);
    let nowhere = EtcdClient::new(vec![dead], &pki.tls()).unwrap();
    let err = rt.block_on(nowhere.member_list());
    assert!(
        matches!(err, Err(MembershipError::Unreachable { .. })),
        "{err:?}"
    );

    let other_dir = tempfile::tempdir().unwrap();
    let stranger = Pki::new(other_dir.path()).tls();
    let tls = EtcdTls {
        ca_pem: pki.tls().ca_pem,
        ..stranger
    };
    let refused = EtcdClient::new(vec![three[0].client_url()], &tls).unwrap();
    let err = rt.block_on(refused.member_list());
    assert!(
        matches!(err, Err(MembershipError::Unreachable { .. })),
        "{err:?}"
    );
}

#[test]
fn a_fourth_master_joins_as_learner_is_promoted_and_removed() {
    if !testkit::require(&["etcd", "etcdctl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let nodes: Vec<Node> = (1..=4).map(Node::new).collect();
    let (first, m4) = (&nodes[..3], &nodes[3]);
    let three: Vec<&Node> = first.iter().collect();
    let initial: Vec<String> = first
        .iter()
        .map(|n| format!("{}={}", n.name, n.peer_url()))
        .collect();
    let mut guards: Vec<ChildGuard> = first
        .iter()
        .map(|n| start_etcd(&pki, n, &initial.join(","), "new"))
        .collect();
    testkit::wait_for(
        "the first three members to be healthy",
        Duration::from_secs(60),
        || etcdctl(&pki, &three, &["endpoint", "health"]).ok(),
    );

    let rt = runtime();
    let client =
        EtcdClient::new(three.iter().map(|n| n.client_url()).collect(), &pki.tls()).unwrap();
    let policy = Policy {
        learner_timeout: Duration::from_secs(90),
        retry_min: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        busy_timeout: Duration::from_secs(30),
        health_settle: Duration::from_secs(3),
    };
    let membership = EtcdMembership::new(client.clone(), policy);
    check_endpoints_and_mutual_tls(&rt, &pki, &three);

    // m4 and m5 ask at the same moment: the first in line becomes the learner, the second is
    // told to wait, and asking again for m4 gives the same learner.
    let m5 = Node::new(5);
    let (peer4, peer5) = (m4.peer_url(), m5.peer_url());
    let (first_in_line, second) = rt.block_on(async {
        tokio::join!(
            membership.add_learner(&m4.name, &peer4),
            membership.add_learner(&m5.name, &peer5)
        )
    });
    let added = first_in_line.unwrap();
    assert!(
        matches!(second, Err(MembershipError::LearnerPending { id }) if id == added.id),
        "{second:?}"
    );
    let expected: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.name, n.peer_url()))
        .collect();
    assert_eq!(added.initial_cluster, expected.join(","));
    let again = rt
        .block_on(membership.add_learner(&m4.name, &m4.peer_url()))
        .unwrap();
    assert_eq!(again.id, added.id);
    let listed = member_list(&pki, &three);
    assert_eq!(listed.len(), 4);
    assert_eq!(
        listed[0],
        (String::new(), true),
        "an unstarted learner: {listed:?}"
    );
    assert_healthy(&pki, &three, "after adding the learner");

    // Start the real fourth etcd with what the seed handed back, then promote it.
    guards.push(start_etcd(&pki, m4, &added.initial_cluster, "existing"));
    rt.block_on(membership.promote_when_ready(added.id))
        .unwrap();
    let all: Vec<&Node> = nodes.iter().collect();
    testkit::wait_for("4 started voting members", Duration::from_secs(30), || {
        (member_list(&pki, &all) == voters(&["m1", "m2", "m3", "m4"])).then_some(())
    });
    assert_healthy(&pki, &all, "after promotion");

    // Make m4 the leader (etcdctl asks the current one), then remove it: the seed hands
    // leadership to another voting member first, as m4's own log says, and that member leads
    // the three left.
    let leader = leader_of(&pki, &all);
    let current = all
        .iter()
        .find(|n| member_id(&pki, &all, &n.name) == leader)
        .unwrap();
    etcdctl(
        &pki,
        &[current],
        &["move-leader", &format!("{:x}", added.id.0)],
    )
    .unwrap();
    testkit::wait_for("m4 to lead", Duration::from_secs(30), || {
        (leader_of(&pki, &all) == added.id.0).then_some(())
    });
    let gone = rt
        .block_on(membership.remove(&MemberRef::Name("m4".into())))
        .unwrap();
    assert_eq!(gone.id, added.id);
    assert_eq!(member_list(&pki, &three), voters(&["m1", "m2", "m3"]));
    assert_healthy(&pki, &three, "after removing m4");
    let m4_log = std::fs::read_to_string(pki.dir.join("m4.log")).unwrap();
    let handed = m4_log
        .lines()
        .rev()
        .filter(|l| l.contains("leadership transfer starting"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|l| l["transferee-member-id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("m4 never handed leadership on: {m4_log}"));
    assert_eq!(
        u64::from_str_radix(&handed, 16).unwrap(),
        leader_of(&pki, &three),
        "the member m4 handed leadership to leads the three left"
    );
    guards.pop();

    // A learner that never starts is removed after the (short) timeout.
    let impatient = EtcdMembership::new(
        client,
        Policy {
            learner_timeout: Duration::from_secs(3),
            ..policy
        },
    );
    let ghost = rt
        .block_on(impatient.add_learner(&m5.name, &m5.peer_url()))
        .unwrap();
    assert_eq!(
        rt.block_on(impatient.pending_learners()).unwrap(),
        [ghost.id]
    );
    let waited = rt.block_on(impatient.promote_when_ready(ghost.id));
    assert!(
        matches!(waited, Err(MembershipError::LearnerTimedOut { id, .. }) if id == ghost.id),
        "{waited:?}"
    );
    assert_eq!(member_list(&pki, &three), voters(&["m1", "m2", "m3"]));
    assert_healthy(&pki, &three, "after the learner timed out");

    // With m3 down, removing a healthy member would leave 1 healthy of 2: refused.
    guards[2].kill();
    // If m3 led, the other two elect a new leader first.
    testkit::wait_for(
        "m1 and m2 to be healthy without m3",
        Duration::from_secs(30),
        || etcdctl(&pki, &three[..2], &["endpoint", "health"]).ok(),
    );
    let refused = rt.block_on(membership.remove(&MemberRef::Name("m1".into())));
    assert!(
        matches!(
            refused,
            Err(MembershipError::QuorumAtRisk {
                healthy: 1,
                voters: 2,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(member_list(&pki, &three[..2]).len(), 3);
    assert_healthy(&pki, &three[..2], "after the refused removal");
    // Removing the dead one keeps a healthy majority: allowed.
    rt.block_on(membership.remove(&MemberRef::Name("m3".into())))
        .unwrap();
    assert_eq!(member_list(&pki, &three[..2]), voters(&["m1", "m2"]));
    assert_healthy(&pki, &three[..2], "after removing the dead member");
}
