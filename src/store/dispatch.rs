//! Storage for the engine: releasing slots into chunks, leasing chunks and
//! delivery rows, and writing outcomes back in batches, fenced by lease.
//!
//! `shared_dispatch_methods!()` expands inside each backend's `impl Store`; the
//! backend provides `json_rows`, `time_json`, `new_delivery_source` and
//! `new_delivery_arg` (a batch of new deliveries), `LEASE_CHUNKS`,
//! `LEASE_DELIVERIES`, `ID_IN` and `bind_ids`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use crate::state::{DeliveryStatus, StateMachine};

/// A pending slot whose time has come.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DueSlot {
    pub slot_id: i64,
    pub campaign_id: i64,
    pub app_id: String,
    pub zone: String,
    pub occurrence: String,
    pub fire_at: DateTime<Utc>,
    pub definition: Json<Value>,
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

/// A chunk of a slot's audience, leased to one worker.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeasedChunk {
    pub id: i64,
    pub slot_id: i64,
    pub campaign_id: i64,
    pub first_device_id: i64,
    pub last_device_id: i64,
    pub attempt: i32,
}

/// What a worker needs to know about a slot to send its chunks.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SlotInfo {
    pub slot_id: i64,
    pub campaign_id: i64,
    pub app_id: String,
    pub zone: String,
    pub occurrence: String,
    pub fire_at: DateTime<Utc>,
    pub definition: Json<Value>,
}

/// One device to send to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Recipient {
    pub device_id: i64,
    pub zone: String,
    /// The slot of the device's zone among the chunk's release (filled in after
    /// the read).
    #[sqlx(skip)]
    pub slot_id: i64,
    pub user_id: Option<i64>,
    /// The id its delivery will have (reserved after the read): the message id
    /// the notification carries.
    #[sqlx(skip)]
    pub delivery_id: i64,
    pub token: String,
    pub platform: String,
    pub locale: Option<String>,
    /// `capped:<topic>` when a frequency cap holds this recipient back.
    pub capped: Option<String>,
}

/// A delivery's first outcome, written with the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Reserved before the send ([`super::Store::reserve_delivery_ids`]).
    pub id: i64,
    pub device_id: i64,
    pub slot_id: i64,
    pub user_id: Option<i64>,
    pub status: DeliveryStatus,
    pub provider_id: Option<String>,
    pub error_reason: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A batch of a chunk's outcomes, written only while the chunk's lease holds.
#[derive(Debug, Clone)]
pub struct ChunkWrite<'a> {
    pub chunk: &'a LeasedChunk,
    pub worker: &'a str,
    pub app_id: &'a str,
    pub occurrence: &'a str,
    pub deliveries: &'a [NewDelivery],
    /// The app has a status webhook: each written status also goes to its outbox.
    pub events: bool,
}

/// A delivery row leased for another attempt (retries, transactional pushes).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LeasedDelivery {
    pub id: i64,
    pub app_id: String,
    pub campaign_id: Option<i64>,
    pub slot_id: Option<i64>,
    pub request_id: Option<String>,
    pub device_id: i64,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub token: String,
    pub platform: String,
    pub locale: Option<String>,
    pub device_state: String,
}

/// The outcome of a leased delivery's attempt, fenced by `attempts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate {
    pub id: i64,
    pub attempts: i32,
    pub device_id: i64,
    pub status: DeliveryStatus,
    pub provider_id: Option<String>,
    pub error_reason: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The row's app has a status webhook: the change also goes to its outbox.
    pub events: bool,
}

pub(super) fn new_delivery_rows(
    rows: &[NewDelivery],
    time: impl Fn(DateTime<Utc>) -> Value,
) -> Value {
    rows.iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id, "device_id": d.device_id, "slot_id": d.slot_id, "user_id": d.user_id, "status": d.status.to_string(),
                "provider_id": d.provider_id, "error_reason": d.error_reason,
                "next_attempt_at": d.next_attempt_at.map(&time),
            })
        })
        .collect()
}

/// The same rows as JSON arrays in the order of [`NEW_DELIVERY_COLUMNS`], written
/// straight to text: no keys to parse per row on the database side and no
/// `Value` tree to build on ours (BENCHMARKS.md, eighth round).
pub(super) fn new_delivery_arrays(
    rows: &[NewDelivery],
    time: impl Fn(DateTime<Utc>) -> String,
) -> Result<String, super::StoreError> {
    type Row<'a> = (
        i64,
        i64,
        i64,
        Option<i64>,
        &'a str,
        &'a Option<String>,
        &'a Option<String>,
        Option<String>,
    );
    let rows: Vec<Row<'_>> = rows
        .iter()
        .map(|d| {
            (
                d.id,
                d.device_id,
                d.slot_id,
                d.user_id,
                d.status.as_str(),
                &d.provider_id,
                &d.error_reason,
                d.next_attempt_at.map(&time),
            )
        })
        .collect();
    serde_json::to_string(&rows)
        .map_err(|e| super::StoreError::Invalid(format!("delivery rows: {e}")))
}

pub(super) fn update_rows(rows: &[DeliveryUpdate], time: impl Fn(DateTime<Utc>) -> Value) -> Value {
    rows.iter()
        .map(|d| {
            serde_json::json!({
                "delivery_id": d.id, "attempts": d.attempts, "status": d.status.to_string(),
                "provider_id": d.provider_id, "error_reason": d.error_reason,
                "next_attempt_at": d.next_attempt_at.map(&time),
            })
        })
        .collect()
}

pub(super) const NEW_DELIVERY_COLUMNS: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("device_id", "bigint"),
    ("slot_id", "bigint"),
    ("user_id", "bigint"),
    ("status", "text"),
    ("provider_id", "text"),
    ("error_reason", "text"),
    ("next_attempt_at", "timestamptz"),
];

pub(super) const UPDATE_COLUMNS: &[(&str, &str)] = &[
    ("delivery_id", "bigint"),
    ("attempts", "integer"),
    ("status", "text"),
    ("provider_id", "text"),
    ("error_reason", "text"),
    ("next_attempt_at", "timestamptz"),
];

pub(super) const EVENT_COLUMNS: &[(&str, &str)] = &[
    ("delivery_id", "bigint"),
    ("status", "text"),
    ("attempt", "integer"),
    ("detail", "text"),
];

macro_rules! shared_dispatch_methods {
    () => {
        async fn due_slots(
            &self,
            now: chrono::DateTime<chrono::Utc>,
            limit: i64,
        ) -> Result<Vec<$crate::store::DueSlot>, $crate::store::StoreError> {
            Ok(sqlx::query_as(
                "SELECT s.id AS slot_id, s.campaign_id, k.app_id, s.zone, s.occurrence, s.fire_at, k.definition \
                 FROM slots s JOIN campaigns k ON k.id = s.campaign_id \
                 WHERE s.state = 'pending' AND s.fire_at <= $1 AND k.state IN ('scheduled', 'running') \
                 ORDER BY s.fire_at, s.id LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(&self.read)
            .await?)
        }

        async fn next_due_at(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, $crate::store::StoreError> {
            Ok(sqlx::query_scalar(
                "SELECT MIN(s.fire_at) FROM slots s JOIN campaigns k ON k.id = s.campaign_id \
                 WHERE s.state = 'pending' AND k.state IN ('scheduled', 'running')",
            )
            .fetch_one(&self.read)
            .await?)
        }

        async fn release_slot(
            &self,
            slot: &$crate::store::DueSlot,
            segment: &$crate::store::Segment<'_>,
            chunk_size: i64,
            worker: &str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Option<$crate::store::Released>, $crate::store::StoreError> {
            let won = self
                .release_slots(std::slice::from_ref(slot), segment, chunk_size, worker, now)
                .await?;
            Ok(won.into_iter().next().map(|(_, r)| r))
        }

        async fn release_slots(
            &self,
            slots: &[$crate::store::DueSlot],
            segment: &$crate::store::Segment<'_>,
            chunk_size: i64,
            worker: &str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Vec<(i64, $crate::store::Released)>, $crate::store::StoreError> {
            use $crate::store::segment::Zones;
            let Some(first) = slots.first() else {
                return Ok(Vec::new());
            };
            if slots.iter().any(|s| s.campaign_id != first.campaign_id || s.occurrence != first.occurrence) {
                return Err($crate::store::StoreError::Invalid(
                    "slots released together must share campaign and occurrence".to_owned(),
                ));
            }
            // Who was left out and why, per zone: read before the write transaction
            // (a snapshot at release like the rest), so counting a large zone never
            // holds SQLite's one writer.
            let all_due = slots.iter().any(|s| s.zone == $crate::planner::ALL_ZONES);
            let due_zones: Vec<String> = slots.iter().map(|s| s.zone.clone()).collect();
            let count_zones = if all_due { Zones::Any } else { Zones::Among(&due_zones) };
            let (sql, binds) = $crate::store::segment::zone_population_sql(self.kind(), segment, count_zones);
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
            let zone_key = if all_due { "''".to_owned() } else { "r.zone".to_owned() };
            let (scan, binds) = $crate::store::segment::release_scan_sql(self.kind(), segment, count_zones);
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
                Self::ID_IN
            );
            let won: Vec<(i64, String)> = Self::bind_ids(sqlx::query_as(&claim), &ids)
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
            let group = format!("UPDATE slots SET released_with = $2 WHERE id {} RETURNING id", Self::ID_IN);
            Self::bind_ids(sqlx::query_as::<_, (i64,)>(&group), &won_ids)
                .bind(lead)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query("UPDATE campaigns SET state = 'running', updated_at = $2 WHERE id = $1 AND state = 'scheduled'")
                .bind(first.campaign_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let all = won.iter().any(|(_, z)| z == $crate::planner::ALL_ZONES);
            let slot_of = |zone: &str| {
                won.iter()
                    .find(|(_, z)| all || z == zone)
                    .map(|(id, _)| *id)
            };
            let mut counts: std::collections::BTreeMap<i64, std::collections::BTreeMap<&str, i64>> =
                won.iter().map(|(id, _)| (*id, Default::default())).collect();
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
                let source = Self::json_rows(
                    "$3",
                    &[("slot_id", "bigint"), ("seq", "integer"), ("lo", "bigint"), ("hi", "bigint"), ("n", "integer")],
                );
                sqlx::query(&format!(
                    "INSERT INTO slot_chunks (slot_id, campaign_id, seq, first_device_id, last_device_id, recipients, \
                       state, created_at, updated_at) \
                     SELECT x.slot_id, $1, x.seq, x.lo, x.hi, x.n, 'pending', $2, $2 FROM {source}"
                ))
                .bind(first.campaign_id)
                .bind(now)
                .bind(Self::json_arg(serde_json::Value::Array(rows)))
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
                let segment_out = (active.get(slot).copied().unwrap_or(0) - recipients - opted_out).max(0);
                for kind in ["recipients", "excluded:opted_out", "excluded:invalid_token", "excluded:no_device"] {
                    let n = c.get(kind).copied().unwrap_or(0);
                    count_rows.push(serde_json::json!({"slot_id": slot, "kind": kind, "n": n}));
                }
                count_rows.push(serde_json::json!({"slot_id": slot, "kind": "excluded:segment", "n": segment_out}));
                out.push((
                    *slot,
                    $crate::store::Released {
                        recipients,
                        chunks: c.get("chunks").copied().unwrap_or(0),
                    },
                ));
            }
            let source = Self::json_rows("$1", &[("slot_id", "bigint"), ("kind", "text"), ("n", "bigint")]);
            sqlx::query(&format!("INSERT INTO slot_counts (slot_id, kind, n) SELECT x.slot_id, x.kind, x.n FROM {source}"))
                .bind(Self::json_arg(serde_json::Value::Array(count_rows)))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(out)
        }

        async fn lease_chunks(
            &self,
            worker: &str,
            now: chrono::DateTime<chrono::Utc>,
            lease_until: chrono::DateTime<chrono::Utc>,
            limit: i64,
        ) -> Result<Vec<$crate::store::LeasedChunk>, $crate::store::StoreError> {
            // Polled while the tables under it grow: planned afresh at every call.
            Ok(sqlx::query_as(Self::LEASE_CHUNKS)
                .persistent(false)
                .bind(now)
                .bind(limit)
                .bind(worker)
                .bind(lease_until)
                .fetch_all(&self.write)
                .await?)
        }

        async fn extend_chunk_lease(
            &self,
            chunk: &$crate::store::LeasedChunk,
            worker: &str,
            until: chrono::DateTime<chrono::Utc>,
        ) -> Result<bool, $crate::store::StoreError> {
            let done = sqlx::query(
                "UPDATE slot_chunks SET lease_expires_at = $4 \
                 WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'leased'",
            )
            .bind(chunk.id)
            .bind(chunk.attempt)
            .bind(worker)
            .bind(until)
            .execute(&self.write)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn slot_info(&self, slot_id: i64) -> Result<Option<$crate::store::SlotInfo>, $crate::store::StoreError> {
            Ok(sqlx::query_as(
                "SELECT s.id AS slot_id, s.campaign_id, k.app_id, s.zone, s.occurrence, s.fire_at, k.definition \
                 FROM slots s JOIN campaigns k ON k.id = s.campaign_id WHERE s.id = $1",
            )
            .bind(slot_id)
            .fetch_optional(&self.read)
            .await?)
        }

        async fn chunk_recipients(
            &self,
            chunk: &$crate::store::LeasedChunk,
            slot: &$crate::store::SlotInfo,
            segment: &$crate::store::Segment<'_>,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Vec<$crate::store::Recipient>, $crate::store::StoreError> {
            use $crate::store::segment::{Bind, Zones};
            // The chunk spans every zone released with its slot (itself among them).
            let group: Vec<(i64, String)> =
                sqlx::query_as("SELECT id, zone FROM slots WHERE released_with = $1 ORDER BY id")
                    .bind(chunk.slot_id)
                    .fetch_all(&self.read)
                    .await?;
            if group.is_empty() {
                return Err($crate::store::StoreError::Invalid(format!(
                    "chunk {}: slot {} was not released",
                    chunk.id, chunk.slot_id
                )));
            }
            let all = group.iter().any(|(_, z)| z == $crate::planner::ALL_ZONES);
            let zone_list: Vec<String> = group.iter().map(|(_, z)| z.clone()).collect();
            let zones = match zone_list.as_slice() {
                _ if all => Zones::Any,
                [one] => Zones::One(one),
                _ => Zones::Among(&zone_list),
            };
            let (recipients, mut binds) = $crate::store::segment::recipients_where_sql(
                self.kind(),
                segment,
                zones,
                Some((chunk.first_device_id, chunk.last_device_id)),
            );
            binds.push(Bind::Int(slot.campaign_id));
            let campaign = format!("${}", binds.len());
            binds.push(Bind::Text(slot.occurrence.clone()));
            let occurrence = format!("${}", binds.len());
            // Devices already served for this occurrence (by an earlier lease of this
            // chunk, or another slot the device's zone moved to) are skipped.
            let (join, filter) = Self::not_served(&campaign, &occurrence);
            let capped = $crate::store::segment::capped_sql(
                self.kind(), segment, &mut binds, "r.user_id", &campaign, &occurrence, now,
            )
            .unwrap_or_else(|| "CAST(NULL AS TEXT)".to_owned());
            let sql = format!(
                "SELECT r.device_id, r.zone, r.user_id, r.token, r.platform, r.locale, {capped} AS capped \
                 FROM ({recipients}) r {join} WHERE {filter} ORDER BY r.device_id"
            );
            // Planned afresh for each chunk: the already-served probe reads a
            // `deliveries` table that grows by thousands of rows a second.
            let mut q = sqlx::query_as::<_, $crate::store::Recipient>(&sql).persistent(false);
            for b in binds {
                q = Self::bind_segment(q, b);
            }
            let rows = q.fetch_all(&self.read).await?;
            Ok(rows
                .into_iter()
                .filter_map(|mut r| {
                    r.slot_id = group.iter().find(|(_, z)| all || *z == r.zone)?.0;
                    Some(r)
                })
                .collect())
        }

        async fn record_chunk(
            &self,
            w: &$crate::store::ChunkWrite<'_>,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<u64, $crate::store::StoreError> {
            use $crate::state::{DeliveryStatus, StateMachine};
            if Self::ONE_WRITER && !w.events && w.deliveries.iter().all(|d| d.status == DeliveryStatus::Sent) {
                return self.record_sent_chunk(w, now).await;
            }
            let mut tx = self.begin_write().await?;
            let lock = format!(
                "SELECT id FROM slot_chunks WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'leased'{}",
                Self::FOR_UPDATE
            );
            let held: Option<i64> = sqlx::query_scalar(&lock)
                .bind(w.chunk.id)
                .bind(w.chunk.attempt)
                .bind(w.worker)
                .fetch_optional(&mut *tx)
                .await?;
            if held.is_none() {
                return Err($crate::store::StoreError::LeaseLost { what: format!("chunk {}", w.chunk.id) });
            }
            let source = Self::new_delivery_source("$5");
            let insert = format!(
                "INSERT INTO deliveries (id, app_id, campaign_id, slot_id, occurrence, user_id, device_id, status, attempts, \
                   next_attempt_at, provider_id, error_reason, created_at, updated_at, sent_at) \
                 SELECT x.id, $1, $2, x.slot_id, $3, x.user_id, x.device_id, x.status, 1, x.next_attempt_at, x.provider_id, \
                   x.error_reason, $4, $4, CASE WHEN x.status = 'sent' THEN $4 END \
                 FROM {source} WHERE TRUE \
                 ON CONFLICT (campaign_id, occurrence, device_id) DO NOTHING \
                 RETURNING id, status, error_reason"
            );
            let written: Vec<(i64, String, Option<String>)> = sqlx::query_as(&insert)
                .bind(w.app_id)
                .bind(w.chunk.campaign_id)
                .bind(w.occurrence)
                .bind(now)
                .bind(Self::new_delivery_arg(w.deliveries)?)
                .fetch_all(&mut *tx)
                .await?;
            // The first status of a sent delivery is implied by its row; every other
            // first outcome (retry, failure, dead token) starts the history.
            let events: Vec<(i64, String, i32, Option<String>)> = written
                .iter()
                .filter(|(_, status, _)| status != DeliveryStatus::Sent.as_str())
                .map(|(id, status, reason)| (*id, status.clone(), 1, reason.clone()))
                .collect();
            Self::insert_events(&mut tx, &events, now).await?;
            if w.events {
                let ids: Vec<i64> = written.iter().map(|(id, _, _)| *id).collect();
                Self::outbox_deliveries(&mut tx, &ids, now).await?;
            }
            let dead: Vec<(i64, String)> = w
                .deliveries
                .iter()
                .filter(|d| d.status == DeliveryStatus::TokenInvalid)
                .map(|d| (d.device_id, d.error_reason.clone().unwrap_or_default()))
                .collect();
            Self::invalidate_devices(&mut tx, &dead, now).await?;
            tx.commit().await?;
            Ok(written.len() as u64)
        }

        async fn note_slots_sending(
            &self,
            first_sends: &[(i64, chrono::DateTime<chrono::Utc>)],
        ) -> Result<(), $crate::store::StoreError> {
            if first_sends.is_empty() {
                return Ok(());
            }
            let rows: serde_json::Value = first_sends
                .iter()
                .map(|(id, at)| serde_json::json!({"id": id, "at": Self::time_json(*at)}))
                .collect();
            let source = Self::json_rows("$1", &[("id", "bigint"), ("at", "timestamptz")]);
            sqlx::query(&format!(
                "UPDATE slots SET first_sent_at = x.at FROM {source} \
                 WHERE slots.id = x.id AND (slots.first_sent_at IS NULL OR slots.first_sent_at > x.at)"
            ))
            .bind(Self::json_arg(rows))
            .execute(&self.write)
            .await?;
            Ok(())
        }

        async fn finish_chunk(
            &self,
            chunk: &$crate::store::LeasedChunk,
            worker: &str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::store::StoreError> {
            self.close_chunk(chunk, worker, "done", now).await
        }

        async fn return_chunk(
            &self,
            chunk: &$crate::store::LeasedChunk,
            worker: &str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::store::StoreError> {
            self.close_chunk(chunk, worker, "pending", now).await
        }

        async fn lease_deliveries(
            &self,
            worker: &str,
            now: chrono::DateTime<chrono::Utc>,
            lease_until: chrono::DateTime<chrono::Utc>,
            limit: i64,
        ) -> Result<Vec<$crate::store::LeasedDelivery>, $crate::store::StoreError> {
            // Polled while the tables under it grow: planned afresh at every call.
            let ids: Vec<i64> = sqlx::query_scalar(Self::LEASE_DELIVERIES)
                .persistent(false)
                .bind(now)
                .bind(limit)
                .bind(worker)
                .bind(lease_until)
                .fetch_all(&self.write)
                .await?;
            if ids.is_empty() {
                return Ok(vec![]);
            }
            let sql = format!(
                "SELECT d.id, d.app_id, d.campaign_id, d.slot_id, d.request_id, d.device_id, d.attempts, d.created_at, \
                        v.token, v.platform, v.lang AS locale, v.state AS device_state \
                 FROM deliveries d JOIN devices v ON v.id = d.device_id WHERE d.id {} ORDER BY d.id",
                Self::ID_IN
            );
            let q = sqlx::query_as::<_, $crate::store::LeasedDelivery>(&sql);
            Ok(Self::bind_ids(q, &ids).fetch_all(&self.write).await?)
        }

        async fn record_deliveries(
            &self,
            worker: &str,
            updates: &[$crate::store::DeliveryUpdate],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<u64, $crate::store::StoreError> {
            use $crate::state::DeliveryStatus;
            if updates.is_empty() {
                return Ok(0);
            }
            let mut tx = self.begin_write().await?;
            let rows = $crate::store::dispatch::update_rows(updates, Self::time_json);
            let source = Self::json_rows("$3", $crate::store::dispatch::UPDATE_COLUMNS);
            // Fenced: only rows still leased by this worker at this attempt change.
            // `(SELECT 'leased')` keeps Postgres from driving the update from the
            // partial index of leased rows (every leased row, each joined against the
            // whole batch, the JSON read again per row: 54 ms for 500 rows instead of
            // 5 ms through the primary key).
            let sql = format!(
                "UPDATE deliveries AS d SET status = x.status, next_attempt_at = x.next_attempt_at, \
                   provider_id = COALESCE(x.provider_id, d.provider_id), error_reason = x.error_reason, \
                   lease_owner = NULL, lease_expires_at = NULL, updated_at = $1, \
                   sent_at = CASE WHEN x.status = 'sent' THEN $1 ELSE d.sent_at END \
                 FROM {source} \
                 WHERE d.id = x.delivery_id AND d.attempts = x.attempts AND d.status = (SELECT 'leased') \
                   AND d.lease_owner = $2 \
                 RETURNING id"
            );
            let changed: Vec<i64> = sqlx::query_scalar(&sql)
                .bind(now)
                .bind(worker)
                .bind(Self::json_arg(rows))
                .fetch_all(&mut *tx)
                .await?;
            let changed_set: std::collections::HashSet<i64> = changed.iter().copied().collect();
            let events: Vec<(i64, String, i32, Option<String>)> = updates
                .iter()
                .filter(|u| changed_set.contains(&u.id))
                .map(|u| (u.id, u.status.to_string(), u.attempts, u.error_reason.clone()))
                .collect();
            Self::insert_events(&mut tx, &events, now).await?;
            let hooked: Vec<i64> = updates
                .iter()
                .filter(|u| u.events && changed_set.contains(&u.id))
                .map(|u| u.id)
                .collect();
            Self::outbox_deliveries(&mut tx, &hooked, now).await?;
            let dead: Vec<(i64, String)> = updates
                .iter()
                .filter(|u| changed_set.contains(&u.id) && u.status == DeliveryStatus::TokenInvalid)
                .map(|u| (u.device_id, u.error_reason.clone().unwrap_or_default()))
                .collect();
            Self::invalidate_devices(&mut tx, &dead, now).await?;
            tx.commit().await?;
            Ok(changed.len() as u64)
        }

        async fn completable_slots(&self) -> Result<Vec<(i64, i64)>, $crate::store::StoreError> {
            // Polled while `deliveries` grows by thousands of rows a second: planned
            // afresh at every call. Prepared once, Postgres kept the plan made when
            // the table was empty (a scan of it per slot: 43 s at a million rows).
            Ok(sqlx::query_as(&format!(
                "SELECT id, campaign_id FROM slots WHERE {}",
                $crate::store::dispatch::SLOT_COMPLETABLE
            ))
            .persistent(false)
            .fetch_all(&self.read)
            .await?)
        }

        async fn complete_slots(
            &self,
            slots: &[$crate::store::SlotCompletion],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Vec<(i64, i64)>, $crate::store::StoreError> {
            if slots.is_empty() {
                return Ok(vec![]);
            }
            let ids: Vec<i64> = slots.iter().map(|s| s.slot_id).collect();
            let mut tx = self.begin_write().await?;
            // Still completable: checked again inside the transaction.
            let sql = format!(
                "UPDATE slots SET state = 'completed' WHERE id {} AND {} RETURNING id, campaign_id",
                Self::ID_IN,
                $crate::store::dispatch::SLOT_COMPLETABLE
            );
            let q = sqlx::query_as::<_, (i64, i64)>(&sql).persistent(false);
            let done: Vec<(i64, i64)> = Self::bind_ids(q, &ids).fetch_all(&mut *tx).await?;
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

        async fn complete_campaigns(
            &self,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Vec<i64>, $crate::store::StoreError> {
            // A campaign whose every slot was skipped (its time had passed in every
            // zone) never releases anything: it starts and completes here, rather
            // than staying `scheduled` for good. (Two steps: the state table has
            // no `scheduled → completed`.)
            sqlx::query(
                "UPDATE campaigns SET state = 'running', updated_at = $1 WHERE state = 'scheduled' \
                 AND EXISTS (SELECT 1 FROM slots s WHERE s.campaign_id = campaigns.id) \
                 AND NOT EXISTS (SELECT 1 FROM slots s WHERE s.campaign_id = campaigns.id AND s.state IN ('pending', 'released'))",
            )
            .persistent(false)
            .bind(now)
            .execute(&self.write)
            .await?;
            // Polled while the tables under it grow: planned afresh at every call.
            Ok(sqlx::query_scalar(
                "UPDATE campaigns SET state = 'completed', completed_at = $1, updated_at = $1 WHERE state = 'running' \
                 AND NOT EXISTS (SELECT 1 FROM slots s WHERE s.campaign_id = campaigns.id AND s.state IN ('pending', 'released')) \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.campaign_id = campaigns.id AND d.status IN ('queued', 'leased', 'retry')) \
                 RETURNING id",
            )
            .persistent(false)
            .bind(now)
            .fetch_all(&self.write)
            .await?)
        }

        async fn cancel_campaign(
            &self,
            campaign_id: i64,
            from: $crate::state::CampaignState,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<u64, $crate::store::StoreError> {
            use $crate::state::{CampaignState, StateMachine};
            from.check_transition(CampaignState::Cancelled)?;
            let mut tx = self.begin_write().await?;
            let done = sqlx::query("UPDATE campaigns SET state = 'cancelled', updated_at = $3 WHERE id = $1 AND state = $2")
                .bind(campaign_id)
                .bind(from.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() != 1 {
                return Err($crate::store::StoreError::Conflict { key: format!("#{campaign_id}") });
            }
            sqlx::query("UPDATE slots SET state = 'cancelled' WHERE campaign_id = $1 AND state IN ('pending', 'released')")
                .bind(campaign_id)
                .execute(&mut *tx)
                .await?;
            // Chunks being sent finish; the ones not started never will be.
            sqlx::query("UPDATE slot_chunks SET state = 'cancelled', updated_at = $2 WHERE campaign_id = $1 AND state = 'pending'")
                .bind(campaign_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let cancelled: Vec<i64> = sqlx::query_scalar(
                "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = $2 \
                 WHERE campaign_id = $1 AND status IN ('queued', 'retry') RETURNING id",
            )
            .bind(campaign_id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            let events: Vec<(i64, String, i32, Option<String>)> = cancelled
                .iter()
                .map(|id| (*id, "cancelled".to_owned(), 0, Some("campaign cancelled".to_owned())))
                .collect();
            Self::insert_events(&mut tx, &events, now).await?;
            tx.commit().await?;
            Ok(cancelled.len() as u64)
        }

        async fn slot_delivery_counts(
            &self,
            campaign_id: i64,
        ) -> Result<Vec<(i64, String, i64)>, $crate::store::StoreError> {
            Ok(sqlx::query_as(
                "SELECT d.slot_id, d.status, COUNT(*) FROM deliveries d WHERE d.campaign_id = $1 AND d.slot_id IS NOT NULL \
                 GROUP BY d.slot_id, d.status ORDER BY d.slot_id, d.status",
            )
            .bind(campaign_id)
            .fetch_all(&self.read)
            .await?)
        }

        async fn slot_counts(
            &self,
            campaign_id: i64,
        ) -> Result<Vec<(i64, String, i64)>, $crate::store::StoreError> {
            Ok(sqlx::query_as(
                "SELECT slot_id, kind, n FROM ( \
                   SELECT c.slot_id, c.kind, c.n FROM slot_counts c JOIN slots s ON s.id = c.slot_id \
                   WHERE s.campaign_id = $1 \
                   UNION ALL \
                   SELECT slot_id, 'excluded:capped', COUNT(*) FROM deliveries \
                   WHERE campaign_id = $1 AND status = 'suppressed' GROUP BY slot_id \
                 ) t ORDER BY slot_id, kind",
            )
            .bind(campaign_id)
            .fetch_all(&self.read)
            .await?)
        }

        async fn delivery_counts(
            &self,
            campaign_id: i64,
        ) -> Result<std::collections::BTreeMap<String, i64>, $crate::store::StoreError> {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status, COUNT(*) FROM deliveries WHERE campaign_id = $1 GROUP BY status ORDER BY status",
            )
            .bind(campaign_id)
            .fetch_all(&self.read)
            .await?;
            Ok(rows.into_iter().collect())
        }
    };
}

/// Helpers the dispatch methods share; expanded in each backend's inherent impl.
macro_rules! shared_dispatch_helpers {
    ($db:ty) => {
        /// Appends history rows: (delivery id, status, attempt, detail).
        /// Queues the current status of these deliveries for their app's webhook.
        async fn outbox_deliveries(
            tx: &mut sqlx::Transaction<'_, $db>,
            ids: &[i64],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::store::StoreError> {
            if ids.is_empty() {
                return Ok(());
            }
            let rows: serde_json::Value = ids.iter().map(|id| serde_json::json!({"id": id})).collect();
            let source = Self::json_rows("$2", &[("id", "bigint")]);
            sqlx::query(&format!(
                "INSERT INTO webhook_outbox (app_id, delivery_id, request_id, user_id, status, detail, at, next_attempt_at) \
                 SELECT d.app_id, d.id, d.request_id, d.user_id, d.status, d.error_reason, $1, $1 \
                 FROM deliveries d WHERE d.id IN (SELECT x.id FROM {source})"
            ))
            .bind(now)
            .bind(Self::json_arg(rows))
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        async fn insert_events(
            tx: &mut sqlx::Transaction<'_, $db>,
            events: &[(i64, String, i32, Option<String>)],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::store::StoreError> {
            if events.is_empty() {
                return Ok(());
            }
            let rows: serde_json::Value = events
                .iter()
                .map(|(id, status, attempt, detail)| {
                    serde_json::json!({"delivery_id": id, "status": status, "attempt": attempt, "detail": detail})
                })
                .collect();
            let source = Self::json_rows("$2", $crate::store::dispatch::EVENT_COLUMNS);
            sqlx::query(&format!(
                "INSERT INTO delivery_events (delivery_id, status, attempt, detail, at) \
                 SELECT x.delivery_id, x.status, x.attempt, x.detail, $1 FROM {source}"
            ))
            .bind(now)
            .bind(Self::json_arg(rows))
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// A batch of a chunk's outcomes that are all `sent` (no history row, no dead
        /// token) as one statement with the lease check inside it: with one writer,
        /// nothing can take the lease between the check and the insert, and the
        /// write connection is not held across the round trips of a transaction.
        async fn record_sent_chunk(
            &self,
            w: &$crate::store::ChunkWrite<'_>,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<u64, $crate::store::StoreError> {
            let source = Self::new_delivery_source("$5");
            let insert = format!(
                "INSERT INTO deliveries (id, app_id, campaign_id, slot_id, occurrence, user_id, device_id, status, attempts, \
                   provider_id, created_at, updated_at, sent_at) \
                 SELECT x.id, $1, $2, x.slot_id, $3, x.user_id, x.device_id, x.status, 1, x.provider_id, $4, $4, $4 \
                 FROM {source} WHERE EXISTS (SELECT 1 FROM slot_chunks c WHERE c.id = $6 AND c.attempt = $7 \
                   AND c.lease_owner = $8 AND c.state = 'leased') \
                 ON CONFLICT (campaign_id, occurrence, device_id) DO NOTHING"
            );
            let done = sqlx::query(&insert)
                .bind(w.app_id)
                .bind(w.chunk.campaign_id)
                .bind(w.occurrence)
                .bind(now)
                .bind(Self::new_delivery_arg(w.deliveries)?)
                .bind(w.chunk.id)
                .bind(w.chunk.attempt)
                .bind(w.worker)
                .execute(&self.write)
                .await?;
            if done.rows_affected() == 0 {
                // Nothing written: every device already had its delivery, or the lease is gone.
                let held: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM slot_chunks WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'leased'",
                )
                .bind(w.chunk.id)
                .bind(w.chunk.attempt)
                .bind(w.worker)
                .fetch_optional(&self.write)
                .await?;
                if held.is_none() {
                    return Err($crate::store::StoreError::LeaseLost { what: format!("chunk {}", w.chunk.id) });
                }
            }
            Ok(done.rows_affected())
        }

        /// Ends a chunk's lease, fenced by owner and attempt: `done`, or back to `pending`.
        async fn close_chunk(
            &self,
            chunk: &$crate::store::LeasedChunk,
            worker: &str,
            state: &str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::store::StoreError> {
            let done = sqlx::query(
                "UPDATE slot_chunks SET state = $5, lease_owner = NULL, lease_expires_at = NULL, \
                 finished_by = CASE WHEN $5 = 'done' THEN $3 END, updated_at = $4 \
                 WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'leased'",
            )
            .bind(chunk.id)
            .bind(chunk.attempt)
            .bind(worker)
            .bind(now)
            .bind(state)
            .execute(&self.write)
            .await?;
            if done.rows_affected() == 0 {
                return Err($crate::store::StoreError::LeaseLost { what: format!("chunk {}", chunk.id) });
            }
            Ok(())
        }

        /// Marks dead tokens invalid: (device id, reason).
        async fn invalidate_devices(
            tx: &mut sqlx::Transaction<'_, $db>,
            dead: &[(i64, String)],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::store::StoreError> {
            if dead.is_empty() {
                return Ok(());
            }
            let rows: serde_json::Value = dead
                .iter()
                .map(|(id, reason)| serde_json::json!({"id": id, "reason": reason}))
                .collect();
            let source = Self::json_rows("$2", &[("id", "bigint"), ("reason", "text")]);
            sqlx::query(&format!(
                "UPDATE devices AS v SET state = 'invalid', invalid_reason = x.reason, invalidated_at = $1, updated_at = $1 \
                 FROM {source} WHERE v.id = x.id AND v.state = 'active'"
            ))
            .bind(now)
            .bind(Self::json_arg(rows))
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    };
}

pub(super) use {shared_dispatch_helpers, shared_dispatch_methods};
