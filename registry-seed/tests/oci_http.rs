//! The distribution API over a real socket: manifests and blobs as stored, ranges, HEAD, tag
//! lists, every error code, concurrent pulls, and the same over TLS.

mod support;

use std::path::Path;

use registry_seed::oci::{Store, import};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use support::images::{self, Built, Family, build};
use support::server::{Server, serve_plain, serve_tls};

struct Fixture {
    _tmp: tempfile::TempDir,
    _server: Server,
    client: Client,
    base: String,
    multi: Built,
    layout: std::path::PathBuf,
}

/// A registry holding a two-platform OCI index as `coredns/coredns:v1.11.1` and a
/// single-platform Docker image (from `docker save`) as `library/busybox:1.36`.
fn fixture(tls: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = Store::open(&state).unwrap();
    let layout = tmp.path().join("multi");
    let multi = images::coredns(&layout);
    // a docker save archive: its layer differs from every layer of the index
    let single = tmp.path().join("single.tar");
    images::docker_save(&single, "busybox:1.36");
    import(&store, &[layout.clone(), single], None).unwrap();
    let (server, client, scheme) = if tls {
        let server = serve_tls(&state);
        let ca =
            reqwest::Certificate::from_pem(server.ca_pem.as_ref().unwrap().as_bytes()).unwrap();
        let client = Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .unwrap();
        (server, client, "https")
    } else {
        (serve_plain(&state), Client::new(), "http")
    };
    let base = format!("{scheme}://{}", server.host());
    Fixture {
        _tmp: tmp,
        _server: server,
        client,
        base,
        multi,
        layout,
    }
}

impl Fixture {
    fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap()
    }
    fn head(&self, path: &str) -> Response {
        self.client
            .head(format!("{}{path}", self.base))
            .send()
            .unwrap()
    }
    fn range(&self, path: &str, range: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("range", range)
            .send()
            .unwrap()
    }
    fn layer(&self) -> (String, Vec<u8>) {
        let m: serde_json::Value =
            serde_json::from_slice(&images::read_blob(&self.layout, &self.multi.manifests[0].1))
                .unwrap();
        let d = m["layers"][0]["digest"].as_str().unwrap().to_string();
        let bytes = images::read_blob(&self.layout, &d);
        (d, bytes)
    }
}

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn error_code(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let body: serde_json::Value = r.json().unwrap();
    (
        status,
        body["errors"][0]["code"].as_str().unwrap().to_string(),
    )
}

fn manifests_are_served_as_stored(f: &Fixture) {
    let index = images::read_blob(&f.layout, &f.multi.top);
    for path in [
        "/v2/coredns/coredns/manifests/v1.11.1".to_string(),
        format!("/v2/coredns/coredns/manifests/{}", f.multi.top),
        "/v2/coredns/coredns/manifests/v1.11.1?ns=registry.k8s.io".to_string(),
    ] {
        let r = f.get(&path);
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "content-type"), images::OCI_INDEX);
        assert_eq!(header(&r, "docker-content-digest"), f.multi.top);
        assert_eq!(header(&r, "content-length"), index.len().to_string());
        assert_eq!(r.bytes().unwrap().as_ref(), index.as_slice());
    }
    let r = f.head("/v2/coredns/coredns/manifests/v1.11.1");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), index.len().to_string());
    assert_eq!(header(&r, "docker-content-digest"), f.multi.top);
    assert!(r.bytes().unwrap().is_empty());
    let (arch, digest) = &f.multi.manifests[1];
    assert_eq!(arch, "arm64");
    let r = f.get(&format!("/v2/coredns/coredns/manifests/{digest}"));
    assert_eq!(header(&r, "content-type"), images::OCI_MANIFEST);
    assert_eq!(
        r.bytes().unwrap().as_ref(),
        images::read_blob(&f.layout, digest).as_slice()
    );
    let r = f.get("/v2/library/busybox/manifests/1.36");
    assert_eq!(header(&r, "content-type"), images::DOCKER_MANIFEST);
}

fn blobs_and_ranges(f: &Fixture) {
    let (d, bytes) = f.layer();
    let path = format!("/v2/coredns/coredns/blobs/{d}");
    let r = f.get(&path);
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(r.bytes().unwrap().as_ref(), bytes.as_slice());
    let r = f.head(&path);
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), bytes.len().to_string());
    assert!(r.bytes().unwrap().is_empty());
    let n = bytes.len();
    let mid = n / 2;
    for (range, start, end) in [
        ("bytes=0-0".to_string(), 0, 0),
        (format!("bytes={mid}-{}", mid + 9), mid, mid + 9),
        (format!("bytes={}-", n - 1), n - 1, n - 1),
        ("bytes=-5".to_string(), n - 5, n - 1),
    ] {
        let r = f.range(&path, &range);
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes {start}-{end}/{n}")
        );
        assert_eq!(header(&r, "content-length"), (end - start + 1).to_string());
        assert_eq!(r.bytes().unwrap().as_ref(), &bytes[start..=end], "{range}");
    }
    for range in [
        format!("bytes={n}-"),
        format!("bytes={n}-{}", n + 10),
        "bytes=-0".into(),
    ] {
        let r = f.range(&path, &range);
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes */{n}"),
            "{range}"
        );
        assert_eq!(
            error_code(r),
            (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID".into())
        );
    }
}

fn every_error_code(f: &Fixture) {
    let (layer, _) = f.layer();
    let busybox_layer = {
        let r = f.get("/v2/library/busybox/manifests/1.36");
        let m: serde_json::Value = r.json().unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_string()
    };
    let absent = images::sha256(b"absent");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("GET", "/v2/nope/manifests/1".into(), 404, "NAME_UNKNOWN"),
        (
            "GET",
            "/v2/coredns/coredns/manifests/v9".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "GET",
            format!("/v2/coredns/coredns/manifests/{absent}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "GET",
            format!("/v2/coredns/coredns/manifests/{layer}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "GET",
            format!("/v2/coredns/coredns/blobs/{absent}"),
            404,
            "BLOB_UNKNOWN",
        ),
        // a blob is served only under a repository that references it
        (
            "GET",
            format!("/v2/coredns/coredns/blobs/{busybox_layer}"),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            "GET",
            "/v2/coredns/coredns/blobs/sha256:xyz".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            "/v2/coredns/coredns/manifests/md5:abc".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            "/v2/CoreDNS/manifests/v1".into(),
            400,
            "NAME_INVALID",
        ),
        ("GET", "/v2/a//b/manifests/v1".into(), 400, "NAME_INVALID"),
        (
            "POST",
            "/v2/coredns/coredns/blobs/uploads/".into(),
            405,
            "UNSUPPORTED",
        ),
        (
            "PUT",
            "/v2/coredns/coredns/manifests/v2".into(),
            405,
            "UNSUPPORTED",
        ),
        (
            "PATCH",
            "/v2/coredns/coredns/blobs/uploads/x".into(),
            405,
            "UNSUPPORTED",
        ),
        (
            "DELETE",
            format!("/v2/coredns/coredns/manifests/{}", f.multi.top),
            405,
            "UNSUPPORTED",
        ),
        (
            "GET",
            "/v2/coredns/coredns/uploads/x".into(),
            404,
            "UNSUPPORTED",
        ),
    ];
    for (method, path, status, code) in cases {
        let r = f
            .client
            .request(method.parse().unwrap(), format!("{}{path}", f.base))
            .send()
            .unwrap();
        assert_eq!(
            header(&r, "content-type"),
            "application/json",
            "{method} {path}"
        );
        assert_eq!(
            error_code(r),
            (StatusCode::from_u16(status).unwrap(), code.to_string()),
            "{method} {path}"
        );
    }
    let r = f.head("/v2/coredns/coredns/manifests/v9");
    assert_eq!(r.status(), 404);
    assert!(r.bytes().unwrap().is_empty());
}

fn tags_and_base(f: &Fixture) {
    let r = f.get("/v2/");
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    let r = f.get("/v2/coredns/coredns/tags/list");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name": "coredns/coredns", "tags": ["v1.11.1"]})
    );
    let r = f.get("/v2/library/busybox/tags/list?ns=%ZZ&n=x&&=");
    assert_eq!(r.status(), 200);
    let r = f.get("/v2/library/busybox/tags/list?n=0");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["tags"], serde_json::json!([]));
}

fn concurrent_pulls(f: &Fixture) {
    let (d, bytes) = f.layer();
    let path = format!("/v2/coredns/coredns/blobs/{d}");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    (0..4).all(|_| f.get(&path).bytes().unwrap().as_ref() == bytes.as_slice())
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap());
        }
    });
}

#[test]
fn plain_http() {
    let f = fixture(false);
    manifests_are_served_as_stored(&f);
    blobs_and_ranges(&f);
    every_error_code(&f);
    tags_and_base(&f);
    concurrent_pulls(&f);
}

#[test]
fn https_with_the_seed_ca() {
    let f = fixture(true);
    manifests_are_served_as_stored(&f);
    blobs_and_ranges(&f);
    tags_and_base(&f);
    concurrent_pulls(&f);
}

#[test]
fn tag_pagination_and_live_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let server = serve_plain(&state);
    let client = Client::new();
    let url = |p: &str| format!("http://{}{p}", server.host());
    let r = client.get(url("/v2/app/tags/list")).send().unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN".to_string())
    );
    // imports made while serving are visible without a restart
    let store = Store::open(&state).unwrap();
    for tag in ["a", "b", "c"] {
        let layout = tmp.path().join(tag);
        build(&layout, Family::Oci, false, &format!("app:{tag}"));
        import(&store, &[layout], None).unwrap();
    }
    let r = client
        .get(url("/v2/library/app/tags/list?n=2"))
        .send()
        .unwrap();
    assert_eq!(
        header(&r, "link"),
        "</v2/library/app/tags/list?n=2&last=b>; rel=\"next\""
    );
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["tags"], serde_json::json!(["a", "b"]));
    let r = client
        .get(url("/v2/library/app/tags/list?n=2&last=b"))
        .send()
        .unwrap();
    assert!(header(&r, "link").is_empty());
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["tags"], serde_json::json!(["c"]));
    let _ = Path::new("");
}
