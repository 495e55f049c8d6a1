//! The cluster's CA set as the store keeps it (`meta/ca_set`): certificates in the clear, the
//! private keys sealed with the state directory's seal key ([`crate::seal`]). Made once, at the
//! first start; a set an older seed stored unsealed is sealed in place, in one transaction.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use cluster::pki::CaSet;
use cluster::spec::ClusterSpec;
use serde::{Deserialize, Serialize};

use crate::seal::{Purpose, SEAL_KEY_FILE, SealError, SealKey, Sealed};
use crate::store::records::meta;
use crate::store::{ReadTxn, RedbStore, Store, StoreError, Table, put_json, read_with, write_with};

/// `meta/ca_set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCaSet {
    /// Certificates and public keys by kubeadm's file name (`ca.crt`, …, `sa.pub`).
    pub certs: BTreeMap<String, String>,
    /// The private keys (`ca.key`, `etcd/ca.key`, `front-proxy-ca.key`, `sa.key`), a JSON map
    /// of file name to PEM, sealed for [`Purpose::CA_KEYS`].
    pub keys: Sealed,
}

/// What `meta/ca_set` holds.
enum Stored {
    Nothing,
    /// Every file in the clear, as seeds before sealing wrote it.
    Unsealed(BTreeMap<String, String>),
    Sealed(StoredCaSet),
}

fn read(tx: &(impl ReadTxn + ?Sized)) -> Result<Stored, StoreError> {
    let Some(bytes) = tx.get(Table::Meta, meta::CA_SET)? else {
        return Ok(Stored::Nothing);
    };
    let decode = |e: serde_json::Error| StoreError::Decode {
        table: Table::Meta.name(),
        key: meta::CA_SET.to_owned(),
        message: e.to_string(),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(decode)?;
    if value.get("keys").is_some() {
        serde_json::from_value(value).map(Stored::Sealed)
    } else {
        serde_json::from_value(value).map(Stored::Unsealed)
    }
    .map_err(decode)
}

/// The cluster's CA set from the store in `state_dir`, made (or sealed) on first use, and the
/// seal key that opened it. The seal key is made only while the store holds no sealed keys: a
/// sealed set without its key, or with another one, is an error that changes nothing.
pub fn load_or_create(
    store: &dyn Store,
    spec: &ClusterSpec,
    state_dir: &Path,
) -> anyhow::Result<(CaSet, SealKey)> {
    let path = state_dir.join(SEAL_KEY_FILE);
    let key = SealKey::load(&path)?;
    let stored = read_with(store, |tx| read(tx))?;
    let (files, key) = match (stored, key) {
        (Stored::Sealed(stored), Some(key)) => (open(&stored, &key, &path)?, key),
        (Stored::Sealed(_), None) => bail!(
            "the store's CA keys are sealed with {}, which is missing; restore it from the \
             backup of this state directory",
            path.display()
        ),
        (_, key) => {
            let key = match key {
                Some(key) => key,
                None => {
                    let key = SealKey::create(&path)?;
                    tracing::info!(path = %path.display(), "made the seal key");
                    key
                }
            };
            (seal_into(store, spec, &key, &path)?, key)
        }
    };
    let cas = CaSet::from_files(&files).context("reading the cluster's CA set from the store")?;
    Ok((cas, key))
}

/// Rewrites the store file if a sealing in place asked for it: the unsealed keys it replaced
/// may linger in pages the file has freed. The request is recorded in the sealing's own
/// transaction and cleared after the rewrite, so a crash in between rewrites at the next start.
pub fn scrub(store: RedbStore) -> anyhow::Result<RedbStore> {
    let pending = read_with(&store, |tx| tx.get(Table::Meta, meta::REWRITE_PENDING))?;
    if pending.is_none() {
        return Ok(store);
    }
    let store = store.rewrite()?;
    write_with(&store, |tx| {
        tx.delete(Table::Meta, meta::REWRITE_PENDING).map(drop)
    })?;
    tracing::info!("rewrote the store without the unsealed CA keys it held");
    Ok(store)
}

/// Makes the CA set, or takes the unsealed one stored, and stores it sealed: one transaction,
/// which also asks for the file to be rewritten when it replaced unsealed keys ([`scrub`]).
fn seal_into(
    store: &dyn Store,
    spec: &ClusterSpec,
    key: &SealKey,
    path: &Path,
) -> anyhow::Result<BTreeMap<String, String>> {
    write_with(store, |tx| {
        let (files, unsealed) = match read(&*tx)? {
            Stored::Sealed(stored) => return Ok(open(&stored, key, path)),
            Stored::Unsealed(files) => match CaSet::from_files(&files) {
                Ok(_) => (files, true),
                Err(e) => return Ok(Err(anyhow!(e).context("reading the unsealed CA set"))),
            },
            Stored::Nothing => {
                let now = time::OffsetDateTime::now_utc();
                match CaSet::generate(spec.key_algorithm, now) {
                    Ok(set) => (set.to_files(), false),
                    Err(e) => return Ok(Err(anyhow!(e).context("making the cluster's CA set"))),
                }
            }
        };
        let stored = match seal(&files, key) {
            Ok(stored) => stored,
            Err(e) => return Ok(Err(anyhow!(e).context("sealing the cluster's CA keys"))),
        };
        put_json(tx, Table::Meta, meta::CA_SET, &stored)?;
        if unsealed {
            tx.put(Table::Meta, meta::REWRITE_PENDING, b"true")?;
        }
        Ok(Ok(files))
    })?
    .inspect(
        |_| tracing::info!(cluster = %spec.name, "the cluster's CA keys are sealed in the store"),
    )
}

/// Splits the set's files into certificates and sealed private keys.
pub fn seal(files: &BTreeMap<String, String>, key: &SealKey) -> Result<StoredCaSet, SealError> {
    let (keys, certs): (BTreeMap<_, _>, BTreeMap<_, _>) = files
        .iter()
        .map(|(name, pem)| (name.clone(), pem.clone()))
        .partition(|(name, _)| name.ends_with(".key"));
    let plain = serde_json::to_vec(&keys).expect("a map of strings serializes");
    Ok(StoredCaSet {
        certs,
        keys: key.seal(Purpose::CA_KEYS, &plain)?,
    })
}

/// The set's files from a sealed record; a key that does not open it is named.
fn open(
    stored: &StoredCaSet,
    key: &SealKey,
    path: &Path,
) -> anyhow::Result<BTreeMap<String, String>> {
    let plain = key.open(Purpose::CA_KEYS, &stored.keys).map_err(|e| match e {
        SealError::Open => anyhow!(
            "the store's CA keys do not open with {}: it is not the key they were sealed with, or \
             the store was altered; restore it from the backup of this state directory",
            path.display()
        ),
        other => anyhow!(other).context("opening the store's CA keys"),
    })?;
    let keys: BTreeMap<String, String> =
        serde_json::from_slice(&plain).context("reading the store's opened CA keys")?;
    let mut files = stored.certs.clone();
    files.extend(keys);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RedbStore, get_json};
    use testkit::fixtures::ClusterFile;

    fn spec() -> ClusterSpec {
        let text = ClusterFile::demo().render();
        ClusterSpec::parse("demo.toml", &text).unwrap().spec
    }

    fn raw(store: &RedbStore) -> Vec<u8> {
        read_with(store, |tx| tx.get(Table::Meta, meta::CA_SET))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_new_set_is_stored_with_its_keys_sealed_and_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        let made = load_or_create(&store, &spec(), dir.path()).unwrap().0;
        let bytes = raw(&store);
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(text.contains("BEGIN CERTIFICATE"), "{text}");
        let stored: StoredCaSet = serde_json::from_str(&text).unwrap();
        assert_eq!(
            stored.certs.keys().collect::<Vec<_>>(),
            ["ca.crt", "etcd/ca.crt", "front-proxy-ca.crt", "sa.pub"]
        );
        let again = load_or_create(&store, &spec(), dir.path()).unwrap().0;
        assert_eq!(again.ca.cert_pem(), made.ca.cert_pem());
        assert_eq!(again.sa_key.pem(), made.sa_key.pem());
        assert_eq!(raw(&store), text.as_bytes(), "opening rewrites nothing");
    }

    #[test]
    fn an_unsealed_set_from_an_older_seed_is_sealed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        let old = CaSet::generate(spec().key_algorithm, time::OffsetDateTime::now_utc()).unwrap();
        write_with(&store, |tx| {
            put_json(tx, Table::Meta, meta::CA_SET, &old.to_files())
        })
        .unwrap();
        let opened = load_or_create(&store, &spec(), dir.path()).unwrap().0;
        assert_eq!(opened.ca.cert_pem(), old.ca.cert_pem());
        assert_eq!(opened.etcd_ca.key().pem(), old.etcd_ca.key().pem());
        let stored = read_with(&store, |tx| {
            get_json::<StoredCaSet>(tx, Table::Meta, meta::CA_SET)
        })
        .unwrap();
        assert!(stored.is_some(), "the record is sealed now");
        assert!(dir.path().join(SEAL_KEY_FILE).is_file());
        // The replaced value lingers in freed pages until the file is rewritten.
        let file = dir.path().join("state.redb");
        let holds_a_key = || {
            let bytes = std::fs::read(&file).unwrap();
            bytes.windows(11).any(|w| w == b"PRIVATE KEY")
        };
        assert!(holds_a_key());
        let store = scrub(store).unwrap();
        assert!(!holds_a_key());
        let pending = read_with(&store, |tx| tx.get(Table::Meta, meta::REWRITE_PENDING));
        assert_eq!(pending.unwrap(), None);
        let again = load_or_create(&store, &spec(), dir.path()).unwrap().0;
        assert_eq!(again.ca.cert_pem(), old.ca.cert_pem());
        assert_eq!(
            again.front_proxy_ca.key().pem(),
            old.front_proxy_ca.key().pem()
        );
    }

    #[test]
    fn sealed_keys_without_their_key_file_or_with_another_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        load_or_create(&store, &spec(), dir.path()).unwrap();
        let before = raw(&store);
        let path = dir.path().join(SEAL_KEY_FILE);
        let saved = std::fs::read(&path).unwrap();

        std::fs::remove_file(&path).unwrap();
        let err = load_or_create(&store, &spec(), dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the store's CA keys are sealed with {}, which is missing; restore it from the \
                 backup of this state directory",
                path.display()
            )
        );
        assert!(!path.exists(), "no new seal key is made");
        assert_eq!(raw(&store), before);

        SealKey::create(&path).unwrap();
        let err = load_or_create(&store, &spec(), dir.path()).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "the store's CA keys do not open with {}: it is not the key",
                path.display()
            )),
            "{err}"
        );
        assert_eq!(raw(&store), before);

        std::fs::write(&path, saved).unwrap();
        load_or_create(&store, &spec(), dir.path()).unwrap();
    }
}
