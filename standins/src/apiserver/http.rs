//! The stand-in's HTTP API: health, version, discovery, Nodes and node Leases, in Kubernetes'
//! JSON shapes; errors as `Status`. Handlers translate; `objects` decides and writes.

use super::auth::{self, Caller, Verb};
use super::etcd::Etcd;
use super::objects::{self, ApiError, Kind, LEASE, NODE, Part, PatchType, Place};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use std::time::Duration;

/// How long `/readyz` waits for etcd.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The namespace of the nodes' Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The namespace of the control-plane components' leader-election Leases.
pub const LEADER_LEASE_NAMESPACE: &str = "kube-system";

#[derive(Debug, Clone)]
pub struct Api {
    pub etcd: Etcd,
    /// The `gitVersion` `/version` answers.
    pub version: String,
}

type Answer = Result<Response, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(self.status())).into_response()
    }
}

/// The router; the TLS layer puts each request's [`Caller`] in its extensions.
pub fn app(api: Api) -> Router {
    let node = "/api/v1/nodes/{name}";
    let leases = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases";
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/api", get(discovery))
        .route("/api/v1", get(discovery))
        .route("/apis", get(discovery))
        .route("/apis/coordination.k8s.io", get(discovery))
        .route("/apis/coordination.k8s.io/v1", get(discovery))
        .route("/api/v1/nodes", get(list_nodes).post(create_node))
        .route(
            node,
            get(get_node)
                .put(update_node)
                .patch(patch_node)
                .delete(delete_node),
        )
        .route(
            &format!("{node}/status"),
            get(get_node).put(update_status).patch(patch_status),
        )
        .route(leases, axum::routing::post(create_lease))
        .route(
            &format!("{leases}/{{name}}"),
            get(get_lease).put(update_lease),
        )
        .fallback(|| async {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
        .layer(axum::middleware::from_fn(authenticated))
        .with_state(api)
}

/// A certificate the client CA did not sign is 401 on every path, as kube-apiserver answers.
async fn authenticated(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match request.extensions().get::<Caller>() {
        Some(Caller::Refused) => ApiError::new(401, "Unauthorized", "Unauthorized").into_response(),
        _ => next.run(request).await,
    }
}

fn caller(ext: Option<Extension<Caller>>) -> Caller {
    ext.map_or(Caller::Anonymous, |Extension(c)| c)
}

fn user_name(caller: &Caller) -> &str {
    match caller {
        Caller::User { name, .. } => name,
        _ => "system:anonymous",
    }
}

/// 403 in the words of kube-apiserver's RBAC refusal.
fn authorize(
    caller: &Caller,
    verb: Verb,
    kind: Kind,
    subresource: &str,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    if auth::allowed(caller, verb, kind.resource, name, namespace) {
        return Ok(());
    }
    let group = kind.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let scope = namespace.map_or("at the cluster scope".to_owned(), |ns| {
        format!("in the namespace \"{ns}\"")
    });
    let object = name.map_or(kind.plural.to_owned(), |n| {
        format!("{} \"{n}\"", kind.plural)
    });
    Err(ApiError::new(
        403,
        "Forbidden",
        format!(
            "{object} is forbidden: User \"{}\" cannot {} resource \"{}{subresource}\" in API \
             group \"{group}\" {scope}",
            user_name(caller),
            format!("{verb:?}").to_lowercase(),
            kind.plural,
        ),
    ))
}

async fn readyz(State(api): State<Api>) -> Response {
    match api.etcd.ready(READY_TIMEOUT).await {
        Ok(()) => "ok".into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "readyz: etcd");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "[-]etcd failed: reason withheld\nreadyz check failed\n",
            )
                .into_response()
        }
    }
}

async fn version(State(api): State<Api>) -> Json<Value> {
    let minor = api.version.split('.').nth(1).unwrap_or("").to_owned();
    Json(json!({
        "major": "1", "minor": minor, "gitVersion": api.version,
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
        "goVersion": "", "compiler": "gc", "platform": "linux/amd64",
    }))
}

/// Legacy discovery documents for the two groups the stand-in serves.
async fn discovery(uri: axum::http::Uri, ext: Option<Extension<Caller>>) -> Answer {
    if caller(ext) == Caller::Anonymous {
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

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "BadRequest",
            format!("the request body is not JSON: {e}"),
        )
    })
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=Table"))
}

fn ok(code: StatusCode, object: Value) -> Answer {
    Ok((code, Json(object)).into_response())
}

fn node_place(name: &str) -> Place<'_> {
    Place {
        kind: NODE,
        namespace: None,
        name,
    }
}

async fn list_nodes(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Answer {
    authorize(&caller(ext), Verb::List, NODE, "", None, None)?;
    let list = objects::list(&api.etcd, NODE, None).await?;
    if wants_table(&headers) {
        return ok(StatusCode::OK, super::table::nodes(&list));
    }
    ok(StatusCode::OK, list)
}

async fn get_node(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&caller(ext), Verb::Get, NODE, "", Some(&name), None)?;
    let node = objects::get(&api.etcd, &node_place(&name)).await?;
    if wants_table(&headers) {
        let list = json!({"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                          "items": [node]});
        return ok(StatusCode::OK, super::table::nodes(&list));
    }
    ok(StatusCode::OK, node)
}

async fn create_node(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    body: Bytes,
) -> Answer {
    let object = parse_body(&body)?;
    let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
    authorize(&caller(ext), Verb::Create, NODE, "", Some(&name), None)?;
    ok(
        StatusCode::CREATED,
        objects::create(&api.etcd, &node_place(&name), object).await?,
    )
}

async fn update_any(
    api: Api,
    ext: Option<Extension<Caller>>,
    name: String,
    body: Bytes,
    part: Part,
) -> Answer {
    let sub = if part == Part::Status { "/status" } else { "" };
    authorize(&caller(ext), Verb::Update, NODE, sub, Some(&name), None)?;
    let object = parse_body(&body)?;
    let place = node_place(&name);
    ok(
        StatusCode::OK,
        objects::update(&api.etcd, &place, object, part).await?,
    )
}

async fn update_node(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer {
    update_any(api, ext, name, body, Part::Main).await
}

async fn update_status(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer {
    update_any(api, ext, name, body, Part::Status).await
}

fn patch_type(headers: &HeaderMap) -> Result<PatchType, ApiError> {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match kind.split(';').next().unwrap_or("").trim() {
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            ),
        )),
    }
}

async fn patch_any(
    api: Api,
    ext: Option<Extension<Caller>>,
    name: String,
    headers: HeaderMap,
    body: Bytes,
    part: Part,
) -> Answer {
    let sub = if part == Part::Status { "/status" } else { "" };
    authorize(&caller(ext), Verb::Patch, NODE, sub, Some(&name), None)?;
    let kind = patch_type(&headers)?;
    let patch = parse_body(&body)?;
    let place = node_place(&name);
    ok(
        StatusCode::OK,
        objects::patch(&api.etcd, &place, kind, &patch, part).await?,
    )
}

async fn patch_node(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    patch_any(api, ext, name, headers, body, Part::Main).await
}

async fn patch_status(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    patch_any(api, ext, name, headers, body, Part::Status).await
}

async fn delete_node(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> Answer {
    authorize(&caller(ext), Verb::Delete, NODE, "", Some(&name), None)?;
    ok(
        StatusCode::OK,
        objects::delete(&api.etcd, &node_place(&name)).await?,
    )
}

fn lease_place<'a>(ns: &'a str, name: &'a str) -> Result<Place<'a>, ApiError> {
    if ns != NODE_LEASE_NAMESPACE && ns != LEADER_LEASE_NAMESPACE {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
        ));
    }
    Ok(Place {
        kind: LEASE,
        namespace: Some(ns),
        name,
    })
}

async fn create_lease(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Answer {
    let object = parse_body(&body)?;
    let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
    authorize(
        &caller(ext),
        Verb::Create,
        LEASE,
        "",
        Some(&name),
        Some(&ns),
    )?;
    let place = lease_place(&ns, &name)?;
    ok(
        StatusCode::CREATED,
        objects::create(&api.etcd, &place, object).await?,
    )
}

async fn get_lease(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path((ns, name)): Path<(String, String)>,
) -> Answer {
    authorize(&caller(ext), Verb::Get, LEASE, "", Some(&name), Some(&ns))?;
    ok(
        StatusCode::OK,
        objects::get(&api.etcd, &lease_place(&ns, &name)?).await?,
    )
}

async fn update_lease(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    authorize(
        &caller(ext),
        Verb::Update,
        LEASE,
        "",
        Some(&name),
        Some(&ns),
    )?;
    let object = parse_body(&body)?;
    ok(
        StatusCode::OK,
        objects::update(&api.etcd, &lease_place(&ns, &name)?, object, Part::Whole).await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// An app whose etcd never answers: these requests are decided before the store.
    fn app_without_etcd() -> Router {
        let etcd = Etcd::new(
            vec!["https://127.0.0.1:9".to_owned()],
            "/registry",
            None,
            None,
        )
        .unwrap();
        app(Api {
            etcd,
            version: "v1.33.0".to_owned(),
        })
    }

    async fn call(caller: Option<Caller>, method: &str, path: &str) -> (u16, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/merge-patch+json")
            .body(Body::from("{}"))
            .unwrap();
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
        }
        let response = app_without_etcd().oneshot(request).await.unwrap();
        let code = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn node(name: &str) -> Caller {
        Caller::User {
            name: format!("system:node:{name}"),
            groups: vec!["system:nodes".to_owned()],
        }
    }

    #[tokio::test]
    async fn requests_refused_before_the_store() {
        let rows: &[(Option<Caller>, &str, &str, u16, &str)] = &[
            (Some(Caller::Refused), "GET", "/livez", 401, "Unauthorized"),
            (
                Some(Caller::Refused),
                "GET",
                "/api/v1/nodes",
                401,
                "Unauthorized",
            ),
            (None, "GET", "/api", 403, "Forbidden"),
            (
                Some(Caller::Anonymous),
                "GET",
                "/api/v1/nodes",
                403,
                "Forbidden",
            ),
            (
                Some(node("w1")),
                "PATCH",
                "/api/v1/nodes/w2/status",
                403,
                "Forbidden",
            ),
            (
                Some(node("w1")),
                "DELETE",
                "/api/v1/nodes/w1",
                403,
                "Forbidden",
            ),
            (Some(node("w1")), "GET", "/api/v1/pods", 404, "NotFound"),
        ];
        for (caller, method, path, code, reason) in rows {
            let (got, body) = call(caller.clone(), method, path).await;
            assert_eq!(got, *code, "{method} {path}: {body}");
            assert_eq!(body["kind"], "Status", "{body}");
            assert_eq!(body["reason"], *reason, "{body}");
        }
        let (_, body) = call(Some(node("w1")), "PATCH", "/api/v1/nodes/w2/status").await;
        assert_eq!(
            body["message"],
            "nodes \"w2\" is forbidden: User \"system:node:w1\" cannot patch resource \
             \"nodes/status\" in API group \"\" at the cluster scope"
        );
    }

    #[tokio::test]
    async fn livez_and_version_need_no_store() {
        let (code, _) = call(None, "GET", "/livez").await;
        assert_eq!(code, 200);
        let (code, body) = call(None, "GET", "/version").await;
        assert_eq!((code, body["gitVersion"].as_str()), (200, Some("v1.33.0")));
        assert_eq!(body["minor"], "33");
    }
}
