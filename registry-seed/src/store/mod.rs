//! The seed's durable state behind a narrow key-value trait, so that another backend (etcd) can
//! later serve several seeds; [`RedbStore`] is the embedded default.
//!
//! Every decision the seed answers with is committed first: [`Store::write`] returns only after
//! its transaction is durable.

pub mod records;
mod redb_store;

pub use redb_store::RedbStore;

/// The tables of the seed's state. Keys are strings, values JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Host id → [`records::HostRecord`].
    Hosts,
    /// Identifier (`mac:…`, `uuid:…`, `serial:…`) → the host id that owns it (a host let in, or
    /// approved); `key:sha256:…` (a bound identity key) → host id, for every host.
    Identities,
    /// Hostname → host id; `ip:<address>` → the host id that has that address.
    Hostnames,
    /// Token id → [`records::TokenRecord`].
    Tokens,
    /// Admin job id → [`records::JobRecord`].
    Jobs,
    /// Host id → [`records::HostCerts`]: the leaf certificates of the last plan given to it.
    Certs,
    /// Host id → the commands for its agent (`HostCommands` of the `commands` module).
    Commands,
    /// Counters and cluster-wide material (the CA set).
    Meta,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::Hosts,
        Table::Identities,
        Table::Hostnames,
        Table::Tokens,
        Table::Jobs,
        Table::Certs,
        Table::Commands,
        Table::Meta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Hosts => "hosts",
            Table::Identities => "identities",
            Table::Hostnames => "hostnames",
            Table::Tokens => "tokens",
            Table::Jobs => "jobs",
            Table::Certs => "certs",
            Table::Commands => "commands",
            Table::Meta => "meta",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the state store {path}: {message}")]
    Open { path: String, message: String },
    #[error("state store {op} on table {table}: {message}")]
    Backend {
        op: &'static str,
        table: &'static str,
        message: String,
    },
    #[error("committing a state transaction: {0}")]
    Commit(String),
    #[error("decoding {table}/{key}: {message}")]
    Decode {
        table: &'static str,
        key: String,
        message: String,
    },
    #[error("writing in a read-only transaction")]
    ReadOnly,
    /// Not an error: how [`write_or_discard`] ends a transaction without committing it.
    #[error("the transaction was discarded")]
    Discarded,
}

/// Reads inside a transaction.
pub trait ReadTxn {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry of a table, ordered by key.
    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// Reads and writes inside one write transaction.
pub trait Txn: ReadTxn {
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Returns whether the key existed.
    fn delete(&mut self, table: Table, key: &str) -> Result<bool, StoreError>;
}

/// A transactional store. Writers are serialized: a decision read and written in one `write` call
/// never races with another.
pub trait Store: Send + Sync + 'static {
    /// Runs `f` in one write transaction, committed durably when `f` returns `Ok`, discarded
    /// otherwise.
    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Runs `f` against a consistent snapshot.
    fn read(
        &self,
        f: &mut dyn FnMut(&dyn ReadTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

/// Typed helpers over the raw byte interface.
pub fn get_json<T: serde::de::DeserializeOwned>(
    tx: &(impl ReadTxn + ?Sized),
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match tx.get(table, key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Decode {
                table: table.name(),
                key: key.to_string(),
                message: e.to_string(),
            }),
    }
}

pub fn put_json<T: serde::Serialize>(
    tx: &mut (impl Txn + ?Sized),
    table: Table,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Decode {
        table: table.name(),
        key: key.to_string(),
        message: e.to_string(),
    })?;
    tx.put(table, key, &bytes)
}

pub fn list_json<T: serde::de::DeserializeOwned>(
    tx: &(impl ReadTxn + ?Sized),
    table: Table,
) -> Result<Vec<T>, StoreError> {
    tx.list(table)?
        .into_iter()
        .map(|(key, bytes)| {
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Decode {
                table: table.name(),
                key,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Runs a write closure that produces a value.
pub fn write_with<S: Store + ?Sized, T>(
    store: &S,
    mut f: impl FnMut(&mut dyn Txn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut out = None;
    store.write(&mut |tx| {
        out = Some(f(tx)?);
        Ok(())
    })?;
    Ok(out.expect("a committed write produced its value"))
}

/// Whether a write transaction's changes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Commit,
    /// Nothing is committed, not even an empty transaction: the store's file is unchanged.
    Discard,
}

/// Runs a write closure that decides whether its transaction is committed.
pub fn write_or_discard<S: Store + ?Sized, T>(
    store: &S,
    mut f: impl FnMut(&mut dyn Txn) -> Result<(T, Keep), StoreError>,
) -> Result<T, StoreError> {
    let mut out = None;
    let result = store.write(&mut |tx| {
        let (value, keep) = f(tx)?;
        out = Some(value);
        match keep {
            Keep::Commit => Ok(()),
            Keep::Discard => Err(StoreError::Discarded),
        }
    });
    match result {
        Ok(()) | Err(StoreError::Discarded) => Ok(out.expect("a write closure produced its value")),
        Err(err) => Err(err),
    }
}

/// Runs a read closure that produces a value.
pub fn read_with<S: Store + ?Sized, T>(
    store: &S,
    mut f: impl FnMut(&dyn ReadTxn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut out = None;
    store.read(&mut |tx| {
        out = Some(f(tx)?);
        Ok(())
    })?;
    Ok(out.expect("a read produced its value"))
}
