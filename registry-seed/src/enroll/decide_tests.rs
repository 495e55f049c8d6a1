//! Unit tests of the enrollment planner.

use super::*;
use std::collections::BTreeMap;

const NOW: i64 = 1_000_000;

fn facts() -> ClusterFacts {
    ClusterFacts::new(
        "demo".into(),
        3,
        vec![
            InventoryEntry {
                index: 0,
                macs: vec!["52:54:00:00:00:01".into()],
                product_uuid: None,
                serial: None,
                role: Role::Master,
                role_index: 1,
                hostname: "demo-m1".into(),
                ip: Some("10.77.0.11".into()),
            },
            InventoryEntry {
                index: 1,
                macs: vec![],
                product_uuid: Some("1111aaaa-0000-0000-0000-000000000002".into()),
                serial: None,
                role: Role::Worker,
                role_index: 1,
                hostname: "demo-m3".into(),
                ip: None,
            },
        ],
    )
}

fn request(mac: &str, token: Option<&str>) -> EnrollRequest {
    EnrollRequest {
        identity: HostIdentity {
            macs: vec![mac.into()],
            ..HostIdentity::default()
        },
        token: token.map(str::to_string),
        csrs: BTreeMap::new(),
        kubernetes_version: None,
    }
}

fn key(n: u8) -> HostKeyId {
    format!("sha256:{}", hex::encode([n; 32])).parse().unwrap()
}

/// A request from a host with key 1 that nothing is bound to.
fn nothing_known() -> Known {
    Known {
        client_key: Some(key(1)),
        ..Known::default()
    }
}

/// What the store says when the request's key is bound to `record`.
fn bound(record: &HostRecord, counters: Counters) -> Known {
    Known {
        client_key: record.key,
        by_key: Some(record.clone()),
        counters,
        ..Known::default()
    }
}

fn refused_with(decision: Decision) -> &'static str {
    match decision {
        Decision::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn token(used_by: Option<&str>, expires_ms: i64) -> TokenLookup {
    TokenLookup::Found(TokenRecord {
        id: "abcdef".into(),
        secret_sha256: String::new(),
        created_ms: 0,
        expires_ms,
        role: None,
        used_by: used_by.map(str::to_string),
    })
}

fn enrolled(decision: Decision) -> (HostRecord, Counters) {
    match decision {
        Decision::Enrolled {
            record, counters, ..
        } => (record, counters),
        other => panic!("expected enrolled, got {other:?}"),
    }
}

#[test]
fn an_unknown_host_without_token_is_pending_with_a_new_id() {
    let decision = decide(
        &facts(),
        &request("52:54:00:00:00:99", None),
        &nothing_known(),
        NOW,
    );
    let Decision::Pending { record, counters } = decision else {
        panic!("expected pending")
    };
    assert_eq!(record.id, "h-0001");
    assert_eq!(record.status, HostStatus::Pending);
    assert!(record.assignment.is_none());
    assert_eq!(counters.next_host, 1);
}

#[test]
fn an_inventory_host_gets_its_role_ip_and_pattern_name() {
    let (record, counters) = enrolled(decide(
        &facts(),
        &request("52:54:00:00:00:01", None),
        &nothing_known(),
        NOW,
    ));
    let a = record.assignment.unwrap();
    assert_eq!(a.role, Role::Master);
    assert_eq!(a.master_ordinal, Some(1));
    assert_eq!(a.ip.as_deref(), Some("10.77.0.11"));
    assert_eq!(a.hostname, "demo-m1");
    assert_eq!(
        counters.masters_assigned, 0,
        "inventory hosts use no seat counter"
    );
}

#[test]
fn pattern_names_skip_names_the_inventory_claims() {
    let mut known = nothing_known();
    known.counters.masters_assigned = 1;
    let mut req = request("52:54:00:00:00:42", Some("abcdef.x"));
    req.identity.macs.push("52:54:00:00:00:43".into());
    known.token = Some(token(None, NOW + 1));
    let (record, _) = enrolled(decide(&facts(), &req, &known, NOW));
    // demo-m1 and demo-m3 are the inventory's, so the second master from outside is demo-m4,
    // and it comes after the inventory's one master.
    assert_eq!(record.hostname(), Some("demo-m4"));
    assert_eq!(record.assignment.unwrap().master_ordinal, Some(3));
}

#[test]
fn hosts_from_outside_take_the_master_seats_the_inventory_leaves() {
    let mut known = nothing_known();
    known.token = Some(token(None, NOW + 1));
    let mut roles = Vec::new();
    for _ in 0..4 {
        let (record, counters) = enrolled(decide(
            &facts(),
            &request("52:54:00:00:00:42", Some("abcdef.x")),
            &known,
            NOW,
        ));
        known.counters = counters;
        roles.push((
            record.role().unwrap(),
            record.hostname().unwrap().to_string(),
        ));
    }
    // The inventory holds one of the three masters.
    assert_eq!(
        roles,
        [
            (Role::Master, "demo-m2".to_string()),
            (Role::Master, "demo-m4".to_string()),
            (Role::Worker, "demo-w1".to_string()),
            (Role::Worker, "demo-w2".to_string()),
        ]
    );
}

#[test]
fn tokens_are_refused_with_their_own_codes() {
    let cases: Vec<(Option<TokenLookup>, &str)> = vec![
        (Some(TokenLookup::NotFound), codes::TOKEN_INVALID),
        (Some(TokenLookup::WrongSecret), codes::TOKEN_INVALID),
        (Some(token(Some("h-0042"), NOW + 1)), codes::TOKEN_USED),
        (Some(token(None, NOW)), codes::TOKEN_EXPIRED),
    ];
    for (lookup, code) in cases {
        let mut known = nothing_known();
        known.token = lookup.clone();
        let decision = decide(
            &facts(),
            &request("52:54:00:00:00:42", Some("abcdef.x")),
            &known,
            NOW,
        );
        match decision {
            Decision::Refused { code: got, .. } => assert_eq!(got, code, "{lookup:?}"),
            other => panic!("{lookup:?}: expected {code}, got {other:?}"),
        }
    }
}

#[test]
fn enrolling_again_gives_the_same_assignment_without_touching_counters() {
    let (first, counters) = enrolled(decide(
        &facts(),
        &request("52:54:00:00:00:01", None),
        &nothing_known(),
        NOW,
    ));
    let mut known = bound(&first, counters);
    known.token = Some(TokenLookup::NotFound);
    let mut req = request("52:54:00:00:00:01", Some("zzzzzz.bad"));
    req.identity.product_uuid = Some("2222bbbb-0000-0000-0000-000000000001".into());
    let (again, counters_again) = enrolled(decide(&facts(), &req, &known, NOW + 5));
    assert_eq!(again.id, first.id);
    assert_eq!(again.assignment, first.assignment);
    assert_eq!(counters_again, counters);
}

#[test]
fn an_approved_host_is_let_in_as_auto() {
    let mut record = match decide(
        &facts(),
        &request("52:54:00:00:00:77", None),
        &nothing_known(),
        NOW,
    ) {
        Decision::Pending { record, .. } => record,
        other => panic!("{other:?}"),
    };
    record.status = HostStatus::Approved;
    let mut known = bound(
        &record,
        Counters {
            next_host: 1,
            ..Counters::default()
        },
    );
    known.peer_ip = Some("10.77.0.99".into());
    let (enrolled, _) = enrolled(decide(
        &facts(),
        &request("52:54:00:00:00:77", None),
        &known,
        NOW,
    ));
    assert_eq!(enrolled.id, record.id);
    let assignment = enrolled.assignment.unwrap();
    assert_eq!(assignment.role, Role::Master);
    assert_eq!(assignment.admission, Admission::Approval);
    assert_eq!(assignment.ip.as_deref(), Some("10.77.0.99"));
}

#[test]
fn bad_identities_and_conflicts_are_refused() {
    let cases: Vec<(EnrollRequest, Vec<&str>, &str)> = vec![
        (request("not-a-mac", None), vec![], codes::BAD_REQUEST),
        (
            request("00:00:00:00:00:00", None),
            vec![],
            codes::BAD_REQUEST,
        ),
        (
            EnrollRequest {
                identity: HostIdentity {
                    macs: vec![],
                    product_uuid: Some("00000000-0000-0000-0000-000000000000".into()),
                    serial: Some("To be filled by O.E.M.".into()),
                    boot_mac: None,
                },
                token: None,
                csrs: BTreeMap::new(),
                kubernetes_version: None,
            },
            vec![],
            codes::BAD_REQUEST,
        ),
        (
            request("52:54:00:00:00:42", None),
            vec!["h-1", "h-2"],
            codes::IDENTITY_CONFLICT,
        ),
    ];
    for (req, matched, code) in cases {
        let mut known = nothing_known();
        for (i, id) in matched.iter().enumerate() {
            known.owners.insert(format!("serial:{i}"), id.to_string());
        }
        match decide(&facts(), &req, &known, NOW) {
            Decision::Refused { code: got, .. } => assert_eq!(got, code, "{req:?}"),
            other => panic!("{req:?}: expected {code}, got {other:?}"),
        }
    }
}

#[test]
fn a_token_with_a_role_overrides_the_seats() {
    let mut known = nothing_known();
    known.counters.masters_assigned = 2;
    let mut lookup = token(None, NOW + 1);
    if let TokenLookup::Found(t) = &mut lookup {
        t.role = Some(Role::Master);
    }
    known.token = Some(lookup);
    let (record, counters) = enrolled(decide(
        &facts(),
        &request("52:54:00:00:00:42", Some("abcdef.x")),
        &known,
        NOW,
    ));
    assert_eq!(record.role(), Some(Role::Master));
    assert_eq!(record.assignment.unwrap().master_ordinal, Some(4));
    assert_eq!(counters.masters_assigned, 3);
}

#[test]
fn waiting_hosts_are_counted_and_capped() {
    let Decision::Pending { record, counters } = decide(
        &facts(),
        &request("52:54:00:00:00:99", None),
        &nothing_known(),
        NOW,
    ) else {
        panic!("expected pending")
    };
    assert_eq!(counters.waiting, 1);
    // A full waiting room refuses new hosts, not the ones already in it.
    let mut full = nothing_known();
    full.counters.waiting = MAX_WAITING;
    let refused = decide(&facts(), &request("52:54:00:00:00:98", None), &full, NOW);
    assert!(matches!(refused, Decision::Refused { code, .. } if code == codes::NO_CAPACITY));
    let mut known = bound(&record, full.counters);
    assert!(matches!(
        decide(&facts(), &request("52:54:00:00:00:99", None), &known, NOW),
        Decision::Pending { .. }
    ));
    // Let in, it leaves the waiting room.
    known.token = Some(token(None, NOW + 1));
    let (_, counters) = enrolled(decide(
        &facts(),
        &request("52:54:00:00:00:99", Some("abcdef.x")),
        &known,
        NOW,
    ));
    assert_eq!(counters.waiting, MAX_WAITING - 1);
}

/// The names an inventory leaves free, as the plain definition says: count the generated names
/// no inventory host uses.
fn nth_free_name(facts: &ClusterFacts, letter: char, nth: u32) -> String {
    (1..)
        .map(|n| format!("{}-{letter}{n}", facts.name))
        .filter(|name| !facts.inventory.iter().any(|e| &e.hostname == name))
        .nth(nth as usize - 1)
        .unwrap()
}

#[test]
fn generated_names_skip_every_inventory_name_at_any_fleet_size() {
    let entry = |i: usize, hostname: &str| InventoryEntry {
        index: i,
        macs: vec![format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256)],
        product_uuid: None,
        serial: None,
        role: Role::Worker,
        role_index: i as u32 + 1,
        hostname: hostname.into(),
        ip: None,
    };
    let names = [
        "demo-w1", "demo-w2", "demo-w4", "demo-w04", "demo-w9", "demo-m2", "demo-w", "x-w3",
        "demo-w0", "demo-w10",
    ];
    let facts = ClusterFacts::new(
        "demo".into(),
        3,
        names.iter().enumerate().map(|(i, n)| entry(i, n)).collect(),
    );
    for nth in 1..=12 {
        assert_eq!(
            default_hostname(&facts, Role::Worker, nth),
            nth_free_name(&facts, 'w', nth),
            "worker {nth}"
        );
        assert_eq!(
            default_hostname(&facts, Role::Master, nth),
            nth_free_name(&facts, 'm', nth),
            "master {nth}"
        );
    }
    assert_eq!(default_hostname(&facts, Role::Worker, 1), "demo-w3");
    // Every inventory entry is found by its MAC among thousands.
    let big = ClusterFacts::new(
        "big".into(),
        3,
        (0..5000).map(|i| entry(i, &format!("node-{i}"))).collect(),
    );
    let keys = vec!["mac:52:54:00:00:13:87".to_string()];
    let found: Vec<usize> = inventory_matches(&big, &keys)
        .iter()
        .map(|e| e.index)
        .collect();
    assert_eq!(found, [0x1387]);
}

/// A record enrolled (by token) with key 1 and MAC `…:42`.
fn enrolled_host() -> (HostRecord, Counters) {
    let mut known = nothing_known();
    known.token = Some(token(None, NOW + 1));
    enrolled(decide(
        &facts(),
        &request("52:54:00:00:00:42", Some("abcdef.x")),
        &known,
        NOW,
    ))
}

#[test]
fn a_request_without_an_identity_key_is_refused() {
    let known = Known::default();
    let code = refused_with(decide(
        &facts(),
        &request("52:54:00:00:00:01", None),
        &known,
        NOW,
    ));
    assert_eq!(code, codes::IDENTITY_REQUIRED);
}

#[test]
fn the_key_names_the_host_and_a_stranger_claiming_it_is_refused() {
    let (host, counters) = enrolled_host();
    assert_eq!(host.key, Some(key(1)));
    // The bound key is this host, whatever MAC it reports now.
    let (again, _) = enrolled(decide(
        &facts(),
        &request("52:54:00:00:00:43", None),
        &bound(&host, counters),
        NOW + 1,
    ));
    assert_eq!(again.id, host.id);
    assert_eq!(
        again.identity.macs,
        ["52:54:00:00:00:42", "52:54:00:00:00:43"]
    );
    // Another key claiming the host's MAC is refused: the store's owner is bound elsewhere.
    let mut stranger = nothing_known();
    stranger.client_key = Some(key(2));
    stranger
        .owners
        .insert("mac:52:54:00:00:00:42".into(), host.id.clone());
    stranger.matched = Some(host.clone());
    let code = refused_with(decide(
        &facts(),
        &request("52:54:00:00:00:42", None),
        &stranger,
        NOW + 2,
    ));
    assert_eq!(code, codes::IDENTITY_TAKEN);
    // After `hosts reset` (no key), the next key that claims it is bound to it.
    let mut reset = host.clone();
    reset.key = None;
    stranger.matched = Some(reset);
    let (rebound, _) = enrolled(decide(
        &facts(),
        &request("52:54:00:00:00:42", None),
        &stranger,
        NOW + 3,
    ));
    assert_eq!((rebound.id, rebound.key), (host.id, Some(key(2))));
}

#[test]
fn an_inventory_entry_held_by_a_bound_host_is_not_taken_through_another_identifier() {
    let (holder, _) = enrolled(decide(
        &facts(),
        &request("52:54:00:00:00:01", None),
        &nothing_known(),
        NOW,
    ));
    let mut other = nothing_known();
    other.client_key = Some(key(3));
    other.inventory_holder = Some(holder);
    let code = refused_with(decide(
        &facts(),
        &request("52:54:00:00:00:01", None),
        &other,
        NOW,
    ));
    assert_eq!(code, codes::IDENTITY_TAKEN);
}

#[test]
fn a_host_gains_no_identifier_another_host_owns_and_at_most_the_cap() {
    let (host, counters) = enrolled_host();
    let mut known = bound(&host, counters);
    known
        .owners
        .insert("mac:52:54:00:00:00:50".into(), "h-0099".into());
    let mut req = request("52:54:00:00:00:50", None);
    req.identity.macs.push("52:54:00:00:00:51".into());
    let (again, _) = enrolled(decide(&facts(), &req, &known, NOW + 1));
    assert_eq!(
        again.identity.macs,
        ["52:54:00:00:00:42", "52:54:00:00:00:51"]
    );
    // Requests of at most the cap each, many times over: the record stops at the cap.
    let mut record = again;
    for round in 0..8u32 {
        let macs: Vec<String> = (0..MAX_IDENTIFIERS as u32)
            .map(|i| format!("52:54:01:{:02x}:{:02x}:00", round, i))
            .collect();
        let req = EnrollRequest {
            identity: HostIdentity {
                macs,
                ..HostIdentity::default()
            },
            token: None,
            csrs: BTreeMap::new(),
            kubernetes_version: None,
        };
        let (next, _) = enrolled(decide(&facts(), &req, &bound(&record, counters), NOW + 2));
        record = next;
    }
    assert_eq!(
        identity_keys(&record.identity).unwrap().len(),
        MAX_IDENTIFIERS
    );
    // One request with more than the cap is refused outright.
    let req = EnrollRequest {
        identity: HostIdentity {
            macs: (0..=MAX_IDENTIFIERS as u32)
                .map(|i| format!("52:54:02:00:{:02x}:00", i))
                .collect(),
            ..HostIdentity::default()
        },
        token: None,
        csrs: BTreeMap::new(),
        kubernetes_version: None,
    };
    assert_eq!(
        refused_with(decide(&facts(), &req, &bound(&record, counters), NOW + 3)),
        codes::BAD_REQUEST
    );
}

#[test]
fn identities_are_kept_normalized() {
    let mut req = request(" 52:54:00:00:00:AB\t", None);
    req.identity.product_uuid = Some(" 1111AAAA-0000-0000-0000-00000000000F ".into());
    req.identity.serial = Some("  SN-1 ".into());
    let Decision::Pending { record, .. } = decide(&facts(), &req, &nothing_known(), NOW) else {
        panic!("expected pending")
    };
    assert_eq!(record.identity.macs, ["52:54:00:00:00:ab"]);
    assert_eq!(
        record.identity.product_uuid.as_deref(),
        Some("1111aaaa-0000-0000-0000-00000000000f")
    );
    assert_eq!(record.identity.serial.as_deref(), Some("SN-1"));
}

#[test]
fn an_address_another_host_has_is_not_given_twice() {
    let mut known = nothing_known();
    known.token = Some(token(None, NOW + 1));
    known.peer_ip = Some("10.77.0.50".into());
    known.peer_ip_holder = Some("h-0007".into());
    let req = request("52:54:00:00:00:42", Some("abcdef.x"));
    assert_eq!(
        refused_with(decide(&facts(), &req, &known, NOW)),
        codes::IDENTITY_CONFLICT
    );
    // The inventory's addresses are taken too.
    known.peer_ip = Some("10.77.0.11".into());
    known.peer_ip_holder = None;
    assert_eq!(
        refused_with(decide(&facts(), &req, &known, NOW)),
        codes::IDENTITY_CONFLICT
    );
}

#[test]
fn a_removed_hosts_key_is_refused_whatever_it_claims() {
    // Its MAC is in the inventory, and it brings a token: the key alone decides.
    let mut known = nothing_known();
    known.retired = Some("h-0007".into());
    known.token = Some(token(None, NOW + 60_000));
    for req in [
        request("52:54:00:00:00:01", None),
        request("52:54:00:00:00:99", Some("abcdef.secret")),
    ] {
        match decide(&facts(), &req, &known, NOW) {
            Decision::Refused { code, message } => {
                assert_eq!(code, codes::HOST_REMOVED);
                assert_eq!(
                    message,
                    "this machine's identity key belonged to host h-0007, which an operator \
                     removed from the cluster: it comes back only as a new machine, with a new \
                     key (its data disk wiped, e.g. booted once with launcher.wipe=1)"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
