//! The Puller: fetches fleet context and keeps the last good copy.
//!
//! A pull never fails the caller and never damages the cache (L2): without a token,
//! on a network error, a status >= 300, a body that is not JSON, an envelope we do
//! not recognise, or a body over the size limit, the cached context comes back and
//! nothing is written. Only a recognised envelope replaces the cache (or merges into
//! it by `id` when `since` was given); a recognised key holding `[]` means "no
//! context" (Go defect 7 wrote `null` over the cache instead).
//!
//! The cache is bounded: at most `max_context_items` items
//! ([`DEFAULT_MAX_CONTEXT_ITEMS`]), the oldest (first) dropped when a pull would
//! leave more, so a platform that keeps sending new ids with `since` cannot grow it
//! (and the one row it lives in) without end.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use actix::prelude::*;
use redb::{Durability, ReadableTable, Table, WriteTransaction};
use serde_json::Value;

use crate::error::{StoreError, SyncError};
use crate::history::History;
use crate::messages::{CachedContext, PullReport, Record, SetAuthFailed, SyncPull};
use crate::metrics::{Metrics, PullResult};
use crate::platform::{Platform, PullOutcome, TokenSource};
use crate::store::codec::{decode, encode};
use crate::store::schema::CONTEXT;
use crate::store::Store;
use crate::sync_record::{Direction, SyncRecord};
use crate::time::Clock;

const ITEMS_KEY: &str = "items";

/// Most context items cached by default: far more than a fleet's context holds, small
/// enough that the row rewritten by every pull stays a few MiB.
pub const DEFAULT_MAX_CONTEXT_ITEMS: usize = 10_000;

/// Owns the `context` table and the platform client for pulls.
pub struct Puller {
    /// Default agent id for pulls that do not name one.
    agent_id: String,
    /// Recorded in History with each pull.
    fleet_node_id: Option<i64>,
    /// Read before every pull.
    tokens: TokenSource,
    /// awc client or a test stand-in.
    platform: Rc<dyn Platform>,
    /// The shared database; only this actor writes `context` while actors run (an
    /// import seeds it before they start).
    store: Store,
    /// Records pulls, clears or sets `auth_failed`.
    history: Addr<History>,
    /// Stamps history records.
    clock: Clock,
    /// Counts pulls by outcome (`/metrics`).
    metrics: Metrics,
    /// Most items the cache keeps; the oldest go first (the cache would otherwise
    /// grow with every `since` pull that brings new ids).
    max_items: usize,
}

impl Puller {
    /// A Puller; `platform` must have been built on the arbiter the Puller runs on.
    pub fn new(
        agent_id: String,
        fleet_node_id: Option<i64>,
        tokens: TokenSource,
        platform: Rc<dyn Platform>,
        store: Store,
        history: Addr<History>,
        clock: Clock,
    ) -> Self {
        Puller {
            agent_id,
            fleet_node_id,
            tokens,
            platform,
            store,
            history,
            clock,
            metrics: Metrics::new(),
            max_items: DEFAULT_MAX_CONTEXT_ITEMS,
        }
    }

    /// Keeps at most `max` context items (at least one), the oldest dropped first.
    pub fn with_max_context_items(mut self, max: usize) -> Self {
        self.max_items = max.max(1);
        self
    }

    /// Counts pulls into `metrics` (shared with whoever exports them).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    fn cached(&self) -> Result<Vec<Value>, StoreError> {
        self.store.read("read the context cache", |txn| {
            read_cache(&txn.open_table(CONTEXT)?)
        })
    }

    /// Replaces the cache, or merges `items` into it by `id` when `merge`; then
    /// drops the oldest items over the cap. Answers how many items the cache holds.
    fn store_context(&self, items: &[Value], merge: bool) -> Result<usize, StoreError> {
        let max_items = self.max_items;
        self.store
            .write("write the context cache", Durability::Immediate, |txn| {
                let mut table = txn.open_table(CONTEXT)?;
                let cache = if merge {
                    merge_by_id(read_cache(&table)?, items)
                } else {
                    items.to_vec()
                };
                write_cache(&mut table, cache, max_items)
            })
    }
}

/// The cached items; a row that does not decode reads as empty, with a warning.
fn read_cache(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<Value>, redb::Error> {
    Ok(match table.get(ITEMS_KEY)? {
        Some(bytes) => decode(bytes.value()).unwrap_or_else(|e| {
            log::warn!("context cache does not decode ({e}); reading it as empty");
            Vec::new()
        }),
        None => Vec::new(),
    })
}

/// Writes `cache` as the cached items, the oldest over `max_items` dropped first;
/// answers how many it holds.
fn write_cache(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    mut cache: Vec<Value>,
    max_items: usize,
) -> Result<usize, redb::Error> {
    let max_items = max_items.max(1);
    let over = cache.len().saturating_sub(max_items);
    if over > 0 {
        log::warn!("context cache over its cap of {max_items} items: dropped the {over} oldest");
        cache.drain(..over);
    }
    table.insert(ITEMS_KEY, encode(&cache).as_slice())?;
    Ok(cache.len())
}

/// Seeds the cache with `items` inside `txn` (an import: see the `import` module).
/// Imported items go under the cached ones: what this agent already pulled is newer
/// than anything imported, so it wins by `id`; identical items are not added twice.
/// Answers how many were added.
pub(crate) fn import_in(
    txn: &WriteTransaction,
    items: Vec<Value>,
    max_items: usize,
) -> Result<usize, redb::Error> {
    let mut table = txn.open_table(CONTEXT)?;
    let cached = read_cache(&table)?;
    // By their JSON text: a set, not a scan of the cache per item.
    let known: HashSet<String> = cached.iter().map(Value::to_string).collect();
    let fresh: Vec<Value> = items
        .into_iter()
        .filter(|item| item.is_object() && !known.contains(&item.to_string()))
        .collect();
    if fresh.is_empty() {
        return Ok(0);
    }
    let kept = write_cache(&mut table, merge_by_id(fresh, &cached), max_items)?;
    // Imported items shadowed by a cached one with the same id were not added, and,
    // being the oldest, they are the first the cap drops.
    Ok(kept.saturating_sub(cached.len()))
}

impl Actor for Puller {
    type Context = Context<Self>;
}

impl Handler<SyncPull> for Puller {
    type Result = AtomicResponse<Self, Result<PullReport, SyncError>>;

    fn handle(&mut self, msg: SyncPull, _: &mut Self::Context) -> Self::Result {
        let agent_id = msg.agent_id.unwrap_or_else(|| self.agent_id.clone());
        let since = msg.since.filter(|s| !s.is_empty());
        let request = self
            .tokens
            .read()
            .map(|token| self.platform.pull(&token, &agent_id, since.as_deref()));
        let history = self.history.clone();
        let (fleet_node_id, clock) = (self.fleet_node_id, self.clock);
        let metrics = self.metrics.clone();
        let merging = since.is_some();
        AtomicResponse::new(Box::pin(
            async move {
                let outcome = match request {
                    Some(request) => request.await,
                    None => return Ok(None),
                };
                let (items, bytes) = match outcome {
                    PullOutcome::Body(body) => match parse_context(&body) {
                        Some(items) => (items, body.len()),
                        None => {
                            metrics.record_pull(PullResult::BadBody);
                            log::warn!("context response is not a recognised envelope; using the cache");
                            return Ok(None);
                        }
                    },
                    PullOutcome::Status(status) => {
                        log::warn!("context pull answered HTTP {status}; using the cache");
                        if matches!(status, 401 | 403) {
                            metrics.record_pull(PullResult::Unauthorized);
                            history.send(SetAuthFailed(true)).await??;
                        } else {
                            metrics.record_pull(PullResult::Status);
                        }
                        return Ok(None);
                    }
                    PullOutcome::Failed(detail) => {
                        metrics.record_pull(PullResult::Failed);
                        log::warn!("context pull failed ({detail}); using the cache");
                        return Ok(None);
                    }
                };
                metrics.record_pull(PullResult::Ok);
                log::info!(
                    "pulled {} context item(s), {bytes} bytes{}",
                    items.len(),
                    if merging { " (merged into the cache)" } else { "" }
                );
                // History first (non-durable, awaited), then the cache's durable commit
                // carries both: see `store` crash semantics.
                history
                    .send(Record(SyncRecord {
                        agent_id,
                        fleet_node_id,
                        direction: Direction::Pull,
                        payload_size: bytes as u64,
                        items_count: items.len() as u64,
                        synced_at: clock.now().whole_seconds(),
                    }))
                    .await??;
                Ok::<_, SyncError>(Some(items))
            }
            .into_actor(self)
            .map(move |received, act, _| match received? {
                Some(items) => {
                    act.store_context(&items, since.is_some())?;
                    Ok(PullReport { count: items.len(), context: items, from_cache: false })
                }
                None => {
                    let context = act.cached()?;
                    Ok(PullReport { count: context.len(), context, from_cache: true })
                }
            }),
        ))
    }
}

impl Handler<CachedContext> for Puller {
    type Result = Result<Vec<Value>, StoreError>;

    fn handle(&mut self, _: CachedContext, _: &mut Self::Context) -> Self::Result {
        self.cached()
    }
}

/// Reads the context items out of any envelope of design.md §5; `None` when the
/// body is not JSON or no recognised key holds an array.
pub fn parse_context(body: &[u8]) -> Option<Vec<Value>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let objects = |array: &Vec<Value>| -> Vec<Value> {
        array.iter().filter(|v| v.is_object()).cloned().collect()
    };
    let object = match &value {
        Value::Array(array) => return Some(objects(array)),
        Value::Object(object) => object,
        _ => return None,
    };
    let data = object.get("data");
    let candidates = [
        data.filter(|d| d.is_array()),
        data.and_then(|d| d.get("context")),
        data.and_then(|d| d.get("items")),
        data.and_then(|d| d.get("memories")),
        object.get("context"),
        object.get("items"),
        object.get("memories"),
    ];
    let arrays: Vec<&Vec<Value>> = candidates
        .iter()
        .flatten()
        .filter_map(|v| v.as_array())
        .collect();
    let first = arrays.first()?;
    Some(
        arrays
            .iter()
            .map(|a| objects(a))
            .find(|items| !items.is_empty())
            .unwrap_or_else(|| objects(first)),
    )
}

/// Items with an `id` replace the cached item with the same `id` in place (the first
/// one, when the cache holds several); new ones and those without an `id` are
/// appended, in order. One pass over each side through a map: linear, whatever the
/// sizes.
fn merge_by_id(mut cache: Vec<Value>, items: &[Value]) -> Vec<Value> {
    let mut position: HashMap<String, usize> = HashMap::with_capacity(cache.len());
    for (index, item) in cache.iter().enumerate() {
        if let Some(key) = id_key(item) {
            position.entry(key).or_insert(index);
        }
    }
    for item in items {
        match id_key(item) {
            Some(key) => match position.get(&key) {
                Some(&index) => cache[index] = item.clone(),
                None => {
                    position.insert(key, cache.len());
                    cache.push(item.clone());
                }
            },
            None => cache.push(item.clone()),
        }
    }
    cache
}

/// An item's `id` as a map key: its JSON text, so `1` and `"1"` stay different ids,
/// as they are for `Value`'s equality. `None` without an `id` (or a null one).
fn id_key(item: &Value) -> Option<String> {
    item.get("id")
        .filter(|id| !id.is_null())
        .map(Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Option<Vec<Value>> {
        parse_context(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn every_envelope_is_recognised() {
        let item = json!({"id": 1});
        for body in [
            json!({"data": [item]}),
            json!({"data": {"context": [item]}}),
            json!({"data": {"items": [item]}}),
            json!({"data": {"memories": [item]}}),
            json!({"context": [item]}),
            json!({"items": [item]}),
            json!({"memories": [item]}),
            json!([item, 5, "x"]),
        ] {
            assert_eq!(parse(body.clone()), Some(vec![item.clone()]), "{body}");
        }
    }

    #[test]
    fn first_non_empty_wins_and_empty_known_key_means_no_context() {
        assert_eq!(
            parse(json!({"context": [], "items": [{"id": 2}]})),
            Some(vec![json!({"id": 2})])
        );
        assert_eq!(parse(json!({"context": []})), Some(vec![]));
        assert_eq!(parse(json!({"other": [1]})), None);
        assert_eq!(parse(json!("text")), None);
        assert_eq!(parse_context(b"<html>"), None);
    }

    #[test]
    fn merge_keys_ids_by_their_json_and_keeps_the_first_of_duplicates() {
        let cache = vec![
            json!({"id": 1}),
            json!({"id": "1"}),
            json!({"id": 1, "dup": true}),
        ];
        let merged = merge_by_id(
            cache,
            &[
                json!({"id": "1", "v": 2}),
                json!({"id": 1, "v": 3}),
                json!({"id": null}),
            ],
        );
        assert_eq!(
            merged,
            vec![
                json!({"id": 1, "v": 3}),
                json!({"id": "1", "v": 2}),
                json!({"id": 1, "dup": true}),
                json!({"id": null})
            ]
        );
    }

    #[test]
    fn merge_replaces_by_id_and_appends_the_rest() {
        let cache = vec![json!({"id": 1, "v": "old"}), json!({"id": 2})];
        let merged = merge_by_id(
            cache,
            &[json!({"id": 1, "v": "new"}), json!({"v": "no id"})],
        );
        assert_eq!(
            merged,
            vec![
                json!({"id": 1, "v": "new"}),
                json!({"id": 2}),
                json!({"v": "no id"})
            ]
        );
    }
}
