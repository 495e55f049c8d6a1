//! The kubelet's side of the API: it registers its Node (labels, taints, addresses, a Ready
//! condition) and then renews its Lease in `kube-node-lease` and its Ready condition on every
//! tick, as the real kubelet's node-status and lease controllers do.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::kubeclient::{KubeClient, kube_time, micro_time};

/// How long a Lease holds without renewal (the kubelet's `nodeLeaseDurationSeconds` default).
pub const LEASE_SECONDS: u64 = 40;
/// How often the stand-in renews its Lease and Ready condition.
pub const RENEW_SECONDS: u64 = 10;

/// What the Node says about this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub ip: Option<String>,
    /// `--node-labels`, on top of the well-known labels the kubelet always sets.
    pub labels: BTreeMap<String, String>,
    /// `registerWithTaints` / `--register-with-taints`, as Taint objects.
    pub taints: Vec<Value>,
    pub kubelet_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`, `uname -r`, and `containerd://<version>`.
    pub os_image: String,
    pub kernel_version: String,
    pub runtime_version: String,
}

/// The gateway of the default route in `/proc/net/route` (the kernel prints each address as
/// the bytes of a host-order `u32` in hex: `01004D0A` is 10.77.0.1 on x86).
pub fn default_gateway(route_table: &str) -> Option<Ipv4Addr> {
    route_table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway, mask) = (cols.get(1)?, cols.get(2)?, cols.get(7)?);
        if *destination != "00000000" || *mask != "00000000" {
            return None;
        }
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        Some(Ipv4Addr::from(raw.to_le_bytes())).filter(|ip| !ip.is_unspecified())
    })
}

/// The node's address when `--node-ip` is not given, chosen as the kubelet chooses it
/// (`nodestatus.NodeAddress`): the node name when it is an address; else the first address the
/// name resolves to that is not loopback; else the address of the interface the default route
/// (`route_table`, `/proc/net/route`) leaves by, which a UDP socket "connected" to the gateway
/// reports (connecting a UDP socket sends nothing).
pub fn host_ip(name: &str, route_table: &str) -> Option<IpAddr> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(ip);
    }
    let usable = |ip: &IpAddr| !ip.is_loopback() && !ip.is_unspecified();
    if let Some(ip) = (name, 0).to_socket_addrs().ok().and_then(|mut found| {
        found.find_map(|a| Some(a.ip()).filter(|ip| ip.is_ipv4() && usable(ip)))
    }) {
        return Some(ip);
    }
    let gateway = default_gateway(route_table)?;
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((gateway, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(usable)
}

/// `PRETTY_NAME` of an `/etc/os-release`, unquoted.
pub fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".to_owned())
}

/// Parses `--register-with-taints`: `key[=value]:Effect`, comma-separated.
pub fn parse_taints(flag: &str) -> Result<Vec<Value>, String> {
    let mut taints = Vec::new();
    for item in flag.split(',').filter(|s| !s.is_empty()) {
        let (kv, effect) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("invalid taint {item:?}: no effect (key[=value]:Effect)"))?;
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            return Err(format!(
                "invalid taint {item:?}: effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
            ));
        }
        let mut taint = match kv.split_once('=') {
            Some((k, v)) => json!({"key": k, "value": v}),
            None => json!({"key": kv}),
        };
        if taint["key"].as_str().is_some_and(str::is_empty) {
            return Err(format!("invalid taint {item:?}: empty key"));
        }
        taint["effect"] = json!(effect);
        taints.push(taint);
    }
    Ok(taints)
}

/// Parses `--node-labels`: `key=value`, comma-separated.
pub fn parse_labels(flag: &str) -> Result<BTreeMap<String, String>, String> {
    flag.split(',')
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("invalid label {item:?}: not key=value")),
        })
        .collect()
}

fn ready_condition(now: OffsetDateTime) -> Value {
    json!({
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": kube_time(now),
        "lastTransitionTime": kube_time(now),
    })
}

/// The Node the kubelet creates when it registers.
/// The Node's addresses: its InternalIP when known, and its host name.
fn addresses(facts: &NodeFacts) -> Value {
    let mut addresses = Vec::new();
    if let Some(ip) = &facts.ip {
        addresses.push(json!({"type": "InternalIP", "address": ip}));
    }
    addresses.push(json!({"type": "Hostname", "address": facts.name}));
    Value::Array(addresses)
}

pub fn node_object(facts: &NodeFacts, now: OffsetDateTime) -> Value {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", facts.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", "amd64"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(facts.labels.clone());
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": facts.name, "labels": labels},
        "spec": {},
        "status": {
            "conditions": [ready_condition(now)],
            "addresses": addresses(facts),
            "nodeInfo": {
                "kubeletVersion": facts.kubelet_version,
                "containerRuntimeVersion": facts.runtime_version,
                "osImage": facts.os_image,
                "kernelVersion": facts.kernel_version,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    });
    if !facts.taints.is_empty() {
        node["spec"]["taints"] = json!(facts.taints);
    }
    node
}

/// The kubelet's Lease in `kube-node-lease`, renewed now.
pub fn lease_object(name: &str, now: OffsetDateTime, resource_version: Option<&str>) -> Value {
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": micro_time(now),
        },
    });
    if let Some(rv) = resource_version {
        lease["metadata"]["resourceVersion"] = json!(rv);
    }
    lease
}

/// Registration and renewal against one API server.
#[derive(Debug)]
pub struct NodeAgent {
    client: KubeClient,
    facts: NodeFacts,
    registered: bool,
}

impl NodeAgent {
    pub fn new(client: KubeClient, facts: NodeFacts) -> NodeAgent {
        NodeAgent {
            client,
            facts,
            registered: false,
        }
    }

    /// One round: register when not yet done, then renew the Lease and the Ready condition.
    /// Returns what it did, or why it could not (the caller retries on the next tick).
    pub fn tick(&mut self, now: OffsetDateTime) -> Result<&'static str, String> {
        let mut did = "renewed its Lease and Ready condition";
        if !self.registered {
            let answer = self
                .client
                .post("/api/v1/nodes", &node_object(&self.facts, now))?;
            match answer.status {
                201 => did = "registered its Node",
                // Registered before (a restart): the Node is ours already.
                409 => did = "found its Node registered",
                _ => return Err(format!("registering the Node: {}", answer.reason())),
            }
            self.registered = true;
        }
        self.renew_lease(now)?;
        let name = &self.facts.name;
        let status = json!({"status": {
            "conditions": [ready_condition(now)],
            "addresses": addresses(&self.facts),
        }});
        let answer = self
            .client
            .patch(&format!("/api/v1/nodes/{name}/status"), &status)?;
        match answer.status {
            200 => Ok(did),
            // The Node was deleted (`kubectl delete node`): register it again next time.
            404 => {
                self.registered = false;
                Err("the Node is gone; registering it again".into())
            }
            _ => Err(format!("updating the Node's status: {}", answer.reason())),
        }
    }

    fn renew_lease(&self, now: OffsetDateTime) -> Result<(), String> {
        let name = &self.facts.name;
        let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        let current = self.client.get(&format!("{leases}/{name}"))?;
        let answer = match current.status {
            404 => self.client.post(leases, &lease_object(name, now, None))?,
            200 => {
                let rv = current.body["metadata"]["resourceVersion"].as_str();
                self.client
                    .put(&format!("{leases}/{name}"), &lease_object(name, now, rv))?
            }
            _ => return Err(format!("reading the Lease: {}", current.reason())),
        };
        match answer.status {
            200 | 201 => Ok(()),
            _ => Err(format!("renewing the Lease: {}", answer.reason())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_like_the_kubelet_flag() {
        assert_eq!(
            parse_taints("node-role.kubernetes.io/control-plane:NoSchedule,a=b:NoExecute").unwrap(),
            vec![
                json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}),
                json!({"key": "a", "value": "b", "effect": "NoExecute"}),
            ]
        );
        assert_eq!(parse_taints("").unwrap(), Vec::<Value>::new());
        for (bad, error) in [
            ("a", "invalid taint \"a\": no effect (key[=value]:Effect)"),
            (
                "a:Never",
                "invalid taint \"a:Never\": effect \"Never\" is not NoSchedule, PreferNoSchedule or NoExecute",
            ),
            (
                "=v:NoSchedule",
                "invalid taint \"=v:NoSchedule\": empty key",
            ),
        ] {
            assert_eq!(parse_taints(bad).unwrap_err(), error, "{bad}");
        }
    }

    #[test]
    fn labels_parse_and_a_bad_one_is_refused() {
        let labels = parse_labels("a=1,b=").unwrap();
        assert_eq!(labels["a"], "1");
        assert_eq!(labels["b"], "");
        assert_eq!(
            parse_labels("a=1,nope").unwrap_err(),
            "invalid label \"nope\": not key=value"
        );
    }

    #[test]
    fn the_default_route_and_the_address_it_leaves_from() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     ens3\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     ens3\t00000000\t01004D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_gateway(table), Some(Ipv4Addr::new(10, 77, 0, 1)));
        let header_only = table.lines().next().unwrap();
        assert_eq!(default_gateway(header_only), None);
        assert_eq!(
            default_gateway("garbage\nens3 00000000 zz 3 0 0 0 00000000"),
            None
        );
        // A name that is an address is the address; loopback is never the node's.
        assert_eq!(host_ip("10.0.0.7", ""), Some("10.0.0.7".parse().unwrap()));
        let loopback_gateway = "Iface Destination Gateway Flags RefCnt Use Metric Mask\n\
                                lo 00000000 0100007F 0003 0 0 0 00000000\n";
        // localhost resolves from /etc/hosts, to loopback: the gateway decides, here loopback
        // too, so no address.
        assert_eq!(host_ip("localhost", loopback_gateway), None);
    }

    #[test]
    fn the_node_carries_well_known_labels_taints_and_addresses() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let facts = NodeFacts {
            name: "m1".into(),
            ip: Some("10.0.0.1".into()),
            labels: parse_labels("tier=gold").unwrap(),
            taints: parse_taints("x:NoSchedule").unwrap(),
            kubelet_version: "v1.33.4".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel_version: "6.1.0-50-cloud-amd64".into(),
            runtime_version: "containerd://1.6.20".into(),
        };
        let node = node_object(&facts, now);
        assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "m1");
        assert_eq!(node["metadata"]["labels"]["tier"], "gold");
        assert_eq!(node["spec"]["taints"][0]["key"], "x");
        assert_eq!(node["status"]["addresses"][0]["address"], "10.0.0.1");
        assert_eq!(
            node["status"]["nodeInfo"]["osImage"],
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(
            node["status"]["conditions"][0]["lastHeartbeatTime"],
            "2023-11-14T22:13:20Z"
        );
        let lease = lease_object("m1", now, Some("7"));
        assert_eq!(lease["spec"]["renewTime"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(lease["metadata"]["resourceVersion"], "7");
    }
}
