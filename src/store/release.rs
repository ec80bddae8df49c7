//! Releasing due slots into chunks of their audience, and completing them.

use std::future::Future;

use chrono::{DateTime, Utc};

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect};
use super::segment::Segment;
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
    pub recipients: i64,
    /// Chunks holding some of its recipients (a chunk spans the release's zones).
    pub chunks: i64,
}

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
    /// wins, each with its counts and the number of chunks that hold its recipients.
    /// The chunks are key ranges over all the won zones together, owned by the
    /// first won slot (`released_with`).
    fn slot_release(
        &self,
        release: &SlotRelease<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(i64, Released)>, StoreError>> + Send;

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
            worker,
        } = *release;
        use super::segment::Zones;
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
        // Who was left out and why, per zone: read before the write transaction
        // (a snapshot at release like the rest), so counting a large zone never
        // holds SQLite's one writer.
        let all_due = slots
            .iter()
            .any(|s| s.zone == crate::domain::planner::ALL_ZONES);
        let due_zones: Vec<String> = slots.iter().map(|s| s.zone.clone()).collect();
        let count_zones = if all_due {
            Zones::Any
        } else {
            Zones::Among(&due_zones)
        };
        let (sql, binds) = super::segment::zone_population_sql::<D>(segment, count_zones);
        let mut q = sqlx::query_as::<_, (String, String, i64)>(&sql);
        for b in binds {
            q = Self::bind_segment(q, b);
        }
        let population = q.fetch_all(&self.read).await?;
        // One pass over the zones' active devices gives the chunks and the counts
        // of recipients and of the opted out: buckets of `chunk_size` consecutive
        // recipient ids over all the release's zones. Each chunk is one key range,
        // so its deliveries land side by side in every index keyed by device (or
        // user, registered alongside), where per-zone ranges (a zone's devices are
        // spread over the whole id space) dirtied one index page per delivery.
        // Read before the write transaction like the counts (on SQLite it would
        // hold the one writer); a zone this instance then does not win is left out
        // of the chunks, whose recipients are read again per chunk. Rows: (zone,
        // takes the topics, recipient, bucket or -1, first id, last id, devices).
        let zone_key = if all_due {
            "''".to_owned()
        } else {
            "r.zone".to_owned()
        };
        let (scan, binds) = super::segment::release_scan_sql::<D>(segment, count_zones);
        let n = binds.len();
        let sql = format!(
            "SELECT zone, takes, recipient, bucket, MIN(device_id), MAX(device_id), COUNT(*) FROM ( \
               SELECT r.device_id, {zone_key} AS zone, r.takes, r.recipient, \
                 CASE WHEN r.recipient = 1 \
                   THEN (ROW_NUMBER() OVER (PARTITION BY r.recipient ORDER BY r.device_id) - 1) / ${d} \
                   ELSE -1 END AS bucket \
               FROM ({scan}) r \
             ) b GROUP BY zone, takes, recipient, bucket",
            d = n + 1
        );
        let mut q = sqlx::query_as::<_, (String, i32, i32, i64, i64, i64, i64)>(&sql);
        for b in binds {
            q = Self::bind_segment(q, b);
        }
        let scanned = q.bind(chunk_size.max(1)).fetch_all(&self.read).await?;
        let ids: Vec<i64> = slots.iter().map(|s| s.slot_id).collect();
        let mut tx = self.begin_write().await?;
        let claim = format!(
            "UPDATE slots SET state = 'released', released_at = $2, released_by = $3 \
             WHERE id {} AND state = 'pending' RETURNING id, zone",
            D::ID_IN
        );
        let won: Vec<(i64, String)> = sqlx::query_as(&claim)
            .bind(D::ids(&ids))
            .bind(now)
            .bind(worker)
            .fetch_all(&mut *tx)
            .await?;
        if won.is_empty() {
            return Ok(Vec::new());
        }
        // The release's chunks belong to its first slot; every slot it won names it.
        let lead = won.iter().map(|(id, _)| *id).min().unwrap_or(first.slot_id);
        let won_ids: Vec<i64> = won.iter().map(|(id, _)| *id).collect();
        let group = format!(
            "UPDATE slots SET released_with = $2 WHERE id {} RETURNING id",
            D::ID_IN
        );
        sqlx::query_as::<_, (i64,)>(&group)
            .bind(D::ids(&won_ids))
            .bind(lead)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("UPDATE campaigns SET state = 'running', updated_at = $2 WHERE id = $1 AND state = 'scheduled'")
            .bind(first.campaign_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let all = won
            .iter()
            .any(|(_, z)| z == crate::domain::planner::ALL_ZONES);
        let slot_of = |zone: &str| {
            won.iter()
                .find(|(_, z)| all || z == zone)
                .map(|(id, _)| *id)
        };
        let mut counts: std::collections::BTreeMap<i64, std::collections::BTreeMap<&str, i64>> =
            won.iter()
                .map(|(id, _)| (*id, Default::default()))
                .collect();
        // `seq` is the bucket: a release's chunks are numbered from 0, so its first
        // chunk is leased before the backlog of earlier releases (see `LEASE_CHUNKS`).
        let mut ranges: std::collections::BTreeMap<i64, (i64, i64, i64)> = Default::default();
        let mut active: std::collections::BTreeMap<i64, i64> = Default::default();
        for (zone, takes, recipient, bucket, lo, hi, size) in &scanned {
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
        let rows: Vec<serde_json::Value> = ranges
            .iter()
            .map(|(seq, (lo, hi, n))| serde_json::json!({"slot_id": lead, "seq": seq, "lo": lo, "hi": hi, "n": n}))
            .collect();
        if !rows.is_empty() {
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
            .bind(first.campaign_id)
            .bind(now)
            .bind(D::json(serde_json::Value::Array(rows)))
            .execute(&mut *tx)
            .await?;
        }
        // Who was left out and why, next to how many were in, per slot.
        for (zone, kind, n) in population {
            let Some(slot) = slot_of(&zone) else { continue };
            let c = counts.entry(slot).or_default();
            match kind.as_str() {
                "invalid_token" => *c.entry("excluded:invalid_token").or_default() += n,
                _ => *c.entry("excluded:no_device").or_default() += n,
            }
        }
        let mut out = Vec::with_capacity(won.len());
        let mut count_rows = Vec::new();
        for (slot, c) in &counts {
            let recipients = c.get("recipients").copied().unwrap_or(0);
            let opted_out = c.get("excluded:opted_out").copied().unwrap_or(0);
            let segment_out =
                (active.get(slot).copied().unwrap_or(0) - recipients - opted_out).max(0);
            for kind in [
                "recipients",
                "excluded:opted_out",
                "excluded:invalid_token",
                "excluded:no_device",
            ] {
                let n = c.get(kind).copied().unwrap_or(0);
                count_rows.push(serde_json::json!({"slot_id": slot, "kind": kind, "n": n}));
            }
            count_rows.push(
                serde_json::json!({"slot_id": slot, "kind": "excluded:segment", "n": segment_out}),
            );
            out.push((
                *slot,
                super::Released {
                    recipients,
                    chunks: c.get("chunks").copied().unwrap_or(0),
                },
            ));
        }
        let source = D::json_rows(
            "$1",
            &[("slot_id", "bigint"), ("kind", "text"), ("n", "bigint")],
        );
        sqlx::query(&format!("INSERT INTO slot_counts (slot_id, kind, n) SELECT x.slot_id, x.kind, x.n FROM {source}"))
            .bind(D::json(serde_json::Value::Array(count_rows)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(out)
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
