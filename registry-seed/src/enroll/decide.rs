//! The pure enrollment planner: who a host is, whether it is let in, its role and hostname.
//! No I/O: the caller gathers [`Known`] inside a store transaction and applies the [`Decision`]
//! in that same transaction.

use std::collections::HashMap;

use cluster::api::{EnrollRequest, HostIdentity, Role, codes};

use crate::store::records::{Admission, Assignment, Counters, HostRecord, HostStatus, TokenRecord};

/// One `[[hosts]]` entry of the spec with the role and name the spec gives it
/// (`ClusterSpec::plan_inventory`), as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryEntry {
    pub index: usize,
    pub macs: Vec<String>,
    pub product_uuid: Option<String>,
    pub serial: Option<String>,
    pub role: Role,
    /// 1-based position among the inventory's hosts of the same role.
    pub role_index: u32,
    pub hostname: String,
    pub ip: Option<String>,
}

/// What the planner knows of the cluster, from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFacts {
    pub name: String,
    /// How many masters bootstrap etcd together (and how many masters the cluster aims for).
    pub masters: u32,
    pub inventory: Vec<InventoryEntry>,
    /// Lookups over the inventory, made once: an enrollment costs the same with ten hosts in
    /// the spec or ten thousand.
    index: InventoryIndex,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct InventoryIndex {
    /// Identity key → positions in the inventory.
    by_key: HashMap<String, Vec<usize>>,
    masters: u32,
    workers: u32,
    /// Numbers `n` of inventory hostnames `<cluster>-m<n>` / `<cluster>-w<n>`, sorted.
    taken_master_numbers: Vec<u32>,
    taken_worker_numbers: Vec<u32>,
}

impl ClusterFacts {
    pub fn new(name: String, masters: u32, inventory: Vec<InventoryEntry>) -> ClusterFacts {
        let mut index = InventoryIndex::default();
        for (i, entry) in inventory.iter().enumerate() {
            for key in entry_keys(entry) {
                index.by_key.entry(key).or_default().push(i);
            }
            match entry.role {
                Role::Master => index.masters += 1,
                Role::Worker => index.workers += 1,
            }
            for (letter, taken) in [
                ('m', &mut index.taken_master_numbers),
                ('w', &mut index.taken_worker_numbers),
            ] {
                if let Some(n) = generated_number(&name, letter, &entry.hostname) {
                    taken.push(n);
                }
            }
        }
        for taken in [
            &mut index.taken_master_numbers,
            &mut index.taken_worker_numbers,
        ] {
            taken.sort_unstable();
            taken.dedup();
        }
        ClusterFacts {
            name,
            masters,
            inventory,
            index,
        }
    }

    fn inventory_count(&self, role: Role) -> u32 {
        match role {
            Role::Master => self.index.masters,
            Role::Worker => self.index.workers,
        }
    }
}

/// `n` when `hostname` is `<cluster>-<letter><n>` (`n` ≥ 1, as generated names are written).
fn generated_number(cluster: &str, letter: char, hostname: &str) -> Option<u32> {
    let digits = hostname
        .strip_prefix(cluster)?
        .strip_prefix('-')?
        .strip_prefix(letter)?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n >= 1)
}

/// The state of a presented token, looked up by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLookup {
    NotFound,
    /// The id exists but the secret does not match.
    WrongSecret,
    Found(TokenRecord),
}

/// What the store says about this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Host ids the request's identity keys point at (deduplicated).
    pub matched_ids: Vec<String>,
    /// The record of the matched host, when exactly one matched.
    pub matched: Option<HostRecord>,
    pub token: Option<TokenLookup>,
    pub counters: Counters,
    /// The address the request came from: a host outside the inventory gets it as its IP.
    pub peer_ip: Option<String>,
}

/// The planner's answer; the caller writes `record`, its identity and hostname indexes, the
/// counters and the token's use, all in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The host has (or already had) a role.
    Enrolled {
        record: HostRecord,
        counters: Counters,
        use_token: Option<String>,
    },
    /// Recorded, not let in.
    Pending {
        record: HostRecord,
        counters: Counters,
    },
    Refused {
        code: &'static str,
        message: String,
    },
}

fn refuse(code: &'static str, message: impl Into<String>) -> Decision {
    Decision::Refused {
        code,
        message: message.into(),
    }
}

/// Most hosts waiting for approval at once: beyond this, unknown hosts are refused
/// (`no_capacity`) rather than fill the store.
pub const MAX_WAITING: u32 = 4096;

/// Normalized identity keys: `mac:…`, `uuid:…`, `serial:…`. Values that firmware uses as
/// placeholders (an all-zero UUID, an empty or "To be filled" serial) identify nothing.
pub fn identity_keys(identity: &HostIdentity) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let macs = identity.macs.iter().chain(identity.boot_mac.iter());
    for mac in macs {
        let mac = mac.trim().to_ascii_lowercase();
        if !valid_mac(&mac) {
            return Err(format!("mac {mac:?} is not of the form aa:bb:cc:dd:ee:ff"));
        }
        keys.push(format!("mac:{mac}"));
    }
    if let Some(uuid) = &identity.product_uuid {
        let uuid = uuid.trim().to_ascii_lowercase();
        if uuid.len() > 64 {
            return Err("product_uuid is longer than 64 characters".into());
        }
        if uuid
            .chars()
            .any(|c| c.is_ascii_hexdigit() && c != '0' && c != 'f')
        {
            keys.push(format!("uuid:{uuid}"));
        }
    }
    if let Some(serial) = &identity.serial {
        let serial = serial.trim();
        if serial.len() > 128 {
            return Err("serial is longer than 128 characters".into());
        }
        if meaningful_serial(serial) {
            keys.push(format!("serial:{serial}"));
        }
    }
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Err("the identity has no MAC, product UUID or serial".into());
    }
    if keys.len() > 64 {
        return Err("the identity has more than 64 keys".into());
    }
    Ok(keys)
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && mac != "00:00:00:00:00:00"
}

fn meaningful_serial(serial: &str) -> bool {
    const PLACEHOLDERS: [&str; 6] = [
        "",
        "0",
        "none",
        "not specified",
        "to be filled by o.e.m.",
        "default string",
    ];
    !PLACEHOLDERS.contains(&serial.to_ascii_lowercase().as_str())
}

/// The inventory entries that match an identity (by any key).
fn inventory_matches<'a>(facts: &'a ClusterFacts, keys: &[String]) -> Vec<&'a InventoryEntry> {
    let mut positions: Vec<usize> = keys
        .iter()
        .filter_map(|k| facts.index.by_key.get(k))
        .flatten()
        .copied()
        .collect();
    positions.sort_unstable();
    positions.dedup();
    positions.iter().map(|i| &facts.inventory[*i]).collect()
}

/// An inventory entry's identity keys, normalized like a host's.
pub fn entry_keys(entry: &InventoryEntry) -> Vec<String> {
    let identity = HostIdentity {
        macs: entry.macs.clone(),
        boot_mac: None,
        product_uuid: entry.product_uuid.clone(),
        serial: entry.serial.clone(),
    };
    identity_keys(&identity).unwrap_or_default()
}

/// Decides an enrollment. `host_id` names a new record if one is made; `now_ms` is the seed's
/// clock.
pub fn decide(
    facts: &ClusterFacts,
    request: &EnrollRequest,
    known: &Known,
    now_ms: i64,
) -> Decision {
    let keys = match identity_keys(&request.identity) {
        Ok(keys) => keys,
        Err(message) => return refuse(codes::BAD_REQUEST, message),
    };
    if known.matched_ids.len() > 1 {
        return refuse(
            codes::IDENTITY_CONFLICT,
            format!(
                "this identity matches several known hosts ({}); remove the stale ones",
                known.matched_ids.join(", ")
            ),
        );
    }
    let entries = inventory_matches(facts, &keys);
    if entries.len() > 1 {
        return refuse(
            codes::IDENTITY_CONFLICT,
            "this identity matches several inventory entries",
        );
    }
    let mut counters = known.counters;
    let mut record = match &known.matched {
        Some(existing) => {
            let mut record = existing.clone();
            record.last_seen_ms = now_ms;
            record.identity = merge_identity(&record.identity, &request.identity);
            record
        }
        None => {
            counters.next_host += 1;
            HostRecord {
                id: format!("h-{:04}", counters.next_host),
                status: HostStatus::Pending,
                identity: request.identity.clone(),
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                assignment: None,
                progress: None,
                etcd: None,
            }
        }
    };
    if record.assignment.is_some() {
        return Decision::Enrolled {
            record,
            counters,
            use_token: None,
        };
    }
    let admitted = match admission(entries.first().copied(), request, known, &record, now_ms) {
        Ok(admitted) => admitted,
        Err((code, message)) => return refuse(code, message),
    };
    let Some((admission, choice, use_token)) = admitted else {
        if known.matched.is_none() {
            if counters.waiting >= MAX_WAITING {
                return refuse(
                    codes::NO_CAPACITY,
                    format!(
                        "{MAX_WAITING} hosts already wait for approval; approve or remove some"
                    ),
                );
            }
            counters.waiting += 1;
        }
        return Decision::Pending { record, counters };
    };
    if known.matched.is_some() {
        counters.waiting = counters.waiting.saturating_sub(1);
    }
    let entry = entries.first().copied();
    let mut assignment = assign(facts, entry, choice, admission, &mut counters, now_ms);
    if assignment.ip.is_none() {
        assignment.ip = known.peer_ip.clone();
    }
    record.assignment = Some(assignment);
    record.status = HostStatus::Enrolled;
    Decision::Enrolled {
        record,
        counters,
        use_token,
    }
}

/// An error code and its message.
type Refusal = (&'static str, String);

/// How a host is let in, the role it comes with (`None`: the seed decides) and the token it uses.
type Admitted = Option<(Admission, Option<Role>, Option<String>)>;

/// Whether the host is let in, how, and the role that comes with it.
fn admission(
    entry: Option<&InventoryEntry>,
    request: &EnrollRequest,
    known: &Known,
    record: &HostRecord,
    now_ms: i64,
) -> Result<Admitted, Refusal> {
    if let Some(entry) = entry {
        let admission = Admission::Inventory { index: entry.index };
        return Ok(Some((admission, Some(entry.role), None)));
    }
    if request.token.is_some() {
        let token = match &known.token {
            None | Some(TokenLookup::NotFound) | Some(TokenLookup::WrongSecret) => {
                return Err((codes::TOKEN_INVALID, "the join token is not known".into()));
            }
            Some(TokenLookup::Found(token)) => token,
        };
        if token.used_by.as_deref().is_some_and(|by| by != record.id) {
            return Err((codes::TOKEN_USED, "the join token was already used".into()));
        }
        if now_ms >= token.expires_ms {
            return Err((codes::TOKEN_EXPIRED, "the join token has expired".into()));
        }
        let admission = Admission::Token {
            token_id: token.id.clone(),
        };
        return Ok(Some((admission, token.role, Some(token.id.clone()))));
    }
    if record.status == HostStatus::Approved {
        return Ok(Some((Admission::Approval, None, None)));
    }
    Ok(None)
}

/// Role, hostname and master ordinal for a host being let in now. Inventory hosts take what
/// the spec gives them; others take the master seats the inventory leaves, in arrival order,
/// and the generated names the inventory does not use.
fn assign(
    facts: &ClusterFacts,
    entry: Option<&InventoryEntry>,
    choice: Option<Role>,
    admission: Admission,
    counters: &mut Counters,
    now_ms: i64,
) -> Assignment {
    let inventory_masters = facts.inventory_count(Role::Master);
    if let Some(entry) = entry {
        return Assignment {
            role: entry.role,
            hostname: entry.hostname.clone(),
            ip: entry.ip.clone(),
            master_ordinal: (entry.role == Role::Master).then_some(entry.role_index),
            admission,
            enrolled_at_ms: now_ms,
        };
    }
    let role = choice.unwrap_or(
        if inventory_masters + counters.masters_assigned < facts.masters {
            Role::Master
        } else {
            Role::Worker
        },
    );
    let (master_ordinal, nth) = match role {
        Role::Master => {
            counters.masters_assigned += 1;
            let n = counters.masters_assigned;
            (Some(inventory_masters + n), n)
        }
        Role::Worker => {
            counters.workers_assigned += 1;
            (None, counters.workers_assigned)
        }
    };
    Assignment {
        role,
        hostname: default_hostname(facts, role, nth),
        ip: None,
        master_ordinal,
        admission,
        enrolled_at_ms: now_ms,
    }
}

/// The `nth` generated name of the role (`<cluster>-m<n>`, `<cluster>-w<n>`, as
/// `ClusterSpec::default_hostname`) that no inventory host uses.
pub fn default_hostname(facts: &ClusterFacts, role: Role, nth: u32) -> String {
    let (letter, taken) = match role {
        Role::Master => ('m', &facts.index.taken_master_numbers),
        Role::Worker => ('w', &facts.index.taken_worker_numbers),
    };
    // The nth number the inventory leaves free: step over each taken one at or below it.
    let mut n = nth.max(1);
    for t in taken {
        if *t <= n {
            n += 1;
        } else {
            break;
        }
    }
    format!("{}-{letter}{n}", facts.name)
}

/// The union of what was known of a host and what it reports now.
fn merge_identity(old: &HostIdentity, new: &HostIdentity) -> HostIdentity {
    let mut macs = old.macs.clone();
    for mac in &new.macs {
        if !macs.contains(mac) {
            macs.push(mac.clone());
        }
    }
    HostIdentity {
        macs,
        boot_mac: new.boot_mac.clone().or_else(|| old.boot_mac.clone()),
        product_uuid: old
            .product_uuid
            .clone()
            .or_else(|| new.product_uuid.clone()),
        serial: old.serial.clone().or_else(|| new.serial.clone()),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
