//! Apps and their API keys.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect, RowsAffected};
use super::sql::SqlStore;
use super::StoreError;
use crate::domain::keys::KeyKind;

/// An API key to store: the secret itself never reaches the database.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub app_id: &'a str,
    pub name: &'a str,
    pub kind: KeyKind,
    pub prefix: &'a str,
    pub hash: &'a str,
}

/// Whose a live key is and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyOwner {
    pub app_id: String,
    #[sqlx(try_from = "String")]
    pub kind: KeyKind,
}

/// A stored API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub app_id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub kind: KeyKind,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A tenant, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub id: String,
    pub name: String,
    pub default_timezone: String,
}

/// What the console's overview shows of an app, counted at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppOverview {
    pub users: i64,
    /// Active devices by platform.
    pub devices: Vec<(String, i64)>,
    /// Devices whose token a provider refused.
    pub invalid_devices: i64,
    /// Per topic with an explicit choice: (topic, opted in, opted out).
    pub topics: Vec<(String, i64, i64)>,
    /// Messages created since the window's start, by hour (hours since 1970)
    /// and status. A campaign's messages are written when sent; a push's
    /// when queued.
    pub messages: Vec<(i64, String, i64)>,
}

pub trait AppStore: Send + Sync {
    /// Creates or updates a configured app; an app without a receipt key gets
    /// one (32 random bytes), which later syncs keep.
    fn app_sync(
        &self,
        app: &AppRecord,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a new API key (its hash); a key of the same name, even revoked, is a conflict.
    fn api_key_create(
        &self,
        key: &NewApiKey<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The app a live key (by hash) belongs to, and the key's kind.
    fn api_key_owner_get(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<KeyOwner>, StoreError>> + Send;

    /// Every app's receipt key (hex), made by `app_sync`.
    fn app_receipt_key_list(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;

    /// An app's keys, live and revoked, oldest first.
    fn api_key_list(
        &self,
        app_id: &str,
    ) -> impl Future<Output = Result<Vec<ApiKeyRecord>, StoreError>> + Send;

    /// Revokes an app's live key by name; false when there is none.
    fn api_key_revoke(
        &self,
        app_id: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The app's audience and its messages since `since`. The counts read the
    /// app's users, devices and subscriptions (index-only where the indexes
    /// cover them); the messages only the deliveries created since `since`,
    /// found by id (see [`AppStore::delivery_first_since`]).
    fn app_overview(
        &self,
        app_id: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<AppOverview, StoreError>> + Send;

    /// The smallest delivery id created at or after `t` (or one past the
    /// largest), by bisecting the primary key: ids grow with creation time
    /// (reserved in order, written within seconds), so the newest deliveries
    /// are an id range, found in ~40 index probes rather than a scan of the
    /// table. A few seconds' disorder at the edge only moves the edge.
    fn delivery_first_since(
        &self,
        t: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
}

impl<D: Dialect> AppStore for SqlStore<D>
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
    async fn app_sync(&self, app: &super::AppRecord, now: DateTime<Utc>) -> Result<(), StoreError> {
        let receipt_key = random_hex()?;
        sqlx::query(
            "INSERT INTO apps (id, name, default_timezone, receipt_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $5, $4, $4) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, default_timezone = excluded.default_timezone, \
               receipt_key = COALESCE(apps.receipt_key, excluded.receipt_key), updated_at = excluded.updated_at \
             WHERE apps.name <> excluded.name OR apps.default_timezone <> excluded.default_timezone \
               OR apps.receipt_key IS NULL",
        )
        .bind(&app.id)
        .bind(&app.name)
        .bind(&app.default_timezone)
        .bind(now)
        .bind(receipt_key)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn app_receipt_key_list(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, receipt_key FROM apps WHERE receipt_key IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.read)
        .await?)
    }

    async fn api_key_create(
        &self,
        key: &super::NewApiKey<'_>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO api_keys (app_id, name, prefix, key_hash, created_at, kind) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(key.app_id)
        .bind(key.name)
        .bind(key.prefix)
        .bind(key.hash)
        .bind(now)
        .bind(key.kind.as_str())
        .fetch_optional(&self.write)
        .await?;
        id.ok_or_else(|| StoreError::Conflict {
            key: key.name.to_owned(),
        })
    }

    async fn api_key_owner_get(&self, hash: &str) -> Result<Option<KeyOwner>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT app_id, kind FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.read)
        .await?)
    }

    async fn api_key_list(&self, app_id: &str) -> Result<Vec<super::ApiKeyRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, app_id, name, kind, prefix, created_at, revoked_at FROM api_keys WHERE app_id = $1 ORDER BY id",
        )
        .bind(app_id)
        .fetch_all(&self.read)
        .await?)
    }

    async fn api_key_revoke(
        &self,
        app_id: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $3 WHERE app_id = $1 AND name = $2 AND revoked_at IS NULL",
        )
        .bind(app_id)
        .bind(name)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn app_overview(
        &self,
        app_id: &str,
        since: DateTime<Utc>,
    ) -> Result<AppOverview, StoreError> {
        let (users,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users WHERE app_id = $1")
            .bind(app_id)
            .fetch_one(&self.read)
            .await?;
        let devices = sqlx::query_as(
            "SELECT platform, COUNT(*) FROM devices WHERE app_id = $1 AND state = 'active' \
             GROUP BY platform ORDER BY platform",
        )
        .bind(app_id)
        .fetch_all(&self.read)
        .await?;
        let (invalid_devices,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM devices WHERE app_id = $1 AND state = 'invalid'")
                .bind(app_id)
                .fetch_one(&self.read)
                .await?;
        let topics = sqlx::query_as(
            "SELECT s.topic, COUNT(*) FILTER (WHERE s.opted_in), COUNT(*) FILTER (WHERE NOT s.opted_in) \
             FROM subscriptions s JOIN users u ON u.id = s.user_id \
             WHERE u.app_id = $1 GROUP BY s.topic ORDER BY s.topic",
        )
        .bind(app_id)
        .fetch_all(&self.read)
        .await?;
        let first = self.delivery_first_since(since).await?;
        let hour = D::epoch_minute("created_at");
        let messages = sqlx::query_as(&format!(
            "SELECT {hour} / 60 AS h, status, COUNT(*) FROM deliveries \
             WHERE id >= $1 AND app_id = $2 AND created_at >= $3 \
             GROUP BY h, status ORDER BY h, status"
        ))
        .bind(first)
        .bind(app_id)
        .bind(since)
        .fetch_all(&self.read)
        .await?;
        Ok(AppOverview {
            users,
            devices,
            invalid_devices,
            topics,
            messages,
        })
    }

    async fn delivery_first_since(&self, t: DateTime<Utc>) -> Result<i64, StoreError> {
        // Retention's search: two index probes for the ends, one per step.
        let first = self
            .first_id_not_before(&super::retention::IdOrdered::DELIVERIES, t)
            .await?;
        Ok(first.unwrap_or(0))
    }
}

/// 32 bytes from the system's secure random generator, in hex.
fn random_hex() -> Result<String, StoreError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Invariant("the system random generator failed".into()))?;
    Ok(crate::domain::bytes::to_hex(&bytes))
}
