//! The stand-in's store: etcd's v3 JSON gateway over mutual TLS (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/kv/deleterange`), keys and values base64, revisions as decimal strings.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// How long one call to etcd may take before the next endpoint is tried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("setting up the etcd client: {0}")]
    Tls(String),
    #[error("no etcd endpoint answered {path} (tried {tried}): {last}")]
    Unreachable {
        path: String,
        tried: String,
        last: String,
    },
    #[error("etcd refused {path}: {message}")]
    Refused { path: String, message: String },
    #[error("etcd's answer to {path} did not parse: {reason}")]
    BadResponse { path: String, reason: String },
}

/// One stored key: its value and the revision it was last written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    revision: Option<String>,
}

#[derive(Deserialize)]
struct RawKv {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    mod_revision: Option<String>,
}

#[derive(Deserialize)]
struct RangeResponse {
    header: Header,
    #[serde(default)]
    kvs: Vec<RawKv>,
}

#[derive(Deserialize)]
struct TxnResponse {
    header: Header,
    #[serde(default)]
    succeeded: bool,
}

/// The client, with the endpoints of `--etcd-servers`. Like kube-apiserver's etcd client, it
/// keeps to an endpoint that answers: each call starts at the last one that did, and moves on
/// to the others in turn only when it fails, each given an equal share of the call's time
/// left. A dead first endpoint (a master powered off) therefore costs one call part of its
/// time, not every call all of it.
#[derive(Debug, Clone)]
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// Index into `endpoints` of the last one that answered.
    preferred: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// `--etcd-prefix` (`/registry`), put before every key.
    prefix: String,
}

fn read(path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn revision(text: Option<&str>) -> i64 {
    text.and_then(|t| t.parse().ok()).unwrap_or(0)
}

impl Etcd {
    /// A client trusting `ca` and presenting `cert`/`key` when both are given.
    pub fn new(
        endpoints: Vec<String>,
        prefix: &str,
        ca: Option<&Path>,
        cert_key: Option<(&Path, &Path)>,
    ) -> Result<Etcd, EtcdError> {
        let bad = |what: &str, e: reqwest::Error| EtcdError::Tls(format!("{what}: {e}"));
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(ca) = ca {
            let ca = reqwest::Certificate::from_pem(&read(ca)?)
                .map_err(|e| bad("reading the etcd ca", e))?;
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca);
        }
        if let Some((cert, key)) = cert_key {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| bad("reading the etcd client certificate and key", e))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| bad("building the https client", e))?;
        Ok(Etcd {
            http,
            endpoints,
            preferred: Default::default(),
            prefix: prefix.trim_end_matches('/').to_owned(),
        })
    }

    /// POSTs `body` to `path`: the endpoint that answered last first, then the others in
    /// turn, until one answers or `timeout` has passed.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<T, EtcdError> {
        use std::sync::atomic::Ordering;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::from("no endpoints configured");
        let start = self.preferred.load(Ordering::Relaxed);
        let count = self.endpoints.len();
        for (tried, i) in (0..count).map(|k| (start + k) % count).enumerate() {
            let endpoint = &self.endpoints[i];
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                last = format!("{last}; no time left for {endpoint}");
                break;
            }
            // An equal share of what is left for each endpoint not tried yet, so that one
            // that hangs cannot take the whole call's time.
            let share = left / u32::try_from(count - tried).unwrap_or(1);
            let url = format!("{}{path}", endpoint.trim_end_matches('/'));
            let sent = self.http.post(&url).json(&body).timeout(share).send();
            let response = match sent.await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{endpoint}: {e}");
                    continue;
                }
            };
            self.preferred.store(i, Ordering::Relaxed);
            let status = response.status();
            let text = response.text().await.map_err(|e| EtcdError::BadResponse {
                path: path.to_owned(),
                reason: format!("reading the body from {endpoint}: {e}"),
            })?;
            if !status.is_success() {
                return Err(EtcdError::Refused {
                    path: path.to_owned(),
                    message: format!("http {status}: {}", text.trim()),
                });
            }
            return serde_json::from_str(&text).map_err(|e| EtcdError::BadResponse {
                path: path.to_owned(),
                reason: format!("{e} in {text}"),
            });
        }
        Err(EtcdError::Unreachable {
            path: path.to_owned(),
            tried: self.endpoints.join(", "),
            last,
        })
    }

    /// The stored key of `key` (relative to the prefix).
    fn key(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    fn kvs(raw: Vec<RawKv>) -> Vec<Kv> {
        raw.into_iter()
            .map(|kv| Kv {
                key: String::from_utf8_lossy(&B64.decode(&kv.key).unwrap_or_default()).into(),
                value: kv
                    .value
                    .and_then(|v| B64.decode(v).ok())
                    .unwrap_or_default(),
                mod_revision: revision(kv.mod_revision.as_deref()),
            })
            .collect()
    }

    /// The key (relative to the prefix, as every key here), if it exists (a linearizable read).
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let body = json!({ "key": B64.encode(self.key(key)) });
        let got: RangeResponse = self.call("/v3/kv/range", body, REQUEST_TIMEOUT).await?;
        Ok(Etcd::kvs(got.kvs).into_iter().next())
    }

    /// Every key under `prefix`, and the store's revision at the read.
    pub async fn list(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        let prefix = self.key(prefix);
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = json!({ "key": B64.encode(prefix), "range_end": B64.encode(end) });
        let got: RangeResponse = self.call("/v3/kv/range", body, REQUEST_TIMEOUT).await?;
        Ok((Etcd::kvs(got.kvs), revision(got.header.revision.as_deref())))
    }

    /// Whether etcd answers a linearizable read (which needs a leader, so a quorum) within
    /// `timeout`.
    pub async fn ready(&self, timeout: Duration) -> Result<(), EtcdError> {
        let body = json!({ "key": B64.encode(self.key("health")), "count_only": true });
        let _: RangeResponse = self.call("/v3/kv/range", body, timeout).await?;
        Ok(())
    }

    /// Writes `value` at `key` only if the key was last written at `mod_revision` (0: only if
    /// absent). `Ok(Some(rev))` is the new revision; `Ok(None)` means another writer won.
    pub async fn put_if(
        &self,
        key: &str,
        mod_revision: i64,
        value: &[u8],
    ) -> Result<Option<i64>, EtcdError> {
        let key = &self.key(key);
        let compare = if mod_revision == 0 {
            json!({ "key": B64.encode(key), "target": "CREATE", "result": "EQUAL",
                    "create_revision": "0" })
        } else {
            json!({ "key": B64.encode(key), "target": "MOD", "result": "EQUAL",
                    "mod_revision": mod_revision.to_string() })
        };
        let body = json!({
            "compare": [compare],
            "success": [{ "request_put": { "key": B64.encode(key), "value": B64.encode(value) } }],
        });
        let done: TxnResponse = self.call("/v3/kv/txn", body, REQUEST_TIMEOUT).await?;
        Ok(done
            .succeeded
            .then(|| revision(done.header.revision.as_deref())))
    }

    /// Deletes `key`; what it held, if it existed.
    pub async fn delete(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        #[derive(Deserialize)]
        struct Deleted {
            #[serde(default)]
            prev_kvs: Vec<RawKv>,
        }
        let body = json!({ "key": B64.encode(self.key(key)), "prev_kv": true });
        let done: Deleted = self
            .call("/v3/kv/deleterange", body, REQUEST_TIMEOUT)
            .await?;
        Ok(Etcd::kvs(done.prev_kvs).into_iter().next())
    }
}
