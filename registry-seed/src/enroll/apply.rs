//! Running the planner inside one store transaction: gather what the store knows, decide,
//! write the decision, make the host's plan and record etcd's first members. Nothing is
//! answered before this commits.

use cluster::api::{EnrollRequest, codes};
use cluster::pki::CaSet;
use cluster::spec::ClusterSpec;
use sha2::{Digest, Sha256};

use std::collections::{BTreeMap, BTreeSet};

use cluster::pki::HostKeyId;

use super::decide::{
    ClusterFacts, Decision, Known, TokenLookup, decide, entry_keys, identity_keys, normalize,
};
use super::plan::{BuildError, PlanContext, PlanOutcome, build};
use crate::store::records::{Counters, HostCerts, HostRecord, HostStatus, TokenRecord, meta};
use crate::store::{
    Keep, ReadTxn, Store, StoreError, Table, Txn, get_json, list_json, put_json, read_with,
    write_or_discard, write_with,
};

/// What every enrollment is decided and planned against.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    pub spec: &'a ClusterSpec,
    pub facts: &'a ClusterFacts,
    pub cas: &'a CaSet,
}

/// What an enrollment came to, committed.
#[derive(Debug)]
pub enum Enrollment {
    Refused {
        code: &'static str,
        message: String,
    },
    /// Recorded, not let in.
    Pending {
        record: HostRecord,
    },
    /// Let in: its plan (or why it waits, or why its CSRs were refused). `joins_etcd` when the
    /// host is a master beyond etcd's first members that etcd has not taken as a learner yet:
    /// the plan may be given only once it has.
    Enrolled {
        record: HostRecord,
        plan: Result<PlanOutcome, BuildError>,
        joins_etcd: bool,
    },
}

/// Decides an enrollment, records it and plans the host, in one transaction (one durable
/// commit); a refusal writes nothing.
pub fn enroll(
    store: &dyn Store,
    cluster: Cluster<'_>,
    request: &EnrollRequest,
    caller: &Caller,
    now_ms: i64,
) -> Result<Enrollment, StoreError> {
    write_or_discard(store, |tx| {
        let decision = record(tx, cluster.facts, request, caller, now_ms)?;
        if let Decision::Refused { code, message } = decision {
            return Ok((Enrollment::Refused { code, message }, Keep::Discard));
        }
        let enrollment = match decision {
            Decision::Refused { .. } => unreachable!("handled above"),
            Decision::Pending { record, .. } => Enrollment::Pending { record },
            Decision::Enrolled { mut record, .. } => {
                if let Err(message) = image_fits(cluster, &record, request) {
                    let code = codes::VERSION_MISMATCH;
                    return Ok((Enrollment::Refused { code, message }, Keep::Discard));
                }
                let (plan, joins_etcd) = plan(tx, cluster, &record, request)?;
                if let Ok(PlanOutcome::Ready(plan)) = &plan {
                    record_certs(tx, &record.id, plan, now_ms)?;
                }
                if record.planned_ms.is_none() && matches!(plan, Ok(PlanOutcome::Ready(_))) {
                    record.planned_ms = Some(now_ms);
                    put_json(tx, Table::Hosts, &record.id, &record)?;
                }
                Enrollment::Enrolled {
                    record,
                    plan,
                    joins_etcd,
                }
            }
        };
        Ok((enrollment, Keep::Commit))
    })
}

/// Records the leaf certificates of the plan just made for host `id`. A plan whose files do
/// not read back is this seed's own fault: it is logged and the enrollment goes on, since the
/// record only informs `launcher-seed certs`.
fn record_certs(
    tx: &mut dyn Txn,
    id: &str,
    plan: &cluster::api::Plan,
    now_ms: i64,
) -> Result<(), StoreError> {
    match cluster::certs::leaf_certs(&plan.files) {
        Ok(certs) => {
            let record = HostCerts {
                host: id.to_string(),
                planned_ms: now_ms,
                certs,
            };
            put_json(tx, Table::Certs, id, &record)
        }
        Err(e) => {
            tracing::warn!(
                host = id,
                "the certificates of the plan just made do not read back: {e}"
            );
            Ok(())
        }
    }
}

/// Whether the release the host's image carries fits its role here (see `cluster::skew`): a
/// host that does not fit is refused before anything is recorded, so that it installs nothing
/// and keeps asking; an image that does not say is not checked.
fn image_fits(
    cluster: Cluster<'_>,
    record: &HostRecord,
    request: &EnrollRequest,
) -> Result<(), String> {
    let (Some(image), Some(assignment)) = (request.kubernetes_version, &record.assignment) else {
        return Ok(());
    };
    let role = assignment.role;
    cluster::skew::image_fits(role, image, cluster.spec.kubernetes_version)
        .map_err(|why| format!("{} ({role} {}): {why}", record.id, assignment.hostname))
}

/// The host's plan against the masters recorded now, and whether it joins a running etcd.
/// The first master of etcd's first members to get its plan records how many they are
/// (`meta/etcd_cohort`): raising `cluster.masters` later makes a new master a learner, never a
/// second bootstrap.
fn plan(
    tx: &mut dyn Txn,
    cluster: Cluster<'_>,
    record: &HostRecord,
    request: &EnrollRequest,
) -> Result<(Result<PlanOutcome, BuildError>, bool), StoreError> {
    let cohort = get_json::<u32>(&*tx, Table::Meta, meta::ETCD_COHORT)?;
    let bootstrap = cohort.unwrap_or(cluster.spec.masters);
    let masters: Vec<HostRecord> = if record.is_master() {
        list_json::<HostRecord>(&*tx, Table::Hosts)?
            .into_iter()
            .filter(HostRecord::is_master)
            .collect()
    } else {
        Vec::new()
    };
    let ctx = PlanContext {
        spec: cluster.spec,
        bootstrap,
        facts: cluster.facts,
        cas: cluster.cas,
        masters: &masters,
        now: time::OffsetDateTime::now_utc(),
    };
    let plan = build(&ctx, record, &request.csrs);
    let ordinal = record.master_ordinal();
    let starts_etcd = ordinal.is_some_and(|o| o <= bootstrap);
    if starts_etcd && cohort.is_none() && matches!(plan, Ok(PlanOutcome::Ready(_))) {
        put_json(tx, Table::Meta, meta::ETCD_COHORT, &bootstrap)?;
    }
    let joins_etcd = record.etcd.is_none() && ordinal.is_some_and(|o| o > bootstrap);
    Ok((plan, joins_etcd))
}

/// Decides an enrollment and writes the decision.
fn record(
    tx: &mut dyn Txn,
    facts: &ClusterFacts,
    request: &EnrollRequest,
    caller: &Caller,
    now_ms: i64,
) -> Result<Decision, StoreError> {
    let known = gather(&*tx, facts, request, caller)?;
    let decision = decide(facts, request, &known, now_ms);
    match &decision {
        Decision::Enrolled {
            record,
            counters,
            use_token,
        } => {
            write_host(tx, record)?;
            put_json(tx, Table::Meta, meta::COUNTERS, counters)?;
            if let Some(token_id) = use_token {
                mark_token_used(tx, token_id, &record.id)?;
            }
        }
        Decision::Pending { record, counters } => {
            write_host(tx, record)?;
            put_json(tx, Table::Meta, meta::COUNTERS, counters)?;
        }
        Decision::Refused { .. } => {}
    }
    Ok(decision)
}

/// Who sent a request, as the server saw it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The identity key the client proved it holds.
    pub key: Option<HostKeyId>,
    pub ip: Option<String>,
}

/// The index key of a bound identity key.
fn key_index(key: &HostKeyId) -> String {
    format!("key:{key}")
}

/// The index key of a removed host's identity key, which holds that host's id.
fn retired_index(key: &HostKeyId) -> String {
    format!("retired:{key}")
}

/// Keeps the identity key of a host being removed, so that the machine holding it is refused
/// (`host_removed`) from now on rather than let in again by its old identity.
pub fn retire_key(tx: &mut dyn Txn, record: &HostRecord) -> Result<(), StoreError> {
    match &record.key {
        Some(key) => tx.put(Table::Identities, &retired_index(key), record.id.as_bytes()),
        None => Ok(()),
    }
}

/// The index key of a host's address.
fn ip_index(ip: &str) -> String {
    format!("ip:{ip}")
}

fn lookup(tx: &dyn ReadTxn, table: Table, key: &str) -> Result<Option<String>, StoreError> {
    Ok(tx
        .get(table, key)?
        .map(|id| String::from_utf8_lossy(&id).into_owned()))
}

/// What the store knows that bears on this request.
fn gather(
    tx: &dyn ReadTxn,
    facts: &ClusterFacts,
    request: &EnrollRequest,
    caller: &Caller,
) -> Result<Known, StoreError> {
    let host = |id: Option<String>| -> Result<Option<HostRecord>, StoreError> {
        match id {
            Some(id) => get_json::<HostRecord>(tx, Table::Hosts, &id),
            None => Ok(None),
        }
    };
    let identity = normalize(&request.identity);
    let keys = identity_keys(&identity).unwrap_or_default();
    let mut owners = BTreeMap::new();
    for key in &keys {
        if let Some(id) = lookup(tx, Table::Identities, key)? {
            owners.insert(key.clone(), id);
        }
    }
    let distinct: BTreeSet<&String> = owners.values().collect();
    let matched = match distinct.iter().next() {
        Some(one) if distinct.len() == 1 => host(Some((*one).clone()))?,
        _ => None,
    };
    let by_key = match &caller.key {
        Some(key) => host(lookup(tx, Table::Identities, &key_index(key))?)?,
        None => None,
    };
    let holder = match facts.inventory_entry(&keys) {
        Some(entry) => host(lookup(tx, Table::Hostnames, &entry.hostname)?)?,
        None => None,
    };
    let peer_ip_holder = match &caller.ip {
        Some(ip) => lookup(tx, Table::Hostnames, &ip_index(ip))?,
        None => None,
    };
    let token = match &request.token {
        Some(token) => Some(lookup_token(tx, token)?),
        None => None,
    };
    let retired = match &caller.key {
        Some(key) => lookup(tx, Table::Identities, &retired_index(key))?,
        None => None,
    };
    Ok(Known {
        retired,
        client_key: caller.key,
        by_key,
        owners,
        matched,
        inventory_holder: holder,
        token,
        counters: counters(tx)?,
        peer_ip: caller.ip.clone(),
        peer_ip_holder,
    })
}

pub fn counters(tx: &dyn ReadTxn) -> Result<Counters, StoreError> {
    Ok(get_json(tx, Table::Meta, meta::COUNTERS)?.unwrap_or_default())
}

/// A token is `<id>.<secret>`; the store keeps the id and the SHA-256 of the whole token.
fn lookup_token(tx: &dyn ReadTxn, token: &str) -> Result<TokenLookup, StoreError> {
    let Some((id, _secret)) = token.split_once('.') else {
        return Ok(TokenLookup::NotFound);
    };
    let Some(record) = get_json::<TokenRecord>(tx, Table::Tokens, id)? else {
        return Ok(TokenLookup::NotFound);
    };
    if !constant_time_eq(
        record.secret_sha256.as_bytes(),
        token_hash(token).as_bytes(),
    ) {
        return Ok(TokenLookup::WrongSecret);
    }
    Ok(TokenLookup::Found(record))
}

/// Whether a machine with these identity keys is in the inventory or has enrolled.
pub fn is_known(
    store: &dyn Store,
    facts: &ClusterFacts,
    keys: &[String],
) -> Result<bool, StoreError> {
    let in_inventory = facts
        .inventory
        .iter()
        .any(|e| entry_keys(e).iter().any(|k| keys.contains(k)));
    if in_inventory {
        return Ok(true);
    }
    read_with(store, |tx| {
        for key in keys {
            if tx.get(Table::Identities, key)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    })
}

/// The SHA-256 (hex) of a whole token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn mark_token_used(tx: &mut dyn Txn, token_id: &str, host_id: &str) -> Result<(), StoreError> {
    if let Some(mut token) = get_json::<TokenRecord>(&*tx, Table::Tokens, token_id)? {
        token.used_by = Some(host_id.to_string());
        put_json(tx, Table::Tokens, token_id, &token)?;
    }
    Ok(())
}

/// Writes a host record with its indexes: its key; the identifiers it owns once let in or
/// approved (never one another host owns); its hostname and address.
pub fn write_host(tx: &mut dyn Txn, record: &HostRecord) -> Result<(), StoreError> {
    put_json(tx, Table::Hosts, &record.id, record)?;
    if let Some(key) = &record.key {
        tx.put(Table::Identities, &key_index(key), record.id.as_bytes())?;
    }
    if record.status != HostStatus::Pending {
        for key in identity_keys(&record.identity).unwrap_or_default() {
            match lookup(&*tx, Table::Identities, &key)? {
                Some(owner) if owner != record.id => {}
                _ => tx.put(Table::Identities, &key, record.id.as_bytes())?,
            }
        }
    }
    if let Some(hostname) = record.hostname() {
        tx.put(Table::Hostnames, hostname, record.id.as_bytes())?;
    }
    if let Some(ip) = record.assignment.as_ref().and_then(|a| a.ip.as_deref()) {
        tx.put(Table::Hostnames, &ip_index(ip), record.id.as_bytes())?;
    }
    Ok(())
}

/// Deletes `key` from `table` if it points at host `id`.
fn unindex(tx: &mut dyn Txn, table: Table, key: &str, id: &str) -> Result<(), StoreError> {
    if tx.get(table, key)?.as_deref() == Some(id.as_bytes()) {
        tx.delete(table, key)?;
    }
    Ok(())
}

/// Removes a host record with its indexes; returns the record if it existed.
pub fn forget_host(tx: &mut dyn Txn, id: &str) -> Result<Option<HostRecord>, StoreError> {
    let Some(record) = get_json::<HostRecord>(&*tx, Table::Hosts, id)? else {
        return Ok(None);
    };
    for key in identity_keys(&record.identity).unwrap_or_default() {
        unindex(tx, Table::Identities, &key, id)?;
    }
    if let Some(key) = &record.key {
        unindex(tx, Table::Identities, &key_index(key), id)?;
    }
    if let Some(hostname) = record.hostname() {
        unindex(tx, Table::Hostnames, hostname, id)?;
    }
    if let Some(ip) = record.assignment.as_ref().and_then(|a| a.ip.as_deref()) {
        unindex(tx, Table::Hostnames, &ip_index(ip), id)?;
    }
    tx.delete(Table::Hosts, id)?;
    tx.delete(Table::Certs, id)?;
    tx.delete(Table::Commands, id)?;
    if record.status != HostStatus::Enrolled {
        let mut counters = counters(&*tx)?;
        counters.waiting = counters.waiting.saturating_sub(1);
        put_json(tx, Table::Meta, meta::COUNTERS, &counters)?;
    }
    Ok(Some(record))
}

/// Unbinds a host from its identity key (`hosts reset`): the next machine that claims the
/// host's identifiers binds its own key. Returns the record as it was, if it existed.
pub fn reset_host(tx: &mut dyn Txn, id: &str) -> Result<Option<HostRecord>, StoreError> {
    let Some(mut record) = get_json::<HostRecord>(&*tx, Table::Hosts, id)? else {
        return Ok(None);
    };
    let before = record.clone();
    if let Some(key) = record.key.take() {
        unindex(tx, Table::Identities, &key_index(&key), id)?;
    }
    put_json(tx, Table::Hosts, id, &record)?;
    Ok(Some(before))
}

/// Forgets hosts that wait for approval and have not asked since `before_ms` (a pending
/// machine asks again every few seconds). Returns their ids.
pub fn expire_pending(store: &dyn Store, before_ms: i64) -> Result<Vec<String>, StoreError> {
    let stale = |tx: &dyn ReadTxn| -> Result<Vec<String>, StoreError> {
        Ok(list_json::<HostRecord>(tx, Table::Hosts)?
            .into_iter()
            .filter(|h| h.status == HostStatus::Pending && h.last_seen_ms < before_ms)
            .map(|h| h.id)
            .collect())
    };
    // Nothing is written (no commit) when nothing expired.
    if read_with(store, |tx| stale(tx))?.is_empty() {
        return Ok(Vec::new());
    }
    write_with(store, |tx| {
        let ids = stale(&*tx)?;
        for id in &ids {
            forget_host(tx, id)?;
        }
        Ok(ids)
    })
}
