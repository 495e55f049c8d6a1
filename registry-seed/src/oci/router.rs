//! The pull half of the OCI distribution API over the store: `/v2/`, manifests, blobs (with
//! `Range`) and tag lists. Stored bytes are served as they are; writes are refused.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::store::{Catalog, Repository, Store};
use crate::range::{self, RangeError};
use ::oci::refs::{Digest, RefError, Reference, RepoName};

/// The registry's routes, to be served on the seed's listeners. `store` is re-read when an
/// import changes it, so images imported while serving appear without a restart.
pub fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/{*rest}", any(dispatch))
        .layer(axum::middleware::map_response(api_version))
        .with_state(store)
}

async fn api_version(mut res: Response) -> Response {
    res.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    res
}

/// A registry error in the distribution spec's JSON shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message }]
        });
        let mut res = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        res
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "registry request failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        "internal error",
    )
}

fn check_method(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "this registry is pull-only",
    ))
}

async fn base(method: Method) -> Result<Response, ApiError> {
    check_method(&method)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], "{}").into_response())
}

/// Where a `/v2/<rest>` path leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Tags(&'a str),
}

/// Splits `<name>/manifests/<ref>`, `<name>/blobs/<digest>` and `<name>/tags/list`; names have
/// any number of segments.
pub fn parse_route(rest: &str) -> Option<Route<'_>> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    let (prefix, last) = rest.rsplit_once('/')?;
    let (name, kind) = prefix.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Route::Manifest(name, last)),
        "blobs" => Some(Route::Blob(name, last)),
        _ => None,
    }
}

#[derive(Debug)]
struct TagsQuery {
    n: Option<usize>,
    last: Option<String>,
}

async fn dispatch(
    State(store): State<Arc<Store>>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    source: Option<axum::Extension<range::Source>>,
) -> Result<Response, ApiError> {
    let source = source.map(|s| s.0.0);
    check_method(&method)?;
    let route = parse_route(&rest)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "UNSUPPORTED", "no such endpoint"))?;
    let head = method == Method::HEAD;
    match route {
        Route::Manifest(name, reference) => {
            let (catalog, repo) = repository(&store, name)?;
            manifest(
                &store,
                &catalog,
                &catalog.repositories[&repo],
                reference,
                head,
            )
            .await
        }
        Route::Blob(name, digest) => {
            let (catalog, repo) = repository(&store, name)?;
            let repo = &catalog.repositories[&repo];
            blob(&store, repo, digest, head, &headers, source).await
        }
        Route::Tags(name) => {
            let (catalog, repo) = repository(&store, name)?;
            // `?ns=` (containerd's mirror hint) and anything else unknown is ignored
            let param = |key: &str| {
                query.as_deref().unwrap_or("").split('&').find_map(|kv| {
                    kv.split_once('=')
                        .filter(|(k, _)| *k == key)
                        .map(|(_, v)| v.to_string())
                })
            };
            let n = param("n").and_then(|v| v.parse().ok());
            let last = param("last");
            Ok(tags(
                name,
                &catalog.repositories[&repo],
                &TagsQuery { n, last },
            ))
        }
    }
}

/// The current catalog and a repository name known to be in it.
fn repository(store: &Store, name: &str) -> Result<(Arc<Catalog>, RepoName), ApiError> {
    let repo = RepoName::parse(name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", e.to_string()))?;
    let catalog = store.catalog().map_err(internal)?;
    if !catalog.repositories.contains_key(&repo) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("repository {repo} is not known to this registry"),
        ));
    }
    Ok((catalog, repo))
}

async fn manifest(
    store: &Store,
    catalog: &Catalog,
    repo: &Repository,
    reference: &str,
    head: bool,
) -> Result<Response, ApiError> {
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest {reference} is not known in this repository"),
        )
    };
    let reference = match Reference::parse(reference) {
        Ok(r) => r,
        Err(RefError::Digest(d)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!("invalid digest {d}"),
            ));
        }
        Err(_) => return Err(unknown()),
    };
    let digest = repo.resolve(&reference).ok_or_else(unknown)?;
    let info = catalog.manifests.get(&digest).ok_or_else(unknown)?;
    let path = store.blob_path(&digest);
    let bytes = tokio::fs::read(&path).await.map_err(internal)?;
    let mut res = Response::new(if head {
        Body::empty()
    } else {
        Body::from(bytes)
    });
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, value(&info.media_type)?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    h.insert("docker-content-digest", value(digest.as_str())?);
    h.insert(header::ETAG, value(&format!("\"{digest}\""))?);
    Ok(res)
}

fn value(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s).map_err(internal)
}

/// The stored file of blob `digest` in `repo`, if the repository references it.
async fn find_blob(
    store: &Store,
    repo: &Repository,
    digest: &str,
) -> Result<(Digest, tokio::fs::File), ApiError> {
    let digest = Digest::parse(digest)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", e.to_string()))?;
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob {digest} is not known in this repository"),
        )
    };
    if !repo.digests.contains(&digest) {
        return Err(unknown());
    }
    match tokio::fs::File::open(store.blob_path(&digest)).await {
        Ok(f) => Ok((digest, f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(unknown()),
        Err(e) => Err(internal(e)),
    }
}

async fn blob(
    store: &Store,
    repo: &Repository,
    digest: &str,
    head: bool,
    headers: &HeaderMap,
    source: Option<std::net::IpAddr>,
) -> Result<Response, ApiError> {
    let (digest, file) = find_blob(store, repo, digest).await?;
    blob_response(&digest, range::respond(file, headers, head, source).await)
}

/// The registry's answer to what the Range responder made of a blob: its digest headers on a
/// success, the OCI `RANGE_INVALID` error for a range past its end.
fn blob_response(
    digest: &Digest,
    answer: Result<Response, RangeError>,
) -> Result<Response, ApiError> {
    match answer {
        Ok(mut res) => {
            let h = res.headers_mut();
            h.insert("docker-content-digest", value(digest.as_str())?);
            h.insert(header::ETAG, value(&format!("\"{digest}\""))?);
            Ok(res)
        }
        Err(RangeError::Unsatisfiable { len }) => {
            let mut res = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_INVALID",
                format!("range not satisfiable for a blob of {len} bytes"),
            )
            .into_response();
            res.headers_mut()
                .insert(header::CONTENT_RANGE, RangeError::content_range(len));
            Ok(res)
        }
        Err(e @ RangeError::Busy { .. }) => {
            let mut res = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                e.to_string(),
            )
            .into_response();
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(res)
        }
        Err(e @ RangeError::Io(_)) => Err(internal(e)),
    }
}

fn tags(name: &str, repo: &Repository, q: &TagsQuery) -> Response {
    let all: Vec<&str> = repo
        .tags
        .keys()
        .map(|t| t.as_str())
        .filter(|t| q.last.as_deref().is_none_or(|last| *t > last))
        .collect();
    let n = q.n.unwrap_or(all.len());
    let page: Vec<&str> = all.iter().take(n).copied().collect();
    let body = serde_json::json!({ "name": name, "tags": page });
    let mut res = axum::Json(body).into_response();
    if let Some(last) = page.last().filter(|_| page.len() < all.len()) {
        let link = format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            res.headers_mut().insert(header::LINK, v);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_multi_segment_names() {
        assert_eq!(
            parse_route("coredns/coredns/manifests/v1.11.1"),
            Some(Route::Manifest("coredns/coredns", "v1.11.1"))
        );
        assert_eq!(
            parse_route("a/blobs/b/blobs/sha256:00"),
            Some(Route::Blob("a/blobs/b", "sha256:00"))
        );
        assert_eq!(parse_route("a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(parse_route("a/uploads/x"), None);
        assert_eq!(parse_route("manifests/x"), None);
    }

    fn response_of(answer: Result<Response, RangeError>) -> Response {
        let digest = Digest::of(b"blob");
        match blob_response(&digest, answer) {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    #[test]
    fn blob_answers_carry_the_registry_headers_and_errors() {
        let res = response_of(Ok(Response::new(Body::empty())));
        assert_eq!(res.status(), StatusCode::OK);
        let digest = Digest::of(b"blob");
        assert_eq!(res.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(res.headers()[header::ETAG], format!("\"{digest}\""));

        let res = response_of(Err(RangeError::Unsatisfiable { len: 10 }));
        assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes */10");
        assert!(res.headers().get("docker-content-digest").is_none());

        let res = response_of(Err(RangeError::Io(std::io::Error::other("disk"))));
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
