//! Whether the lab is up, decided from one look at it: the hosts' phases as the seed reports
//! them, what etcd said, and which VMs are powered on since when.

use cluster::api::Role;
use registry_seed::views::StatusView;

use crate::etcd::EtcdReport;
use crate::plan::Vm;
use crate::watch;

/// Where the lab stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// A powered-on host is not done since its latest power-on, or the seed did not answer.
    Hosts,
    /// Every host is done; etcd is not yet as the lab wants it, for these reasons.
    Etcd(Vec<String>),
    /// Every host is done and etcd has every powered-on master as a healthy voting member.
    Ready,
}

/// What etcd answered: its report, or why there is none.
pub type EtcdAnswer = Result<EtcdReport, String>;

/// Whether every VM of `powered` (with when it was powered on, Unix ms) reported `done` after
/// its latest power-on: a `done` from before a power cut does not count.
pub fn hosts_done(status: Option<&StatusView>, powered: &[(Vm, i64)]) -> bool {
    status.is_some_and(|s| {
        powered.iter().all(|(vm, powered_on_ms)| {
            watch::host_for(s, vm).is_some_and(|h| {
                watch::is_done(h) && h.phase_since_ms.is_some_and(|t| t >= *powered_on_ms)
            })
        })
    })
}

/// The lab's readiness; `etcd` is `None` when etcd was not asked (it is asked only once every
/// host is done, as a master that joined later is done before its learner is promoted).
pub fn readiness(
    status: Option<&StatusView>,
    powered: &[(Vm, i64)],
    etcd: Option<&EtcdAnswer>,
) -> Readiness {
    if !hosts_done(status, powered) {
        return Readiness::Hosts;
    }
    let masters = powered
        .iter()
        .filter(|(vm, _)| vm.role == Role::Master)
        .count();
    let problems = match etcd {
        None => vec!["etcd was not asked yet".to_string()],
        Some(Err(why)) => vec![format!("reading etcd's members: {why}")],
        Some(Ok(report)) => report.problems(masters),
    };
    if problems.is_empty() {
        Readiness::Ready
    } else {
        Readiness::Etcd(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::{Health, MemberLine};
    use crate::plan::LabPlan;
    use cluster::api::{Phase, PhaseState};
    use registry_seed::store::records::HostStatus;
    use registry_seed::views::HostView;

    /// m1, m2 (masters) and w1.
    fn vms() -> Vec<Vm> {
        LabPlan::new(crate::plan::tests::options(2, 1)).unwrap().vms
    }

    fn host(vm: &Vm, phase: Phase, state: PhaseState, since_ms: i64) -> HostView {
        HostView {
            id: format!("h-{}", vm.number),
            status: HostStatus::Enrolled,
            hostname: Some(format!("lab-{}", vm.label)),
            role: Some(vm.role),
            mac: Some(vm.mac.to_uppercase()),
            ip: Some(vm.ip.to_string()),
            phase: Some(phase),
            state: Some(state),
            phase_since_ms: Some(since_ms),
            message: String::new(),
            last_seen_ms: since_ms,
            key: None,
        }
    }

    fn status(hosts: Vec<HostView>) -> StatusView {
        StatusView {
            cluster: "lab".into(),
            now_ms: 100_000,
            hosts,
            missing_images: vec![],
            refused: vec![],
        }
    }

    fn etcd(members: &[(&str, bool)], healthy: &[bool]) -> EtcdAnswer {
        Ok(EtcdReport {
            members: members
                .iter()
                .map(|(name, learner)| MemberLine {
                    name: name.to_string(),
                    client_urls: Vec::new(),
                    is_learner: *learner,
                })
                .collect(),
            health: healthy
                .iter()
                .enumerate()
                .map(|(i, ok)| Health {
                    endpoint: format!("https://10.77.0.10{}:2379", i + 1),
                    health: *ok,
                    error: (!ok).then(|| "context deadline exceeded".into()),
                })
                .collect(),
        })
    }

    /// A name, the seed's status, the VMs powered on (and when), etcd's answer, the readiness.
    type Case<'a> = (
        &'a str,
        Option<&'a StatusView>,
        Vec<(Vm, i64)>,
        Option<&'a EtcdAnswer>,
        Readiness,
    );

    #[test]
    fn the_lab_is_ready_only_with_every_host_done_since_power_on_and_etcd_whole() {
        let vms = vms();
        let (m1, m2, w1) = (&vms[0], &vms[1], &vms[2]);
        let done = |vm: &Vm, since| host(vm, Phase::Done, PhaseState::Succeeded, since);
        let all_done = status(vec![done(m1, 50_000), done(m2, 50_000), done(w1, 50_000)]);
        let powered_at = |ms: i64| vec![(m1.clone(), ms), (m2.clone(), ms), (w1.clone(), ms)];
        let two_voting = etcd(&[("lab-m1", false), ("lab-m2", false)], &[true, true]);
        let not_done_w1 = status(vec![
            done(m1, 50_000),
            done(m2, 50_000),
            host(w1, Phase::Done, PhaseState::Started, 50_000),
        ]);
        let install_w1 = status(vec![
            done(m1, 50_000),
            done(m2, 50_000),
            host(w1, Phase::Install, PhaseState::Succeeded, 50_000),
        ]);
        let no_w1 = status(vec![done(m1, 50_000), done(m2, 50_000)]);
        let learner = etcd(&[("lab-m1", false), ("lab-m2", true)], &[true, true]);
        let sick = etcd(&[("lab-m1", false), ("lab-m2", false)], &[true, false]);
        let unreadable: EtcdAnswer = Err("etcdctl: connection refused".into());
        let not_asked = || Readiness::Etcd(vec!["etcd was not asked yet".into()]);
        let lacks = |why: &str| Readiness::Etcd(vec![why.into()]);
        let cases: Vec<Case> = vec![
            (
                "no answer from the seed",
                None,
                powered_at(0),
                Some(&two_voting),
                Readiness::Hosts,
            ),
            (
                "a host still in done",
                Some(&not_done_w1),
                powered_at(0),
                Some(&two_voting),
                Readiness::Hosts,
            ),
            (
                "a host in an earlier phase",
                Some(&install_w1),
                powered_at(0),
                Some(&two_voting),
                Readiness::Hosts,
            ),
            (
                "a host not enrolled",
                Some(&no_w1),
                powered_at(0),
                Some(&two_voting),
                Readiness::Hosts,
            ),
            (
                "done before the latest power-on",
                Some(&all_done),
                powered_at(60_000),
                Some(&two_voting),
                Readiness::Hosts,
            ),
            (
                "etcd not asked",
                Some(&all_done),
                powered_at(50_000),
                None,
                not_asked(),
            ),
            (
                "etcd unreadable",
                Some(&all_done),
                powered_at(0),
                Some(&unreadable),
                lacks("reading etcd's members: etcdctl: connection refused"),
            ),
            (
                "a learner left",
                Some(&all_done),
                powered_at(0),
                Some(&learner),
                lacks("etcd member lab-m2 is still a learner"),
            ),
            (
                "an unhealthy member",
                Some(&all_done),
                powered_at(0),
                Some(&sick),
                lacks(
                    "etcd endpoint https://10.77.0.102:2379 is unhealthy: context deadline exceeded",
                ),
            ),
            (
                "etcd's members differ from the masters powered on",
                Some(&no_w1),
                vec![(m1.clone(), 0)],
                Some(&two_voting),
                lacks("etcd has 2 members, the lab has 1 masters"),
            ),
            (
                "ready",
                Some(&all_done),
                powered_at(50_000),
                Some(&two_voting),
                Readiness::Ready,
            ),
        ];
        for (name, status, powered, etcd, want) in cases {
            assert_eq!(readiness(status, &powered, etcd), want, "{name}");
        }
    }
}
