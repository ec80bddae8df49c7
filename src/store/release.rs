//! Releasing due slots into chunks of their audience, and completing them.

use std::future::Future;

use chrono::{DateTime, Utc};

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect};
use super::segment::{Segment, Zones};
use super::sql::SqlStore;
use super::StoreError;
use crate::domain::campaign::CampaignDefinition;
use serde_json::Value;
use sqlx::types::Json;

/// Slots of one campaign occurrence to release together, by one worker.
#[derive(Debug, Clone, Copy)]
pub struct SlotRelease<'a> {
    pub slots: &'a [CampaignSlot],
    pub segment: &'a Segment<'a>,
    /// Device ids per chunk.
    pub chunk_size: i64,
    pub worker: &'a str,
}

/// A slot with what sending it needs of its campaign: a due slot to release,
/// or a released one whose chunks are sent. The definition is parsed here, at
/// the store's edge; `revision` tells whether it changed since the engine last
/// validated it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CampaignSlot {
    pub slot_id: i64,
    pub campaign_id: i64,
    pub app_id: String,
    pub zone: String,
    pub occurrence: String,
    pub fire_at: DateTime<Utc>,
    pub revision: i32,
    #[sqlx(try_from = "Json<Value>")]
    pub definition: StoredDefinition,
}

/// A campaign's stored definition, parsed once as it is read. A row that no
/// longer parses (a hand-edited database) is still read, so one bad campaign
/// does not fail the query for all the others: the engine skips and logs it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDefinition(pub Result<CampaignDefinition, String>);

impl From<Json<Value>> for StoredDefinition {
    fn from(v: Json<Value>) -> Self {
        Self(serde_json::from_value(v.0).map_err(|e| e.to_string()))
    }
}

/// How a slot was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Its recipients when counted at release; `None` for a release by key
    /// ranges, counted after its first sends ([`ReleaseStore::slot_count`]).
    pub counted: Option<i64>,
    /// Chunks of its release (a chunk spans the release's zones).
    pub chunks: i64,
}

/// What reading a release's audience found: per zone, the invalid devices and
/// the users without a device (`population`), and the active devices by
/// (zone, takes the topics, recipient, bucket or -1, first id, last id, count).
struct AudienceScan {
    population: Vec<(String, String, i64)>,
    scanned: Vec<(String, i32, i32, i64, i64, i64, i64)>,
}

/// Per won slot, its counts by kind (`recipients`, `excluded:<reason>`,
/// `chunks`), and the key ranges of the buckets (bucket → first, last, size).
type Tally = (
    std::collections::BTreeMap<i64, std::collections::BTreeMap<&'static str, i64>>,
    std::collections::BTreeMap<i64, (i64, i64, i64)>,
);

/// Counts a release's audience per won slot (`won`: id and zone) and gathers
/// the buckets' key ranges.
fn tally(won: &[(i64, String)], scan: &AudienceScan) -> Tally {
    use std::collections::BTreeMap;
    let all = won
        .iter()
        .any(|(_, z)| z == crate::domain::planner::ALL_ZONES);
    let slot_of = |zone: &str| {
        won.iter()
            .find(|(_, z)| all || z == zone)
            .map(|(id, _)| *id)
    };
    let mut counts: BTreeMap<i64, BTreeMap<&'static str, i64>> =
        won.iter().map(|(id, _)| (*id, BTreeMap::new())).collect();
    let mut ranges: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    let mut active: BTreeMap<i64, i64> = BTreeMap::new();
    for (zone, takes, recipient, bucket, lo, hi, size) in &scan.scanned {
        let Some(slot) = slot_of(zone) else { continue };
        *active.entry(slot).or_default() += size;
        let c = counts.entry(slot).or_default();
        if *takes == 0 {
            *c.entry("excluded:opted_out").or_default() += size;
        }
        if *recipient == 0 {
            continue;
        }
        *c.entry("recipients").or_default() += size;
        *c.entry("chunks").or_default() += 1;
        let r = ranges.entry(*bucket).or_insert((*lo, *hi, 0));
        r.0 = r.0.min(*lo);
        r.1 = r.1.max(*hi);
        r.2 += size;
    }
    for (zone, kind, n) in &scan.population {
        let Some(slot) = slot_of(zone) else { continue };
        let c = counts.entry(slot).or_default();
        match kind.as_str() {
            "invalid_token" => *c.entry("excluded:invalid_token").or_default() += n,
            _ => *c.entry("excluded:no_device").or_default() += n,
        }
    }
    for (slot, c) in counts.iter_mut() {
        let recipients = c.get("recipients").copied().unwrap_or(0);
        let opted_out = c.get("excluded:opted_out").copied().unwrap_or(0);
        let segment_out = (active.get(slot).copied().unwrap_or(0) - recipients - opted_out).max(0);
        c.insert("excluded:segment", segment_out);
    }
    (counts, ranges)
}

/// A release whose slots plan at least this many chunks' worth of recipients
/// is cut into key ranges without reading its audience first.
const RANGE_RELEASE_MIN_CHUNKS: i64 = 16;

/// The widest key range of such a release, in chunks: a range never holds more
/// devices than ids, so a chunk never reads more than this many chunks' worth.
const RANGE_MAX_WIDTH_CHUNKS: i64 = 8;

/// A released slot with nothing left to send: its chunks are done and none of
/// its deliveries waits for a retry (`slots` unaliased).
pub(super) const SLOT_COMPLETABLE: &str = "state = 'released' \
    AND NOT EXISTS (SELECT 1 FROM slot_chunks c WHERE c.slot_id = slots.released_with \
      AND c.state IN ('pending', 'leased')) \
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.slot_id = slots.id \
      AND d.status IN ('queued', 'leased', 'retry'))";

/// A slot to complete, with the next occurrence of its zone when its campaign
/// recurs (empty otherwise).
#[derive(Debug, Clone)]
pub struct SlotCompletion {
    pub slot_id: i64,
    pub campaign_id: i64,
    pub next: Vec<super::NewSlot>,
}

pub trait ReleaseStore: Send + Sync {
    /// Pending slots due at `now` of scheduled or running campaigns, oldest first.
    fn slot_list_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<CampaignSlot>, StoreError>> + Send;

    /// The earliest `fire_at` of a pending slot (to sleep until).
    fn slot_next_due_at(
        &self,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, StoreError>> + Send;

    /// Releases due slots of one campaign occurrence together, in one transaction
    /// with a few set-based statements however many zones: the slots this instance
    /// wins, each with the number of chunks it was cut into and (`Released::counted`)
    /// its recipients when they were counted at release. The chunks are key ranges
    /// over all the won zones together, owned by the first won slot
    /// (`released_with`).
    ///
    /// A release whose slots planned many recipients is cut into ranges of
    /// device ids sized from the plan, without reading its audience: its first
    /// chunk can be sent at once, and [`ReleaseStore::slot_count`] counts it
    /// afterwards. A smaller one (or an explicit user list) is read once
    /// before the transaction: exact chunks of `chunk_size` recipients, and
    /// its counts written with the release.
    fn slot_release(
        &self,
        release: &SlotRelease<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(i64, Released)>, StoreError>> + Send;

    /// Counts the recipients of released slots of one release (its first slot
    /// first) and those left out, by reason, and writes them (once: a count
    /// already written stays). A release by key ranges is counted this way
    /// after its first sends. Returns (slot id, recipients).
    fn slot_count(
        &self,
        slots: &[CampaignSlot],
        segment: &Segment<'_>,
    ) -> impl Future<Output = Result<Vec<(i64, i64)>, StoreError>> + Send;

    /// Released slots of running or paused campaigns without counts (their
    /// release's counting was cut short by a crash), grouped by release.
    fn slot_list_uncounted(
        &self,
    ) -> impl Future<Output = Result<Vec<CampaignSlot>, StoreError>> + Send;

    /// Released slots with no chunk and no delivery left pending: (slot id,
    /// campaign id). Reads only.
    fn slot_list_completable(
        &self,
    ) -> impl Future<Output = Result<Vec<(i64, i64)>, StoreError>> + Send;

    /// Completes those of `slots` that are still completable and, in the same
    /// transaction, adds each one's next occurrence: a crash cannot complete a
    /// recurring campaign's slot without planning its zone's next one. Returns
    /// the slots completed (slot id, campaign id).
    fn slot_complete(
        &self,
        slots: &[SlotCompletion],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(i64, i64)>, StoreError>> + Send;
}

impl<D: Dialect> ReleaseStore for SqlStore<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'r> &'r str: ColumnIndex<<D::Db as Database>::Row> + Column<'r, D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
    for<'r> i64: Column<'r, D::Db>,
    for<'r> i32: Column<'r, D::Db>,
    for<'r> i16: Column<'r, D::Db>,
    for<'r> bool: Column<'r, D::Db>,
    for<'r> String: Column<'r, D::Db>,
    for<'r> DateTime<Utc>: Column<'r, D::Db>,
    for<'r> Json<Value>: Column<'r, D::Db>,
    for<'q> Json<&'q Value>: Arg<'q, D::Db>,
    for<'q> Option<Json<&'q Value>>: Arg<'q, D::Db>,
    for<'q> Option<&'q str>: Arg<'q, D::Db>,
    for<'q> Option<i64>: Arg<'q, D::Db>,
    for<'q> Option<bool>: Arg<'q, D::Db>,
    for<'q> Option<DateTime<Utc>>: Arg<'q, D::Db>,
{
    async fn slot_list_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<super::CampaignSlot>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.id AS slot_id, s.campaign_id, k.app_id, s.zone, s.occurrence, s.fire_at, k.revision, k.definition \
             FROM slots s JOIN campaigns k ON k.id = s.campaign_id \
             WHERE s.state = 'pending' AND s.fire_at <= $1 AND k.state IN ('scheduled', 'running') \
             ORDER BY s.fire_at, s.id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    async fn slot_next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(s.fire_at) FROM slots s JOIN campaigns k ON k.id = s.campaign_id \
             WHERE s.state = 'pending' AND k.state IN ('scheduled', 'running')",
        )
        .fetch_one(&self.read)
        .await?)
    }

    async fn slot_release(
        &self,
        release: &SlotRelease<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, super::Released)>, StoreError> {
        let SlotRelease {
            slots,
            segment,
            chunk_size,
            ..
        } = *release;
        let Some(first) = slots.first() else {
            return Ok(Vec::new());
        };
        if slots
            .iter()
            .any(|s| s.campaign_id != first.campaign_id || s.occurrence != first.occurrence)
        {
            return Err(StoreError::Invariant(
                "slots released together must share campaign and occurrence".to_owned(),
            ));
        }
        let ids: Vec<i64> = slots.iter().map(|s| s.slot_id).collect();
        let planned: i64 = sqlx::query_scalar(&format!(
            "SELECT CAST(COALESCE(SUM(planned_count), 0) AS BIGINT) FROM slots WHERE id {}",
            D::ID_IN
        ))
        .bind(D::ids(&ids))
        .fetch_one(&self.read)
        .await?;
        let chunk_size = chunk_size.max(1);
        // A large audience is released as key ranges at once, counted after its
        // first sends; a small one (or an explicit user list) by one exact scan.
        if segment.audience.users.is_empty() && planned >= RANGE_RELEASE_MIN_CHUNKS * chunk_size {
            if let Some(span) = self.zones_id_span(release).await? {
                return self.release_ranges(release, span, planned, now).await;
            }
        }
        self.release_exact(release, now).await
    }

    async fn slot_count(
        &self,
        slots: &[CampaignSlot],
        segment: &Segment<'_>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let won: Vec<(i64, String)> = slots.iter().map(|s| (s.slot_id, s.zone.clone())).collect();
        let scan = self.read_audience(slots, segment, None).await?;
        let (counts, _) = tally(&won, &scan);
        let mut tx = self.begin_write().await?;
        Self::insert_counts(&mut tx, &counts).await?;
        tx.commit().await?;
        Ok(counts
            .iter()
            .map(|(slot, c)| (*slot, c.get("recipients").copied().unwrap_or(0)))
            .collect())
    }

    async fn slot_list_uncounted(&self) -> Result<Vec<CampaignSlot>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.id AS slot_id, s.campaign_id, k.app_id, s.zone, s.occurrence, s.fire_at, k.revision, k.definition \
             FROM slots s JOIN campaigns k ON k.id = s.campaign_id \
             WHERE s.state = 'released' AND k.state IN ('running', 'paused') \
               AND NOT EXISTS (SELECT 1 FROM slot_counts c WHERE c.slot_id = s.id) \
             ORDER BY s.released_with, s.id",
        )
        .fetch_all(&self.read)
        .await?)
    }

    async fn slot_list_completable(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        // Polled while `deliveries` grows by thousands of rows a second: planned
        // afresh at every call. Prepared once, Postgres kept the plan made when
        // the table was empty (a scan of it per slot: 43 s at a million rows).
        Ok(sqlx::query_as(&format!(
            "SELECT id, campaign_id FROM slots WHERE {}",
            SLOT_COMPLETABLE
        ))
        .persistent(false)
        .fetch_all(&self.read)
        .await?)
    }

    async fn slot_complete(
        &self,
        slots: &[super::SlotCompletion],
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        if slots.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<i64> = slots.iter().map(|s| s.slot_id).collect();
        let mut tx = self.begin_write().await?;
        // Still completable: checked again inside the transaction.
        let sql = format!(
            "UPDATE slots SET state = 'completed' WHERE id {} AND {} RETURNING id, campaign_id",
            D::ID_IN,
            SLOT_COMPLETABLE
        );
        let q = sqlx::query_as::<_, (i64, i64)>(&sql).persistent(false);
        let done: Vec<(i64, i64)> = q.bind(D::ids(&ids)).fetch_all(&mut *tx).await?;
        // The next occurrence of a recurring campaign's zone is planned in the
        // same transaction: committed apart, a crash between the two ended
        // that zone of the campaign for good.
        for s in slots.iter().filter(|s| !s.next.is_empty()) {
            if done.iter().any(|(id, _)| *id == s.slot_id) {
                Self::insert_slots(&mut tx, s.campaign_id, &s.next, now).await?;
            }
        }
        tx.commit().await?;
        Ok(done)
    }
}

/// The release's parts, shared by its two ways.
impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'r> &'r str: ColumnIndex<<D::Db as Database>::Row> + Column<'r, D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
    for<'r> i64: Column<'r, D::Db>,
    for<'r> i32: Column<'r, D::Db>,
    for<'r> i16: Column<'r, D::Db>,
    for<'r> bool: Column<'r, D::Db>,
    for<'r> String: Column<'r, D::Db>,
    for<'r> DateTime<Utc>: Column<'r, D::Db>,
    for<'r> Json<Value>: Column<'r, D::Db>,
    for<'q> Json<&'q Value>: Arg<'q, D::Db>,
    for<'q> Option<Json<&'q Value>>: Arg<'q, D::Db>,
    for<'q> Option<&'q str>: Arg<'q, D::Db>,
    for<'q> Option<i64>: Arg<'q, D::Db>,
    for<'q> Option<bool>: Arg<'q, D::Db>,
    for<'q> Option<DateTime<Utc>>: Arg<'q, D::Db>,
{
    /// The lowest and highest id of the release's zones' active devices (all of
    /// the table's for a slot of every zone: the primary key's ends); `None`
    /// when they have none. Index probes: each MIN and MAX in a subquery of its
    /// own, which SQLite reads from the index's end (both in one SELECT, it
    /// scans).
    async fn zones_id_span(&self, r: &SlotRelease<'_>) -> Result<Option<(i64, i64)>, StoreError> {
        let all = r
            .slots
            .iter()
            .any(|s| s.zone == crate::domain::planner::ALL_ZONES);
        let mut span: Option<(i64, i64)> = None;
        let mut widen = |lo: Option<i64>, hi: Option<i64>| {
            if let (Some(lo), Some(hi)) = (lo, hi) {
                span = Some(span.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        };
        if all {
            let (lo, hi): (Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT MIN(id) FROM devices), (SELECT MAX(id) FROM devices)",
            )
            .fetch_one(&self.read)
            .await?;
            widen(lo, hi);
        } else {
            for slot in r.slots {
                let (lo, hi): (Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT (SELECT MIN(id) FROM devices WHERE app_id = $1 AND zone = $2 AND state = 'active'), \
                            (SELECT MAX(id) FROM devices WHERE app_id = $1 AND zone = $2 AND state = 'active')",
                )
                .bind(r.segment.app_id)
                .bind(&slot.zone)
                .fetch_one(&self.read)
                .await?;
                widen(lo, hi);
            }
        }
        Ok(span)
    }

    /// Releases by key ranges: `span` cut into ranges that each hold about
    /// `chunk_size` of the `planned` recipients (at most
    /// [`RANGE_MAX_WIDTH_CHUNKS`] chunks' worth of ids), claimed and written in
    /// one short transaction; counted later.
    async fn release_ranges(
        &self,
        r: &SlotRelease<'_>,
        (lo, hi): (i64, i64),
        planned: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, super::Released)>, StoreError> {
        let chunk = r.chunk_size.max(1);
        let span = hi - lo + 1;
        let width = (chunk.saturating_mul(span) / planned.max(1))
            .clamp(chunk, chunk.saturating_mul(RANGE_MAX_WIDTH_CHUNKS));
        let mut ranges = Vec::new();
        let mut start = lo;
        while start <= hi {
            let end = start.saturating_add(width - 1).min(hi);
            ranges.push((start, end, end - start + 1));
            start = end.saturating_add(1);
        }
        let mut tx = self.begin_write().await?;
        let Some((won, lead)) = Self::claim(&mut tx, r, now).await? else {
            return Ok(Vec::new());
        };
        Self::insert_chunks(&mut tx, r.slots[0].campaign_id, lead, &ranges, now).await?;
        tx.commit().await?;
        Ok(won
            .iter()
            .map(|(id, _)| {
                (
                    *id,
                    super::Released {
                        counted: None,
                        chunks: ranges.len() as i64,
                    },
                )
            })
            .collect())
    }

    /// Releases by one exact read of the audience before the transaction (on
    /// SQLite it would hold the one writer): chunks of `chunk_size` recipients
    /// and the counts, written with the claim.
    async fn release_exact(
        &self,
        r: &SlotRelease<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, super::Released)>, StoreError> {
        let scan = self
            .read_audience(r.slots, r.segment, Some(r.chunk_size.max(1)))
            .await?;
        let mut tx = self.begin_write().await?;
        let Some((won, lead)) = Self::claim(&mut tx, r, now).await? else {
            return Ok(Vec::new());
        };
        let (counts, buckets) = tally(&won, &scan);
        let ranges: Vec<(i64, i64, i64)> = buckets.values().copied().collect();
        Self::insert_chunks(&mut tx, r.slots[0].campaign_id, lead, &ranges, now).await?;
        Self::insert_counts(&mut tx, &counts).await?;
        tx.commit().await?;
        Ok(counts
            .iter()
            .map(|(slot, c)| {
                (
                    *slot,
                    super::Released {
                        counted: Some(c.get("recipients").copied().unwrap_or(0)),
                        chunks: c.get("chunks").copied().unwrap_or(0),
                    },
                )
            })
            .collect())
    }

    /// Reads who of the slots' zones is in and who was left out and why: one
    /// pass over the zones' active devices, bucketed by `bucket` recipients
    /// in id order when given (rows then per bucket), and the population
    /// count of invalid devices and users without one. Reads only.
    async fn read_audience(
        &self,
        slots: &[CampaignSlot],
        segment: &Segment<'_>,
        bucket: Option<i64>,
    ) -> Result<AudienceScan, StoreError> {
        let all_due = slots
            .iter()
            .any(|s| s.zone == crate::domain::planner::ALL_ZONES);
        let due_zones: Vec<String> = slots.iter().map(|s| s.zone.clone()).collect();
        let zones = if all_due {
            Zones::Any
        } else {
            Zones::Among(&due_zones)
        };
        let (sql, binds) = super::segment::zone_population_sql::<D>(segment, zones);
        let mut q = sqlx::query_as::<_, (String, String, i64)>(&sql);
        for b in binds {
            q = Self::bind_segment(q, b);
        }
        let population = q.fetch_all(&self.read).await?;
        // Buckets of `bucket` consecutive recipient ids over all the release's
        // zones: each chunk is one key range, so its deliveries land side by side
        // in every index keyed by device (or user, registered alongside), where
        // per-zone ranges (a zone's devices are spread over the whole id space)
        // dirtied one index page per delivery.
        let zone_key = if all_due { "''" } else { "r.zone" };
        let (scan, binds) = super::segment::release_scan_sql::<D>(segment, zones);
        let n = binds.len();
        let bucketed = match bucket {
            Some(_) => format!(
                "CASE WHEN r.recipient = 1 \
                   THEN (ROW_NUMBER() OVER (PARTITION BY r.recipient ORDER BY r.device_id) - 1) / ${} \
                   ELSE -1 END",
                n + 1
            ),
            None => "CAST(-1 AS BIGINT)".to_owned(),
        };
        let sql = format!(
            "SELECT zone, takes, recipient, bucket, MIN(device_id), MAX(device_id), COUNT(*) FROM ( \
               SELECT r.device_id, {zone_key} AS zone, r.takes, r.recipient, {bucketed} AS bucket \
               FROM ({scan}) r \
             ) b GROUP BY zone, takes, recipient, bucket"
        );
        let mut q = sqlx::query_as::<_, (String, i32, i32, i64, i64, i64, i64)>(&sql);
        for b in binds {
            q = Self::bind_segment(q, b);
        }
        if let Some(size) = bucket {
            q = q.bind(size);
        }
        let scanned = q.fetch_all(&self.read).await?;
        Ok(AudienceScan {
            population,
            scanned,
        })
    }

    /// Claims the release's slots still pending: the won slots (id, zone) and
    /// the first of them, which owns the release's chunks; `None` when another
    /// instance won them all. Marks the campaign running.
    async fn claim(
        tx: &mut sqlx::Transaction<'_, D::Db>,
        r: &SlotRelease<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<(Vec<(i64, String)>, i64)>, StoreError> {
        let ids: Vec<i64> = r.slots.iter().map(|s| s.slot_id).collect();
        let claim = format!(
            "UPDATE slots SET state = 'released', released_at = $2, released_by = $3 \
             WHERE id {} AND state = 'pending' RETURNING id, zone",
            D::ID_IN
        );
        let won: Vec<(i64, String)> = sqlx::query_as(&claim)
            .bind(D::ids(&ids))
            .bind(now)
            .bind(r.worker)
            .fetch_all(&mut **tx)
            .await?;
        let Some(lead) = won.iter().map(|(id, _)| *id).min() else {
            return Ok(None);
        };
        let won_ids: Vec<i64> = won.iter().map(|(id, _)| *id).collect();
        let group = format!(
            "UPDATE slots SET released_with = $2 WHERE id {} RETURNING id",
            D::ID_IN
        );
        sqlx::query_as::<_, (i64,)>(&group)
            .bind(D::ids(&won_ids))
            .bind(lead)
            .fetch_all(&mut **tx)
            .await?;
        sqlx::query("UPDATE campaigns SET state = 'running', updated_at = $2 WHERE id = $1 AND state = 'scheduled'")
            .bind(r.slots[0].campaign_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(Some((won, lead)))
    }

    /// The release's chunks, owned by `lead`: (first id, last id, size) in
    /// order. `seq` numbers them from 0, so a release's first chunk is leased
    /// before the backlog of earlier releases (see `LEASE_CHUNKS`).
    async fn insert_chunks(
        tx: &mut sqlx::Transaction<'_, D::Db>,
        campaign_id: i64,
        lead: i64,
        ranges: &[(i64, i64, i64)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if ranges.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = ranges
            .iter()
            .enumerate()
            .map(|(seq, (lo, hi, n))| serde_json::json!({"slot_id": lead, "seq": seq, "lo": lo, "hi": hi, "n": n}))
            .collect();
        let source = D::json_rows(
            "$3",
            &[
                ("slot_id", "bigint"),
                ("seq", "integer"),
                ("lo", "bigint"),
                ("hi", "bigint"),
                ("n", "integer"),
            ],
        );
        sqlx::query(&format!(
            "INSERT INTO slot_chunks (slot_id, campaign_id, seq, first_device_id, last_device_id, recipients, \
               state, created_at, updated_at) \
             SELECT x.slot_id, $1, x.seq, x.lo, x.hi, x.n, 'pending', $2, $2 FROM {source}"
        ))
        .bind(campaign_id)
        .bind(now)
        .bind(D::json(serde_json::Value::Array(rows)))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Who was left out and why, next to how many were in, per slot; a count
    /// already written stays.
    async fn insert_counts(
        tx: &mut sqlx::Transaction<'_, D::Db>,
        counts: &std::collections::BTreeMap<i64, std::collections::BTreeMap<&'static str, i64>>,
    ) -> Result<(), StoreError> {
        let mut rows = Vec::new();
        for (slot, c) in counts {
            for kind in [
                "recipients",
                "excluded:opted_out",
                "excluded:invalid_token",
                "excluded:no_device",
                "excluded:segment",
            ] {
                let n = c.get(kind).copied().unwrap_or(0);
                rows.push(serde_json::json!({"slot_id": slot, "kind": kind, "n": n}));
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let source = D::json_rows(
            "$1",
            &[("slot_id", "bigint"), ("kind", "text"), ("n", "bigint")],
        );
        sqlx::query(&format!(
            "INSERT INTO slot_counts (slot_id, kind, n) SELECT x.slot_id, x.kind, x.n FROM {source} \
             WHERE TRUE ON CONFLICT (slot_id, kind) DO NOTHING"
        ))
        .bind(D::json(serde_json::Value::Array(rows)))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
