//! The cluster files tests start from, written once: a builder over the demo cluster.
//!
//! Every crate's tests describe the cluster they need as changes to [`ClusterFile::demo`]
//! instead of spelling out the whole TOML again.

use std::fmt::Write;

/// One `[[hosts]]` entry.
#[derive(Debug, Clone)]
pub struct Host {
    pub mac: String,
    pub ip: Option<String>,
    pub role: Option<&'static str>,
    /// A hostname of the operator's choosing instead of the generated one.
    pub hostname: Option<String>,
}

/// The `n`th lab machine: MAC `52:54:00:00:00:NN`, address `10.77.0.(10+n)`.
pub fn host(n: u8, role: Option<&'static str>) -> Host {
    Host {
        mac: format!("52:54:00:00:00:{n:02x}"),
        ip: Some(format!("10.77.0.{}", 10 + u32::from(n))),
        role,
        hostname: None,
    }
}

/// The demo's three masters as the planner names and places them: `demo-mN` at `10.77.0.(10+N)`.
pub fn demo_masters() -> Vec<(String, std::net::IpAddr)> {
    (1..=3u8)
        .map(|n| (format!("demo-m{n}"), [10, 77, 0, 10 + n].into()))
        .collect()
}

/// A cluster file as the tests need it; [`ClusterFile::render`] gives the TOML.
#[derive(Debug, Clone)]
pub struct ClusterFile {
    pub name: String,
    pub kubernetes_version: String,
    pub control_plane_endpoint: String,
    pub service_subnet: String,
    pub dns_domain: String,
    pub masters: u32,
    pub schedulable_masters: bool,
    pub key_algorithm: String,
    /// `host:port` of the seed: its HTTPS API and its registry.
    pub seed: String,
    pub hosts: Vec<Host>,
    /// Lines appended to `[cluster]` as written (`"token_ttl = \"1h\""`).
    pub extra_cluster: Vec<String>,
}

impl ClusterFile {
    /// The demo: v1.33, endpoint 10.77.0.10:6443, the default service subnet and DNS domain,
    /// 3 masters, the seed at 10.77.0.1:8443, no hosts.
    pub fn demo() -> Self {
        Self {
            name: "demo".into(),
            kubernetes_version: "v1.33.4".into(),
            control_plane_endpoint: "10.77.0.10:6443".into(),
            service_subnet: "10.96.0.0/12".into(),
            dns_domain: "cluster.local".into(),
            masters: 3,
            schedulable_masters: false,
            key_algorithm: "ecdsa-p256".into(),
            seed: "10.77.0.1:8443".into(),
            hosts: Vec::new(),
            extra_cluster: Vec::new(),
        }
    }

    /// One inventory master (…:01, 10.77.0.11, also the endpoint) and one inventory worker
    /// (…:04, 10.77.0.14), the seed on `seed`.
    pub fn one_master(seed: &str) -> Self {
        Self {
            control_plane_endpoint: "10.77.0.11:6443".into(),
            masters: 1,
            seed: seed.into(),
            hosts: vec![host(1, Some("master")), host(4, Some("worker"))],
            ..Self::demo()
        }
    }

    pub fn render(&self) -> String {
        let mut t = String::new();
        let _ = write!(
            t,
            "[cluster]\nname = \"{}\"\nkubernetes_version = \"{}\"\n\
             control_plane_endpoint = \"{}\"\npod_subnet = \"10.244.0.0/16\"\n\
             service_subnet = \"{}\"\ndns_domain = \"{}\"\n\
             masters = {}\nschedulable_masters = {}\nkey_algorithm = \"{}\"\n",
            self.name,
            self.kubernetes_version,
            self.control_plane_endpoint,
            self.service_subnet,
            self.dns_domain,
            self.masters,
            self.schedulable_masters,
            self.key_algorithm,
        );
        for line in &self.extra_cluster {
            let _ = writeln!(t, "{line}");
        }
        let _ = write!(
            t,
            "\n[seed]\nurl = \"https://{0}\"\nregistry = \"{0}\"\n",
            self.seed
        );
        for h in &self.hosts {
            let _ = write!(t, "\n[[hosts]]\nmac = \"{}\"\n", h.mac);
            if let Some(ip) = &h.ip {
                let _ = writeln!(t, "ip = \"{ip}\"");
            }
            if let Some(role) = h.role {
                let _ = writeln!(t, "role = \"{role}\"");
            }
            if let Some(hostname) = &h.hostname {
                let _ = writeln!(t, "hostname = \"{hostname}\"");
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_master_renders_both_hosts() {
        let text = ClusterFile::one_master("127.0.0.1:8443").render();
        assert!(text.contains("url = \"https://127.0.0.1:8443\"\nregistry = \"127.0.0.1:8443\""));
        assert!(text.contains(
            "[[hosts]]\nmac = \"52:54:00:00:00:01\"\nip = \"10.77.0.11\"\nrole = \"master\""
        ));
        assert!(text.contains(
            "[[hosts]]\nmac = \"52:54:00:00:00:04\"\nip = \"10.77.0.14\"\nrole = \"worker\""
        ));
        assert!(text.contains("masters = 1\n"));
    }
}
