//! The outgoing hooks: the status webhook's outbox and the fallback channel's queue.
//! Both lease like deliveries do: an owner, an attempt and an expiry, and every
//! write-back fenced by them.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect, RowsAffected};
use super::sql::SqlStore;
use super::{Lease, LeaseTerms, StoreError};

/// A refused webhook batch to try again: its events, when, and why; events
/// past `max_attempts` are dead instead.
#[derive(Debug, Clone, Copy)]
pub struct OutboxRetry<'a> {
    pub events: &'a [OutboxEvent],
    pub next_attempt_at: DateTime<Utc>,
    pub error: &'a str,
    pub max_attempts: i32,
}

/// A fallback attempt's outcome, written by the worker holding its lease.
#[derive(Debug, Clone, Copy)]
pub struct FallbackFinish<'a> {
    pub fallback: &'a LeasedFallback,
    pub outcome: &'a FallbackOutcome,
    /// The app has a status webhook: a final outcome also goes to its outbox.
    pub webhook: bool,
}

/// A status change waiting for its app's webhook.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxEvent {
    pub id: i64,
    pub delivery_id: Option<i64>,
    pub request_id: Option<String>,
    pub campaign_id: Option<i64>,
    pub user_external_id: Option<String>,
    pub status: String,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
    /// Its `attempt` counts the webhook calls that carried the event.
    #[sqlx(flatten)]
    pub lease: Lease,
}

/// A fallback leased for an attempt, with what the channel is sent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LeasedFallback {
    pub id: i64,
    pub app_id: String,
    pub request_id: String,
    pub user_id: i64,
    pub user_external_id: String,
    pub phone: Option<String>,
    pub reason: String,
    /// Its `attempt` counts the channel's attempts, this one included.
    #[sqlx(flatten)]
    pub lease: Lease,
    pub topic: Option<String>,
    pub message: sqlx::types::Json<serde_json::Value>,
}

/// Ids as JSON rows `{"id": …}`, for `json_rows(…, [("id", "bigint")])`.
pub(super) fn id_rows(ids: &[i64]) -> serde_json::Value {
    ids.iter().map(|id| serde_json::json!({"id": id})).collect()
}

/// Events with their leases, for `json_rows(…, LEASED_EVENT_COLUMNS)`.
fn leased_event_rows(events: &[OutboxEvent]) -> serde_json::Value {
    events
        .iter()
        .map(|e| {
            serde_json::json!({"id": e.id, "attempts": e.lease.attempt, "lease_owner": e.lease.owner})
        })
        .collect()
}

const LEASED_EVENT_COLUMNS: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("attempts", "integer"),
    ("lease_owner", "text"),
];

/// A batch write-back that touched no row lost its lease (a batch is leased,
/// acknowledged and retried whole).
pub(super) fn fenced(done: u64, events: &[OutboxEvent]) -> Result<u64, StoreError> {
    if done == 0 && !events.is_empty() {
        return Err(StoreError::LeaseLost {
            what: format!("webhook events {:?}..", events.first().map(|e| e.id)),
        });
    }
    Ok(done)
}

/// How a fallback attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackOutcome {
    Sent,
    Retry { at: DateTime<Utc>, error: String },
    Failed { error: String },
}

pub trait HookStore: Send + Sync {
    /// Leases the oldest status changes waiting for the app's webhook.
    fn outbox_lease(
        &self,
        app_id: &str,
        terms: &LeaseTerms<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<OutboxEvent>, StoreError>> + Send;

    /// Removes status changes the webhook took, each fenced by its lease
    /// (`LeaseLost` when the batch's lease was lost).
    fn outbox_ack(
        &self,
        events: &[OutboxEvent],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Puts status changes the webhook refused back for a later attempt, or marks
    /// them dead after `max_attempts`.
    fn outbox_retry(
        &self,
        retry: &OutboxRetry<'_>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Queues a fallback for each user of a push (queued since `since`) that
    /// push did not reach: every delivery final and none sent, or sent with no
    /// receipt within the push's receipt timeout. Returns how many were queued.
    fn fallback_sweep(
        &self,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn fallback_lease(
        &self,
        terms: &LeaseTerms<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<LeasedFallback>, StoreError>> + Send;

    /// Writes a fallback attempt's outcome, fenced by its lease; a final
    /// one becomes a step in the history of the user's messages of the push.
    /// `LeaseLost` when another worker has taken the fallback over.
    fn fallback_finish(
        &self,
        finish: &FallbackFinish<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl<D: Dialect> HookStore for SqlStore<D>
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
    async fn outbox_lease(
        &self,
        app_id: &str,
        terms: &LeaseTerms<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<super::OutboxEvent>, StoreError> {
        let LeaseTerms {
            owner: worker,
            until,
            limit,
        } = *terms;
        let lock = D::SKIP_LOCKED;
        // In order: while a refused batch waits for its retry, the app's later
        // changes wait behind it. A batch keeps its members from its first
        // lease on (`batch_id`): only rows of the oldest row's batch are taken
        // (or, if it has none yet, rows of no batch), so a retry sends the
        // same events under the same key.
        let mut tx = self.begin_write().await?;
        let picked: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT o.id FROM webhook_outbox o WHERE o.app_id = $1 \
               AND ((o.state = 'pending' AND o.next_attempt_at <= $2) OR (o.state = 'leased' AND o.lease_expires_at < $2)) \
               AND NOT EXISTS (SELECT 1 FROM webhook_outbox b WHERE b.app_id = $1 AND b.state = 'pending' \
                               AND b.next_attempt_at > $2) \
               AND COALESCE(o.batch_id, 0) = COALESCE((SELECT f.batch_id FROM webhook_outbox f \
                   WHERE f.app_id = $1 AND f.state <> 'dead' ORDER BY f.id LIMIT 1), 0) \
             ORDER BY o.id LIMIT $3{lock}"
        ))
        // Polled while the tables under it grow: planned afresh at every call.
        .persistent(false)
        .bind(app_id)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let Some(&first) = picked.first() else {
            return Ok(vec![]);
        };
        let ids: Vec<i64> = sqlx::query_scalar(&format!(
            "UPDATE webhook_outbox SET state = 'leased', attempts = attempts + 1, lease_owner = $2, \
               lease_expires_at = $3, batch_id = COALESCE(batch_id, $4) \
             WHERE id IN (SELECT x.id FROM {}) RETURNING id",
            D::json_rows("$1", &[("id", "bigint")])
        ))
        .bind(D::json(id_rows(&picked)))
        .bind(worker)
        .bind(until)
        .bind(first)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT o.id, o.delivery_id, o.request_id, d.campaign_id, u.external_id AS user_external_id, \
               o.status, o.detail, o.at, o.lease_owner, o.attempts AS lease_attempt, o.lease_expires_at \
             FROM webhook_outbox o LEFT JOIN deliveries d ON d.id = o.delivery_id \
               LEFT JOIN users u ON u.id = o.user_id \
             WHERE o.id IN (SELECT x.id FROM {}) ORDER BY o.id",
            D::json_rows("$1", &[("id", "bigint")])
        );
        let rows = id_rows(&ids);
        Ok(sqlx::query_as(&sql)
            .bind(D::json(rows))
            .fetch_all(&self.write)
            .await?)
    }

    async fn outbox_ack(&self, events: &[OutboxEvent]) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM webhook_outbox WHERE state = 'leased' \
               AND (id, attempts, lease_owner) IN (SELECT x.id, x.attempts, x.lease_owner FROM {})",
            D::json_rows("$1", LEASED_EVENT_COLUMNS)
        );
        let done = sqlx::query(&sql)
            .bind(D::json(leased_event_rows(events)))
            .execute(&self.write)
            .await?
            .rows_affected();
        fenced(done, events)
    }

    async fn outbox_retry(&self, retry: &OutboxRetry<'_>) -> Result<u64, StoreError> {
        let OutboxRetry {
            events,
            next_attempt_at,
            error,
            max_attempts,
        } = *retry;
        let sql = format!(
            "UPDATE webhook_outbox SET state = CASE WHEN attempts >= $3 THEN 'dead' ELSE 'pending' END, \
               next_attempt_at = $2, last_error = $4, lease_owner = NULL, lease_expires_at = NULL \
             WHERE state = 'leased' \
               AND (id, attempts, lease_owner) IN (SELECT x.id, x.attempts, x.lease_owner FROM {})",
            D::json_rows("$1", LEASED_EVENT_COLUMNS)
        );
        let done = sqlx::query(&sql)
            .bind(D::json(leased_event_rows(events)))
            .bind(next_attempt_at)
            .bind(max_attempts)
            .bind(error)
            .execute(&self.write)
            .await?
            .rows_affected();
        fenced(done, events)
    }

    async fn fallback_sweep(
        &self,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // A user of a push that falls back, whose deliveries of it are all
        // final and none reached the device; or (with a receipt timeout) sent
        // long enough ago with no receipt yet.
        let sql = "\
            INSERT INTO fallbacks (app_id, request_id, user_id, reason, state, attempts, next_attempt_at, created_at, updated_at) \
            SELECT d.app_id, d.request_id, d.user_id, \
              CASE WHEN SUM(CASE WHEN d.status = 'sent' THEN 1 ELSE 0 END) > 0 THEN 'no_receipt' \
                   WHEN SUM(CASE WHEN d.status = 'token_invalid' THEN 1 ELSE 0 END) = COUNT(*) THEN 'all_tokens_invalid' \
                   ELSE 'provider_refused' END, \
              'pending', 0, $1, $1, $1 \
            FROM push_requests p JOIN deliveries d ON d.request_id = p.id \
            WHERE p.fallback AND p.created_at >= $2 AND d.user_id IS NOT NULL \
              AND NOT EXISTS (SELECT 1 FROM fallbacks f WHERE f.request_id = p.id AND f.user_id = d.user_id) \
            GROUP BY d.app_id, d.request_id, d.user_id, p.no_receipt_after_secs \
            HAVING SUM(CASE WHEN d.status IN ('queued', 'leased', 'retry', 'delivered', 'opened', 'dismissed') THEN 1 ELSE 0 END) = 0 \
              AND (SUM(CASE WHEN d.status = 'sent' THEN 1 ELSE 0 END) = 0 \
                   OR (p.no_receipt_after_secs IS NOT NULL \
                       AND SECONDS_SINCE_SENT >= p.no_receipt_after_secs)) \
            ON CONFLICT (request_id, user_id) DO NOTHING";
        let sql = sql.replace(
            "SECONDS_SINCE_SENT",
            &D::seconds_between("$1", "MAX(d.sent_at)"),
        );
        // Polled while the tables under it grow: planned afresh at every call.
        let found = sqlx::query(&sql)
            .persistent(false)
            .bind(now)
            .bind(since)
            .execute(&self.write)
            .await?
            .rows_affected();
        // A push that can fall back no more leaves the sweep's index: nothing of
        // it is pending, and no sent message of it is still inside its receipt
        // window. The sweep then reads only unsettled pushes, not three days of them.
        let settle = format!(
            "UPDATE push_requests SET fallback = FALSE WHERE fallback AND created_at >= $2 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.request_id = push_requests.id \
               AND (d.status IN ('queued', 'leased', 'retry') \
                    OR (d.status = 'sent' AND push_requests.no_receipt_after_secs IS NOT NULL \
                        AND {} < push_requests.no_receipt_after_secs)))",
            D::seconds_between("$1", "d.sent_at")
        );
        sqlx::query(&settle)
            .persistent(false)
            .bind(now)
            .bind(since)
            .execute(&self.write)
            .await?;
        Ok(found)
    }

    async fn fallback_lease(
        &self,
        terms: &LeaseTerms<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<super::LeasedFallback>, StoreError> {
        let LeaseTerms {
            owner: worker,
            until,
            limit,
        } = *terms;
        let lock = D::SKIP_LOCKED;
        let ids: Vec<i64> = sqlx::query_scalar(&format!(
            "UPDATE fallbacks SET state = 'leased', attempts = attempts + 1, lease_owner = $2, lease_expires_at = $3, updated_at = $1 \
             WHERE id IN (SELECT id FROM fallbacks \
               WHERE (state = 'pending' AND next_attempt_at <= $1) OR (state = 'leased' AND lease_expires_at < $1) \
               ORDER BY next_attempt_at, id LIMIT $4{lock}) \
             RETURNING id"
        ))
        // Polled while the tables under it grow: planned afresh at every call.
        .persistent(false)
        .bind(now)
        .bind(worker)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.write)
        .await?;
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT f.id, f.app_id, f.request_id, f.user_id, u.external_id AS user_external_id, u.phone, \
               f.reason, f.lease_owner, f.attempts AS lease_attempt, f.lease_expires_at, p.topic, p.message \
             FROM fallbacks f JOIN users u ON u.id = f.user_id JOIN push_requests p ON p.id = f.request_id \
             WHERE f.id IN (SELECT x.id FROM {}) ORDER BY f.id",
            D::json_rows("$1", &[("id", "bigint")])
        );
        let rows = id_rows(&ids);
        Ok(sqlx::query_as(&sql)
            .bind(D::json(rows))
            .fetch_all(&self.write)
            .await?)
    }

    async fn fallback_finish(
        &self,
        finish: &FallbackFinish<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let FallbackFinish {
            fallback: f,
            outcome,
            webhook,
        } = *finish;
        use super::FallbackOutcome;
        let (state, next, error, step) = match outcome {
            FallbackOutcome::Sent => ("sent", now, None, Some("fallback_sent")),
            FallbackOutcome::Retry { at, error } => ("pending", *at, Some(error.as_str()), None),
            FallbackOutcome::Failed { error } => {
                ("failed", now, Some(error.as_str()), Some("fallback_failed"))
            }
        };
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE fallbacks SET state = $4, next_attempt_at = $5, last_error = $6, lease_owner = NULL, \
               lease_expires_at = NULL, updated_at = $7 \
             WHERE id = $1 AND attempts = $2 AND lease_owner = $3 AND state = 'leased'",
        )
        .bind(f.id)
        .bind(f.lease.attempt)
        .bind(&f.lease.owner)
        .bind(state)
        .bind(next)
        .bind(error)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::LeaseLost {
                what: format!("fallback {}", f.id),
            });
        }
        if let Some(step) = step {
            let detail = match error {
                Some(e) => format!("{}: {e}", f.reason),
                None => f.reason.clone(),
            };
            // A user the push found no device for: the fallback's outcome is
            // the status of their `no_device` message.
            sqlx::query(
                "UPDATE deliveries SET status = $3, updated_at = $4 \
                 WHERE request_id = $1 AND user_id = $2 AND status = 'no_device'",
            )
            .bind(&f.request_id)
            .bind(f.user_id)
            .bind(step)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // The step joins the history of each of the user's messages of this push.
            sqlx::query(
                "INSERT INTO delivery_events (delivery_id, status, attempt, detail, at) \
                 SELECT d.id, $3, $4, $5, $6 FROM deliveries d WHERE d.request_id = $1 AND d.user_id = $2",
            )
            .bind(&f.request_id)
            .bind(f.user_id)
            .bind(step)
            .bind(f.lease.attempt)
            .bind(&detail)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if webhook {
                sqlx::query(
                    "INSERT INTO webhook_outbox (app_id, delivery_id, request_id, user_id, status, detail, at, \
                       next_attempt_at) \
                     VALUES ($1, (SELECT d.id FROM deliveries d WHERE d.request_id = $2 AND d.user_id = $3 \
                                    AND d.device_id IS NULL), \
                             $2, $3, $4, $5, $6, $6)",
                )
                .bind(&f.app_id)
                .bind(&f.request_id)
                .bind(f.user_id)
                .bind(step)
                .bind(&detail)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
