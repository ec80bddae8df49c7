//! A campaign's live state (its slots and their delivery counts), read at most
//! once a second per campaign however many people watch: every watcher's
//! poll within that second gets the same snapshot, and concurrent misses wait
//! for the one read in flight instead of starting their own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::state::CampaignState;
use crate::store::{SlotRecord, Store, StoreError};

/// How long a snapshot is served before the database is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// What the live region shows of a campaign.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: CampaignState,
    pub slots: Vec<SlotRecord>,
    /// Deliveries by slot, then by status.
    pub by_slot: HashMap<i64, BTreeMap<String, i64>>,
    /// Deliveries by status, over every slot.
    pub totals: BTreeMap<String, i64>,
    /// Recipients counted when each slot was released.
    pub recipients: HashMap<i64, i64>,
    /// Who each released slot left out, by reason (`opted_out`, `no_device`, …).
    pub excluded: HashMap<i64, BTreeMap<String, i64>>,
    /// Sends by minute since 1970, minutes with sends only.
    pub per_minute: Vec<(i64, i64)>,
}

/// Values by key, each loaded at most once per `ttl` however many ask: every
/// request within that time gets the same value, and concurrent misses wait
/// for the one load in flight instead of starting their own. Entries of keys
/// no longer asked for stay (a few hundred bytes per campaign or app).
pub struct Fresh<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
    ttl: Duration,
    /// Loads made (for the tests of the bound).
    loads: std::sync::atomic::AtomicU64,
}

type Entry<V> = Arc<tokio::sync::Mutex<Option<(Instant, Arc<V>)>>>;

impl<K: std::hash::Hash + Eq + Clone, V> Fresh<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            ttl,
            loads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Drops a key's value: the next request loads it again.
    pub fn forget(&self, key: &K) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    pub fn loads(&self) -> u64 {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key's value, loaded again only when the last is older than the ttl;
    /// `None` (not kept) when the loader finds nothing.
    pub async fn get<E, F, Fut>(&self, key: K, load: F) -> Result<Option<Arc<V>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<V>, E>>,
    {
        let entry = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        let mut held = entry.lock().await;
        if let Some((at, value)) = held.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(Some(value.clone()));
            }
        }
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(value) = load().await? else {
            return Ok(None);
        };
        let value = Arc::new(value);
        *held = Some((Instant::now(), value.clone()));
        Ok(Some(value))
    }
}

/// Snapshots by campaign id, shared by every console request of the process.
pub struct LiveCache(Fresh<i64, Snapshot>);

impl Default for LiveCache {
    fn default() -> Self {
        Self(Fresh::new(FRESH_FOR))
    }
}

impl LiveCache {
    /// Drops a campaign's snapshot: after an action here, the next page shows
    /// its effect instead of the state from before.
    pub fn forget(&self, id: i64) {
        self.0.forget(&id);
    }

    pub fn reads(&self) -> u64 {
        self.0.loads()
    }

    /// The campaign's snapshot, read again only when the last is older than
    /// [`FRESH_FOR`]; `None` when the campaign is not the app's.
    pub async fn get<S: Store>(
        &self,
        store: &S,
        app: &str,
        id: i64,
    ) -> Result<Option<Arc<Snapshot>>, StoreError> {
        self.0.get(id, || read(store, app, id)).await
    }
}

async fn read<S: Store>(store: &S, app: &str, id: i64) -> Result<Option<Snapshot>, StoreError> {
    let Some(c) = store.campaign_get_by_id(app, id).await? else {
        return Ok(None);
    };
    let slots = store.slot_list(id).await?;
    let mut by_slot: HashMap<i64, BTreeMap<String, i64>> = HashMap::new();
    let mut totals = BTreeMap::new();
    for (slot, status, n) in store.delivery_count_by_slot(id).await? {
        *totals.entry(status.clone()).or_default() += n;
        by_slot.entry(slot).or_default().insert(status, n);
    }
    let mut recipients = HashMap::new();
    let mut excluded: HashMap<i64, BTreeMap<String, i64>> = HashMap::new();
    for (slot, kind, n) in store.slot_count_by_state(id).await? {
        match kind.strip_prefix("excluded:") {
            Some(reason) => {
                excluded
                    .entry(slot)
                    .or_default()
                    .insert(reason.to_owned(), n);
            }
            None => {
                recipients.insert(slot, n);
            }
        }
    }
    Ok(Some(Snapshot {
        state: c.state,
        slots,
        by_slot,
        totals,
        recipients,
        excluded,
        per_minute: store.delivery_count_by_minute(id).await?,
    }))
}
