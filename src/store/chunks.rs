//! Chunks of a released slot: leased, read, sent and written back, fenced by lease.

use std::future::Future;

use chrono::{DateTime, Utc};

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect, RowsAffected};
use super::release::CampaignSlot;
use super::segment::Segment;
use super::sql::SqlStore;
use super::{Lease, LeaseTerms, StoreError};
use crate::domain::campaign::Platform;
use crate::domain::ids::{DeliveryId, DeviceId, UserId};
use crate::domain::state::ChunkState;
use serde_json::Value;
use sqlx::types::Json;

use super::deliveries::NewDelivery;

/// A chunk of a slot's audience, leased to one worker.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeasedChunk {
    pub id: i64,
    /// The slot the chunk was cut from: the lead of the slots released with
    /// it (one per zone), whose recipients the chunk spans together.
    #[sqlx(rename = "slot_id")]
    pub lead_slot_id: i64,
    pub campaign_id: i64,
    pub first_device_id: i64,
    pub last_device_id: i64,
    /// Who held the lease before this one (an attempt past the first is a
    /// takeover, logged with it); `None` on a first lease.
    pub previous_owner: Option<String>,
    #[sqlx(flatten)]
    pub lease: Lease,
}

/// One device to send to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Recipient {
    pub device_id: DeviceId,
    pub zone: String,
    /// The slot of the device's zone among the chunk's release (filled in after
    /// the read).
    #[sqlx(skip)]
    pub slot_id: i64,
    pub user_id: Option<UserId>,
    pub token: String,
    #[sqlx(try_from = "String")]
    pub platform: Platform,
    pub locale: Option<String>,
    /// `capped:<topic>` when a frequency cap holds this recipient back.
    pub capped: Option<String>,
}

/// A batch of a chunk's outcomes, written only while the chunk's lease holds.
#[derive(Debug, Clone)]
pub struct ChunkWrite<'a> {
    pub chunk: &'a LeasedChunk,
    pub app_id: &'a str,
    pub occurrence: &'a str,
    pub deliveries: &'a [NewDelivery],
    /// The app has a status webhook: each written status also goes to its outbox.
    pub webhook: bool,
}

pub trait ChunkStore: Send + Sync {
    /// Ends now the leases a previous run left on every queue (chunks, rows,
    /// webhook batches, fallbacks): all of them (`owner` `None`: the caller
    /// knows no other instance runs), or those of `owner` (this instance's
    /// stable name, so the leases are its own from before a restart). The next
    /// lease takes them, its attempt fencing out the old one's write-backs.
    /// Returns how many were ended, per queue.
    fn lease_reclaim(
        &self,
        owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(&'static str, u64)>, StoreError>> + Send;

    /// Leases up to `limit` chunks of running campaigns: pending ones and ones whose
    /// lease expired (their owner died), each with its attempt incremented.
    fn chunk_lease(
        &self,
        terms: &LeaseTerms<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<LeasedChunk>, StoreError>> + Send;

    /// Moves a held chunk lease's end to `until`; `LeaseLost` when it is no
    /// longer the chunk's attempt.
    fn chunk_lease_extend(
        &self,
        chunk: &LeasedChunk,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn slot_get_info(
        &self,
        slot_id: i64,
    ) -> impl Future<Output = Result<Option<CampaignSlot>, StoreError>> + Send;

    /// The chunk's recipients not yet served for the slot's occurrence, over every
    /// zone released with the chunk's slot (`slot` is that slot), each with the slot
    /// of its zone and the frequency cap that holds it back at `now`, if any.
    fn chunk_recipient_list(
        &self,
        chunk: &LeasedChunk,
        slot: &CampaignSlot,
        segment: &Segment<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Recipient>, StoreError>> + Send;

    /// Writes a batch of first outcomes as delivery rows (and the history of the
    /// ones not sent, and dead tokens), only while the chunk's lease holds.
    fn chunk_record(
        &self,
        write: &ChunkWrite<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Notes that a send of each slot left at its time (the earliest one is kept):
    /// a slot's scheduler lag is `first_sent_at - fire_at`.
    fn slot_note_sending(
        &self,
        first_sends: &[(i64, DateTime<Utc>)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks a leased chunk done, fenced by owner and attempt: `LeaseLost` when
    /// another worker has taken it over.
    fn chunk_finish(
        &self,
        chunk: &LeasedChunk,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives a leased chunk back unfinished (graceful shutdown, a failed pass),
    /// fenced like `finish_chunk`.
    fn chunk_return(
        &self,
        chunk: &LeasedChunk,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl<D: Dialect> ChunkStore for SqlStore<D>
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
    async fn lease_reclaim(
        &self,
        owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(&'static str, u64)>, StoreError> {
        // A lapsed lease is one that ended strictly before the lease's `now`.
        let ended = now - chrono::TimeDelta::seconds(1);
        let mut out = Vec::new();
        // Each queue's table and the column that says it is leased.
        for (queue, table, state) in [
            ("chunks", "slot_chunks", "state"),
            ("rows", "deliveries", "status"),
            ("webhooks", "webhook_outbox", "state"),
            ("fallbacks", "fallbacks", "state"),
        ] {
            let sql = format!(
                "UPDATE {table} SET lease_expires_at = $1 \
                 WHERE {state} = 'leased' AND lease_expires_at > $1 \
                   AND (CAST($2 AS TEXT) IS NULL OR lease_owner = $2)"
            );
            let done = sqlx::query(&sql)
                .bind(ended)
                .bind(owner)
                .execute(&self.write)
                .await?;
            out.push((queue, done.rows_affected()));
        }
        Ok(out)
    }

    async fn chunk_lease(
        &self,
        terms: &LeaseTerms<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<super::LeasedChunk>, StoreError> {
        let LeaseTerms {
            owner: worker,
            until: lease_until,
            limit,
        } = *terms;
        // Polled while the tables under it grow: planned afresh at every call.
        Ok(sqlx::query_as(D::LEASE_CHUNKS)
            .persistent(false)
            .bind(now)
            .bind(limit)
            .bind(worker)
            .bind(lease_until)
            .fetch_all(&self.write)
            .await?)
    }

    async fn chunk_lease_extend(
        &self,
        chunk: &super::LeasedChunk,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE slot_chunks SET lease_expires_at = $4 \
             WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'leased'",
        )
        .bind(chunk.id)
        .bind(chunk.lease.attempt)
        .bind(&chunk.lease.owner)
        .bind(until)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LeaseLost {
                what: format!("chunk {}", chunk.id),
            });
        }
        Ok(())
    }

    async fn slot_get_info(&self, slot_id: i64) -> Result<Option<super::CampaignSlot>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.id AS slot_id, s.campaign_id, k.app_id, s.zone, s.occurrence, s.fire_at, k.revision, k.definition \
             FROM slots s JOIN campaigns k ON k.id = s.campaign_id WHERE s.id = $1",
        )
        .bind(slot_id)
        .fetch_optional(&self.read)
        .await?)
    }

    async fn chunk_recipient_list(
        &self,
        chunk: &super::LeasedChunk,
        slot: &super::CampaignSlot,
        segment: &super::Segment<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<super::Recipient>, StoreError> {
        use super::segment::{Bind, Zones};
        // The chunk spans every zone released with its slot (itself among them).
        let group: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, zone FROM slots WHERE released_with = $1 ORDER BY id")
                .bind(chunk.lead_slot_id)
                .fetch_all(&self.read)
                .await?;
        if group.is_empty() {
            return Err(StoreError::Invariant(format!(
                "chunk {}: slot {} was not released",
                chunk.id, chunk.lead_slot_id
            )));
        }
        let all = group
            .iter()
            .any(|(_, z)| z == crate::domain::planner::ALL_ZONES);
        let zone_list: Vec<String> = group.iter().map(|(_, z)| z.clone()).collect();
        let zones = match zone_list.as_slice() {
            _ if all => Zones::Any,
            [one] => Zones::One(one),
            _ => Zones::Among(&zone_list),
        };
        let (recipients, mut binds) = super::segment::recipients_where_sql::<D>(
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
        let (join, filter) = D::not_served(&campaign, &occurrence);
        let capped = super::segment::capped_sql::<D>(
            segment,
            &mut binds,
            "r.user_id",
            &campaign,
            &occurrence,
            now,
        )
        .unwrap_or_else(|| "CAST(NULL AS TEXT)".to_owned());
        let sql = format!(
            "SELECT r.device_id, r.zone, r.user_id, r.token, r.platform, r.locale, {capped} AS capped \
             FROM ({recipients}) r {join} WHERE {filter} ORDER BY r.device_id"
        );
        // Planned afresh for each chunk: the already-served probe reads a
        // `deliveries` table that grows by thousands of rows a second.
        let mut q = sqlx::query_as::<_, super::Recipient>(&sql).persistent(false);
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

    async fn chunk_record(
        &self,
        w: &super::ChunkWrite<'_>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        use crate::domain::state::{DeliveryStatus, StateMachine};
        if D::ONE_WRITER
            && !w.webhook
            && w.deliveries
                .iter()
                .all(|d| d.status == DeliveryStatus::Sent)
        {
            return self.record_sent_chunk(w, now).await;
        }
        let mut tx = self.begin_write().await?;
        let lock = format!(
            "SELECT id FROM slot_chunks WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'leased'{}",
            D::FOR_UPDATE
        );
        let held: Option<i64> = sqlx::query_scalar(&lock)
            .bind(w.chunk.id)
            .bind(w.chunk.lease.attempt)
            .bind(&w.chunk.lease.owner)
            .fetch_optional(&mut *tx)
            .await?;
        if held.is_none() {
            return Err(StoreError::LeaseLost {
                what: format!("chunk {}", w.chunk.id),
            });
        }
        let source = D::new_delivery_source("$5");
        let insert = format!(
            "INSERT INTO deliveries (id, app_id, campaign_id, slot_id, occurrence, user_id, device_id, status, attempts, \
               next_attempt_at, provider_id, error_reason, created_at, updated_at, sent_at) \
             SELECT x.id, $1, $2, x.slot_id, $3, x.user_id, x.device_id, x.status, 1, x.next_attempt_at, x.provider_id, \
               x.error_reason, $4, $4, CASE WHEN x.status = 'sent' THEN $4 END \
             FROM {source} WHERE TRUE \
             ON CONFLICT (campaign_id, occurrence, device_id) DO NOTHING \
             RETURNING id, status, error_reason"
        );
        let written: Vec<(DeliveryId, String, Option<String>)> = sqlx::query_as(&insert)
            .bind(w.app_id)
            .bind(w.chunk.campaign_id)
            .bind(w.occurrence)
            .bind(now)
            .bind(D::new_delivery_arg(w.deliveries)?)
            .fetch_all(&mut *tx)
            .await?;
        // The first status of a sent delivery is implied by its row; every other
        // first outcome (retry, failure, dead token) starts the history.
        let events: Vec<(DeliveryId, String, i32, Option<String>)> = written
            .iter()
            .filter(|(_, status, _)| status != DeliveryStatus::Sent.as_str())
            .map(|(id, status, reason)| (*id, status.clone(), 1, reason.clone()))
            .collect();
        Self::insert_events(&mut tx, &events, now).await?;
        if w.webhook {
            let ids: Vec<DeliveryId> = written.iter().map(|(id, _, _)| *id).collect();
            Self::outbox_deliveries(&mut tx, &ids, now).await?;
        }
        let dead: Vec<(DeviceId, String)> = w
            .deliveries
            .iter()
            .filter(|d| d.status == DeliveryStatus::TokenInvalid)
            .map(|d| (d.device_id, d.error_reason.clone().unwrap_or_default()))
            .collect();
        Self::invalidate_devices(&mut tx, &dead, now).await?;
        tx.commit().await?;
        Ok(written.len() as u64)
    }

    async fn slot_note_sending(
        &self,
        first_sends: &[(i64, DateTime<Utc>)],
    ) -> Result<(), StoreError> {
        if first_sends.is_empty() {
            return Ok(());
        }
        let rows: serde_json::Value = first_sends
            .iter()
            .map(|(id, at)| serde_json::json!({"id": id, "at": D::time_json(*at)}))
            .collect();
        let source = D::json_rows("$1", &[("id", "bigint"), ("at", "timestamptz")]);
        sqlx::query(&format!(
            "UPDATE slots SET first_sent_at = x.at FROM {source} \
             WHERE slots.id = x.id AND (slots.first_sent_at IS NULL OR slots.first_sent_at > x.at)"
        ))
        .bind(D::json(rows))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn chunk_finish(
        &self,
        chunk: &super::LeasedChunk,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.close_chunk(chunk, ChunkState::Done, now).await
    }

    async fn chunk_return(
        &self,
        chunk: &super::LeasedChunk,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.close_chunk(chunk, ChunkState::Pending, now).await
    }
}
