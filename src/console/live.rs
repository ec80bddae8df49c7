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

type Entry = Arc<tokio::sync::Mutex<Option<(Instant, Arc<Snapshot>)>>>;

/// Snapshots by campaign id, shared by every console request of the process.
#[derive(Default)]
pub struct LiveCache {
    entries: Mutex<HashMap<i64, Entry>>,
    /// Database reads made (for the test of the bound).
    reads: std::sync::atomic::AtomicU64,
}

impl LiveCache {
    /// Drops a campaign's snapshot: after an action here, the next page shows
    /// its effect instead of the state from before.
    pub fn forget(&self, id: i64) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The campaign's snapshot, read again only when the last is older than
    /// [`FRESH_FOR`]; `None` when the campaign is not the app's.
    pub async fn get<S: Store>(
        &self,
        store: &S,
        app: &str,
        id: i64,
    ) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let entry = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_default()
            .clone();
        let mut held = entry.lock().await;
        if let Some((at, snap)) = held.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return Ok(Some(snap.clone()));
            }
        }
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        let snap = Arc::new(Snapshot {
            state: c.state,
            slots,
            by_slot,
            totals,
            recipients,
            excluded,
            per_minute: store.delivery_count_by_minute(id).await?,
        });
        *held = Some((Instant::now(), snap.clone()));
        Ok(Some(snap))
    }
}
