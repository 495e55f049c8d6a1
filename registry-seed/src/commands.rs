//! Commands for the hosts' resident agents (`launcher-firstboot agent`). An operator queues one
//! (`POST /v1/admin/hosts/{id}/commands`); the host's agent takes it on its next long poll
//! (`GET /v1/hosts/{id}/commands`, with the host's identity key), carries it out and says what it
//! came to (`POST /v1/hosts/{id}/commands/{command}`). Each host's commands are one record of
//! the store, so a queued command outlives a seed restart, and a poll reads one key.

use cluster::api::{CommandKind, CommandOutcome, HostCommand};
use cluster::pki::HostKeyId;
use cluster::text::printable;
use serde::{Deserialize, Serialize};

use crate::enroll::apply::reset_host;
use crate::store::records::HostRecord;
use crate::store::{Keep, ReadTxn, Store, StoreError, Table, get_json, put_json, write_or_discard};

/// Unanswered commands a host may have at once; more are refused.
pub const MAX_OPEN: usize = 8;
/// Answered commands kept per host, the newest; older ones are dropped.
pub const MAX_ENDED: usize = 16;
/// Longest outcome message kept.
pub const MAX_MESSAGE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Waiting for the host's agent to take it.
    Queued,
    /// Taken by the agent, not answered yet. Handed out again on the next poll, so an agent that
    /// restarted before answering gets it again.
    Sent,
    Succeeded,
    Failed,
}

impl CommandState {
    pub fn ended(self) -> bool {
        matches!(self, CommandState::Succeeded | CommandState::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Sent => "sent",
            CommandState::Succeeded => "succeeded",
            CommandState::Failed => "failed",
        }
    }
}

/// One command and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: String,
    pub host: String,
    pub kind: CommandKind,
    pub state: CommandState,
    pub created_ms: i64,
    #[serde(default)]
    pub sent_ms: Option<i64>,
    #[serde(default)]
    pub ended_ms: Option<i64>,
    /// What the host said, [`printable`].
    #[serde(default)]
    pub message: String,
}

/// Every command of one host, oldest first: the record under the host's id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostCommands {
    /// The number of the next command (ids are `c-0001`, `c-0002`, … per host).
    pub next: u32,
    pub commands: Vec<CommandRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no host with id {0}")]
    NoHost(String),
    #[error("host {0} is bound to another identity key")]
    OtherKey(String),
    #[error("host {host} has no command {id}")]
    NoCommand { host: String, id: String },
    #[error(
        "host {host} already has {MAX_OPEN} commands it has not answered (the oldest {oldest}): \
         its agent may not be running; wait, or look at `launcher-seed hosts commands {host}`"
    )]
    TooMany { host: String, oldest: String },
    #[error("command {id} of host {host} was already answered: {state}")]
    Answered {
        host: String,
        id: String,
        state: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Queues a command for host `host`.
pub fn queue(
    store: &dyn Store,
    host: &str,
    kind: CommandKind,
    now_ms: i64,
) -> Result<CommandRecord, CommandError> {
    write_or_discard(store, |tx| {
        if get_json::<HostRecord>(&*tx, Table::Hosts, host)?.is_none() {
            return Ok((Err(CommandError::NoHost(host.into())), Keep::Discard));
        }
        let mut all: HostCommands = get_json(&*tx, Table::Commands, host)?.unwrap_or_default();
        let open: Vec<&CommandRecord> = all.commands.iter().filter(|c| !c.state.ended()).collect();
        if open.len() >= MAX_OPEN {
            let oldest = open[0].id.clone();
            let refused = CommandError::TooMany {
                host: host.into(),
                oldest,
            };
            return Ok((Err(refused), Keep::Discard));
        }
        all.next += 1;
        let record = CommandRecord {
            id: format!("c-{:04}", all.next),
            host: host.into(),
            kind,
            state: CommandState::Queued,
            created_ms: now_ms,
            sent_ms: None,
            ended_ms: None,
            message: String::new(),
        };
        all.commands.push(record.clone());
        put_json(tx, Table::Commands, host, &all)?;
        Ok((Ok(record), Keep::Commit))
    })?
}

/// The host's unanswered commands, oldest first, for its agent presenting `key`; the queued
/// ones are marked sent. Writes only when one was queued.
pub fn take(
    store: &dyn Store,
    host: &str,
    key: &HostKeyId,
    now_ms: i64,
) -> Result<Vec<HostCommand>, CommandError> {
    write_or_discard(store, |tx| {
        if let Err(e) = check_key(&*tx, host, key)? {
            return Ok((Err(e), Keep::Discard));
        }
        let Some(mut all) = get_json::<HostCommands>(&*tx, Table::Commands, host)? else {
            return Ok((Ok(Vec::new()), Keep::Discard));
        };
        let mut changed = false;
        let mut out = Vec::new();
        for c in all.commands.iter_mut().filter(|c| !c.state.ended()) {
            if c.state == CommandState::Queued {
                c.state = CommandState::Sent;
                c.sent_ms = Some(now_ms);
                changed = true;
            }
            out.push(HostCommand {
                id: c.id.clone(),
                kind: c.kind,
            });
        }
        if !changed {
            return Ok((Ok(out), Keep::Discard));
        }
        put_json(tx, Table::Commands, host, &all)?;
        Ok((Ok(out), Keep::Commit))
    })?
}

/// Records what command `id` came to on host `host`, told by its agent presenting `key`. The
/// same answer twice is accepted (an agent that did not hear the first reply sends it again);
/// a different one for an answered command is refused.
pub fn answer(
    store: &dyn Store,
    host: &str,
    key: &HostKeyId,
    id: &str,
    outcome: &CommandOutcome,
    now_ms: i64,
) -> Result<CommandRecord, CommandError> {
    write_or_discard(store, |tx| {
        if let Err(e) = check_key(&*tx, host, key)? {
            return Ok((Err(e), Keep::Discard));
        }
        let mut all: HostCommands = get_json(&*tx, Table::Commands, host)?.unwrap_or_default();
        let Some(c) = all.commands.iter_mut().find(|c| c.id == id) else {
            let missing = CommandError::NoCommand {
                host: host.into(),
                id: id.into(),
            };
            return Ok((Err(missing), Keep::Discard));
        };
        let state = if outcome.ok {
            CommandState::Succeeded
        } else {
            CommandState::Failed
        };
        let message = printable(&outcome.message);
        if c.state.ended() {
            if c.state == state && c.message == message {
                return Ok((Ok(c.clone()), Keep::Discard));
            }
            let refused = CommandError::Answered {
                host: host.into(),
                id: id.into(),
                state: c.state.as_str(),
            };
            return Ok((Err(refused), Keep::Discard));
        }
        if c.kind == CommandKind::Reset && outcome.ok {
            // The host clears its disk and comes back with a new key: let that one in.
            reset_host(tx, host)?;
        }
        c.state = state;
        c.ended_ms = Some(now_ms);
        c.sent_ms.get_or_insert(now_ms);
        c.message = message;
        let done = c.clone();
        prune(&mut all);
        put_json(tx, Table::Commands, host, &all)?;
        Ok((Ok(done), Keep::Commit))
    })?
}

/// Every command of host `host`, newest first; `None` when there is no such host.
pub fn list(tx: &dyn ReadTxn, host: &str) -> Result<Option<Vec<CommandRecord>>, StoreError> {
    if get_json::<HostRecord>(tx, Table::Hosts, host)?.is_none() {
        return Ok(None);
    }
    let all: HostCommands = get_json(tx, Table::Commands, host)?.unwrap_or_default();
    Ok(Some(all.commands.into_iter().rev().collect()))
}

fn check_key(
    tx: &dyn ReadTxn,
    host: &str,
    key: &HostKeyId,
) -> Result<Result<(), CommandError>, StoreError> {
    Ok(match get_json::<HostRecord>(tx, Table::Hosts, host)? {
        None => Err(CommandError::NoHost(host.into())),
        Some(h) if h.key.as_ref() != Some(key) => Err(CommandError::OtherKey(host.into())),
        Some(_) => Ok(()),
    })
}

/// Drops the oldest answered commands beyond [`MAX_ENDED`].
fn prune(all: &mut HostCommands) {
    let ended = all.commands.iter().filter(|c| c.state.ended()).count();
    let mut drop = ended.saturating_sub(MAX_ENDED);
    all.commands.retain(|c| {
        if drop > 0 && c.state.ended() {
            drop -= 1;
            false
        } else {
            true
        }
    });
}
