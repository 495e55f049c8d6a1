//! The embedded [`Store`]: one redb file in the state directory, every commit fsynced.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::{ReadTxn, Store, StoreError, Table, Txn};

fn def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

fn backend(op: &'static str, table: Table, err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        op,
        table: table.name(),
        message: err.to_string(),
    }
}

/// A redb database file holding every [`Table`].
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Opens (or creates) the database at `path` and makes sure every table exists. Opening a
    /// store that has them all commits nothing: a seed that then refuses to start leaves the
    /// file as it was.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let db = Database::create(path).map_err(|e| open_err(&e))?;
        if !has_every_table(&db).map_err(|e| open_err(&e))? {
            let tx = db.begin_write().map_err(|e| open_err(&e))?;
            for table in Table::ALL {
                tx.open_table(def(table)).map_err(|e| open_err(&e))?;
            }
            tx.commit().map_err(|e| open_err(&e))?;
        }
        Ok(RedbStore {
            db,
            path: path.to_path_buf(),
        })
    }

    /// Copies every table into a new file and renames it over this one. Pages freed by earlier
    /// commits, which may still hold values replaced since, are not carried over: after a
    /// value was replaced by a sealed one, a copy of the file no longer holds the old one.
    pub fn rewrite(self) -> Result<RedbStore, StoreError> {
        let path = self.path.clone();
        let fail = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.display().to_string(),
            message: format!("rewriting: {e}"),
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = path.with_file_name(format!(".{name}.rewrite"));
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(&e)),
            _ => {}
        }
        {
            let fresh = Database::create(&tmp).map_err(|e| fail(&e))?;
            let out = fresh.begin_write().map_err(|e| fail(&e))?;
            self.read(&mut |old| {
                for table in Table::ALL {
                    let mut t = out.open_table(def(table)).map_err(|e| fail(&e))?;
                    for (key, value) in old.list(table)? {
                        t.insert(key.as_str(), value.as_slice())
                            .map_err(|e| backend("put", table, e))?;
                    }
                }
                Ok(())
            })?;
            out.commit().map_err(|e| fail(&e))?;
        }
        drop(self);
        std::fs::rename(&tmp, &path).map_err(|e| fail(&e))?;
        if let Some(dir) = path.parent() {
            durable::sync_dir(dir).map_err(|e| fail(&e))?;
        }
        RedbStore::open(&path)
    }
}

/// Whether every [`Table`] exists, read without a write transaction.
fn has_every_table(db: &Database) -> Result<bool, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    for table in Table::ALL {
        match tx.open_table(def(table)) {
            Ok(_) => {}
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(true)
}

struct WriteTx<'a>(&'a redb::WriteTransaction);
struct ReadTx(redb::ReadTransaction);

/// Both transactions read alike; only how a table is opened differs.
fn open_write<'t>(
    tx: &'t redb::WriteTransaction,
    table: Table,
) -> Result<redb::Table<'t, &'static str, &'static [u8]>, StoreError> {
    tx.open_table(def(table))
        .map_err(|e| backend("open", table, e))
}

fn open_read(
    tx: &redb::ReadTransaction,
    table: Table,
) -> Result<redb::ReadOnlyTable<&'static str, &'static [u8]>, StoreError> {
    tx.open_table(def(table))
        .map_err(|e| backend("open", table, e))
}

impl ReadTxn for WriteTx<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get(&open_write(self.0, table)?, table, key)
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        collect(&open_write(self.0, table)?, table)
    }
}

impl Txn for WriteTx<'_> {
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut t = open_write(self.0, table)?;
        t.insert(key, value).map_err(|e| backend("put", table, e))?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &str) -> Result<bool, StoreError> {
        let mut t = open_write(self.0, table)?;
        let old = t.remove(key).map_err(|e| backend("delete", table, e))?;
        Ok(old.is_some())
    }
}

impl ReadTxn for ReadTx {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get(&open_read(&self.0, table)?, table, key)
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        collect(&open_read(&self.0, table)?, table)
    }
}

fn get(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    table: Table,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let value = t.get(key).map_err(|e| backend("get", table, e))?;
    Ok(value.map(|v| v.value().to_vec()))
}

fn collect(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    table: Table,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    for item in t.iter().map_err(|e| backend("list", table, e))? {
        let (k, v) = item.map_err(|e| backend("list", table, e))?;
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

impl Store for RedbStore {
    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| StoreError::Commit(e.to_string()))?;
        let result = f(&mut WriteTx(&tx));
        match result {
            Ok(()) => tx.commit().map_err(|e| StoreError::Commit(e.to_string())),
            Err(err) => {
                // Dropping the transaction would abort it too; abort explicitly to see errors.
                let _ = tx.abort();
                Err(err)
            }
        }
    }

    fn read(
        &self,
        f: &mut dyn FnMut(&dyn ReadTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| StoreError::Commit(e.to_string()))?;
        f(&ReadTx(tx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing_and_a_committed_one_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store
                .write(&mut |tx| tx.put(Table::Hosts, "h-1", b"one"))
                .unwrap();
            let err = store.write(&mut |tx| {
                tx.put(Table::Hosts, "h-2", b"two")?;
                Err(StoreError::ReadOnly)
            });
            assert!(err.is_err());
        }
        let store = RedbStore::open(&path).unwrap();
        let mut seen = Vec::new();
        store
            .read(&mut |tx| {
                seen = tx.list(Table::Hosts)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, vec![("h-1".to_string(), b"one".to_vec())]);
    }
}
