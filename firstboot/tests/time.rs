//! The time phase against real NTP servers: chrony on a loopback port, and a silent one.

mod common;

use common::{DECADE_SECS, Host, OTHER_PIN, Run, stderr};
use firstboot::os::Action;

fn time_only(host: &Host, offset: i64, ntp: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--seed",
        "https://127.0.0.1:9",
        "--pin",
        OTHER_PIN,
        "--ntp",
        ntp,
        "--stop-after",
        "time",
    ];
    args.extend_from_slice(extra);
    host.run(offset, &args)
}

#[test]
fn a_clock_a_decade_behind_is_stepped_to_chronys_time() {
    if !testkit::require(&["chronyd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_udp_port();
    let _chrony = common::start_chrony(dir.path(), port);
    let host = Host::new(1);
    let ntp = format!("127.0.0.1:{port}");
    // chronyd needs a moment to bind; the phase itself retries a silent server.
    let out = time_only(&host, -DECADE_SECS, &ntp, &["--ntp-wait-secs", "20"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert_eq!(host.done_phases(), vec!["identify", "time"]);
    let time = &host.journal()["time"];
    assert_eq!(time["stepped"], true);
    let before = time["offset_before_ms"].as_i64().unwrap();
    assert!((before - DECADE_SECS * 1000).abs() < 5_000, "{before}");
    assert!(
        time["offset_after_ms"].as_i64().unwrap().abs() < 500,
        "{time}"
    );
    let steps: Vec<_> = host
        .actions()
        .into_iter()
        .filter(|a| matches!(a, Action::StepClock { .. }))
        .collect();
    assert_eq!(steps.len(), 1, "{steps:?}");
}

#[test]
fn a_clock_already_right_is_left_alone() {
    if !testkit::require(&["chronyd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_udp_port();
    let _chrony = common::start_chrony(dir.path(), port);
    let host = Host::new(2);
    let out = time_only(
        &host,
        0,
        &format!("127.0.0.1:{port}"),
        &["--ntp-wait-secs", "20"],
    );
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert_eq!(host.journal()["time"]["stepped"], false);
    assert!(host.actions().is_empty());
}

#[test]
fn a_silent_ntp_server_makes_the_phase_wait_then_fail_clearly() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let host = Host::new(3);
    let start = std::time::Instant::now();
    let out = time_only(&host, 0, &addr, &["--ntp-wait-secs", "3"]);
    let waited = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(waited >= std::time::Duration::from_secs(3), "{waited:?}");
    let err = stderr(&out);
    let want = format!(
        "launcher-firstboot: firstboot phase `time` failed: no usable answer from the ntp server {addr} in "
    );
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains(&format!(
            "check that the seed is running and that udp port {}",
            silent.local_addr().unwrap().port()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("tried: sntp against {addr}")),
        "{err}"
    );
    assert_eq!(
        host.done_phases(),
        vec!["identify"],
        "time must not be journaled"
    );
}
