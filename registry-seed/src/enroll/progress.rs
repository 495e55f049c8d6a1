//! What hosts report after enrolling: the phase they are in, since when, and how it went.

use cluster::api::ProgressReport;
use cluster::pki::HostKeyId;
use cluster::text::printable;

use crate::store::records::{HostRecord, Progress};
use crate::store::{Keep, Store, StoreError, Table, get_json, put_json, write_or_discard};

/// What became of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    Recorded,
    /// No host has this id.
    NoHost,
    /// The host is not bound to the key the report came with: nothing is recorded.
    OtherKey,
}

/// Records a host's report, its message [`printable`], if it came with the key the host is
/// bound to. A host's reports inform the operator; the seed decides nothing from them.
pub fn record(
    store: &dyn Store,
    id: &str,
    key: &HostKeyId,
    report: &ProgressReport,
    now_ms: i64,
) -> Result<Reported, StoreError> {
    write_or_discard(store, |tx| {
        let Some(mut host) = get_json::<HostRecord>(&*tx, Table::Hosts, id)? else {
            return Ok((Reported::NoHost, Keep::Discard));
        };
        if host.key.as_ref() != Some(key) {
            return Ok((Reported::OtherKey, Keep::Discard));
        }
        let since = match &host.progress {
            Some(p) if p.phase == report.phase => p.phase_since_ms,
            _ => now_ms,
        };
        host.progress = Some(Progress {
            phase: report.phase,
            state: report.state,
            message: printable(&report.message),
            host_at_unix_ms: report.at_unix_ms,
            phase_since_ms: since,
            received_ms: now_ms,
        });
        host.last_seen_ms = now_ms;
        put_json(tx, Table::Hosts, id, &host)?;
        Ok((Reported::Recorded, Keep::Commit))
    })
}
