//! The summary's etcd check: `etcdctl member list` and `endpoint health` against the masters,
//! run inside the lab's namespace with a client certificate from the cluster's etcd CA.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::Deserialize;

/// The client certificate's files in `dir`.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientFiles {
    pub fn in_dir(dir: &Path) -> ClientFiles {
        ClientFiles {
            ca: dir.join("etcd-ca.crt"),
            cert: dir.join("client.crt"),
            key: dir.join("client.key"),
        }
    }
}

/// Issues a client certificate from the cluster's etcd CA, read from the seed's state before the
/// seed starts (the seed keeps its store open while it runs), and writes it under `dir`.
pub fn write_client(seed_dir: &Path, cluster_file: &Path, dir: &Path) -> anyhow::Result<()> {
    let spec = registry_seed::serve::load_spec(cluster_file)?;
    let seed = registry_seed::seed::Seed::open(spec, seed_dir)?;
    let issued = seed
        .cas
        .etcd_ca
        .issue(
            &registry_seed::membership::seed_client_profile(),
            cluster::pki::SubjectKey::Fresh(seed.cas.key_algorithm()),
            time::OffsetDateTime::now_utc(),
        )
        .context("signing the lab's etcd client certificate")?;
    let key = issued
        .key
        .context("the etcd client certificate came without its key")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = ClientFiles::in_dir(dir);
    for (path, text) in [
        (&files.ca, seed.cas.etcd_ca.cert_pem()),
        (&files.cert, issued.cert_pem.as_str()),
        (&files.key, key.pem()),
    ] {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One member as `etcdctl member list -w json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MemberLine {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "clientURLs")]
    pub client_urls: Vec<String>,
    #[serde(default, rename = "isLearner")]
    pub is_learner: bool,
}

#[derive(Debug, Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<MemberLine>,
}

/// One endpoint as `etcdctl endpoint health -w json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Health {
    pub endpoint: String,
    pub health: bool,
    #[serde(default)]
    pub error: Option<String>,
}

pub fn parse_members(json: &str) -> anyhow::Result<Vec<MemberLine>> {
    Ok(serde_json::from_str::<MemberList>(json)
        .context("reading etcdctl's member list")?
        .members)
}

pub fn parse_health(json: &str) -> anyhow::Result<Vec<Health>> {
    serde_json::from_str(json).context("reading etcdctl's endpoint health")
}

/// What the summary says about etcd, and whether it is what the lab asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdReport {
    pub members: Vec<MemberLine>,
    pub health: Vec<Health>,
}

impl EtcdReport {
    /// Problems, if any: wrong member count, learners left, unhealthy endpoints.
    pub fn problems(&self, masters: usize) -> Vec<String> {
        let mut out = Vec::new();
        if self.members.len() != masters {
            out.push(format!(
                "etcd has {} members, the lab has {masters} masters",
                self.members.len()
            ));
        }
        for m in self.members.iter().filter(|m| m.is_learner) {
            out.push(format!("etcd member {} is still a learner", m.name));
        }
        for h in self.health.iter().filter(|h| !h.health) {
            out.push(format!(
                "etcd endpoint {} is unhealthy: {}",
                h.endpoint,
                h.error.as_deref().unwrap_or("no reason given")
            ));
        }
        if self.health.len() < masters {
            out.push(format!(
                "only {} of {masters} etcd endpoints answered",
                self.health.len()
            ));
        }
        out
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let health = self
                .health
                .iter()
                .find(|h| m.client_urls.contains(&h.endpoint))
                .map_or(
                    "no answer",
                    |h| if h.health { "healthy" } else { "unhealthy" },
                );
            let vote = if m.is_learner { "learner" } else { "voting" };
            out.push_str(&format!(
                "  {:<12} {:<8} {:<10} {}\n",
                m.name,
                vote,
                health,
                m.client_urls.join(",")
            ));
        }
        out
    }
}

fn etcdctl(
    namespace: &str,
    endpoints: &[String],
    files: &ClientFiles,
    args: &[&str],
) -> anyhow::Result<String> {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace, "etcdctl"])
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg(format!("--cacert={}", files.ca.display()))
        .arg(format!("--cert={}", files.cert.display()))
        .arg(format!("--key={}", files.key.display()))
        .args(["--dial-timeout=5s", "--command-timeout=10s", "-w", "json"])
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .context("running etcdctl in the lab's namespace")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    // `endpoint health` exits non-zero when one endpoint is unhealthy but still prints them all.
    if !output.status.success() && stdout.trim().is_empty() {
        anyhow::bail!(
            "etcdctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(stdout)
}

/// Reads the member list and every master's health.
pub fn check(
    namespace: &str,
    endpoints: &[String],
    client_dir: &Path,
) -> anyhow::Result<EtcdReport> {
    let files = ClientFiles::in_dir(client_dir);
    let members = parse_members(&etcdctl(namespace, endpoints, &files, &["member", "list"])?)?;
    let health = parse_health(&etcdctl(
        namespace,
        endpoints,
        &files,
        &["endpoint", "health"],
    )?)?;
    Ok(EtcdReport { members, health })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBERS: &str = r#"{"header":{"cluster_id":1,"member_id":2,"raft_term":3},"members":[
        {"ID":11,"name":"lab-m1","peerURLs":["https://10.77.0.101:2380"],"clientURLs":["https://10.77.0.101:2379"]},
        {"ID":12,"name":"lab-m2","peerURLs":["https://10.77.0.102:2380"],"clientURLs":["https://10.77.0.102:2379"],"isLearner":true}]}"#;
    const HEALTH: &str = r#"[{"endpoint":"https://10.77.0.101:2379","health":true,"took":"2ms"},
        {"endpoint":"https://10.77.0.102:2379","health":false,"took":"5s","error":"context deadline exceeded"}]"#;

    #[test]
    fn etcdctl_json_is_read_and_every_problem_named() {
        let report = EtcdReport {
            members: parse_members(MEMBERS).unwrap(),
            health: parse_health(HEALTH).unwrap(),
        };
        assert_eq!(report.members[0].name, "lab-m1");
        assert!(!report.members[0].is_learner && report.members[1].is_learner);
        assert_eq!(
            report.problems(3),
            [
                "etcd has 2 members, the lab has 3 masters",
                "etcd member lab-m2 is still a learner",
                "etcd endpoint https://10.77.0.102:2379 is unhealthy: context deadline exceeded",
                "only 2 of 3 etcd endpoints answered",
            ]
        );
        let text = report.render();
        assert!(text.contains("lab-m1       voting   healthy"), "{text}");
        assert!(text.contains("lab-m2       learner  unhealthy"), "{text}");
    }

    #[test]
    fn a_healthy_cluster_has_no_problems() {
        let members = r#"{"members":[{"name":"a","clientURLs":["https://x:2379"]}]}"#;
        let health = r#"[{"endpoint":"https://x:2379","health":true}]"#;
        let report = EtcdReport {
            members: parse_members(members).unwrap(),
            health: parse_health(health).unwrap(),
        };
        assert!(report.problems(1).is_empty());
        assert!(parse_members("not json").is_err());
    }
}
