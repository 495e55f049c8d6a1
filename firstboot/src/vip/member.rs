//! keepalived's second check on a master: is it still a member of the cluster's etcd? The seed's
//! remove job takes a master out of etcd while the host runs on; its API server stays ready,
//! because its etcd endpoints are every member's, so `/readyz` alone would let it keep the VIP.

use crate::journal::{Journal, JournalError};
use crate::keys;
use crate::os::{ClientTls, mtls_client};
use cluster::api::cert_names;
use std::path::Path;
use std::time::Duration;

/// Per member asked. The other members are asked at once, then this master's own if none of
/// them answered: at most two rounds, well within keepalived's 15 s for the check (a check that
/// times out counts as failed, and says nothing about membership), on a host slow to start a
/// process.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many other members are asked, so the check holds few threads and connections.
const MAX_ASKED: usize = 4;
const ETCD_PKI: &str = "etc/kubernetes/pki/etcd";

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the journal holds no plan with an etcd member: this host is no master")]
    NotAMaster,
    #[error("{0}")]
    Key(String),
    #[error(
        "{asked} lists no member {name} ({url}): this master was removed from the cluster's etcd"
    )]
    Removed {
        asked: String,
        name: String,
        url: String,
    },
}

/// What the members asked said.
#[derive(Debug, PartialEq, Eq)]
pub enum MemberCheck {
    /// The member at this URL lists this master.
    Listed(String),
    /// No member answered (the reasons, one per member asked): nothing says this master was
    /// removed, so the API server's readiness alone decides.
    NoAnswer(Vec<String>),
}

/// Asks the other members at once (a removed member's own list may still hold itself), then,
/// if none of them answered, this master's own, for etcd's member list. An answer that lacks
/// this master decides that it was removed: etcd's membership changes go through its log, so a
/// member that has applied the removal says so, and one lagging behind catches up within a
/// check or two (keepalived acts only on two failed checks in a row).
pub fn check_member(root: &Path) -> Result<MemberCheck, MemberError> {
    let journal = Journal::load(root)?;
    let plan = journal.plan.as_ref().ok_or(MemberError::NotAMaster)?;
    let etcd = plan.etcd.as_ref().ok_or(MemberError::NotAMaster)?;
    let own = etcd.own_client_url(plan.ip.as_deref());
    let tls = ClientTls {
        ca: root.join(ETCD_PKI).join("ca.crt"),
        cert: root.join(ETCD_PKI).join("healthcheck-client.crt"),
        key: keys::key_path(root, cert_names::ETCD_HEALTHCHECK_CLIENT)
            .map_err(|e| MemberError::Key(e.to_string()))?,
    };
    let client = mtls_client(&tls, ASK_TIMEOUT).map_err(MemberError::Key)?;
    let ask = |url: &String| {
        let list = format!("{}/v3/cluster/member/list", url.trim_end_matches('/'));
        client
            .post(&list)
            .body("{}")
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .map_err(|e| e.to_string())
            .and_then(|body| lists(&body, &etcd.member_name, &own))
    };
    let others: Vec<&String> = etcd
        .client_urls
        .iter()
        .filter(|u| **u != own)
        .take(MAX_ASKED)
        .collect();
    let answers: Vec<(&String, Result<bool, String>)> = std::thread::scope(|s| {
        let asking: Vec<_> = others
            .iter()
            .map(|url| (*url, s.spawn(|| ask(url))))
            .collect();
        asking
            .into_iter()
            .map(|(url, t)| {
                (
                    url,
                    t.join().unwrap_or_else(|_| Err("the ask panicked".into())),
                )
            })
            .collect()
    });
    let mut reasons = Vec::new();
    let mut listed = None;
    for (url, answer) in answers {
        match answer {
            Ok(false) => return Err(removed(url, &etcd.member_name, &own)),
            Ok(true) => listed = listed.or(Some(url.clone())),
            Err(reason) => reasons.push(format!("{url}: {reason}")),
        }
    }
    if let Some(url) = listed {
        return Ok(MemberCheck::Listed(url));
    }
    match ask(&own) {
        Ok(true) => Ok(MemberCheck::Listed(own)),
        Ok(false) => Err(removed(&own, &etcd.member_name, &own)),
        Err(reason) => {
            reasons.push(format!("{own}: {reason}"));
            Ok(MemberCheck::NoAnswer(reasons))
        }
    }
}

fn removed(asked: &str, name: &str, own: &str) -> MemberError {
    MemberError::Removed {
        asked: asked.to_string(),
        name: name.to_string(),
        url: own.to_string(),
    }
}

/// Whether etcd's member list (the JSON of `/v3/cluster/member/list`) holds the member named
/// `name` or serving `client_url`. A member added but not yet started has neither.
pub fn lists(body: &str, name: &str, client_url: &str) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    struct List {
        #[serde(default)]
        members: Vec<Member>,
    }
    #[derive(serde::Deserialize)]
    struct Member {
        #[serde(default)]
        name: String,
        #[serde(default, rename = "clientURLs")]
        client_urls: Vec<String>,
    }
    let list: List = serde_json::from_str(body)
        .map_err(|e| format!("not etcd's member list ({e}): {}", excerpt(body)))?;
    if list.members.is_empty() {
        return Err(format!("a member list without members: {}", excerpt(body)));
    }
    let url = client_url.trim_end_matches('/');
    Ok(list
        .members
        .iter()
        .any(|m| m.name == name || m.client_urls.iter().any(|u| u.trim_end_matches('/') == url)))
}

fn excerpt(body: &str) -> String {
    cluster::text::printable(body.trim())
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::lists;

    #[test]
    fn a_member_is_found_by_name_or_client_url() {
        let list = r#"{"header":{"cluster_id":"1"},"members":[
            {"ID":"11","name":"lab-m2","peerURLs":["https://10.77.0.12:2380"],"clientURLs":["https://10.77.0.12:2379"]},
            {"ID":"12","name":"","peerURLs":["https://10.77.0.14:2380"],"isLearner":true}]}"#;
        let cases = [
            ("lab-m2", "https://10.77.0.99:2379", Ok(true)),
            ("renamed", "https://10.77.0.12:2379/", Ok(true)),
            ("lab-m1", "https://10.77.0.11:2379", Ok(false)),
            // A learner that has not started has no name or URL yet.
            ("lab-m4", "https://10.77.0.14:2379", Ok(false)),
        ];
        for (name, url, want) in cases {
            assert_eq!(lists(list, name, url), want, "{name} {url}");
        }
    }

    #[test]
    fn answers_that_are_no_member_list_are_no_verdict() {
        let cases = [
            (
                "",
                "not etcd's member list (EOF while parsing a value at line 1 column 0): ",
            ),
            ("{}", "a member list without members: {}"),
            (
                "<html>\u{1b}[31m",
                "not etcd's member list (expected value at line 1 column 1): <html>[31m",
            ),
        ];
        for (body, error) in cases {
            assert_eq!(
                lists(body, "lab-m1", "https://10.77.0.11:2379"),
                Err(error.to_string())
            );
        }
    }
}
