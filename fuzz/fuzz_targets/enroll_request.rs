//! `POST /v1/enroll` bodies as the seed reads them: the JSON, the identity check and the
//! planner's decision for a host it has never seen. An accepted body serializes back to itself.
#![no_main]

use cluster::api::{EnrollRequest, MAX_REQUEST_BYTES, Role};
use libfuzzer_sys::fuzz_target;
use registry_seed::enroll::decide::{ClusterFacts, InventoryEntry, Known, decide, identity_keys};

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_REQUEST_BYTES {
        return;
    }
    let Ok(request) = serde_json::from_slice::<EnrollRequest>(data) else {
        return;
    };
    let again = serde_json::to_vec(&request).expect("a request serializes");
    assert_eq!(
        serde_json::from_slice::<EnrollRequest>(&again).unwrap(),
        request
    );

    if let Ok(keys) = identity_keys(&request.identity) {
        assert!((1..=registry_seed::enroll::decide::MAX_IDENTIFIERS).contains(&keys.len()));
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
    }
    let _ = decide(&facts(), &request, &nothing_known(), 1_700_000_000_000);
});

fn facts() -> ClusterFacts {
    let entry = InventoryEntry {
        index: 0,
        macs: vec!["52:54:00:00:00:01".into()],
        product_uuid: None,
        serial: Some("S1".into()),
        role: Role::Master,
        role_index: 1,
        hostname: "demo-m1".into(),
        ip: Some("10.77.0.11".into()),
    };
    ClusterFacts::new("demo".into(), 1, vec![entry])
}

/// A host with an identity key nothing is bound to, from an address nobody has.
fn nothing_known() -> Known {
    Known {
        client_key: Some(
            "sha256:0101010101010101010101010101010101010101010101010101010101010101"
                .parse()
                .unwrap(),
        ),
        peer_ip: Some("10.77.0.99".into()),
        ..Known::default()
    }
}
