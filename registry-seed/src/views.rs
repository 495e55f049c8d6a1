//! What the admin API shows of hosts and jobs, the etcd client credential it hands out, and the
//! status table the CLI prints.

use cluster::api::{Phase, PhaseState, Role};
use cluster::text::printable;
use serde::{Deserialize, Serialize};

use crate::store::records::{HostRecord, HostStatus, JobRecord};

/// One host as `launcher-seed status` and `hosts ls` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    pub id: String,
    pub status: HostStatus,
    pub hostname: Option<String>,
    pub role: Option<Role>,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub phase: Option<Phase>,
    pub state: Option<PhaseState>,
    /// The seed's clock when the current phase was first reported.
    pub phase_since_ms: Option<i64>,
    pub message: String,
    pub last_seen_ms: i64,
    /// The identity key the host is bound to (`sha256:…`); none before its first enrollment
    /// and after `hosts reset`.
    #[serde(default)]
    pub key: Option<String>,
}

/// `GET /v1/admin/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub cluster: String,
    /// The seed's clock, for "time in phase".
    pub now_ms: i64,
    pub hosts: Vec<HostView>,
    /// Images the cluster pulls that the seed's registry lacks: while any is, hosts wait to
    /// enroll.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_images: Vec<String>,
    /// Hosts refused for their image's Kubernetes release: nothing of them is recorded, and each
    /// keeps asking.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<crate::refusals::RefusedView>,
}

/// The answer to an admin request that starts a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAccepted {
    pub job: String,
}

/// `POST /v1/admin/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub ttl_secs: u64,
    #[serde(default)]
    pub role: Option<Role>,
}

/// The answer to `POST /v1/admin/tokens`: the only place the token's secret ever appears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub id: String,
    pub token: String,
    pub expires_ms: i64,
}

/// The answer to `POST /v1/admin/hosts/{id}/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResetView {
    pub host: String,
    /// The key the host was bound to (`sha256:…`), if it was.
    pub unbound_key: Option<String>,
}

/// `POST /v1/admin/etcd-client`: both fields may be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdClientRequest {
    /// How long the certificate is valid; a day when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Who will hold the credential, named in its subject: `admin` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// `POST /v1/admin/kubeconfig`: who the credential is for, and how long it lasts (a day when
/// unset, at most seven).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigRequest {
    pub user: String,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// The certificate's O, the group Kubernetes sees; the cluster administrators' when unset.
    #[serde(default)]
    pub group: Option<String>,
}

/// An operator's kubeconfig made for one answer, aimed at the control-plane endpoint: the seed
/// keeps neither its key nor a record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeconfigView {
    pub kubeconfig: String,
    /// The user (certificate CN) and group (O) Kubernetes sees.
    pub user: String,
    pub group: String,
    pub server: String,
    pub not_after_ms: i64,
}

impl std::fmt::Debug for KubeconfigView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeconfigView")
            .field("user", &self.user)
            .field("group", &self.group)
            .field("server", &self.server)
            .field("not_after_ms", &self.not_after_ms)
            .finish_non_exhaustive()
    }
}

/// An etcd client credential made for one answer: the seed keeps neither the key nor a record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdClientView {
    /// The cluster's etcd CA certificate (PEM), which etcd's server certificates chain to.
    pub ca_pem: String,
    /// A client certificate (PEM) signed by that CA, for client authentication only.
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    pub common_name: String,
    /// When the certificate stops being valid (Unix milliseconds).
    pub not_after_ms: i64,
}

impl std::fmt::Debug for EtcdClientView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClientView")
            .field("common_name", &self.common_name)
            .field("not_after_ms", &self.not_after_ms)
            .finish_non_exhaustive()
    }
}

pub fn host_view(record: &HostRecord) -> HostView {
    let a = record.assignment.as_ref();
    let p = record.progress.as_ref();
    HostView {
        id: record.id.clone(),
        status: record.status,
        hostname: a.map(|a| a.hostname.clone()),
        role: a.map(|a| a.role),
        mac: record
            .identity
            .boot_mac
            .clone()
            .or_else(|| record.identity.macs.first().cloned()),
        ip: a.and_then(|a| a.ip.clone()),
        phase: p.map(|p| p.phase),
        state: p.map(|p| p.state),
        phase_since_ms: p.map(|p| p.phase_since_ms),
        message: p.map(|p| p.message.clone()).unwrap_or_default(),
        last_seen_ms: record.last_seen_ms,
        key: record.key.map(|k| k.to_string()),
    }
}

fn status_word(status: HostStatus) -> &'static str {
    match status {
        HostStatus::Pending => "pending",
        HostStatus::Approved => "approved",
        HostStatus::Enrolled => "enrolled",
    }
}

fn state_word(state: PhaseState) -> &'static str {
    match state {
        PhaseState::Started => "started",
        PhaseState::Succeeded => "succeeded",
        PhaseState::Failed => "failed",
    }
}

/// `1h02m`, `3m05s`, `42s`.
pub fn duration_words(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// Columns padded to their widest cell, two spaces apart, the header first.
fn aligned<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `GET /v1/admin/jobs`: jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobList {
    pub now_ms: i64,
    pub jobs: Vec<JobRecord>,
}

/// `GET /v1/admin/certs`: every leaf certificate of every host's last plan, soonest to
/// expire first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertList {
    pub now_ms: i64,
    pub certs: Vec<CertRow>,
}

/// One certificate of one host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertRow {
    pub host: String,
    pub hostname: String,
    #[serde(flatten)]
    pub cert: cluster::certs::LeafCert,
}

/// The certificate table: host, hostname, where it is kept, its subject, issuer, expiry (UTC)
/// and how long is left (in days when two or more).
pub fn render_certs(list: &CertList) -> String {
    let rows: Vec<[String; 7]> = list
        .certs
        .iter()
        .map(|r| {
            let left_ms = r.cert.not_after.saturating_mul(1000) - list.now_ms;
            [
                r.host.clone(),
                printable(&r.hostname),
                printable(&r.cert.path),
                printable(&r.cert.subject),
                printable(&r.cert.issuer),
                utc_date(r.cert.not_after),
                if left_ms >= 2 * DAY_MS {
                    format!("{}d", left_ms / DAY_MS)
                } else if left_ms > 0 {
                    duration_words(left_ms)
                } else {
                    "EXPIRED".to_string()
                },
            ]
        })
        .collect();
    aligned(
        [
            "HOST", "HOSTNAME", "FILE", "SUBJECT", "ISSUER", "EXPIRES", "LEFT",
        ],
        &rows,
    )
}

const DAY_MS: i64 = 86_400_000;

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix seconds `secs`.
fn utc_date(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{secs}"),
    }
}

/// `GET /v1/admin/hosts/{id}/commands`: the host's commands, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandList {
    pub now_ms: i64,
    pub commands: Vec<crate::commands::CommandRecord>,
}

/// The command table: id, kind, state, age, how long the host took, what it said.
pub fn render_commands(list: &CommandList) -> String {
    let rows: Vec<[String; 6]> = list
        .commands
        .iter()
        .map(|c| {
            [
                c.id.clone(),
                c.kind.as_str().to_string(),
                c.state.as_str().to_string(),
                duration_words(list.now_ms - c.created_ms),
                c.ended_ms
                    .map_or("-".to_string(), |e| duration_words(e - c.created_ms)),
                printable(c.message.lines().next().unwrap_or("")),
            ]
        })
        .collect();
    aligned(
        ["COMMAND", "KIND", "STATE", "AGE", "TOOK", "MESSAGE"],
        &rows,
    )
}

/// The job table: id, kind, state, age, how long it ran (or has been running), its message.
pub fn render_jobs(list: &JobList) -> String {
    let rows: Vec<[String; 6]> = list
        .jobs
        .iter()
        .map(|j| {
            let until = if j.state.ended() {
                j.updated_ms
            } else {
                list.now_ms
            };
            [
                j.id.clone(),
                printable(&j.kind),
                j.state.as_str().to_string(),
                duration_words(list.now_ms - j.created_ms),
                duration_words(until - j.created_ms),
                printable(j.message.lines().next().unwrap_or("")),
            ]
        })
        .collect();
    aligned(["JOB", "KIND", "STATE", "AGE", "TOOK", "MESSAGE"], &rows)
}

/// One job: what it was asked, its state and message, and its steps with when each started,
/// how long it took (or has been running) and what it said.
pub fn render_job(job: &JobRecord, now_ms: i64) -> String {
    let mut out = format!(
        "job {}: {} {}\nstate: {}{}, asked {} ago\n",
        job.id,
        printable(&job.kind),
        printable(&job.request.to_string()),
        job.state.as_str(),
        if job.cancel_requested {
            " (cancel asked: it stops after its current step)"
        } else {
            ""
        },
        duration_words(now_ms - job.created_ms),
    );
    if !job.message.is_empty() {
        out.push_str(&format!("message: {}\n", printable(&job.message)));
    }
    let dash = || "-".to_string();
    let rows: Vec<[String; 5]> = job
        .steps
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.state.as_str().to_string(),
                s.started_ms
                    .map(|t| format!("{} ago", duration_words(now_ms - t)))
                    .unwrap_or_else(dash),
                s.started_ms
                    .map(|t| duration_words(s.ended_ms.unwrap_or(now_ms) - t))
                    .unwrap_or_else(dash),
                printable(s.message.lines().next().unwrap_or("")),
            ]
        })
        .collect();
    out.push_str(&aligned(
        ["STEP", "STATE", "STARTED", "TOOK", "MESSAGE"],
        &rows,
    ));
    out
}

/// The status table: host id, hostname, role, MAC, phase, state, time in phase, message.
pub fn render_table(status: &StatusView) -> String {
    let header = [
        "HOST", "HOSTNAME", "ROLE", "MAC", "PHASE", "STATE", "IN PHASE", "MESSAGE",
    ];
    let rows: Vec<[String; 8]> = status
        .hosts
        .iter()
        .map(|h| {
            let dash = || "-".to_string();
            [
                h.id.clone(),
                h.hostname.clone().unwrap_or_else(dash),
                h.role
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| status_word(h.status).into()),
                h.mac.clone().unwrap_or_else(dash),
                h.phase.map(|p| p.as_str().to_string()).unwrap_or_else(dash),
                h.state
                    .map(|s| state_word(s).to_string())
                    .unwrap_or_else(dash),
                h.phase_since_ms
                    .map(|since| duration_words(status.now_ms - since))
                    .unwrap_or_else(dash),
                printable(h.message.lines().next().unwrap_or("")),
            ]
        })
        .collect();
    let mut out = aligned(header, &rows);
    if !status.missing_images.is_empty() {
        out.push_str(&format!(
            "hosts wait to enroll: the seed's registry lacks {}\n",
            printable(&status.missing_images.join(", "))
        ));
    }
    if !status.refused.is_empty() {
        out.push_str(
            "refused for their image's Kubernetes release (nothing recorded; each keeps asking):\n",
        );
        for r in &status.refused {
            let ago = duration_words(status.now_ms - r.last_ms);
            out.push_str(&format!(
                "  {} from {}, {} time{}, last {ago} ago: {}\n",
                printable(&r.macs),
                printable(r.source.as_deref().unwrap_or("?")),
                r.times,
                if r.times == 1 { "" } else { "s" },
                printable(&r.message)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration_words(42_000), "42s");
        assert_eq!(duration_words(185_000), "3m05s");
        assert_eq!(duration_words(3_720_000), "1h02m");
        assert_eq!(duration_words(-5), "0s");
    }

    #[test]
    fn the_table_has_a_header_and_a_row_per_host() {
        let status = StatusView {
            cluster: "demo".into(),
            now_ms: 70_000,
            hosts: vec![HostView {
                id: "h-0001".into(),
                status: HostStatus::Enrolled,
                hostname: Some("demo-m1".into()),
                role: Some(Role::Master),
                mac: Some("52:54:00:00:00:01".into()),
                ip: None,
                phase: Some(Phase::Etcd),
                state: Some(PhaseState::Started),
                phase_since_ms: Some(5_000),
                message: "waiting for peers\nmore".into(),
                last_seen_ms: 0,
                key: None,
            }],
            missing_images: vec![],
            refused: vec![],
        };
        let table = render_table(&status);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("HOST    HOSTNAME  ROLE"), "{table}");
        assert!(
            lines[1].contains("demo-m1") && lines[1].contains("1m05s"),
            "{table}"
        );
        assert!(lines[1].ends_with("waiting for peers"), "{table}");
        assert_eq!(lines.len(), 2, "{table}");

        let waiting = StatusView {
            missing_images: vec!["10.0.0.1:8443/pause:3.10".into(), "x/a:\u{1b}[1m".into()],
            ..status
        };
        let table = render_table(&waiting);
        assert_eq!(
            table.lines().last(),
            Some(
                "hosts wait to enroll: the seed's registry lacks 10.0.0.1:8443/pause:3.10, x/a:[1m"
            )
        );

        let refused = StatusView {
            refused: vec![crate::refusals::RefusedView {
                macs: "52:54:00:00:00:04".into(),
                source: Some("10.77.0.104".into()),
                message: "h-0004 (worker lab-w1): too new\u{1b}[2J".into(),
                first_ms: 10_000,
                last_ms: 40_000,
                times: 3,
            }],
            ..waiting
        };
        let table = render_table(&refused);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "refused for their image's Kubernetes release (nothing recorded; each keeps asking):",
                "  52:54:00:00:00:04 from 10.77.0.104, 3 times, last 30s ago: h-0004 (worker lab-w1): too new[2J",
            ]
        );
    }
}
