//! Delivery rows: ids, retries leased row by row, outcomes and counts.

use std::future::Future;

use chrono::{DateTime, Utc};

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect, RowsAffected};
use super::sql::SqlStore;
use super::{Lease, LeaseTerms, StoreError};
use crate::domain::campaign::Platform;
use crate::domain::ids::{DeliveryId, DeviceId, UserId};
use crate::domain::state::{DeliveryStatus, DeviceState, StateMachine};
use serde_json::Value;
use sqlx::types::Json;

/// A delivery's first outcome, written with the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Reserved before the send ([`super::DeliveryStore::delivery_id_reserve`]).
    pub id: DeliveryId,
    pub device_id: DeviceId,
    pub slot_id: i64,
    pub user_id: Option<UserId>,
    pub status: DeliveryStatus,
    pub provider_id: Option<String>,
    pub error_reason: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A delivery row leased for another attempt (retries, transactional pushes).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LeasedDelivery {
    pub id: DeliveryId,
    pub app_id: String,
    pub campaign_id: Option<i64>,
    pub slot_id: Option<i64>,
    pub request_id: Option<String>,
    pub device_id: DeviceId,
    /// Its `attempt` counts the row's send attempts, this one included.
    #[sqlx(flatten)]
    pub lease: Lease,
    pub created_at: DateTime<Utc>,
    pub token: String,
    #[sqlx(try_from = "String")]
    pub platform: Platform,
    pub locale: Option<String>,
    #[sqlx(try_from = "String")]
    pub device_state: DeviceState,
}

/// The outcome of a leased delivery's attempt, fenced by its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate {
    pub id: DeliveryId,
    pub lease: Lease,
    pub device_id: DeviceId,
    pub status: DeliveryStatus,
    pub provider_id: Option<String>,
    pub error_reason: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The row's app has a status webhook: the change also goes to its outbox.
    pub webhook: bool,
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
) -> Result<String, StoreError> {
    type Row<'a> = (
        DeliveryId,
        DeviceId,
        i64,
        Option<UserId>,
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
    serde_json::to_string(&rows).map_err(|e| StoreError::Invariant(format!("delivery rows: {e}")))
}

pub(super) fn update_rows(rows: &[DeliveryUpdate], time: impl Fn(DateTime<Utc>) -> Value) -> Value {
    rows.iter()
        .map(|d| {
            serde_json::json!({
                "delivery_id": d.id, "attempts": d.lease.attempt,
                "lease_owner": d.lease.owner, "status": d.status.to_string(),
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
    ("lease_owner", "text"),
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

/// One group of [`DeliveryStore::delivery_count_by_slot_minute`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlotMinuteCount {
    pub slot_id: Option<i64>,
    pub status: String,
    pub minute: Option<i64>,
    pub n: i64,
}

pub trait DeliveryStore: Send + Sync {
    /// `n` delivery ids no row has and no later insert will take: a campaign's
    /// deliveries are written after their send, and each notification carries
    /// its delivery's id, so the ids are drawn before sending.
    fn delivery_id_reserve(
        &self,
        n: usize,
    ) -> impl Future<Output = Result<Vec<DeliveryId>, StoreError>> + Send;

    /// Leases delivery rows due for an attempt (retries, queued transactional
    /// pushes) and rows whose lease expired, highest priority first.
    fn delivery_lease(
        &self,
        terms: &LeaseTerms<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<LeasedDelivery>, StoreError>> + Send;

    /// Writes attempts' outcomes in one statement, each fenced by its lease;
    /// returns how many rows were still ours.
    fn delivery_record(
        &self,
        updates: &[DeliveryUpdate],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deliveries of a campaign by status.
    fn delivery_count_by_status(
        &self,
        campaign_id: i64,
    ) -> impl Future<Output = Result<std::collections::BTreeMap<String, i64>, StoreError>> + Send;

    /// Deliveries of a campaign by slot and status: (slot id, status, count).
    fn delivery_count_by_slot(
        &self,
        campaign_id: i64,
    ) -> impl Future<Output = Result<Vec<(i64, String, i64)>, StoreError>> + Send;

    /// A campaign's deliveries counted by slot, status and the minute they were
    /// sent (minutes since 1970; `None` when not sent) in one pass over them:
    /// the console's live snapshot, by slot and by minute at once.
    fn delivery_count_by_slot_minute(
        &self,
        campaign_id: i64,
    ) -> impl Future<Output = Result<Vec<SlotMinuteCount>, StoreError>> + Send;

    /// Folds the ledger of a campaign's tallies into one row per key (the
    /// counts above read `delivery_tallies`, which the database keeps in the
    /// same transaction as every change of a delivery, 0016). Called as slots
    /// complete, so a finished campaign's counts read a few hundred rows.
    fn delivery_tally_compact(
        &self,
        campaign_ids: &[i64],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

impl<D: Dialect> DeliveryStore for SqlStore<D>
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
    async fn delivery_id_reserve(&self, n: usize) -> Result<Vec<DeliveryId>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let n = i64::try_from(n).map_err(|_| StoreError::Invariant(format!("{n} ids")))?;
        let ids = self.dialect.reserve_ids(&self.write, n).await?;
        Ok(ids.into_iter().map(DeliveryId::new).collect())
    }

    async fn delivery_lease(
        &self,
        terms: &LeaseTerms<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<super::LeasedDelivery>, StoreError> {
        let LeaseTerms {
            owner: worker,
            until: lease_until,
            limit,
        } = *terms;
        // Polled while the tables under it grow: planned afresh at every call.
        let ids: Vec<i64> = sqlx::query_scalar(D::LEASE_DELIVERIES)
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
            "SELECT d.id, d.app_id, d.campaign_id, d.slot_id, d.request_id, d.device_id, \
                    d.lease_owner, d.attempts AS lease_attempt, d.lease_expires_at, d.created_at, \
                    v.token, v.platform, v.lang AS locale, v.state AS device_state \
             FROM deliveries d JOIN devices v ON v.id = d.device_id WHERE d.id {} ORDER BY d.id",
            D::ID_IN
        );
        let q = sqlx::query_as::<_, super::LeasedDelivery>(&sql);
        Ok(q.bind(D::ids(&ids)).fetch_all(&self.write).await?)
    }

    async fn delivery_record(
        &self,
        updates: &[super::DeliveryUpdate],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        use crate::domain::state::DeliveryStatus;
        if updates.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let rows = update_rows(updates, D::time_json);
        let source = D::json_rows("$2", UPDATE_COLUMNS);
        // Fenced: only rows still held under the update's lease change.
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
               AND d.lease_owner = x.lease_owner \
             RETURNING id"
        );
        let changed: Vec<DeliveryId> = sqlx::query_scalar(&sql)
            .bind(now)
            .bind(D::json(rows))
            .fetch_all(&mut *tx)
            .await?;
        let changed_set: std::collections::HashSet<DeliveryId> = changed.iter().copied().collect();
        let events: Vec<(DeliveryId, String, i32, Option<String>)> = updates
            .iter()
            .filter(|u| changed_set.contains(&u.id))
            .map(|u| {
                (
                    u.id,
                    u.status.to_string(),
                    u.lease.attempt,
                    u.error_reason.clone(),
                )
            })
            .collect();
        Self::insert_events(&mut tx, &events, now).await?;
        let hooked: Vec<DeliveryId> = updates
            .iter()
            .filter(|u| u.webhook && changed_set.contains(&u.id))
            .map(|u| u.id)
            .collect();
        Self::outbox_deliveries(&mut tx, &hooked, now).await?;
        let dead: Vec<(DeviceId, String)> = updates
            .iter()
            .filter(|u| changed_set.contains(&u.id) && u.status == DeliveryStatus::TokenInvalid)
            .map(|u| (u.device_id, u.error_reason.clone().unwrap_or_default()))
            .collect();
        Self::invalidate_devices(&mut tx, &dead, now).await?;
        tx.commit().await?;
        Ok(changed.len() as u64)
    }

    async fn delivery_count_by_status(
        &self,
        campaign_id: i64,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, CAST(SUM(n) AS BIGINT) FROM delivery_tallies WHERE campaign_id = $1 \
             GROUP BY status HAVING SUM(n) <> 0 ORDER BY status",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn delivery_count_by_slot(
        &self,
        campaign_id: i64,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT slot_id, status, CAST(SUM(n) AS BIGINT) FROM delivery_tallies \
             WHERE campaign_id = $1 AND slot_id <> 0 \
             GROUP BY slot_id, status HAVING SUM(n) <> 0 ORDER BY slot_id, status",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?)
    }

    async fn delivery_count_by_slot_minute(
        &self,
        campaign_id: i64,
    ) -> Result<Vec<SlotMinuteCount>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT NULLIF(slot_id, 0) AS slot_id, status, NULLIF(minute, 0) AS minute, \
               CAST(SUM(n) AS BIGINT) AS n \
             FROM delivery_tallies WHERE campaign_id = $1 \
             GROUP BY slot_id, status, minute HAVING SUM(n) <> 0",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?)
    }

    async fn delivery_tally_compact(&self, campaign_ids: &[i64]) -> Result<u64, StoreError> {
        if campaign_ids.is_empty() {
            return Ok(0);
        }
        Ok(sqlx::query(D::COMPACT_TALLIES)
            .bind(D::ids(campaign_ids))
            .execute(&self.write)
            .await?
            .rows_affected())
    }
}
