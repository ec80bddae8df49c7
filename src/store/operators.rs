//! Console operators, their sessions and the audit log.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect, RowsAffected};
use super::sql::SqlStore;
use super::StoreError;
use crate::domain::operator::{AppGrant, Role};

/// An operator as stored (with the hash of their password, never printed).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OperatorRecord {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    #[sqlx(try_from = "Option<String>")]
    pub apps: AppGrant,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for OperatorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorRecord")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &"<hidden>")
            .field("role", &self.role)
            .field("apps", &self.apps)
            .field("disabled_at", &self.disabled_at)
            .finish()
    }
}

/// A new operator: their password already hashed.
#[derive(Debug, Clone)]
pub struct NewOperator<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
    pub apps: &'a AppGrant,
}

/// A new console session, stored by the hash of its token.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub token_hash: &'a str,
    pub operator_id: i64,
    pub csrf_token: &'a str,
    pub address: Option<&'a str>,
    /// The absolute expiry, whatever the activity.
    pub expires_at: DateTime<Utc>,
}

/// A live session and the operator it signs in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub operator_id: i64,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    #[sqlx(try_from = "Option<String>")]
    pub apps: AppGrant,
    pub csrf_token: String,
    pub last_seen_at: DateTime<Utc>,
}

/// One line of the audit log: who, what, on which app and target, from where.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub operator_id: Option<i64>,
    /// The operator's email (or the email tried, for a failed sign-in; `cli`
    /// for a command run on the server).
    pub actor: String,
    pub action: String,
    pub app_id: Option<String>,
    pub target: Option<String>,
    pub address: Option<String>,
    pub detail: Option<String>,
}

pub trait OperatorStore: Send + Sync {
    /// Adds an operator; `Invalid` when the email is taken.
    fn operator_create(
        &self,
        op: &NewOperator<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    fn operator_get_by_email(
        &self,
        email: &str,
    ) -> impl Future<Output = Result<Option<OperatorRecord>, StoreError>> + Send;

    /// Every operator, by email.
    fn operator_list(&self)
        -> impl Future<Output = Result<Vec<OperatorRecord>, StoreError>> + Send;

    /// Sets a new password hash and ends every session of the operator.
    fn operator_set_password(
        &self,
        id: i64,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Disables (ending every session) or enables an operator.
    fn operator_set_disabled(
        &self,
        id: i64,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn session_create(
        &self,
        session: &NewSession<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The session of a token hash if it is live at `now`: before its absolute
    /// expiry, seen since `idle_since`, its operator enabled. Notes the visit
    /// (at most once a minute, so reading pages is not a write each).
    fn session_get(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        idle_since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<SessionRecord>, StoreError>> + Send;

    fn session_delete(
        &self,
        token_hash: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn audit_append(
        &self,
        entry: &AuditEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The newest `limit` audit lines, newest first.
    fn audit_list(
        &self,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send;

    /// Failed sign-ins since `since`: (for this email, from this address).
    fn signin_failure_count(
        &self,
        email: &str,
        address: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<(i64, i64), StoreError>> + Send;
}

impl<D: Dialect> OperatorStore for SqlStore<D>
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
    async fn operator_create(
        &self,
        op: &NewOperator<'_>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let apps = op.apps.to_stored();
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO operators (email, password_hash, role, apps, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (email) DO NOTHING RETURNING id",
        )
        .bind(op.email)
        .bind(op.password_hash)
        .bind(op.role.as_str())
        .bind(apps.as_deref())
        .bind(now)
        .fetch_optional(&self.write)
        .await?;
        id.ok_or_else(|| StoreError::Invalid(format!("an operator {:?} exists already", op.email)))
    }

    async fn operator_get_by_email(
        &self,
        email: &str,
    ) -> Result<Option<OperatorRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, email, password_hash, role, apps, disabled_at, created_at FROM operators WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(&self.read)
        .await?)
    }

    async fn operator_list(&self) -> Result<Vec<OperatorRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, email, password_hash, role, apps, disabled_at, created_at FROM operators ORDER BY email",
        )
        .fetch_all(&self.read)
        .await?)
    }

    async fn operator_set_password(
        &self,
        id: i64,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query("UPDATE operators SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(password_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("operator #{id}"),
            });
        }
        sqlx::query("DELETE FROM console_sessions WHERE operator_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn operator_set_disabled(
        &self,
        id: i64,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE operators SET disabled_at = CASE WHEN $2 THEN COALESCE(disabled_at, $3) END, updated_at = $3 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(Some(disabled))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("operator #{id}"),
            });
        }
        if disabled {
            sqlx::query("DELETE FROM console_sessions WHERE operator_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn session_create(
        &self,
        s: &NewSession<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, operator_id, csrf_token, address, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $5, $6)",
        )
        .bind(s.token_hash)
        .bind(s.operator_id)
        .bind(s.csrf_token)
        .bind(s.address)
        .bind(now)
        .bind(s.expires_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn session_get(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
        idle_since: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let found: Option<SessionRecord> = sqlx::query_as(
            "SELECT s.operator_id, o.email, o.role, o.apps, s.csrf_token, s.last_seen_at \
             FROM console_sessions s JOIN operators o ON o.id = s.operator_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND s.last_seen_at > $3 AND o.disabled_at IS NULL",
        )
        .bind(token_hash)
        .bind(now)
        .bind(idle_since)
        .fetch_optional(&self.read)
        .await?;
        if let Some(s) = &found {
            if now - s.last_seen_at > chrono::TimeDelta::minutes(1) {
                sqlx::query("UPDATE console_sessions SET last_seen_at = $2 WHERE token_hash = $1")
                    .bind(token_hash)
                    .bind(now)
                    .execute(&self.write)
                    .await?;
            }
        }
        Ok(found)
    }

    async fn session_delete(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn audit_append(&self, e: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, operator_id, actor, action, app_id, target, address, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.at)
        .bind(e.operator_id)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(e.app_id.as_deref())
        .bind(e.target.as_deref())
        .bind(e.address.as_deref())
        .bind(e.detail.as_deref())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn audit_list(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT at, operator_id, actor, action, app_id, target, address, detail FROM audit_log \
             ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    async fn signin_failure_count(
        &self,
        email: &str,
        address: &str,
        since: DateTime<Utc>,
    ) -> Result<(i64, i64), StoreError> {
        // Each count reads its own partial index.
        Ok(sqlx::query_as(
            "SELECT \
               (SELECT count(*) FROM audit_log WHERE action = 'signin_failed' AND actor = $1 AND at > $3), \
               (SELECT count(*) FROM audit_log WHERE action = 'signin_failed' AND address = $2 AND at > $3)",
        )
        .bind(email)
        .bind(address)
        .bind(since)
        .fetch_one(&self.read)
        .await?)
    }
}
