//! Hosts the seed refused because of their image's Kubernetes release. A refused enrollment
//! records nothing in the store (the host installs nothing and keeps asking), so the seed keeps
//! the latest refusals in memory, for `launcher-seed status`: one entry per claimed set of MAC
//! addresses, at most [`KEPT`] of them, the oldest dropped first, so that no amount of requests
//! from the LAN grows it. A host let in later leaves the list.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How many refused hosts are kept.
pub const KEPT: usize = 64;
/// The longest MAC list or message kept, in characters; the rest is cut.
const LONGEST: usize = 512;

/// One refused host, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedView {
    /// The MAC addresses the host claimed, comma-separated.
    pub macs: String,
    /// The address its last request came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why, as the host was told.
    pub message: String,
    pub first_ms: i64,
    pub last_ms: i64,
    /// How many times it was refused.
    pub times: u64,
}

#[derive(Debug, Default)]
pub struct Refusals(Mutex<VecDeque<RefusedView>>);

fn cut(s: &str) -> String {
    s.chars().take(LONGEST).collect()
}

/// The key a host is kept under: its MAC list, sorted.
pub fn macs_key(macs: &[String]) -> String {
    let mut macs: Vec<&str> = macs.iter().map(String::as_str).collect();
    macs.sort_unstable();
    cut(&macs.join(","))
}

impl Refusals {
    /// Notes a refusal of the host claiming `macs`.
    pub fn note(&self, macs: &[String], source: Option<String>, message: &str, now_ms: i64) {
        let key = macs_key(macs);
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match kept.iter().position(|r| r.macs == key) {
            Some(at) => {
                let mut r = kept.remove(at).expect("the position was just found");
                r.last_ms = now_ms;
                r.times += 1;
                r
            }
            None => RefusedView {
                macs: key,
                source: None,
                message: String::new(),
                first_ms: now_ms,
                last_ms: now_ms,
                times: 1,
            },
        };
        let entry = RefusedView {
            source: source.map(|s| cut(&s)),
            message: cut(message),
            ..entry
        };
        while kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back(entry);
    }

    /// Forgets the host claiming `macs` (it was let in).
    pub fn forget(&self, macs: &[String]) {
        let key = macs_key(macs);
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|r| r.macs != key);
    }

    /// The refused hosts, the most recently refused last.
    pub fn list(&self) -> Vec<RefusedView> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn macs(n: usize) -> Vec<String> {
        vec![format!("52:54:00:00:{:02x}:{:02x}", n / 256, n % 256)]
    }

    #[test]
    fn a_host_is_kept_once_the_newest_last_and_the_list_is_bounded() {
        let r = Refusals::default();
        r.note(&macs(1), Some("10.0.0.1".into()), "first", 1);
        r.note(&macs(2), None, "second", 2);
        r.note(&macs(1), Some("10.0.0.9".into()), "again", 3);
        let list = r.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].macs, "52:54:00:00:00:01");
        assert_eq!(
            (list[1].times, list[1].first_ms, list[1].last_ms),
            (2, 1, 3)
        );
        assert_eq!(list[1].message, "again");
        assert_eq!(list[1].source.as_deref(), Some("10.0.0.9"));
        r.forget(&macs(1));
        assert_eq!(r.list().len(), 1);

        for n in 0..1000 {
            r.note(&macs(n), None, &"x".repeat(10_000), n as i64);
        }
        let list = r.list();
        assert_eq!(list.len(), KEPT);
        assert_eq!(list[0].first_ms, 1000 - KEPT as i64);
        assert_eq!(list[KEPT - 1].first_ms, 999);
        assert!(list.iter().all(|e| e.message.len() == LONGEST));
    }

    #[test]
    fn the_key_does_not_depend_on_the_order_of_the_macs() {
        let a = vec![
            "52:54:00:00:00:02".to_string(),
            "52:54:00:00:00:01".to_string(),
        ];
        let b = vec![
            "52:54:00:00:00:01".to_string(),
            "52:54:00:00:00:02".to_string(),
        ];
        assert_eq!(macs_key(&a), macs_key(&b));
    }
}
