//! `cluster::vip`: when a cluster needs a VIP, the keepalived configuration byte for byte
//! against its golden, and every refused value with its exact error.
//!
//! Refresh the golden after an intended change with
//! `UPDATE_GOLDENS=1 cargo test -p cluster --lib vip` and review the diff.

use super::*;
use std::path::Path;

fn spec(endpoint: &str, masters: u32, hosts: &[&str]) -> ClusterSpec {
    let mut text = format!(
        "[cluster]\nname = \"demo\"\nkubernetes_version = \"v1.33.4\"\n\
         control_plane_endpoint = \"{endpoint}\"\npod_subnet = \"10.244.0.0/16\"\n\
         service_subnet = \"10.96.0.0/12\"\ndns_domain = \"cluster.local\"\n\
         masters = {masters}\n\n[seed]\nurl = \"https://10.77.0.1:8443\"\n\
         registry = \"10.77.0.1:8443\"\n"
    );
    for (i, ip) in hosts.iter().enumerate() {
        text.push_str(&format!(
            "\n[[hosts]]\nmac = \"52:54:00:00:00:0{}\"\nip = \"{ip}\"\nrole = \"master\"\n",
            i + 1
        ));
    }
    ClusterSpec::parse("c.toml", &text).unwrap().spec
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

#[test]
fn a_cluster_needs_a_vip_when_its_endpoint_is_an_address_no_host_has() {
    let three = ["10.77.0.11", "10.77.0.12", "10.77.0.13"];
    let vip = instructions(&spec("10.77.0.10:6443", 3, &three), ip("10.77.0.12")).unwrap();
    assert_eq!(
        vip,
        VipInstructions {
            address: "10.77.0.10".parse().unwrap(),
            router_id: router_id("demo"),
            priority: priority("10.77.0.12".parse().unwrap()),
            advert_interval_cs: 25,
        }
    );
    // A single master may still hold a VIP, so that masters can be added later.
    assert!(instructions(&spec("10.77.0.10:6443", 1, &three[..1]), ip("10.77.0.11")).is_some());

    let none = [
        // The endpoint is an inventory host's own address.
        (spec("10.77.0.11:6443", 1, &three[..1]), ip("10.77.0.11")),
        (spec("10.77.0.11:6443", 3, &three), ip("10.77.0.12")),
        // A master enrolled by token, whose own address is the endpoint.
        (spec("10.77.0.20:6443", 1, &[]), ip("10.77.0.20")),
        // A name: DNS or a load balancer the operator runs.
        (
            spec("cp.example.internal:6443", 3, &three),
            ip("10.77.0.11"),
        ),
    ];
    for (spec, own) in none {
        assert_eq!(
            instructions(&spec, own),
            None,
            "{}",
            spec.control_plane_endpoint
        );
    }
}

#[test]
fn the_router_id_is_stable_per_cluster_and_never_zero() {
    assert_eq!(router_id("demo"), router_id("demo"));
    assert_ne!(router_id("demo"), router_id("prod"));
    let ids: std::collections::BTreeSet<u8> =
        (0..2000).map(|i| router_id(&format!("c{i}"))).collect();
    assert!(!ids.contains(&0));
    assert!(ids.len() > 250, "{}", ids.len());
}

#[test]
fn neighbouring_masters_get_priorities_far_apart() {
    let of = |last: u8| i32::from(priority(Ipv4Addr::new(10, 77, 0, last)));
    for last in 0..=255u8 {
        assert!((1..=254).contains(&of(last)), "{last}");
    }
    for a in 1..=250u8 {
        for b in a + 1..=a.saturating_add(4).min(254) {
            let gap = (of(a) - of(b)).abs();
            assert!(gap >= 37, ".{a} and .{b}: {} and {}", of(a), of(b));
        }
    }
    let all: std::collections::BTreeSet<i32> = (1..=254).map(of).collect();
    assert_eq!(all.len(), 254);
}

fn demo_vip() -> VipInstructions {
    VipInstructions {
        address: "10.77.0.10".parse().unwrap(),
        router_id: 42,
        priority: 100,
        advert_interval_cs: ADVERT_INTERVAL_CS,
    }
}

fn demo<'a>(vip: &'a VipInstructions) -> Keepalived<'a> {
    Keepalived {
        vip,
        interface: "enp0s3",
        address: "10.77.0.12".parse().unwrap(),
        prefix: 24,
        check: CHECK_COMMAND,
        member_check: MEMBER_CHECK_COMMAND,
    }
}

#[test]
fn keepalived_conf_matches_its_golden() {
    let vip = demo_vip();
    let rendered = render(&demo(&vip)).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden/keepalived.conf");
    if std::env::var_os("UPDATE_GOLDENS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (UPDATE_GOLDENS=1 makes it)",
            path.display()
        )
    });
    assert_eq!(rendered, golden, "UPDATE_GOLDENS=1 to refresh after review");
}

#[test]
fn advert_intervals_are_written_in_decimal_seconds() {
    for (cs, text) in [
        (25, "0.25"),
        (5, "0.05"),
        (100, "1"),
        (150, "1.50"),
        (4095, "40.95"),
    ] {
        assert_eq!(seconds(cs), text);
    }
}

#[test]
fn refused_values_and_their_errors() {
    type Change = fn(&mut Keepalived<'_>, &mut VipInstructions);
    let cases: [(&str, Change, &str); 14] = [
        (
            "empty interface",
            |k, _| k.interface = "",
            "interface \"\" is not a name keepalived takes: 1 to 15 characters, none of them blank, `/`, `\"`, `#`, `!` or `{`/`}`",
        ),
        (
            "long interface",
            |k, _| k.interface = "enp0s31f6-vlan100",
            "interface \"enp0s31f6-vlan100\" is not a name keepalived takes: 1 to 15 characters, none of them blank, `/`, `\"`, `#`, `!` or `{`/`}`",
        ),
        (
            "blank in interface",
            |k, _| k.interface = "eth0 }",
            "interface \"eth0 }\" is not a name keepalived takes: 1 to 15 characters, none of them blank, `/`, `\"`, `#`, `!` or `{`/`}`",
        ),
        (
            "brace in interface",
            |k, _| k.interface = "eth0}",
            "interface \"eth0}\" is not a name keepalived takes: 1 to 15 characters, none of them blank, `/`, `\"`, `#`, `!` or `{`/`}`",
        ),
        (
            "prefix",
            |k, _| k.prefix = 33,
            "prefix length /33 is longer than an IPv4 address",
        ),
        (
            "own address",
            |k, _| k.address = "10.77.0.10".parse().unwrap(),
            "the VIP 10.77.0.10 is this master's own address; a VIP must be an address no host has",
        ),
        (
            "other subnet",
            |k, _| k.address = "10.78.0.12".parse().unwrap(),
            "the VIP 10.77.0.10 is outside 10.78.0.12/24, the subnet of enp0s3: VRRP moves it by ARP, within one L2 network",
        ),
        (
            "host route",
            |k, _| k.prefix = 32,
            "the VIP 10.77.0.10 is outside 10.77.0.12/32, the subnet of enp0s3: VRRP moves it by ARP, within one L2 network",
        ),
        (
            "network address",
            |_, v| v.address = "10.77.0.0".parse().unwrap(),
            "the VIP 10.77.0.0 is the network or broadcast address of 10.77.0.0/24",
        ),
        (
            "broadcast address",
            |_, v| v.address = "10.77.0.255".parse().unwrap(),
            "the VIP 10.77.0.255 is the network or broadcast address of 10.77.0.255/24",
        ),
        (
            "router id",
            |_, v| v.router_id = 0,
            "virtual router id 0 is not one: VRRP's ids are 1 to 255",
        ),
        (
            "owner's priority",
            |_, v| v.priority = 255,
            "priority 255 is outside 1..=254 (255 is the address owner's, which keepalived never lets go of the VIP)",
        ),
        (
            "advert interval",
            |_, v| v.advert_interval_cs = 4096,
            "advert interval 4096 cs is outside 1..=4095 (VRRPv3's 12-bit field, in centiseconds)",
        ),
        (
            "quoted check",
            |k, _| k.check = "/usr/bin/test -e \"x\"",
            "health check \"/usr/bin/test -e \\\"x\\\"\" must be an absolute path and its arguments, on one line, without `\"`",
        ),
    ];
    for (what, change, error) in cases {
        let mut vip = demo_vip();
        let vip_before = demo_vip();
        let mut k = demo(&vip_before);
        change(&mut k, &mut vip);
        let k = Keepalived { vip: &vip, ..k };
        assert_eq!(render(&k).unwrap_err().to_string(), error, "{what}");
    }
    let mut vip = demo_vip();
    vip.priority = 0;
    let err = render(&demo(&vip)).unwrap_err().to_string();
    assert_eq!(
        err,
        "priority 0 is outside 1..=254 (255 is the address owner's, which keepalived never lets go of the VIP)"
    );
    for check in ["test -e /x", "", "/usr/bin/test\n}"] {
        let vip = demo_vip();
        let health = Keepalived {
            check,
            ..demo(&vip)
        };
        let member = Keepalived {
            member_check: check,
            ..demo(&vip)
        };
        for k in [health, member] {
            assert_eq!(
                render(&k),
                Err(VipError::Check(check.to_string())),
                "{check:?}"
            );
        }
    }
}
