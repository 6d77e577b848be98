//! The object store: objects as JSON by (group, resource), namespace and
//! name; one global resourceVersion counter bumped on every write, as etcd's
//! revision is; uids and creation times; and the event history that lets a
//! watch start from any resourceVersion still kept.
//!
//! Every write is checked and applied under one lock, so a write made against
//! a stale resourceVersion is refused (optimistic concurrency, like etcd's
//! compare-and-swap) instead of silently overwriting.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Where objects of one resource are kept: (API group, plural).
pub type StoreKey = (String, String);

/// What a watch event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change, as the history and watchers see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub kind: EventKind,
    pub key: StoreKey,
    pub namespace: String,
    pub object: Value,
    /// The object before a modification, so a watch with a selector can
    /// tell an object entering or leaving it.
    pub previous: Option<Value>,
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    NotFound,
    AlreadyExists,
    /// The object's resourceVersion is not the one the writer read.
    Conflict,
}

/// A watch asked for history older than what is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooOld {
    pub requested: u64,
    pub oldest: u64,
}

/// How many past changes are kept for watches that start in the past.
const HISTORY: usize = 50_000;

type Objects = BTreeMap<(String, String), Value>;

struct Inner {
    rv: u64,
    uid_counter: u64,
    objects: BTreeMap<StoreKey, Objects>,
    history: VecDeque<Change>,
}

pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
    uid_seed: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// The resourceVersion stored in an object, if it has a valid one.
pub fn resource_version(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn set_rv(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
    }
}

impl Store {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(8192);
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                uid_counter: 0,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            changes,
            uid_seed: RandomState::new().build_hasher().finish(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied write:
        // every write is a single map insert/remove after all checks.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest resourceVersion (what a list reports).
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// A fresh uid in the usual 8-4-4-4-12 form.
    pub fn new_uid(&self) -> String {
        let n = {
            let mut inner = self.lock();
            inner.uid_counter += 1;
            inner.uid_counter
        };
        let a = self.uid_seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            a & 0xfff,
            (n >> 12) & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }

    pub fn get(&self, key: &StoreKey, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(key)
            .and_then(|m| m.get(&(namespace.to_string(), name.to_string())))
            .cloned()
    }

    /// Objects of a resource (in one namespace, or all), with the
    /// resourceVersion the list is consistent at.
    pub fn list(&self, key: &StoreKey, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(key)
            .map(|m| {
                m.iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|want| ns.as_str() == want))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
    }

    /// Every stored object, for the garbage collector.
    pub fn all(&self) -> Vec<(StoreKey, Value)> {
        let inner = self.lock();
        inner
            .objects
            .iter()
            .flat_map(|(k, m)| m.values().map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    fn record(&self, inner: &mut Inner, change: Change) {
        inner.history.push_back(change.clone());
        if inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
    }

    pub fn create(
        &self,
        key: &StoreKey,
        namespace: &str,
        name: &str,
        object: Value,
    ) -> Result<Value, WriteError> {
        let mut inner = self.lock();
        let id = (namespace.to_string(), name.to_string());
        if inner.objects.get(key).is_some_and(|m| m.contains_key(&id)) {
            return Err(WriteError::AlreadyExists);
        }
        Ok(self.write(&mut inner, key, id, object, EventKind::Added, None))
    }

    /// Replaces the object if its stored resourceVersion is `expected_rv`.
    pub fn update(
        &self,
        key: &StoreKey,
        namespace: &str,
        name: &str,
        object: Value,
        expected_rv: u64,
    ) -> Result<Value, WriteError> {
        let mut inner = self.lock();
        let id = (namespace.to_string(), name.to_string());
        let current = inner
            .objects
            .get(key)
            .and_then(|m| m.get(&id))
            .ok_or(WriteError::NotFound)?;
        if resource_version(current) != Some(expected_rv) {
            return Err(WriteError::Conflict);
        }
        let previous = Some(current.clone());
        Ok(self.write(&mut inner, key, id, object, EventKind::Modified, previous))
    }

    /// Stores `object` under a new resourceVersion and records the change.
    fn write(
        &self,
        inner: &mut Inner,
        key: &StoreKey,
        id: (String, String),
        mut object: Value,
        kind: EventKind,
        previous: Option<Value>,
    ) -> Value {
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut object, rv);
        let namespace = id.0.clone();
        inner
            .objects
            .entry(key.clone())
            .or_default()
            .insert(id, object.clone());
        self.record(
            inner,
            Change {
                rv,
                kind,
                key: key.clone(),
                namespace,
                object: object.clone(),
                previous,
            },
        );
        object
    }

    /// Removes the object if its stored resourceVersion is `expected_rv`
    /// (any version when `None`); returns it as last stored.
    pub fn remove(
        &self,
        key: &StoreKey,
        namespace: &str,
        name: &str,
        expected_rv: Option<u64>,
    ) -> Result<Value, WriteError> {
        let mut inner = self.lock();
        let id = (namespace.to_string(), name.to_string());
        let current = inner
            .objects
            .get(key)
            .and_then(|m| m.get(&id))
            .ok_or(WriteError::NotFound)?;
        if expected_rv.is_some_and(|e| resource_version(current) != Some(e)) {
            return Err(WriteError::Conflict);
        }
        let mut object = inner
            .objects
            .get_mut(key)
            .and_then(|m| m.remove(&id))
            .ok_or(WriteError::NotFound)?;
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut object, rv);
        self.record(
            &mut inner,
            Change {
                rv,
                kind: EventKind::Deleted,
                key: key.clone(),
                namespace: namespace.to_string(),
                object: object.clone(),
                previous: None,
            },
        );
        Ok(object)
    }

    /// The kept changes after `since` for `key`, and a receiver for later
    /// ones, taken atomically so nothing falls between the two.
    pub fn watch(
        &self,
        key: &StoreKey,
        since: u64,
    ) -> Result<(Vec<Change>, broadcast::Receiver<Change>), TooOld> {
        let inner = self.lock();
        let receiver = self.changes.subscribe();
        let oldest_kept = inner.history.front().map_or(inner.rv, |c| c.rv);
        // Changes after `since` must all be kept: the first one after it is
        // since + 1 or later, so history must reach back to since + 1.
        if since < inner.rv && since + 1 < oldest_kept {
            return Err(TooOld {
                requested: since,
                oldest: oldest_kept,
            });
        }
        let backlog = inner
            .history
            .iter()
            .filter(|c| c.rv > since && &c.key == key)
            .cloned()
            .collect();
        Ok((backlog, receiver))
    }
}
