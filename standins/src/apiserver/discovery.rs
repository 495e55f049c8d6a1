//! The legacy discovery documents (`/api`, `/api/v1`, `/apis`, the coordination group) for
//! what the stand-in serves, as kubectl reads them before any request.

use super::auth::Caller;
use super::objects::ApiError;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

/// The discovery document at the request's path; anonymous callers get 403 as from
/// kube-apiserver's RBAC.
pub async fn discovery(
    uri: axum::http::Uri,
    ext: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    let anonymous = ext.is_none_or(|Extension(c)| c == Caller::Anonymous);
    if anonymous {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User \"system:anonymous\" cannot get path \"{}\"",
                uri.path()
            ),
        ));
    }
    let coordination = json!({
        "name": "coordination.k8s.io",
        "versions": [{"groupVersion": "coordination.k8s.io/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "coordination.k8s.io/v1", "version": "v1"},
    });
    let body = match uri.path() {
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [coordination]}),
        "/apis/coordination.k8s.io" => {
            let mut group = coordination;
            group["kind"] = json!("APIGroup");
            group["apiVersion"] = json!("v1");
            group
        }
        "/api/v1" => resource_list(
            "v1",
            &[
                (
                    "configmaps",
                    true,
                    "ConfigMap",
                    &["create", "get", "update"],
                    &["cm"],
                ),
                (
                    "nodes",
                    false,
                    "Node",
                    &["create", "delete", "get", "list", "patch", "update"],
                    &["no"],
                ),
                (
                    "nodes/status",
                    false,
                    "Node",
                    &["get", "patch", "update"],
                    &[],
                ),
            ],
        ),
        _ => resource_list(
            "coordination.k8s.io/v1",
            &[("leases", true, "Lease", &["create", "get", "update"], &[])],
        ),
    };
    Ok(Json(body).into_response())
}

type ResourceRow<'a> = (&'a str, bool, &'a str, &'a [&'a str], &'a [&'a str]);

fn resource_list(group_version: &str, rows: &[ResourceRow<'_>]) -> Value {
    let resources: Vec<Value> = rows
        .iter()
        .map(|(name, namespaced, kind, verbs, short)| {
            json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
                   "verbs": verbs, "shortNames": short})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
           "resources": resources})
}
