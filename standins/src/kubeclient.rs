//! A client of the Kubernetes API from a kubeconfig, as the kubelet and kubeadm use one: the
//! current context's server and CA, and its user's client certificate (inline or in files).

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Root;
use crate::docs::str_at;

/// The API server of a kubeconfig, reached with its credential.
#[derive(Debug, Clone)]
pub struct KubeClient {
    http: reqwest::blocking::Client,
    /// `https://host:port`, without a trailing slash.
    pub server: String,
}

/// An answer: its status and its body (JSON, or `Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The message of a Kubernetes `Status` body, or the status code.
    pub fn reason(&self) -> String {
        match str_at(&self.body, "message") {
            Some(m) => format!("{} {m}", self.status),
            None => self.status.to_string(),
        }
    }
}

fn named<'a>(cfg: &'a Value, list: &str, name: &str, inner: &str) -> Option<&'a Value> {
    cfg.get(list)?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get(inner)
}

/// `<field>-data` (base64) or the file `<field>` names.
fn material(root: &Root, obj: &Value, field: &str) -> Result<Vec<u8>, String> {
    if let Some(data) = str_at(obj, &format!("{field}-data")) {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("{field}-data is not base64: {e}"));
    }
    let path = str_at(obj, field).ok_or_else(|| format!("no {field} or {field}-data"))?;
    std::fs::read(root.path(path)).map_err(|e| format!("reading {path}: {e}"))
}

impl KubeClient {
    /// The client of the kubeconfig at the host path `file`.
    pub fn from_kubeconfig(root: &Root, file: &str) -> Result<KubeClient, String> {
        let text = crate::read(root, file).map_err(|e| format!("{e:#}"))?;
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| format!("{file}: not valid YAML: {e}"))?;
        let cfg = serde_json::to_value(&yaml).map_err(|e| format!("{file}: {e}"))?;
        let current =
            str_at(&cfg, "current-context").ok_or_else(|| format!("{file}: no current-context"))?;
        let context = named(&cfg, "contexts", current, "context")
            .ok_or_else(|| format!("{file}: no context {current:?}"))?;
        let cluster = str_at(context, "cluster")
            .and_then(|c| named(&cfg, "clusters", c, "cluster"))
            .ok_or_else(|| format!("{file}: the context's cluster is missing"))?;
        let user = str_at(context, "user")
            .and_then(|u| named(&cfg, "users", u, "user"))
            .ok_or_else(|| format!("{file}: the context's user is missing"))?;
        let server = str_at(cluster, "server")
            .filter(|s| s.starts_with("https://"))
            .ok_or_else(|| format!("{file}: the cluster's server is not an https:// URL"))?;
        let in_file = |what: Result<Vec<u8>, String>| what.map_err(|e| format!("{file}: {e}"));
        let ca = in_file(material(root, cluster, "certificate-authority"))?;
        let cert = in_file(material(root, user, "client-certificate"))?;
        let key = in_file(material(root, user, "client-key"))?;
        for (what, pem) in [("the cluster's CA", &ca), ("the user's certificate", &cert)] {
            if !rustls_pemfile::certs(&mut pem.as_slice()).any(|c| c.is_ok()) {
                return Err(format!("{file}: {what} holds no PEM certificate"));
            }
        }
        if !matches!(
            rustls_pemfile::private_key(&mut key.as_slice()),
            Ok(Some(_))
        ) {
            return Err(format!("{file}: the user's key holds no PEM private key"));
        }
        let mut identity = cert;
        identity.push(b'\n');
        identity.extend(key);
        let ca = reqwest::Certificate::from_pem(&ca)
            .map_err(|e| format!("{file}: the cluster's CA: {e}"))?;
        let identity = reqwest::Identity::from_pem(&identity)
            .map_err(|e| format!("{file}: the user's certificate and key: {e}"))?;
        let http = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("{file}: {e}"))?;
        Ok(KubeClient {
            http,
            server: server.trim_end_matches('/').to_string(),
        })
    }

    /// One request; `Err` only when no answer came (connection, TLS, timeout).
    pub fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, &Value)>,
    ) -> Result<Answer, String> {
        let url = format!("{}{path}", self.server);
        let mut request = self.http.request(method.clone(), &url);
        if let Some((content_type, body)) = body {
            request = request
                .header("content-type", content_type)
                .body(body.to_string());
        }
        let response = request
            .send()
            .map_err(|e| format!("{method} {url}: {}", error_chain(&e)))?;
        let status = response.status().as_u16();
        let body = response.json().unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    pub fn get(&self, path: &str) -> Result<Answer, String> {
        self.send(reqwest::Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Answer, String> {
        self.send(
            reqwest::Method::POST,
            path,
            Some(("application/json", body)),
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Answer, String> {
        self.send(reqwest::Method::PUT, path, Some(("application/json", body)))
    }

    /// A strategic merge patch, as kubectl and the kubelet send.
    pub fn patch(&self, path: &str, body: &Value) -> Result<Answer, String> {
        self.send(
            reqwest::Method::PATCH,
            path,
            Some(("application/strategic-merge-patch+json", body)),
        )
    }
}

/// An error with its sources, which is where reqwest keeps the reason (refused, TLS).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// A Kubernetes `Time`: RFC 3339 in UTC, whole seconds.
pub fn kube_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}

/// A Kubernetes `MicroTime` (a Lease's times): RFC 3339 in UTC with exactly six fractional
/// digits.
pub fn micro_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{}.{:06}Z",
        kube_time(at).trim_end_matches('Z'),
        at.microsecond()
    )
}

/// A Kubernetes timestamp (`Time` or `MicroTime`).
pub fn parse_time(value: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value.as_str()?, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_kubernetes_writes_them_and_read_back() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(kube_time(at), "2023-11-14T22:13:20Z");
        assert_eq!(micro_time(at), "2023-11-14T22:13:20.123456Z");
        let east = at.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(kube_time(east), "2023-11-14T22:13:20Z");
        let back = parse_time(&Value::from(micro_time(at))).unwrap();
        assert_eq!(back.unix_timestamp_nanos(), 1_700_000_000_123_456_000);
        assert_eq!(parse_time(&Value::from("yesterday")), None);
    }
}
