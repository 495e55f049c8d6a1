//! The pull half of the OCI distribution API over the store: `/v2/`, manifests, blobs (with
//! `Range`) and tag lists. Stored bytes are served as they are; writes are refused.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::store::{Catalog, Repository, Store};
use ::oci::refs::{Digest, RefError, Reference, RepoName};

/// Bytes read from disk per chunk of a blob response.
const CHUNK: usize = 256 * 1024;

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
) -> Result<Response, ApiError> {
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
            blob(&store, &catalog.repositories[&repo], digest, head, &headers).await
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

/// What a `Range` header asks of a blob of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No range, or one this server ignores (several ranges, bad syntax): the whole blob.
    Full,
    /// Bytes `start..=end`.
    Partial(u64, u64),
    Unsatisfiable,
}

pub fn parse_range(header: &str, len: u64) -> RangeAnswer {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), num(a), num(b)) {
        (true, _, Some(0)) => RangeAnswer::Unsatisfiable,
        (true, _, Some(suffix)) if len > 0 => {
            RangeAnswer::Partial(len.saturating_sub(suffix), len - 1)
        }
        (true, _, _) => RangeAnswer::Unsatisfiable,
        (false, Some(start), _) if start >= len => RangeAnswer::Unsatisfiable,
        (false, Some(start), None) if b.trim().is_empty() => RangeAnswer::Partial(start, len - 1),
        (false, Some(start), Some(end)) if end >= start => {
            RangeAnswer::Partial(start, end.min(len - 1))
        }
        _ => RangeAnswer::Full,
    }
}

async fn blob(
    store: &Store,
    repo: &Repository,
    digest: &str,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
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
    let path = store.blob_path(&digest);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
        Err(e) => return Err(internal(e)),
    };
    let len = file.metadata().await.map_err(internal)?.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeAnswer::Full, |r| parse_range(r, len));
    let (status, start, count) = match range {
        RangeAnswer::Full => (StatusCode::OK, 0, len),
        RangeAnswer::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        RangeAnswer::Unsatisfiable => {
            let mut res = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_INVALID",
                format!("range not satisfiable for a blob of {len} bytes"),
            )
            .into_response();
            res.headers_mut()
                .insert(header::CONTENT_RANGE, value(&format!("bytes */{len}"))?);
            return Ok(res);
        }
    };
    let body = if head {
        Body::empty()
    } else {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(internal)?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), CHUNK);
        Body::from_stream(stream)
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert("docker-content-digest", value(digest.as_str())?);
    h.insert(header::ETAG, value(&format!("\"{digest}\""))?);
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        h.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{end}/{len}"))?,
        );
    }
    Ok(res)
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

    #[test]
    fn ranges() {
        use RangeAnswer::*;
        let cases = [
            ("bytes=0-0", Partial(0, 0)),
            ("bytes=3-5", Partial(3, 5)),
            ("bytes=9-", Partial(9, 9)),
            ("bytes=5-100", Partial(5, 9)),
            ("bytes=-3", Partial(7, 9)),
            ("bytes=-30", Partial(0, 9)),
            ("bytes=10-", Unsatisfiable),
            ("bytes=10-20", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=5-3", Full),
            ("bytes=0-1,3-4", Full),
            ("items=0-1", Full),
            ("bytes=x-1", Full),
        ];
        for (header, want) in cases {
            assert_eq!(parse_range(header, 10), want, "{header}");
        }
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
    }
}
