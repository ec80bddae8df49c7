//! Deleting what is past its retention, a small batch at a time.
//!
//! The logs (`deliveries`, `delivery_events`, `fallbacks`, `slot_chunks`) take
//! ids in the order they are written, so their oldest rows are the lowest ids.
//! Each prune finds the first id that is not old enough by a binary search
//! over the primary key (a few dozen index probes, whatever the table's size)
//! and deletes the oldest `limit` rows below it: the cost is the batch's, never
//! a scan of the rows that stay. Every statement also checks the time itself,
//! so a row written out of order is never deleted early.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect};
use super::sql::SqlStore;
use super::StoreError;

/// What retention deletes, each kind after its own time (`[retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionKind {
    /// Finished messages (not queued, leased or waiting for a retry), with
    /// their status history.
    Deliveries,
    /// Status history rows of messages that are kept.
    History,
    /// Transactional push requests (their message), once no fallback waits on one.
    PushRequests,
    /// Webhook events given up on (`dead`).
    Webhooks,
    /// Fallbacks that were sent or failed.
    Fallbacks,
    /// Idempotency keys.
    IdempotencyKeys,
    /// Chunks that are done or cancelled.
    Chunks,
}

impl RetentionKind {
    pub const ALL: [RetentionKind; 7] = [
        Self::Deliveries,
        Self::History,
        Self::PushRequests,
        Self::Webhooks,
        Self::Fallbacks,
        Self::IdempotencyKeys,
        Self::Chunks,
    ];

    /// The label in logs and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deliveries => "deliveries",
            Self::History => "history",
            Self::PushRequests => "push_requests",
            Self::Webhooks => "webhooks",
            Self::Fallbacks => "fallbacks",
            Self::IdempotencyKeys => "idempotency_keys",
            Self::Chunks => "chunks",
        }
    }
}

pub trait RetentionStore: Send + Sync {
    /// Deletes up to `limit` of the oldest records of `kind` written before
    /// `before`; returns how many went. Each call is its own short transaction.
    fn retention_prune(
        &self,
        kind: RetentionKind,
        before: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Tables whose ids follow their time column (see the module's text).
pub(super) struct IdOrdered {
    table: &'static str,
    time: &'static str,
}

impl IdOrdered {
    pub(super) const DELIVERIES: Self = Self {
        table: "deliveries",
        time: "created_at",
    };
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
    for<'r> i64: Column<'r, D::Db>,
    for<'r> DateTime<Utc>: Column<'r, D::Db>,
{
    /// The lowest id from which on `t`'s rows are not older than `before`
    /// (every row below it is, as far as ids follow time); `None` for an empty
    /// table. A binary search over the primary key: one index probe per step.
    pub(super) async fn first_id_not_before(
        &self,
        t: &IdOrdered,
        before: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        // Two subqueries: SQLite reads one MIN or MAX from the index's end, but
        // both in one SELECT from a scan of the whole table.
        let (min, max): (Option<i64>, Option<i64>) = sqlx::query_as(&format!(
            "SELECT (SELECT MIN(id) FROM {t}), (SELECT MAX(id) FROM {t})",
            t = t.table
        ))
        .fetch_one(&self.read)
        .await?;
        let (Some(mut lo), Some(max)) = (min, max) else {
            return Ok(None);
        };
        let probe = format!(
            "SELECT id, {} FROM {} WHERE id >= $1 ORDER BY id LIMIT 1",
            t.time, t.table
        );
        let mut hi = max.saturating_add(1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let row: Option<(i64, DateTime<Utc>)> = sqlx::query_as(&probe)
                .bind(mid)
                .fetch_optional(&self.read)
                .await?;
            match row {
                Some((id, at)) if at < before => lo = id.saturating_add(1),
                _ => hi = mid,
            }
        }
        Ok(Some(lo))
    }
}

impl<D: Dialect> RetentionStore for SqlStore<D>
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
    async fn retention_prune(
        &self,
        kind: RetentionKind,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let limit = limit.max(1);
        let (log, condition) = match kind {
            RetentionKind::Deliveries => {
                // With their history in the same transaction (no foreign key
                // carries the delete since 0004). Their campaigns' counts stay:
                // tallies count writes, not deletes.
                let Some(end) = self
                    .first_id_not_before(&IdOrdered::DELIVERIES, before)
                    .await?
                else {
                    return Ok(0);
                };
                let mut tx = self.begin_write().await?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    "DELETE FROM deliveries WHERE id IN ( \
                       SELECT id FROM deliveries WHERE id < $1 AND created_at < $2 \
                         AND status NOT IN ('queued', 'leased', 'retry') \
                       ORDER BY id LIMIT $3) \
                     RETURNING id",
                )
                .bind(end)
                .bind(before)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                if !ids.is_empty() {
                    sqlx::query(&format!(
                        "DELETE FROM delivery_events WHERE delivery_id {}",
                        D::ID_IN
                    ))
                    .bind(D::ids(&ids))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                return Ok(ids.len() as u64);
            }
            RetentionKind::PushRequests => {
                // Per app, through `push_requests_by_app (app_id, created_at)`.
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "DELETE FROM push_requests WHERE id IN ( \
                       SELECT p.id FROM apps a JOIN push_requests p ON p.app_id = a.id \
                       WHERE p.created_at < $1 \
                         AND NOT EXISTS (SELECT 1 FROM fallbacks f WHERE f.request_id = p.id \
                                         AND f.state IN ('pending', 'leased')) \
                       LIMIT $2)",
                )
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(super::dialect::RowsAffected::rows_affected(&done));
            }
            RetentionKind::IdempotencyKeys => {
                // Per app, through `idempotency_keys_by_age (app_id, created_at)`.
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "DELETE FROM idempotency_keys WHERE (app_id, key) IN ( \
                       SELECT k.app_id, k.key FROM apps a JOIN idempotency_keys k ON k.app_id = a.id \
                       WHERE k.created_at < $1 LIMIT $2)",
                )
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(super::dialect::RowsAffected::rows_affected(&done));
            }
            RetentionKind::Webhooks => {
                // Delivered events leave the outbox at once: what stays is
                // pending (a few) or dead, a small table read whole.
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "DELETE FROM webhook_outbox WHERE id IN ( \
                       SELECT id FROM webhook_outbox WHERE state = 'dead' AND at < $1 ORDER BY id LIMIT $2)",
                )
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(super::dialect::RowsAffected::rows_affected(&done));
            }
            RetentionKind::History => (
                IdOrdered {
                    table: "delivery_events",
                    time: "at",
                },
                "at < $2",
            ),
            RetentionKind::Fallbacks => (
                IdOrdered {
                    table: "fallbacks",
                    time: "created_at",
                },
                "updated_at < $2 AND state IN ('sent', 'failed')",
            ),
            RetentionKind::Chunks => (
                IdOrdered {
                    table: "slot_chunks",
                    time: "created_at",
                },
                "updated_at < $2 AND state IN ('done', 'cancelled')",
            ),
        };
        let Some(end) = self.first_id_not_before(&log, before).await? else {
            return Ok(0);
        };
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(&format!(
            "DELETE FROM {t} WHERE id IN ( \
               SELECT id FROM {t} WHERE id < $1 AND {condition} ORDER BY id LIMIT $3)",
            t = log.table
        ))
        .bind(end)
        .bind(before)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(super::dialect::RowsAffected::rows_affected(&done))
    }
}
