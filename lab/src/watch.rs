//! What the lab shows while VMs come up: one row per VM from the seed's status (or, before the
//! host enrolled, from its console log), and what a console log says about the clock.

use cluster::api::{Phase, PhaseState};
use registry_seed::views::{HostView, StatusView, duration_words};

use crate::plan::{LabPlan, Vm};

/// How far a VM got before it enrolled, read from its console log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Boot {
    PoweredOn,
    Kernel,
    Systemd,
    Firstboot,
}

impl Boot {
    /// The stage's word; `firmware` names what a VM runs first once powered on: `pxe`, `uefi`
    /// or `qemu` (see [`LabPlan::firmware`]).
    pub fn word(self, firmware: &'static str) -> &'static str {
        match self {
            Boot::PoweredOn => firmware,
            Boot::Kernel => "kernel",
            Boot::Systemd => "systemd",
            Boot::Firstboot => "firstboot",
        }
    }
}

/// The furthest boot stage a console log shows.
pub fn boot_stage(console: &str) -> Boot {
    if console.contains("launcher-firstboot") {
        Boot::Firstboot
    } else if console.contains("systemd[1]") || console.contains("Welcome to") {
        Boot::Systemd
    } else if console.contains("Linux version") {
        Boot::Kernel
    } else {
        Boot::PoweredOn
    }
}

/// Removes terminal colour sequences (`ESC [ … m`) from console text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The host's clock against the seed's NTP server, as firstboot logged it on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReport {
    /// Offset found first (the wrong clock the VM powered on with), ms; positive: behind.
    pub before_ms: i64,
    /// Offset once firstboot accepted the clock, ms.
    pub after_ms: Option<i64>,
}

fn offset_of(line: &str) -> Option<i64> {
    let rest = line.split("offset_ms=").nth(1)?;
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

/// Reads firstboot's time lines (`stepping the clock … offset_ms=N`, `clock agrees … offset_ms=N`).
pub fn clock_report(console: &str) -> Option<ClockReport> {
    let text = strip_ansi(console);
    let mut before = None;
    let mut after = None;
    for line in text.lines() {
        let stepping = line.contains("stepping the clock");
        let agrees = line.contains("clock agrees");
        if !(stepping || agrees) {
            continue;
        }
        let Some(offset) = offset_of(line) else {
            continue;
        };
        before.get_or_insert(offset);
        if agrees {
            after = Some(offset);
        }
    }
    Some(ClockReport {
        before_ms: before?,
        after_ms: after,
    })
}

/// One row of the progress table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub label: String,
    pub role: String,
    pub hostname: String,
    pub phase: String,
    pub state: String,
    pub in_phase: String,
    pub message: String,
}

pub fn host_for<'a>(status: &'a StatusView, vm: &Vm) -> Option<&'a HostView> {
    status.hosts.iter().find(|h| {
        h.mac
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(&vm.mac))
    })
}

fn state_word(state: Option<PhaseState>) -> &'static str {
    match state {
        Some(PhaseState::Started) => "started",
        Some(PhaseState::Succeeded) => "succeeded",
        Some(PhaseState::Failed) => "failed",
        None => "-",
    }
}

/// A row for `vm`: the seed's view once it enrolled, else its boot stage and time since power-on.
pub fn row(
    vm: &Vm,
    firmware: &'static str,
    status: Option<&StatusView>,
    stage: Boot,
    since_power_on_ms: i64,
) -> Row {
    let host = status.and_then(|s| host_for(s, vm).map(|h| (s, h)));
    let base = Row {
        label: vm.label.clone(),
        role: vm.role.to_string(),
        hostname: "-".into(),
        phase: stage.word(firmware).into(),
        state: "-".into(),
        in_phase: duration_words(since_power_on_ms),
        message: String::new(),
    };
    let Some((status, host)) = host else {
        // refused for its image's release: the seed recorded nothing, but says why
        let refused = status.and_then(|s| {
            s.refused
                .iter()
                .find(|r| r.macs.split(',').any(|m| m.eq_ignore_ascii_case(&vm.mac)))
        });
        return match refused {
            Some(r) => Row {
                phase: "enroll".into(),
                state: "refused".into(),
                message: r.message.lines().next().unwrap_or("").into(),
                ..base
            },
            None => base,
        };
    };
    Row {
        hostname: host.hostname.clone().unwrap_or_else(|| "-".into()),
        phase: host.phase.map_or("enroll", |p| p.as_str()).into(),
        state: state_word(host.state).into(),
        in_phase: host.phase_since_ms.map_or(base.in_phase.clone(), |since| {
            duration_words(status.now_ms - since)
        }),
        message: host.message.lines().next().unwrap_or("").into(),
        ..base
    }
}

/// Whether the host reached the last phase and finished it.
pub fn is_done(host: &HostView) -> bool {
    host.phase == Some(Phase::Done) && host.state == Some(PhaseState::Succeeded)
}

/// The rows as an aligned table with a header.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "VM", "ROLE", "HOSTNAME", "PHASE", "STATE", "IN PHASE", "MESSAGE",
    ];
    let cells: Vec<[&str; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.label.as_str(),
                &r.role,
                &r.hostname,
                &r.phase,
                &r.state,
                &r.in_phase,
                &r.message,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[&str; 7]| {
        let text: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", text.join("  ").trim_end())
    };
    let mut out = line(&header);
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// The line printed (when not on a terminal) each time a VM's phase or state changes.
pub fn change_line(row: &Row) -> String {
    let mut line = format!(
        "{} ({} {}): {} {}",
        row.label, row.role, row.hostname, row.phase, row.state
    );
    if !row.message.is_empty() {
        line.push_str(&format!(": {}", row.message));
    }
    line
}

/// Every row, in the plan's order.
pub fn rows(plan: &LabPlan, status: Option<&StatusView>, stages: &[(Boot, i64)]) -> Vec<Row> {
    plan.vms
        .iter()
        .zip(stages)
        .map(|(vm, &(stage, ms))| row(vm, plan.firmware(vm), status, stage, ms))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::api::Role;
    use registry_seed::store::records::HostStatus;

    fn plan() -> LabPlan {
        LabPlan::new(crate::plan::tests::options(1, 1)).unwrap()
    }

    fn host(mac: &str, phase: Phase, state: PhaseState) -> HostView {
        HostView {
            id: "h-0001".into(),
            status: HostStatus::Enrolled,
            hostname: Some("lab-m1".into()),
            role: Some(Role::Master),
            mac: Some(mac.into()),
            ip: Some("10.77.0.101".into()),
            phase: Some(phase),
            state: Some(state),
            phase_since_ms: Some(10_000),
            message: "waiting for 1 more member\nsecond line".into(),
            last_seen_ms: 0,
            key: None,
        }
    }

    #[test]
    fn console_logs_tell_how_far_a_vm_booted() {
        assert_eq!(boot_stage(""), Boot::PoweredOn);
        let systemd_own = "Linux version\nsystemd[1]: Starting systemd-firstboot.service";
        assert_eq!(boot_stage(systemd_own), Boot::Systemd);
        assert_eq!(
            boot_stage("[    0.000000] Linux version 6.1.0"),
            Boot::Kernel
        );
        assert_eq!(
            boot_stage("Linux version\nWelcome to Debian GNU/Linux 12"),
            Boot::Systemd
        );
        assert_eq!(
            boot_stage("Linux version\n[  OK  ] Started launcher-firstboot.service"),
            Boot::Firstboot
        );
    }

    #[test]
    fn clock_offsets_are_read_from_firstboot_lines_with_or_without_colours() {
        let console = "\u{1b}[2m2001-01-01T00:00:05Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
            stepping the clock to 10.77.0.1:123's time \u{1b}[3moffset_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m813456789012\n\
            noise offset_ms=5\n\
            2026-11-26T15:00:00Z INFO clock agrees with 10.77.0.1:123 offset_ms=-3 stepped=true\n";
        assert_eq!(
            clock_report(console),
            Some(ClockReport {
                before_ms: 813_456_789_012,
                after_ms: Some(-3)
            })
        );
        assert_eq!(clock_report("[ OK ] Started something\n"), None);
        let only_step = "stepping the clock to s's time offset_ms=-7000\n";
        assert_eq!(
            clock_report(only_step),
            Some(ClockReport {
                before_ms: -7000,
                after_ms: None
            })
        );
    }

    #[test]
    fn rows_come_from_the_seed_once_enrolled_and_from_the_console_before() {
        let plan = plan();
        let status = StatusView {
            cluster: "lab".into(),
            now_ms: 75_000,
            hosts: vec![host("52:54:00:77:00:01", Phase::Etcd, PhaseState::Started)],
            missing_images: vec![],
            refused: vec![],
        };
        let stages = [(Boot::Firstboot, 1_000), (Boot::Kernel, 42_000)];
        let refused = StatusView {
            refused: vec![registry_seed::refusals::RefusedView {
                macs: "52:54:00:77:00:02".into(),
                source: None,
                message: "h-0002 (worker lab-w1): too new\nmore".into(),
                first_ms: 0,
                last_ms: 0,
                times: 1,
            }],
            ..status.clone()
        };
        let row = &rows(&plan, Some(&refused), &stages)[1];
        assert_eq!(
            change_line(row),
            "w1 (worker -): enroll refused: h-0002 (worker lab-w1): too new"
        );
        let rows = rows(&plan, Some(&status), &stages);
        assert_eq!(rows[0].hostname, "lab-m1");
        assert_eq!(rows[0].phase, "etcd");
        assert_eq!(rows[0].in_phase, "1m05s");
        assert_eq!(rows[0].message, "waiting for 1 more member");
        assert_eq!(
            (
                rows[1].role.as_str(),
                rows[1].phase.as_str(),
                rows[1].in_phase.as_str()
            ),
            ("worker", "kernel", "42s")
        );
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("VM  ROLE    HOSTNAME"), "{table}");
        assert!(
            lines[1].starts_with("m1  master  lab-m1    etcd"),
            "{table}"
        );
        assert_eq!(
            change_line(&rows[0]),
            "m1 (master lab-m1): etcd started: waiting for 1 more member"
        );
    }

    #[test]
    fn only_a_finished_done_phase_is_done() {
        let mac = "52:54:00:77:00:01";
        assert!(is_done(&host(mac, Phase::Done, PhaseState::Succeeded)));
        assert!(!is_done(&host(mac, Phase::Done, PhaseState::Started)));
        assert!(!is_done(&host(mac, Phase::Install, PhaseState::Succeeded)));
    }
}
