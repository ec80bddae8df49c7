//! Store methods that only the REST API's campaign routes use: campaigns by id
//! and by page, and idempotency keys. Same SQL on both backends, expanded into
//! each `impl Store` by `api_store_methods!()`.

use chrono::{DateTime, Utc};

use crate::state::CampaignState;

/// Which of an app's campaigns to list, newest first.
#[derive(Debug, Clone, Copy)]
pub struct CampaignFilter {
    pub state: Option<CampaignState>,
    /// Only campaigns with a smaller id (the cursor of the previous page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

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

macro_rules! api_store_methods {
    () => {
        async fn campaign_by_id(
            &self,
            app_id: &str,
            id: i64,
        ) -> Result<Option<$crate::store::CampaignRecord>, $crate::store::StoreError> {
            let sql = format!(
                "SELECT {} FROM campaigns WHERE id = $1 AND app_id = $2",
                $crate::store::shared::CAMPAIGN_COLUMNS
            );
            Ok(sqlx::query_as(&sql).bind(id).bind(app_id).fetch_optional(&self.read).await?)
        }

        async fn campaign_page(
            &self,
            app_id: &str,
            f: &$crate::store::CampaignFilter,
        ) -> Result<Vec<$crate::store::CampaignRecord>, $crate::store::StoreError> {
            use $crate::state::StateMachine;
            let sql = format!(
                "SELECT {} FROM campaigns WHERE app_id = $1 AND ($2 IS NULL OR state = $2) \
                 AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
                $crate::store::shared::CAMPAIGN_COLUMNS
            );
            Ok(sqlx::query_as(&sql)
                .bind(app_id)
                .bind(f.state.map(|s| s.as_str()))
                .bind(f.before_id)
                .bind(f.limit)
                .fetch_all(&self.read)
                .await?)
        }

        async fn claim_idempotency_key(
            &self,
            k: &$crate::store::IdempotencyKey<'_>,
            t: $crate::store::ClaimTimes,
        ) -> Result<$crate::store::ClaimOutcome, $crate::store::StoreError> {
            use $crate::store::ClaimOutcome;
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
                match (hash == k.request_hash, status.and_then(|s| u16::try_from(s).ok()), response) {
                    (false, _, _) => ClaimOutcome::Mismatch,
                    (true, Some(status), Some(response)) => ClaimOutcome::Replay { status, response },
                    (true, _, _) => ClaimOutcome::InProgress,
                }
            };
            tx.commit().await?;
            Ok(outcome)
        }

        async fn finish_idempotency_key(
            &self,
            k: &$crate::store::IdempotencyKey<'_>,
            status: u16,
            response: &str,
        ) -> Result<(), $crate::store::StoreError> {
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

        async fn release_idempotency_key(
            &self,
            k: &$crate::store::IdempotencyKey<'_>,
        ) -> Result<(), $crate::store::StoreError> {
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
    };
}

pub(super) use api_store_methods;
