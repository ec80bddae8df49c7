//! Idempotency keys of the API's writes.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect};
use super::sql::SqlStore;
use super::StoreError;

/// One request's idempotency key: the app's key and what the request was.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    pub app_id: &'a str,
    pub key: &'a str,
    /// Hash of method, path and normalized body: the same key with another
    /// request is refused.
    pub request_hash: &'a str,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is ours: run the request, then finish or release it.
    Claimed,
    /// The same request ran before: its answer, to send again.
    Replay { status: u16, response: String },
    /// The same key is being used by a request still running.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

/// When a claim expires: `expired_before` drops finished keys (24 h), and a
/// claim still unfinished since `stale_before` was left by a crash and is taken over.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTimes {
    pub now: DateTime<Utc>,
    pub expired_before: DateTime<Utc>,
    pub stale_before: DateTime<Utc>,
}

pub trait IdempotencyStore: Send + Sync {
    /// Claims an idempotency key for a request (dropping the app's expired keys),
    /// or says what became of an earlier request with that key.
    fn idempotency_key_claim(
        &self,
        key: &IdempotencyKey<'_>,
        times: ClaimTimes,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;

    /// Keeps a claimed key's successful answer for replay.
    fn idempotency_key_finish(
        &self,
        key: &IdempotencyKey<'_>,
        status: u16,
        response: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Drops an unfinished claim (its request failed), so a retry runs again.
    fn idempotency_key_release(
        &self,
        key: &IdempotencyKey<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl<D: Dialect> IdempotencyStore for SqlStore<D>
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
    async fn idempotency_key_claim(
        &self,
        k: &super::IdempotencyKey<'_>,
        t: super::ClaimTimes,
    ) -> Result<super::ClaimOutcome, StoreError> {
        use super::ClaimOutcome;
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE app_id = $1 AND created_at < $2")
            .bind(k.app_id)
            .bind(t.expired_before)
            .execute(&mut *tx)
            .await?;
        // A concurrent claim of the same key waits here for the first to commit
        // (Postgres) or runs after it (SQLite's one writer), then finds its row.
        let claimed: Option<String> = sqlx::query_scalar(
            "INSERT INTO idempotency_keys (app_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
                 created_at = excluded.created_at \
             WHERE idempotency_keys.status IS NULL AND idempotency_keys.created_at < $5 \
             RETURNING key",
        )
        .bind(k.app_id)
        .bind(k.key)
        .bind(k.request_hash)
        .bind(t.now)
        .bind(t.stale_before)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = if claimed.is_some() {
            ClaimOutcome::Claimed
        } else {
            let (hash, status, response): (String, Option<i32>, Option<String>) = sqlx::query_as(
                "SELECT request_hash, status, response FROM idempotency_keys WHERE app_id = $1 AND key = $2",
            )
            .bind(k.app_id)
            .bind(k.key)
            .fetch_one(&mut *tx)
            .await?;
            match (
                hash == k.request_hash,
                status.and_then(|s| u16::try_from(s).ok()),
                response,
            ) {
                (false, _, _) => ClaimOutcome::Mismatch,
                (true, Some(status), Some(response)) => ClaimOutcome::Replay { status, response },
                (true, _, _) => ClaimOutcome::InProgress,
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn idempotency_key_finish(
        &self,
        k: &super::IdempotencyKey<'_>,
        status: u16,
        response: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $4, response = $5 \
             WHERE app_id = $1 AND key = $2 AND request_hash = $3 AND status IS NULL",
        )
        .bind(k.app_id)
        .bind(k.key)
        .bind(k.request_hash)
        .bind(i32::from(status))
        .bind(response)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn idempotency_key_release(
        &self,
        k: &super::IdempotencyKey<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE app_id = $1 AND key = $2 AND request_hash = $3 AND status IS NULL",
        )
        .bind(k.app_id)
        .bind(k.key)
        .bind(k.request_hash)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
