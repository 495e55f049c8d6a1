//! Running the planner inside one store transaction: gather what the store knows, decide, write
//! the decision. Nothing is answered before this commits.

use cluster::api::EnrollRequest;
use sha2::{Digest, Sha256};

use super::decide::{ClusterFacts, Decision, Known, TokenLookup, decide, identity_keys};
use crate::store::records::{Counters, HostRecord, HostStatus, TokenRecord, meta};
use crate::store::{ReadTxn, Store, StoreError, Table, Txn, get_json, put_json, write_with};

/// Decides an enrollment and commits it; a refusal writes nothing.
pub fn enroll(
    store: &dyn Store,
    facts: &ClusterFacts,
    request: &EnrollRequest,
    peer_ip: Option<&str>,
    now_ms: i64,
) -> Result<Decision, StoreError> {
    write_with(store, |tx| {
        let mut known = gather(&*tx, request)?;
        known.peer_ip = peer_ip.map(str::to_string);
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
    })
}

/// What the store knows that bears on this request.
fn gather(tx: &dyn ReadTxn, request: &EnrollRequest) -> Result<Known, StoreError> {
    let mut matched_ids = Vec::new();
    for key in identity_keys(&request.identity).unwrap_or_default() {
        if let Some(id) = tx.get(Table::Identities, &key)? {
            let id = String::from_utf8_lossy(&id).into_owned();
            if !matched_ids.contains(&id) {
                matched_ids.push(id);
            }
        }
    }
    let matched = match matched_ids.as_slice() {
        [one] => get_json::<HostRecord>(tx, Table::Hosts, one)?,
        _ => None,
    };
    let token = match &request.token {
        Some(token) => Some(lookup_token(tx, token)?),
        None => None,
    };
    let counters = counters(tx)?;
    Ok(Known {
        matched_ids,
        matched,
        token,
        counters,
        peer_ip: None,
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

/// Writes a host record with its identity and hostname indexes.
pub fn write_host(tx: &mut dyn Txn, record: &HostRecord) -> Result<(), StoreError> {
    put_json(tx, Table::Hosts, &record.id, record)?;
    for key in identity_keys(&record.identity).unwrap_or_default() {
        tx.put(Table::Identities, &key, record.id.as_bytes())?;
    }
    if let Some(hostname) = record.hostname() {
        tx.put(Table::Hostnames, hostname, record.id.as_bytes())?;
    }
    Ok(())
}

/// Removes a host record with its indexes; returns the record if it existed.
pub fn forget_host(tx: &mut dyn Txn, id: &str) -> Result<Option<HostRecord>, StoreError> {
    let Some(record) = get_json::<HostRecord>(&*tx, Table::Hosts, id)? else {
        return Ok(None);
    };
    for key in identity_keys(&record.identity).unwrap_or_default() {
        if tx.get(Table::Identities, &key)?.as_deref() == Some(id.as_bytes()) {
            tx.delete(Table::Identities, &key)?;
        }
    }
    if let Some(hostname) = record.hostname()
        && tx.get(Table::Hostnames, hostname)?.as_deref() == Some(id.as_bytes())
    {
        tx.delete(Table::Hostnames, hostname)?;
    }
    tx.delete(Table::Hosts, id)?;
    if record.status != HostStatus::Enrolled {
        let mut counters = counters(&*tx)?;
        counters.waiting = counters.waiting.saturating_sub(1);
        put_json(tx, Table::Meta, meta::COUNTERS, &counters)?;
    }
    Ok(Some(record))
}
