//! The one store implementation, generic over the backend's [`Dialect`].
//!
//! [`SqlStore`] holds a write pool and a read pool (one pool on Postgres; one
//! write connection and a pool of WAL readers on SQLite). Its methods live in
//! the aggregate modules beside this one, one trait each; this module holds the
//! store's lifecycle and the write helpers several aggregates share.
//!
//! Every generic `impl` over `SqlStore<D>` states the same `where` clause: what
//! the SQL needs of the sqlx database (an executor for connections, encodable
//! arguments, and the column types it binds and reads). Rust does not imply a
//! trait's `where` clauses at its use sites (RFC 2089), so it cannot be said
//! once on [`Dialect`]; both backends meet it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Database, Executor, IntoArguments, Pool};

use super::deliveries::EVENT_COLUMNS;
use super::dialect::{Arg, Column, Dialect, RowsAffected};
use super::segment::Bind;
use super::{ChunkWrite, LeasedChunk, NewSlot, Store, StoreError};
use crate::config::DatabaseKind;
use crate::domain::ids::{DeliveryId, DeviceId};
use crate::domain::state::{ChunkState, StateMachine};

/// The store over one backend: see [`super::SqliteStore`] and [`super::PgStore`].
#[derive(Debug)]
pub struct SqlStore<D: Dialect> {
    pub(super) write: Pool<D::Db>,
    pub(super) read: Pool<D::Db>,
    pub(super) dialect: D,
}

/// A handle on the same pools (derive would ask `D::Db: Clone`).
impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            write: self.write.clone(),
            read: self.read.clone(),
            dialect: self.dialect.clone(),
        }
    }
}

impl<D: Dialect> Store for SqlStore<D>
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
    fn kind(&self) -> DatabaseKind {
        D::KIND
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        D::migrate(&self.write).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

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
    /// Starts a write transaction ([`Dialect::BEGIN_WRITE`]).
    pub(super) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, D::Db>, sqlx::Error> {
        self.write.begin_with(D::BEGIN_WRITE).await
    }

    /// Binds one of a segment query's parameters.
    pub(super) fn bind_segment<'q, O>(
        q: QueryAs<'q, D::Db, O, <D::Db as Database>::Arguments<'q>>,
        b: Bind,
    ) -> QueryAs<'q, D::Db, O, <D::Db as Database>::Arguments<'q>> {
        match b {
            Bind::Text(s) => q.bind(s),
            Bind::Int(i) => q.bind(i),
            Bind::Time(t) => q.bind(t),
            Bind::TextList(v) => q.bind(D::texts(v)),
        }
    }

    /// Writes a campaign's planned slots; a slot already stored is kept.
    pub(super) async fn insert_slots(
        tx: &mut sqlx::Transaction<'_, D::Db>,
        campaign_id: i64,
        slots: &[NewSlot],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if slots.is_empty() {
            return Ok(());
        }
        let rows = NewSlot::json_rows(slots, |s| D::time_json(s.fire_at));
        let source = D::json_rows(
            "$3",
            &[
                ("occurrence", "text"),
                ("zone", "text"),
                ("fire_at", "timestamptz"),
                ("disposition", "text"),
                ("state", "text"),
                ("planned_count", "bigint"),
            ],
        );
        sqlx::query(&format!(
            "INSERT INTO slots (campaign_id, occurrence, zone, fire_at, disposition, state, planned_count, created_at) \
             SELECT $1, x.occurrence, x.zone, x.fire_at, x.disposition, x.state, x.planned_count, $2 \
             FROM {source} WHERE TRUE \
             ON CONFLICT (campaign_id, occurrence, zone) DO NOTHING"
        ))
        .bind(campaign_id)
        .bind(now)
        .bind(D::json(rows))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Queues the current status of these deliveries for their app's webhook.
    pub(super) async fn outbox_deliveries(
        tx: &mut sqlx::Transaction<'_, D::Db>,
        ids: &[DeliveryId],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let rows: serde_json::Value = ids.iter().map(|id| serde_json::json!({"id": id})).collect();
        let source = D::json_rows("$2", &[("id", "bigint")]);
        sqlx::query(&format!(
            "INSERT INTO webhook_outbox (app_id, delivery_id, request_id, user_id, status, detail, at, next_attempt_at) \
             SELECT d.app_id, d.id, d.request_id, d.user_id, d.status, d.error_reason, $1, $1 \
             FROM deliveries d WHERE d.id IN (SELECT x.id FROM {source})"
        ))
        .bind(now)
        .bind(D::json(rows))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Appends history rows: (delivery id, status, attempt, detail).
    pub(super) async fn insert_events(
        tx: &mut sqlx::Transaction<'_, D::Db>,
        events: &[(DeliveryId, String, i32, Option<String>)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let rows: serde_json::Value = events
            .iter()
            .map(|(id, status, attempt, detail)| {
                serde_json::json!({"delivery_id": id, "status": status, "attempt": attempt, "detail": detail})
            })
            .collect();
        let source = D::json_rows("$2", EVENT_COLUMNS);
        sqlx::query(&format!(
            "INSERT INTO delivery_events (delivery_id, status, attempt, detail, at) \
             SELECT x.delivery_id, x.status, x.attempt, x.detail, $1 FROM {source}"
        ))
        .bind(now)
        .bind(D::json(rows))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// A batch of a chunk's outcomes that are all `sent` (no history row, no dead
    /// token) as one statement with the lease check inside it: with one writer,
    /// nothing can take the lease between the check and the insert, and the
    /// write connection is not held across the round trips of a transaction.
    pub(super) async fn record_sent_chunk(
        &self,
        w: &ChunkWrite<'_>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let source = D::new_delivery_source("$5");
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
            .bind(D::new_delivery_arg(w.deliveries)?)
            .bind(w.chunk.id)
            .bind(w.chunk.lease.attempt)
            .bind(&w.chunk.lease.owner)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            // Nothing written: every device already had its delivery, or the lease is gone.
            let held: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM slot_chunks WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'leased'",
            )
            .bind(w.chunk.id)
            .bind(w.chunk.lease.attempt)
            .bind(&w.chunk.lease.owner)
            .fetch_optional(&self.write)
            .await?;
            if held.is_none() {
                return Err(StoreError::LeaseLost {
                    what: format!("chunk {}", w.chunk.id),
                });
            }
        }
        Ok(done.rows_affected())
    }

    /// Ends a chunk's lease, fenced by owner and attempt: `done`, or back to `pending`.
    pub(super) async fn close_chunk(
        &self,
        chunk: &LeasedChunk,
        state: ChunkState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE slot_chunks SET state = $5, lease_owner = NULL, lease_expires_at = NULL, \
             finished_by = CASE WHEN $5 = 'done' THEN $3 END, updated_at = $4 \
             WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'leased'",
        )
        .bind(chunk.id)
        .bind(chunk.lease.attempt)
        .bind(&chunk.lease.owner)
        .bind(now)
        .bind(state.as_str())
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LeaseLost {
                what: format!("chunk {}", chunk.id),
            });
        }
        Ok(())
    }

    /// Marks dead tokens invalid: (device id, reason).
    pub(super) async fn invalidate_devices(
        tx: &mut sqlx::Transaction<'_, D::Db>,
        dead: &[(DeviceId, String)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if dead.is_empty() {
            return Ok(());
        }
        let rows: serde_json::Value = dead
            .iter()
            .map(|(id, reason)| serde_json::json!({"id": id, "reason": reason}))
            .collect();
        let source = D::json_rows("$2", &[("id", "bigint"), ("reason", "text")]);
        sqlx::query(&format!(
            "UPDATE devices AS v SET state = 'invalid', invalid_reason = x.reason, invalidated_at = $1, updated_at = $1 \
             FROM {source} WHERE v.id = x.id AND v.state = 'active'"
        ))
        .bind(now)
        .bind(D::json(rows))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
