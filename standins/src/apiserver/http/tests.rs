//! The router's refusals decided before the store, and what needs no store.
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

fn admin() -> Caller {
    Caller::User {
        name: "kubernetes-admin".to_owned(),
        groups: vec!["kubeadm:cluster-admins".to_owned()],
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
        (
            Some(node("w1")),
            "GET",
            "/api/v1/namespaces/kube-system/configmaps/kube-proxy",
            403,
            "Forbidden",
        ),
        (
            Some(node("w1")),
            "PUT",
            "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
            403,
            "Forbidden",
        ),
        (
            Some(node("w1")),
            "POST",
            "/api/v1/namespaces/kube-system/configmaps",
            403,
            "Forbidden",
        ),
        (
            Some(node("w1")),
            "GET",
            "/api/v1/namespaces/elsewhere/configmaps/kubeadm-config",
            403,
            "Forbidden",
        ),
        (
            Some(admin()),
            "GET",
            "/api/v1/namespaces/elsewhere/configmaps/kubeadm-config",
            404,
            "NotFound",
        ),
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
    let path = "/api/v1/namespaces/kube-system/configmaps/kube-proxy";
    let (_, body) = call(Some(node("w1")), "GET", path).await;
    assert_eq!(
        body["message"],
        "configmaps \"kube-proxy\" is forbidden: User \"system:node:w1\" cannot get \
         resource \"configmaps\" in API group \"\" in the namespace \"kube-system\""
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
