//! The health part of kube-controller-manager's node lifecycle controller: a Node whose kubelet
//! has not been heard from (its Lease in `kube-node-lease`, its Ready heartbeat) for
//! `--node-monitor-grace-period` gets its conditions set to `Unknown`, as
//! `tryUpdateNodeHealth` writes them, and the `node.kubernetes.io/unreachable:NoSchedule` taint
//! (`not-ready` while Ready is `False`), removed again once the kubelet reports Ready.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::flags::NodeMonitor;
use crate::kubeclient::KubeClient;
use crate::kubeclient::{kube_time, parse_time};

/// The conditions the controller owns when the kubelet is silent (`nodeConditionTypes`).
const CONDITION_TYPES: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// What one Node needs written: its new conditions and its new taints (`None`: unchanged).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    pub conditions: Option<Vec<Value>>,
    pub taints: Option<Vec<Value>>,
}

fn conditions(node: &Value) -> Vec<Value> {
    node["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ready_status(conditions: &[Value]) -> Option<&str> {
    conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
}

/// When the kubelet was last heard from, and the grace it has: its Lease's `renewTime` or its
/// Ready heartbeat, whichever is later; a Node that never reported has the startup grace
/// from its creation.
fn last_heard(
    node: &Value,
    lease: Option<&Value>,
    monitor: &NodeMonitor,
) -> (Option<OffsetDateTime>, std::time::Duration) {
    let heartbeat = conditions(node)
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| parse_time(&c["lastHeartbeatTime"]));
    let renewed = lease.and_then(|l| parse_time(&l["spec"]["renewTime"]));
    match heartbeat.into_iter().chain(renewed).max() {
        Some(at) => (Some(at), monitor.grace),
        None => (
            parse_time(&node["metadata"]["creationTimestamp"]),
            monitor.startup_grace,
        ),
    }
}

/// Every condition the controller owns set to `Unknown`, as the real controller words it.
fn unknown_conditions(node: &Value, now: OffsetDateTime) -> Option<Vec<Value>> {
    let mut list = conditions(node);
    let created = node["metadata"]["creationTimestamp"].clone();
    let mut changed = false;
    for kind in CONDITION_TYPES {
        match list.iter_mut().find(|c| c["type"] == kind) {
            Some(c) if c["status"] == "Unknown" => {}
            Some(c) => {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(kube_time(now));
                changed = true;
            }
            None => {
                list.push(json!({"type": kind, "status": "Unknown",
                    "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": created, "lastTransitionTime": kube_time(now)}));
                changed = true;
            }
        }
    }
    changed.then_some(list)
}

/// The taints the Ready status calls for, keeping an existing one (and its `timeAdded`).
fn taints_for(node: &Value, ready: Option<&str>, now: OffsetDateTime) -> Option<Vec<Value>> {
    let current = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ours = |t: &Value, key: &str| t["key"] == key && t["effect"] == "NoSchedule";
    let wanted = match ready {
        Some("Unknown") => Some(UNREACHABLE),
        Some("False") => Some(NOT_READY),
        _ => None,
    };
    let mut next: Vec<Value> = current
        .iter()
        .filter(|t| {
            let controller_owned = ours(t, UNREACHABLE) || ours(t, NOT_READY);
            !controller_owned || wanted.is_some_and(|key| ours(t, key))
        })
        .cloned()
        .collect();
    if let Some(key) = wanted
        && !next.iter().any(|t| ours(t, key))
    {
        next.push(json!({"key": key, "effect": "NoSchedule", "timeAdded": kube_time(now)}));
    }
    (next != current).then_some(next)
}

/// What the controller writes for one Node at `now`, given its Lease (if any).
pub fn assess(
    node: &Value,
    lease: Option<&Value>,
    monitor: &NodeMonitor,
    now: OffsetDateTime,
) -> Verdict {
    let (heard, grace) = last_heard(node, lease, monitor);
    let silent = heard.is_none_or(|at| at + grace < now);
    let new_conditions = if silent {
        unknown_conditions(node, now)
    } else {
        None
    };
    let after = new_conditions.clone().unwrap_or_else(|| conditions(node));
    Verdict {
        taints: taints_for(node, ready_status(&after), now),
        conditions: new_conditions,
    }
}

/// Writes a verdict: the status first (`/status`, at the revision read), then the taints (the
/// Node, at the revision the status write left).
fn apply(client: &KubeClient, mut node: Value, verdict: Verdict) -> Result<(), String> {
    let name = node["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if let Some(conditions) = verdict.conditions {
        node["status"]["conditions"] = json!(conditions);
        let answer = client.put(&format!("/api/v1/nodes/{name}/status"), &node)?;
        if answer.status != 200 {
            return Err(format!(
                "updating the status of {name}: {}",
                answer.reason()
            ));
        }
        tracing::info!(node = %name, "kubelet stopped posting node status; conditions Unknown");
        node = answer.body;
    }
    if let Some(taints) = verdict.taints {
        if taints.is_empty() {
            if let Some(spec) = node["spec"].as_object_mut() {
                spec.remove("taints");
            }
        } else {
            node["spec"]["taints"] = json!(taints);
        }
        let answer = client.put(&format!("/api/v1/nodes/{name}"), &node)?;
        if answer.status != 200 {
            return Err(format!(
                "updating the taints of {name}: {}",
                answer.reason()
            ));
        }
        tracing::info!(node = %name, ?taints, "taints updated");
    }
    Ok(())
}

/// One pass over every Node; a Node that fails is retried on the next pass.
pub fn pass(client: &KubeClient, monitor: &NodeMonitor) -> Result<(), String> {
    let list = client.get("/api/v1/nodes")?;
    if list.status != 200 {
        return Err(format!("listing Nodes: {}", list.reason()));
    }
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    for node in list.body["items"].as_array().cloned().unwrap_or_default() {
        let name = node["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let read = client.get(&format!("{leases}/{name}"))?;
        let lease = (read.status == 200).then_some(read.body);
        let verdict = assess(&node, lease.as_ref(), monitor, OffsetDateTime::now_utc());
        if verdict != Verdict::default()
            && let Err(err) = apply(client, node, verdict)
        {
            tracing::warn!(error = %err, node = %name, "node lifecycle");
        }
    }
    Ok(())
}

/// Runs a pass every `--node-monitor-period`, for as long as the process leads.
pub fn run(client: &KubeClient, monitor: &NodeMonitor) -> ! {
    loop {
        if let Err(err) = pass(client, monitor) {
            tracing::warn!(error = %err, "node lifecycle pass");
        }
        std::thread::sleep(monitor.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MONITOR: NodeMonitor = NodeMonitor {
        period: Duration::from_secs(5),
        grace: Duration::from_secs(50),
        startup_grace: Duration::from_secs(60),
    };

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).unwrap()
    }

    fn node(ready: &str, heartbeat: i64, taints: Value) -> Value {
        json!({"metadata": {"name": "w1", "creationTimestamp": kube_time(at(-100))},
               "spec": {"taints": taints},
               "status": {"conditions": [
                   {"type": "Ready", "status": ready, "reason": "KubeletReady",
                    "lastHeartbeatTime": kube_time(at(heartbeat)),
                    "lastTransitionTime": kube_time(at(-100))},
                   {"type": "MemoryPressure", "status": "False",
                    "lastHeartbeatTime": kube_time(at(heartbeat))}]}})
    }

    fn lease(renewed: i64) -> Value {
        json!({"spec": {"holderIdentity": "w1", "renewTime": crate::kubeclient::micro_time(at(renewed))}})
    }

    #[test]
    fn a_silent_node_goes_unknown_and_unreachable() {
        let healthy = node("True", 0, json!([{"key": "x", "effect": "NoSchedule"}]));
        assert_eq!(
            assess(&healthy, Some(&lease(0)), &MONITOR, at(50)),
            Verdict::default()
        );
        // The Lease was renewed later than the heartbeat: still heard from.
        assert_eq!(
            assess(&healthy, Some(&lease(30)), &MONITOR, at(70)),
            Verdict::default()
        );
        let verdict = assess(&healthy, Some(&lease(0)), &MONITOR, at(51));
        let conditions = verdict.conditions.unwrap();
        assert_eq!(
            conditions[0],
            json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                   "message": "Kubelet stopped posting node status.",
                   "lastHeartbeatTime": kube_time(at(0)), "lastTransitionTime": kube_time(at(51))})
        );
        assert_eq!(conditions[1]["status"], "Unknown");
        assert_eq!(
            conditions[2],
            json!({"type": "DiskPressure", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                   "message": "Kubelet never posted node status.",
                   "lastHeartbeatTime": kube_time(at(-100)), "lastTransitionTime": kube_time(at(51))})
        );
        assert_eq!(conditions[3]["type"], "PIDPressure");
        assert_eq!(
            verdict.taints.unwrap(),
            [
                json!({"key": "x", "effect": "NoSchedule"}),
                json!({"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": kube_time(at(51))})
            ]
        );
    }

    #[test]
    fn once_marked_nothing_more_is_written_and_ready_again_clears_the_taint() {
        let taint = json!({"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": "t"});
        let mut marked = node("Unknown", 0, json!([taint]));
        for c in marked["status"]["conditions"].as_array_mut().unwrap() {
            c["status"] = json!("Unknown");
        }
        for kind in ["DiskPressure", "PIDPressure"] {
            marked["status"]["conditions"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": kind, "status": "Unknown"}));
        }
        assert_eq!(assess(&marked, None, &MONITOR, at(500)), Verdict::default());
        let back = node(
            "True",
            600,
            json!([taint, {"key": "x", "effect": "NoExecute"}]),
        );
        assert_eq!(
            assess(&back, Some(&lease(600)), &MONITOR, at(601)),
            Verdict {
                conditions: None,
                taints: Some(vec![json!({"key": "x", "effect": "NoExecute"})])
            }
        );
        let not_ready = node("False", 600, json!(null));
        assert_eq!(
            assess(&not_ready, None, &MONITOR, at(601)).taints.unwrap(),
            [json!({"key": NOT_READY, "effect": "NoSchedule", "timeAdded": kube_time(at(601))})]
        );
    }

    #[test]
    fn a_node_that_never_reported_has_the_startup_grace() {
        let fresh = json!({"metadata": {"name": "w2", "creationTimestamp": kube_time(at(0))},
                           "spec": {}, "status": {}});
        assert_eq!(assess(&fresh, None, &MONITOR, at(60)), Verdict::default());
        let verdict = assess(&fresh, None, &MONITOR, at(61));
        let conditions = verdict.conditions.unwrap();
        assert_eq!(conditions.len(), 4);
        assert!(
            conditions
                .iter()
                .all(|c| c["reason"] == "NodeStatusNeverUpdated")
        );
        assert_eq!(verdict.taints.unwrap()[0]["key"], UNREACHABLE);
    }
}
