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
/// The same for a campaign that sends no more (completed, cancelled, a
/// draft): only receipts still change its counts.
pub const SETTLED_FRESH_FOR: Duration = Duration::from_secs(15);

fn fresh_for(s: &Snapshot) -> Duration {
    match s.state {
        CampaignState::Completed | CampaignState::Cancelled | CampaignState::Draft => {
            SETTLED_FRESH_FOR
        }
        _ => FRESH_FOR,
    }
}

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
        let ttl = self.ttl;
        self.get_for(key, |_| ttl, load).await
    }

    /// As [`Fresh::get`], with how long a value stays fresh told by the value
    /// (a campaign that no longer sends changes only by receipts).
    pub async fn get_for<E, F, Fut>(
        &self,
        key: K,
        ttl_of: impl Fn(&V) -> Duration,
        load: F,
    ) -> Result<Option<Arc<V>>, E>
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
            if at.elapsed() < ttl_of(value) {
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
        self.0.get_for(id, fresh_for, || read(store, app, id)).await
    }
}

async fn read<S: Store>(store: &S, app: &str, id: i64) -> Result<Option<Snapshot>, StoreError> {
    let Some(c) = store.campaign_get_by_id(app, id).await? else {
        return Ok(None);
    };
    let slots = store.slot_list(id).await?;
    // One pass over the campaign's deliveries gives the counts by slot, the
    // totals and the sends per minute.
    let mut by_slot: HashMap<i64, BTreeMap<String, i64>> = HashMap::new();
    let mut totals = BTreeMap::new();
    let mut minutes: BTreeMap<i64, i64> = BTreeMap::new();
    for g in store.delivery_count_by_slot_minute(id).await? {
        *totals.entry(g.status.clone()).or_default() += g.n;
        if let Some(m) = g.minute {
            *minutes.entry(m).or_default() += g.n;
        }
        if let Some(slot) = g.slot_id {
            *by_slot
                .entry(slot)
                .or_default()
                .entry(g.status)
                .or_default() += g.n;
        }
    }
    let mut recipients = HashMap::new();
    let mut excluded: HashMap<i64, BTreeMap<String, i64>> = HashMap::new();
    for (slot, kind, n) in store.slot_count_list(id).await? {
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
    // Capped recipients are suppressed deliveries (as `slot_count_by_state` counts them).
    for (slot, counts) in &by_slot {
        if let Some(n) = counts.get("suppressed").filter(|n| **n > 0) {
            excluded
                .entry(*slot)
                .or_default()
                .insert("capped".to_owned(), *n);
        }
    }
    let per_minute = minutes.into_iter().collect();
    Ok(Some(Snapshot {
        state: c.state,
        slots,
        by_slot,
        totals,
        recipients,
        excluded,
        per_minute,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_value_is_loaded_again_only_after_the_time_it_sets_itself() {
        let cache: Fresh<&str, u32> = Fresh::new(Duration::from_secs(3600));
        let ttl = |v: &u32| Duration::from_millis(if *v == 0 { 0 } else { 3_600_000 });
        let load = |v: u32| move || async move { Ok::<_, ()>(Some(v)) };
        // A value that says "stale at once" is loaded every time...
        assert_eq!(*cache.get_for("a", ttl, load(0)).await.unwrap().unwrap(), 0);
        assert_eq!(*cache.get_for("a", ttl, load(1)).await.unwrap().unwrap(), 1);
        // ...one that says "an hour" is kept.
        assert_eq!(*cache.get_for("a", ttl, load(2)).await.unwrap().unwrap(), 1);
        assert_eq!(cache.loads(), 2);
        cache.forget(&"a");
        assert_eq!(*cache.get_for("a", ttl, load(3)).await.unwrap().unwrap(), 3);
        // Nothing found is not kept.
        let none = cache
            .get("b", || async { Ok::<_, ()>(None) })
            .await
            .unwrap();
        assert!(none.is_none());
    }
}
