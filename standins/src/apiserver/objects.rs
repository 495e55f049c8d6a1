//! Nodes, Leases and ConfigMaps in etcd, as the real apiserver keeps them
//! (`/registry/minions/<name>`, `/registry/leases/<namespace>/<name>`,
//! `/registry/configmaps/<namespace>/<name>` under the default `--etcd-prefix`; JSON values
//! here), every change one compare-and-swap
//! on the revision it was decided from; and the `Status` errors the API answers with.

use super::auth::Resource;
use super::etcd::{Etcd, EtcdError, Kv};
use serde_json::{Map, Value, json};

/// An API error, answered as a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason,
            "code": self.code,
        })
    }

    fn not_found(what: &Kind, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", what.plural),
        )
    }

    fn conflict(what: &Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                what.plural
            ),
        )
    }
}

impl From<EtcdError> for ApiError {
    fn from(err: EtcdError) -> ApiError {
        tracing::warn!(error = %err, "etcd");
        ApiError::new(500, "InternalError", "etcd did not answer the request")
    }
}

/// One kind of object the stand-in serves.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub resource: Resource,
    pub api_version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    prefix: &'static str,
}

pub const NODE: Kind = Kind {
    resource: Resource::Node,
    api_version: "v1",
    kind: "Node",
    plural: "nodes",
    prefix: "minions/",
};

pub const LEASE: Kind = Kind {
    resource: Resource::Lease,
    api_version: "coordination.k8s.io/v1",
    kind: "Lease",
    plural: "leases",
    prefix: "leases/",
};

pub const CONFIG_MAP: Kind = Kind {
    resource: Resource::ConfigMap,
    api_version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    prefix: "configmaps/",
};

/// Where an object lives: its namespace (Leases, ConfigMaps) and name.
#[derive(Debug, Clone)]
pub struct Place<'a> {
    pub kind: Kind,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

impl Place<'_> {
    fn key(&self) -> String {
        match self.namespace {
            Some(ns) => format!("{}{ns}/{}", self.kind.prefix, self.name),
            None => format!("{}{}", self.kind.prefix, self.name),
        }
    }
}

/// The stored object as the API shows it: `resourceVersion` is the key's revision.
fn shown(kv: &Kv) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|_| ApiError::new(500, "InternalError", "a stored object is not JSON"))?;
    object["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(object)
}

fn with_revision(mut object: Value, revision: i64) -> Value {
    object["metadata"]["resourceVersion"] = json!(revision.to_string());
    object
}

/// What is stored: the object without its `resourceVersion`.
fn stored(object: &Value) -> Vec<u8> {
    let mut object = object.clone();
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&object).unwrap_or_default()
}

/// Checks a body's kind and name against the URL's.
fn check_body(place: &Place<'_>, object: &Value) -> Result<(), ApiError> {
    let kind = object["kind"].as_str().unwrap_or(place.kind.kind);
    if kind != place.kind.kind {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!("the body is a {kind}, not a {}", place.kind.kind),
        ));
    }
    if object["metadata"]["name"].as_str() != Some(place.name) {
        return Err(ApiError::new(
            400,
            "BadRequest",
            "the name of the object does not match the name on the URL",
        ));
    }
    Ok(())
}

pub async fn get(etcd: &Etcd, place: &Place<'_>) -> Result<Value, ApiError> {
    match etcd.get(&place.key()).await? {
        Some(kv) => shown(&kv),
        None => Err(ApiError::not_found(&place.kind, place.name)),
    }
}

/// `<Kind>List` of every object of `kind` (in `namespace`).
pub async fn list(etcd: &Etcd, kind: Kind, namespace: Option<&str>) -> Result<Value, ApiError> {
    let prefix = match namespace {
        Some(ns) => format!("{}{ns}/", kind.prefix),
        None => kind.prefix.to_owned(),
    };
    let (kvs, revision) = etcd.list(&prefix).await?;
    let items = kvs.iter().map(shown).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "apiVersion": kind.api_version,
        "kind": format!("{}List", kind.kind),
        "metadata": { "resourceVersion": revision.to_string() },
        "items": items,
    }))
}

/// Creates the object; 409 AlreadyExists when the name is taken.
pub async fn create(etcd: &Etcd, place: &Place<'_>, mut object: Value) -> Result<Value, ApiError> {
    check_body(place, &object)?;
    object["apiVersion"] = json!(place.kind.api_version);
    object["kind"] = json!(place.kind.kind);
    let meta = &mut object["metadata"];
    meta["uid"] = json!(uid());
    meta["creationTimestamp"] = json!(now());
    if let Some(ns) = place.namespace {
        meta["namespace"] = json!(ns);
    }
    match etcd.put_if(&place.key(), 0, &stored(&object)).await? {
        Some(revision) => Ok(with_revision(object, revision)),
        None => Err(ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", place.kind.plural, place.name),
        )),
    }
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything (a Lease or a ConfigMap, which have no status).
    Whole,
    /// All but `status` (a Node itself).
    Main,
    /// Only `status` (the `/status` subresource).
    Status,
}

/// Keeps what `part` may not change from `old`, and what the server owns.
fn keep(old: &Value, mut new: Value, part: Part) -> Value {
    match part {
        Part::Whole => {}
        Part::Main => new["status"] = old["status"].clone(),
        Part::Status => {
            let status = new["status"].take();
            new = old.clone();
            new["status"] = status;
        }
    }
    for field in ["name", "uid", "creationTimestamp", "namespace"] {
        new["metadata"][field] = old["metadata"][field].clone();
    }
    if let Some(meta) = new["metadata"].as_object_mut() {
        meta.retain(|_, v| !v.is_null());
    }
    if let Some(top) = new.as_object_mut() {
        top.retain(|_, v| !v.is_null());
    }
    new
}

/// Replaces `part` of the object. With a `resourceVersion` in the body the write happens only
/// at that revision (409 Conflict when it moved); without one it is unconditional, as Nodes
/// and Leases allow, yet still one compare-and-swap on the revision read.
pub async fn update(
    etcd: &Etcd,
    place: &Place<'_>,
    object: Value,
    part: Part,
) -> Result<Value, ApiError> {
    check_body(place, &object)?;
    let given: Option<i64> = object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok());
    let current = etcd
        .get(&place.key())
        .await?
        .ok_or_else(|| ApiError::not_found(&place.kind, place.name))?;
    let expected = given.unwrap_or(current.mod_revision);
    let mut object = keep(&shown(&current)?, object, part);
    object["apiVersion"] = json!(place.kind.api_version);
    object["kind"] = json!(place.kind.kind);
    match etcd
        .put_if(&place.key(), expected, &stored(&object))
        .await?
    {
        Some(revision) => Ok(with_revision(object, revision)),
        None => Err(ApiError::conflict(&place.kind, place.name)),
    }
}

/// How a PATCH body applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 7386.
    Merge,
    /// Kubernetes' strategic merge, for the lists this stand-in knows (`conditions` and
    /// `addresses`, merged by `type`); other lists are replaced.
    Strategic,
}

/// Applies a patch to the current object and writes it at the revision it was read at,
/// rereading on a lost race as the real apiserver does; only `part` changes.
pub async fn patch(
    etcd: &Etcd,
    place: &Place<'_>,
    kind: PatchType,
    patch: &Value,
    part: Part,
) -> Result<Value, ApiError> {
    for _ in 0..5 {
        let current = etcd
            .get(&place.key())
            .await?
            .ok_or_else(|| ApiError::not_found(&place.kind, place.name))?;
        let old = shown(&current)?;
        let mut new = old.clone();
        merge(&mut new, patch, kind);
        let new = keep(&old, new, part);
        if let Some(revision) = etcd
            .put_if(&place.key(), current.mod_revision, &stored(&new))
            .await?
        {
            return Ok(with_revision(new, revision));
        }
    }
    Err(ApiError::conflict(&place.kind, place.name))
}

/// Deletes the object in one request; the deleted object is returned.
pub async fn delete(etcd: &Etcd, place: &Place<'_>) -> Result<Value, ApiError> {
    match etcd.delete(&place.key()).await? {
        Some(kv) => shown(&kv),
        None => Err(ApiError::not_found(&place.kind, place.name)),
    }
}

/// Merges `patch` into `target`: objects recursively, `null` deletes, lists replaced, except
/// the strategic lists merged by their `type`.
pub fn merge(target: &mut Value, patch: &Value, kind: PatchType) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(key);
            }
            continue;
        }
        let slot = &mut target[key.as_str()];
        let by_type = kind == PatchType::Strategic
            && matches!(key.as_str(), "conditions" | "addresses")
            && value.is_array()
            && slot.is_array();
        if by_type {
            merge_by_type(slot, value);
        } else if value.is_object() {
            merge(slot, value, kind);
        } else {
            *slot = value.clone();
        }
    }
}

fn merge_by_type(list: &mut Value, patch: &Value) {
    let (Some(items), Some(patches)) = (list.as_array_mut(), patch.as_array()) else {
        return;
    };
    for entry in patches {
        let kind = &entry["type"];
        match items.iter_mut().find(|item| &item["type"] == kind) {
            Some(item) => merge(item, entry, PatchType::Strategic),
            None => items.push(entry.clone()),
        }
    }
}

fn uid() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// RFC 3339 in seconds, UTC, as Kubernetes writes timestamps.
pub fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_changes_only_its_part_and_never_what_the_server_owns() {
        let old = json!({"metadata": {"name": "w1", "uid": "u", "labels": {"a": "1"}},
                         "spec": {"unschedulable": false}, "status": {"phase": "old"}});
        let new = json!({"metadata": {"name": "w1", "uid": "other", "labels": {"a": "2"}},
                         "spec": {"unschedulable": true}, "status": {"phase": "new"}});
        let main = keep(&old, new.clone(), Part::Main);
        assert_eq!(
            main["metadata"],
            json!({"name": "w1", "uid": "u", "labels": {"a": "2"}})
        );
        assert_eq!(
            (&main["spec"]["unschedulable"], &main["status"]),
            (&json!(true), &old["status"])
        );
        let status = keep(&old, new.clone(), Part::Status);
        assert_eq!(
            (&status["spec"], &status["status"]),
            (&old["spec"], &new["status"])
        );
        assert_eq!(status["metadata"], old["metadata"]);
    }

    #[test]
    fn strategic_merge_of_conditions_keys_on_type() {
        let mut node = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "Starting"},
            {"type": "MemoryPressure", "status": "False"}]}});
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": null}]}});
        merge(&mut node, &patch, PatchType::Strategic);
        assert_eq!(
            node["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}])
        );
        let mut plain = json!({"status": {"conditions": [{"type": "MemoryPressure"}]}});
        merge(&mut plain, &patch, PatchType::Merge);
        assert_eq!(
            plain["status"]["conditions"],
            json!([{"type": "Ready", "status": "True", "reason": null}])
        );
    }
}
