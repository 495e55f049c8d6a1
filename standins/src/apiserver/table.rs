//! Server-side printing of Nodes (`Accept: …;as=Table`), the columns `kubectl get nodes` shows.

use serde_json::{Value, json};

/// A `meta.k8s.io/v1` Table of a NodeList.
pub fn nodes(list: &Value) -> Value {
    let columns = [
        ("Name", "name", "Name must be unique within a namespace."),
        ("Status", "", "The status of the node"),
        ("Roles", "", "The roles of the node"),
        (
            "Age",
            "",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        ),
        ("Version", "", "Kubelet Version reported by the node."),
        ("Internal-IP", "", "List of internal IPs in the node."),
        ("External-IP", "", "List of external IPs in the node."),
        (
            "OS-Image",
            "",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        ),
        (
            "Kernel-Version",
            "",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        ),
        (
            "Container-Runtime",
            "",
            "Container Runtime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        ),
    ];
    // The first five always, the rest with `-o wide` (priority 1), as kube-apiserver prints.
    let definitions: Vec<Value> = columns
        .iter()
        .enumerate()
        .map(|(i, (name, format, description))| {
            json!({"name": name, "type": "string", "format": format,
                   "description": description, "priority": u8::from(i >= 5)})
        })
        .collect();
    let rows: Vec<Value> = list["items"]
        .as_array()
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": list["metadata"]["resourceVersion"]},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn row(node: &Value) -> Value {
    let meta = &node["metadata"];
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True");
    let mut roles: Vec<&str> = meta["labels"]
        .as_object()
        .map(|labels| {
            labels
                .keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    let roles = if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.join(",")
    };
    let info = &node["status"]["nodeInfo"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    json!({
        "cells": [
            meta["name"],
            if ready { "Ready" } else { "NotReady" },
            roles,
            age(meta["creationTimestamp"].as_str()),
            text(&info["kubeletVersion"]),
            address(node, "InternalIP"),
            address(node, "ExternalIP"),
            text(&info["osImage"]),
            text(&info["kernelVersion"]),
            text(&info["containerRuntimeVersion"]),
        ],
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": meta},
    })
}

/// The node's first address of `kind`, or `<none>`.
fn address(node: &Value, kind: &str) -> String {
    node["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["type"] == kind))
        .and_then(|a| a["address"].as_str())
        .unwrap_or("<none>")
        .to_owned()
}

/// kubectl's short age (`42s`, `5m`, `3h`, `2d`).
fn age(created: Option<&str>) -> String {
    let Some(created) = created.and_then(|c| {
        time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return "<unknown>".to_owned();
    };
    let secs = (time::OffsetDateTime::now_utc() - created)
        .whole_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
