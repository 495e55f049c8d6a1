//! A client for etcd's v3 JSON gateway (etcd 3.4 serves it under `/v3/`), over mutual TLS.

use super::MembershipError;
use super::plan::{Member, MemberId};
use cluster::pki::{CaKind, CertProfile, Usage};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::time::Duration;

/// How long one call to etcd may take before the next endpoint is tried: longer than etcd's
/// own wait for a proposal (5 s and two election timeouts), so that etcd's answer, even a
/// refusal, arrives rather than a timeout of ours.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The certificate profile of the seed's own etcd client identity, signed by the etcd CA.
pub fn seed_client_profile() -> CertProfile {
    CertProfile {
        name: "seed-etcd-client".to_owned(),
        issuer: CaKind::Etcd,
        common_name: "launcher-seed".to_owned(),
        organization: None,
        usage: Usage::Client,
        dns_names: Vec::new(),
        ips: Vec::new(),
    }
}

/// PEM material of the client: the etcd CA it trusts, and its own certificate and key.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

/// Talks to one etcd cluster through any of its client URLs.
#[derive(Clone, Debug)]
pub struct EtcdClient {
    http: reqwest::Client,
    endpoints: Vec<String>,
}

#[derive(Deserialize)]
struct ListResponse {
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct AddResponse {
    member: Member,
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct StatusResponse {
    leader: MemberId,
}

#[derive(Deserialize)]
struct GatewayError {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Health {
    health: String,
}

impl EtcdClient {
    /// A client for the cluster reachable at `endpoints` (client URLs, `https://IP:2379`).
    pub fn new(endpoints: Vec<String>, tls: &EtcdTls) -> Result<EtcdClient, MembershipError> {
        let bad = |what: &str, e: reqwest::Error| MembershipError::Tls(format!("{what}: {e}"));
        let ca = reqwest::Certificate::from_pem(tls.ca_pem.as_bytes())
            .map_err(|e| bad("reading the etcd ca", e))?;
        let pem = format!("{}\n{}", tls.client_cert_pem, tls.client_key_pem);
        let identity = reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|e| bad("reading the client certificate and key", e))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| bad("building the https client", e))?;
        Ok(EtcdClient { http, endpoints })
    }

    /// The client URLs tried, in order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// POSTs `body` to `path` on the first endpoint that answers. An endpoint that cannot be
    /// reached is skipped; an answer from etcd, even a refusal, is final.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, MembershipError> {
        self.call_on(&self.endpoints, path, body).await
    }

    /// [`EtcdClient::call`] on the given endpoints.
    async fn call_on<T: DeserializeOwned>(
        &self,
        endpoints: &[String],
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, MembershipError> {
        let mut last = String::from("no endpoints configured");
        for endpoint in endpoints {
            let url = format!("{}{path}", endpoint.trim_end_matches('/'));
            let response = match self.http.post(&url).json(&body).send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%url, error = %e, "etcd endpoint unreachable");
                    last = format!("{endpoint}: {e}");
                    continue;
                }
            };
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(|e| MembershipError::BadResponse {
                    path: path.to_owned(),
                    reason: format!("reading the body from {endpoint}: {e}"),
                })?;
            if !status.is_success() {
                let err: GatewayError = serde_json::from_str(&text).unwrap_or(GatewayError {
                    code: -1,
                    message: format!("http {status}: {}", text.trim()),
                });
                return Err(MembershipError::Etcd {
                    path: path.to_owned(),
                    code: err.code,
                    message: err.message,
                });
            }
            return serde_json::from_str(&text).map_err(|e| MembershipError::BadResponse {
                path: path.to_owned(),
                reason: format!("{e} in {text}"),
            });
        }
        Err(MembershipError::Unreachable {
            path: path.to_owned(),
            tried: endpoints.join(", "),
            last,
        })
    }

    /// The member the cluster's leader is, as the members at `client_urls` see it.
    pub async fn leader(&self, client_urls: &[String]) -> Result<MemberId, MembershipError> {
        let status: StatusResponse = self
            .call_on(client_urls, "/v3/maintenance/status", json!({}))
            .await?;
        Ok(status.leader)
    }

    /// Hands leadership to `target`; asked of the leader itself (at `leader_urls`), which
    /// answers once `target` leads.
    pub async fn move_leader(
        &self,
        leader_urls: &[String],
        target: MemberId,
    ) -> Result<(), MembershipError> {
        let _: serde_json::Value = self
            .call_on(
                leader_urls,
                "/v3/maintenance/transfer-leadership",
                json!({ "targetID": target }),
            )
            .await?;
        Ok(())
    }

    /// Every member, learners included.
    pub async fn member_list(&self) -> Result<Vec<Member>, MembershipError> {
        let list: ListResponse = self.call("/v3/cluster/member/list", json!({})).await?;
        Ok(list.members)
    }

    /// Adds a learner at `peer_url`; returns it and the member list after the change.
    pub async fn add_learner(
        &self,
        peer_url: &str,
    ) -> Result<(Member, Vec<Member>), MembershipError> {
        let body = json!({ "peerURLs": [peer_url], "isLearner": true });
        let added: AddResponse = self.call("/v3/cluster/member/add", body).await?;
        Ok((added.member, added.members))
    }

    /// Makes a learner a voting member; etcd refuses until it has caught up with the leader.
    pub async fn promote(&self, id: MemberId) -> Result<(), MembershipError> {
        let _: serde_json::Value = self
            .call("/v3/cluster/member/promote", json!({ "ID": id }))
            .await?;
        Ok(())
    }

    /// Removes a member.
    pub async fn remove(&self, id: MemberId) -> Result<(), MembershipError> {
        let _: serde_json::Value = self
            .call("/v3/cluster/member/remove", json!({ "ID": id }))
            .await?;
        Ok(())
    }

    /// Whether the member serving `client_url` says it is healthy (`GET /health`: it has a
    /// leader and can serve reads).
    pub async fn healthy(&self, client_url: &str) -> bool {
        let url = format!("{}/health", client_url.trim_end_matches('/'));
        match self.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                matches!(r.json::<Health>().await, Ok(h) if h.health == "true")
            }
            Ok(r) => {
                tracing::debug!(%url, status = %r.status(), "etcd member unhealthy");
                false
            }
            Err(e) => {
                tracing::debug!(%url, error = %e, "etcd member unreachable");
                false
            }
        }
    }
}
