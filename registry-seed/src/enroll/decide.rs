//! The pure enrollment planner: who a host is, whether it is let in, its role and hostname.
//! No I/O: the caller gathers [`Known`] inside a store transaction and applies the [`Decision`]
//! in that same transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cluster::api::{EnrollRequest, HostIdentity, Role, codes};
use cluster::pki::HostKeyId;

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
    /// The addresses the inventory gives its hosts.
    ips: BTreeSet<String>,
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
            if let Some(ip) = &entry.ip {
                index.ips.insert(ip.clone());
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

    /// The one inventory entry these identity keys match, if exactly one does.
    pub fn inventory_entry(&self, keys: &[String]) -> Option<&InventoryEntry> {
        match inventory_matches(self, keys).as_slice() {
            [one] => Some(one),
            _ => None,
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Known {
    /// The identity key the request proved it holds (its TLS client certificate).
    pub client_key: Option<HostKeyId>,
    /// The host bound to that key.
    pub by_key: Option<HostRecord>,
    /// The owner (a host id) of each of the request's identifiers that a host owns.
    pub owners: BTreeMap<String, String>,
    /// The record of the host owning the request's identifiers, when exactly one does.
    pub matched: Option<HostRecord>,
    /// The host holding the inventory entry the request's identifiers match (found by the
    /// entry's hostname), if one does.
    pub inventory_holder: Option<HostRecord>,
    pub token: Option<TokenLookup>,
    pub counters: Counters,
    /// The address the request came from: a host outside the inventory gets it as its IP.
    pub peer_ip: Option<String>,
    /// The host whose address `peer_ip` already is, if any.
    pub peer_ip_holder: Option<String>,
    /// The removed host that `client_key` was bound to, if it was: a removed host's key is
    /// never let in again.
    pub retired: Option<String>,
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

/// Most identifiers (MACs, product UUID, serial) a host has: a request with more is refused,
/// and a host's record takes new ones only up to this.
pub const MAX_IDENTIFIERS: usize = 32;

/// The identity as the seed keeps it: MACs and the UUID lowercase, every value trimmed, MACs
/// without repeats.
pub fn normalize(identity: &HostIdentity) -> HostIdentity {
    let mut macs: Vec<String> = Vec::new();
    for mac in &identity.macs {
        let mac = mac.trim().to_ascii_lowercase();
        if !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    let trimmed = |v: &Option<String>| v.as_ref().map(|v| v.trim().to_string());
    HostIdentity {
        macs,
        boot_mac: identity
            .boot_mac
            .as_ref()
            .map(|m| m.trim().to_ascii_lowercase()),
        product_uuid: trimmed(&identity.product_uuid).map(|u| u.to_ascii_lowercase()),
        serial: trimmed(&identity.serial),
    }
}

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
    if keys.len() > MAX_IDENTIFIERS {
        return Err(format!(
            "the identity has more than {MAX_IDENTIFIERS} MACs, UUIDs and serials"
        ));
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
///
/// Who the host is comes from its identity key first: the host bound to the key is this host,
/// whatever identifiers the request claims. A key no host has is a new host, unless the
/// identifiers it claims are owned by a host (one let in or approved) or match an inventory
/// entry that a host holds: that host is then taken (`identity_taken`) if it is bound to
/// another key, and bound to this one if it is bound to none. Pending hosts own no
/// identifiers, so no claim by a stranger can block a real host's enrollment.
pub fn decide(
    facts: &ClusterFacts,
    request: &EnrollRequest,
    known: &Known,
    now_ms: i64,
) -> Decision {
    let identity = normalize(&request.identity);
    let keys = match identity_keys(&identity) {
        Ok(keys) => keys,
        Err(message) => return refuse(codes::BAD_REQUEST, message),
    };
    let Some(client_key) = known.client_key else {
        return refuse(
            codes::IDENTITY_REQUIRED,
            "enrollment needs the host's identity key, presented as its TLS client certificate",
        );
    };
    if let Some(removed) = &known.retired {
        return refuse(
            codes::HOST_REMOVED,
            format!(
                "this machine's identity key belonged to host {removed}, which an operator removed \
                 from the cluster: it comes back only as a new machine, with a new key (its data \
                 disk wiped, e.g. booted once with launcher.wipe=1)"
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
    let entry = entries.first().copied();
    let mut counters = known.counters;
    let (mut record, is_new) = match &known.by_key {
        Some(bound) => (bound.clone(), false),
        None => match claimed(known) {
            Err((code, message)) => return refuse(code, message),
            Ok(Some(holder)) if holder.key.is_some() => return taken(&holder.id),
            Ok(Some(holder)) => {
                let mut record = holder.clone();
                record.key = Some(client_key);
                (record, false)
            }
            Ok(None) => {
                counters.next_host += 1;
                let record = HostRecord {
                    id: format!("h-{:04}", counters.next_host),
                    status: HostStatus::Pending,
                    identity: HostIdentity::default(),
                    first_seen_ms: now_ms,
                    last_seen_ms: now_ms,
                    assignment: None,
                    progress: None,
                    etcd: None,
                    key: Some(client_key),
                    planned_ms: None,
                };
                (record, true)
            }
        },
    };
    if let Some(entry) = entry {
        if let Some(holder) = &known.inventory_holder
            && holder.id != record.id
        {
            return taken(&holder.id);
        }
        let admitted_as = record.assignment.as_ref().map(|a| &a.admission);
        if admitted_as.is_some_and(|a| *a != Admission::Inventory { index: entry.index }) {
            return refuse(
                codes::IDENTITY_CONFLICT,
                format!(
                    "this identity matches the inventory's {}, and host {} was let in otherwise",
                    entry.hostname, record.id
                ),
            );
        }
    }
    record.last_seen_ms = now_ms;
    record.identity = merge_identity(&record.identity, &identity, &known.owners, &record.id);
    if record.assignment.is_some() {
        return Decision::Enrolled {
            record,
            counters,
            use_token: None,
        };
    }
    let admitted = match admission(entry, request, known, &record, now_ms) {
        Ok(admitted) => admitted,
        Err((code, message)) => return refuse(code, message),
    };
    let Some((admission, choice, use_token)) = admitted else {
        if is_new {
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
    if !is_new && record.status != HostStatus::Enrolled {
        counters.waiting = counters.waiting.saturating_sub(1);
    }
    let mut assignment = assign(facts, entry, choice, admission, &mut counters, now_ms);
    if assignment.ip.is_none()
        && let Some(ip) = &known.peer_ip
    {
        let holder = known.peer_ip_holder.as_ref().filter(|id| **id != record.id);
        if let Some(holder) = holder {
            return refuse(
                codes::IDENTITY_CONFLICT,
                format!("address {ip} is already host {holder}'s"),
            );
        }
        if facts.index.ips.contains(ip) {
            return refuse(
                codes::IDENTITY_CONFLICT,
                format!("address {ip} belongs to a host of the cluster file's inventory"),
            );
        }
        assignment.ip = Some(ip.clone());
    }
    record.assignment = Some(assignment);
    record.status = HostStatus::Enrolled;
    Decision::Enrolled {
        record,
        counters,
        use_token,
    }
}

/// The host that the request's identifiers (or the inventory entry they match) belong to, for a
/// key no host is bound to.
fn claimed(known: &Known) -> Result<Option<&HostRecord>, Refusal> {
    let owners: BTreeSet<&String> = known.owners.values().collect();
    if owners.len() > 1 {
        let ids: Vec<&str> = owners.iter().map(|id| id.as_str()).collect();
        return Err((
            codes::IDENTITY_CONFLICT,
            format!(
                "this identity matches several known hosts ({}); remove the stale ones",
                ids.join(", ")
            ),
        ));
    }
    match (&known.matched, &known.inventory_holder) {
        (Some(a), Some(b)) if a.id != b.id => Err((
            codes::IDENTITY_CONFLICT,
            format!(
                "this identity matches host {} and the inventory entry host {} holds",
                a.id, b.id
            ),
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b.as_ref()),
    }
}

fn taken(id: &str) -> Decision {
    refuse(
        codes::IDENTITY_TAKEN,
        format!(
            "host {id} is bound to another identity key; if this machine was re-imaged or its \
             disk replaced, an operator frees it with `launcher-seed hosts reset {id}`"
        ),
    )
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

/// What was known of a host and what it reports now: a new MAC is added unless another host
/// owns it or the host has [`MAX_IDENTIFIERS`] already; the UUID and serial first reported stay.
fn merge_identity(
    old: &HostIdentity,
    new: &HostIdentity,
    owners: &BTreeMap<String, String>,
    id: &str,
) -> HostIdentity {
    let owned_elsewhere = |key: String| owners.get(&key).is_some_and(|owner| owner != id);
    let mut merged = HostIdentity {
        macs: old.macs.clone(),
        boot_mac: old.boot_mac.clone(),
        product_uuid: old.product_uuid.clone(),
        serial: old.serial.clone(),
    };
    let count = |identity: &HostIdentity| identity_keys(identity).map_or(0, |k| k.len());
    if merged.product_uuid.is_none()
        && let Some(uuid) = &new.product_uuid
        && !owned_elsewhere(format!("uuid:{uuid}"))
    {
        merged.product_uuid = Some(uuid.clone());
    }
    if merged.serial.is_none()
        && let Some(serial) = &new.serial
        && !owned_elsewhere(format!("serial:{serial}"))
    {
        merged.serial = Some(serial.clone());
    }
    for mac in new.macs.iter().chain(new.boot_mac.iter()) {
        if merged.macs.contains(mac) || owned_elsewhere(format!("mac:{mac}")) {
            continue;
        }
        if count(&merged) >= MAX_IDENTIFIERS {
            break;
        }
        merged.macs.push(mac.clone());
    }
    if let Some(boot) = &new.boot_mac
        && merged.macs.contains(boot)
    {
        merged.boot_mac = Some(boot.clone());
    }
    merged
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
