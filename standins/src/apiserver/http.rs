//! The stand-in's HTTP API: health, version, discovery, Nodes, node Leases and ConfigMaps, in
//! Kubernetes' JSON shapes; errors as `Status`. Handlers translate; `objects` decides and
//! writes.

use super::auth::{self, Caller, Verb};
use super::discovery::discovery;
use super::etcd::Etcd;
use super::objects::{self, ApiError, CONFIG_MAP, Kind, LEASE, NODE, Part, PatchType, Place};
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

/// The namespaces kube-apiserver makes itself; the stand-in serves no Namespace objects, so
/// these are the only ones its ConfigMaps may be in.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-node-lease", "kube-public", "kube-system"];

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
    let config_maps = "/api/v1/namespaces/{ns}/configmaps";
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
        .route(config_maps, axum::routing::post(create_config_map))
        .route(
            &format!("{config_maps}/{{name}}"),
            get(get_config_map).put(update_config_map),
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

fn config_map_place<'a>(ns: &'a str, name: &'a str) -> Result<Place<'a>, ApiError> {
    if !SYSTEM_NAMESPACES.contains(&ns) {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
        ));
    }
    Ok(Place {
        kind: CONFIG_MAP,
        namespace: Some(ns),
        name,
    })
}

async fn create_config_map(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Answer {
    let object = parse_body(&body)?;
    let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let caller = caller(ext);
    authorize(
        &caller,
        Verb::Create,
        CONFIG_MAP,
        "",
        Some(&name),
        Some(&ns),
    )?;
    let place = config_map_place(&ns, &name)?;
    ok(
        StatusCode::CREATED,
        objects::create(&api.etcd, &place, object).await?,
    )
}

async fn get_config_map(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path((ns, name)): Path<(String, String)>,
) -> Answer {
    let caller = caller(ext);
    authorize(&caller, Verb::Get, CONFIG_MAP, "", Some(&name), Some(&ns))?;
    let place = config_map_place(&ns, &name)?;
    ok(StatusCode::OK, objects::get(&api.etcd, &place).await?)
}

async fn update_config_map(
    State(api): State<Api>,
    ext: Option<Extension<Caller>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let caller = caller(ext);
    authorize(
        &caller,
        Verb::Update,
        CONFIG_MAP,
        "",
        Some(&name),
        Some(&ns),
    )?;
    let object = parse_body(&body)?;
    let place = config_map_place(&ns, &name)?;
    ok(
        StatusCode::OK,
        objects::update(&api.etcd, &place, object, Part::Whole).await?,
    )
}

#[cfg(test)]
mod tests;
