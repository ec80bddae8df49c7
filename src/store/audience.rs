//! The audience: users, their devices and topic subscriptions.

use std::future::Future;

use chrono::{DateTime, Utc};

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect, RowsAffected};
use super::segment::Segment;
use super::sql::SqlStore;
use super::StoreError;
use crate::domain::audience::CheckedUser;
use crate::domain::campaign::Platform;
use crate::domain::planner::ZoneCount;
use crate::domain::state::DeviceState;
use serde_json::Value;
use sqlx::types::Json;

pub(super) const USER_UPSERT: &str = "\
    INSERT INTO users (app_id, external_id, phone, timezone, locale, attributes, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, COALESCE($6, '{}'), $7, $7) \
    ON CONFLICT (app_id, external_id) DO UPDATE SET \
        phone = COALESCE(excluded.phone, users.phone), \
        timezone = COALESCE(excluded.timezone, users.timezone), \
        locale = COALESCE(excluded.locale, users.locale), \
        attributes = CASE WHEN $6 IS NULL THEN users.attributes ELSE excluded.attributes END, \
        updated_at = excluded.updated_at \
    RETURNING id";

/// The JSON rows of a batch of users (see `UserUpsert::json_rows`).
pub(super) const USER_BATCH_COLUMNS: &[(&str, &str)] = &[
    ("app_id", "text"),
    ("external_id", "text"),
    ("phone", "text"),
    ("timezone", "text"),
    ("locale", "text"),
    ("attributes", "jsonb"),
];

/// Batch upsert, step 1 (`$1` the rows as `source`, `$2` now): users not stored
/// yet are created. Inserting before updating leaves no gap in which another
/// writer's insert could win and drop this batch's values.
pub(super) fn user_batch_insert(source: &str) -> String {
    format!(
        "INSERT INTO users (app_id, external_id, phone, timezone, locale, attributes, created_at, updated_at) \
         SELECT x.app_id, x.external_id, x.phone, x.timezone, x.locale, COALESCE(x.attributes, '{{}}'), $2, $2 \
         FROM {source} WHERE TRUE \
         ON CONFLICT (app_id, external_id) DO NOTHING"
    )
}

/// Batch upsert, step 2: every row of the batch is applied as `USER_UPSERT`
/// would, absent fields keeping what is stored.
pub(super) fn user_batch_update(source: &str) -> String {
    format!(
        "UPDATE users SET phone = COALESCE(x.phone, users.phone), \
             timezone = COALESCE(x.timezone, users.timezone), \
             locale = COALESCE(x.locale, users.locale), \
             attributes = COALESCE(x.attributes, users.attributes), \
             updated_at = $2 \
         FROM {source} WHERE users.app_id = x.app_id AND users.external_id = x.external_id"
    )
}

/// What a device inherits from its user: its `zone` when it reports no zone of
/// its own, its `lang` when it reports no locale.
const DEVICES_INHERIT: &str = "\
    UPDATE devices SET \
        zone = CASE WHEN timezone IS NULL \
                    THEN COALESCE((SELECT u.timezone FROM users u WHERE u.id = devices.user_id), '') \
                    ELSE zone END, \
        lang = COALESCE(locale, (SELECT u.locale FROM users u WHERE u.id = devices.user_id))";

/// Batch upsert, step 3 (only `$1`): `USER_DEVICES_INHERIT` for the users whose
/// row set a zone or a locale.
pub(super) fn user_batch_devices_zone(source: &str) -> String {
    format!(
        "{DEVICES_INHERIT} \
         WHERE (timezone IS NULL OR locale IS NULL) AND user_id IN ( \
             SELECT u.id FROM users u JOIN {source} ON u.app_id = x.app_id AND u.external_id = x.external_id \
             WHERE x.timezone IS NOT NULL OR x.locale IS NOT NULL)"
    )
}

/// A user's zone and locale are their devices' unless a device reports its own.
pub(super) fn user_devices_inherit() -> String {
    format!("{DEVICES_INHERIT} WHERE user_id = $1 AND (timezone IS NULL OR locale IS NULL)")
}

/// Makes sure a user exists without changing it.
pub(super) const USER_ENSURE: &str = "\
    INSERT INTO users (app_id, external_id, created_at, updated_at) VALUES ($1, $2, $3, $3) \
    ON CONFLICT (app_id, external_id) DO UPDATE SET external_id = excluded.external_id \
    RETURNING id";

pub(super) const DEVICE_COLUMNS: &str =
    "id, app_id, user_id, install_id, platform, token, timezone, locale, \
    is_primary, state, invalid_reason, created_at, updated_at";

pub(super) const DEVICE_CLEAR_PRIMARY: &str = "\
    UPDATE devices SET is_primary = FALSE, updated_at = $4 \
    WHERE user_id = $1 AND is_primary AND NOT (app_id = $2 AND token = $3)";

pub(super) const DEVICE_UPSERT: &str = "\
    INSERT INTO devices (app_id, user_id, install_id, platform, token, timezone, locale, is_primary, state, zone, lang, \
                         created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', \
            COALESCE($6, (SELECT u.timezone FROM users u WHERE u.id = $2), ''), \
            COALESCE($7, (SELECT u.locale FROM users u WHERE u.id = $2)), $9, $9) \
    ON CONFLICT (app_id, token) DO UPDATE SET \
        user_id = excluded.user_id, \
        install_id = COALESCE(excluded.install_id, devices.install_id), \
        platform = excluded.platform, \
        timezone = COALESCE(excluded.timezone, devices.timezone), \
        locale = COALESCE(excluded.locale, devices.locale), \
        zone = COALESCE(excluded.timezone, devices.timezone, \
                        (SELECT u.timezone FROM users u WHERE u.id = excluded.user_id), ''), \
        lang = COALESCE(excluded.locale, devices.locale, \
                        (SELECT u.locale FROM users u WHERE u.id = excluded.user_id)), \
        is_primary = CASE WHEN excluded.is_primary THEN TRUE \
                          WHEN devices.user_id IS DISTINCT FROM excluded.user_id THEN FALSE \
                          ELSE devices.is_primary END, \
        state = 'active', invalid_reason = NULL, invalidated_at = NULL, \
        updated_at = excluded.updated_at \
    RETURNING id, app_id, user_id, install_id, platform, token, timezone, locale, \
        is_primary, state, invalid_reason, created_at, updated_at";

/// A user to create or update; `None` fields keep what is stored.
#[derive(Debug, Clone, Default)]
pub struct UserUpsert<'a> {
    pub app_id: &'a str,
    pub external_id: &'a str,
    pub phone: Option<&'a str>,
    pub timezone: Option<&'a str>,
    pub locale: Option<&'a str>,
    pub attributes: Option<&'a Value>,
}

impl<'a> UserUpsert<'a> {
    /// A user the audience's checks accepted, in `app_id`.
    pub fn checked(app_id: &'a str, user: &'a CheckedUser) -> Self {
        Self {
            app_id,
            external_id: &user.external_id,
            phone: user.phone.as_deref(),
            timezone: user.timezone.as_deref(),
            locale: user.locale.as_deref(),
            attributes: user.attributes.as_ref(),
        }
    }

    /// The users as JSON rows for one set-based batch upsert, one row per app and
    /// external id: a user listed twice gets the later row's fields over the
    /// earlier one's, as if the two were written one after the other.
    fn json_rows(users: &[UserUpsert<'_>]) -> Value {
        let mut merged: Vec<UserUpsert<'_>> = Vec::with_capacity(users.len());
        let mut seen = std::collections::HashMap::with_capacity(users.len());
        for u in users {
            match seen.entry((u.app_id, u.external_id)) {
                std::collections::hash_map::Entry::Occupied(at) => {
                    let m: &mut UserUpsert<'_> = &mut merged[*at.get()];
                    m.phone = u.phone.or(m.phone);
                    m.timezone = u.timezone.or(m.timezone);
                    m.locale = u.locale.or(m.locale);
                    m.attributes = u.attributes.or(m.attributes);
                }
                std::collections::hash_map::Entry::Vacant(at) => {
                    at.insert(merged.len());
                    merged.push(u.clone());
                }
            }
        }
        merged
            .iter()
            .map(|u| {
                serde_json::json!({
                    "app_id": u.app_id, "external_id": u.external_id, "phone": u.phone,
                    "timezone": u.timezone, "locale": u.locale, "attributes": u.attributes,
                })
            })
            .collect()
    }
}

/// A device to register or refresh. Registering a known token reactivates it.
#[derive(Debug, Clone)]
pub struct DeviceUpsert<'a> {
    pub app_id: &'a str,
    /// The owning user's external id (created if unknown), or none for an anonymous install.
    pub user_external_id: Option<&'a str>,
    pub install_id: Option<&'a str>,
    pub platform: Platform,
    pub token: &'a str,
    pub timezone: Option<&'a str>,
    pub locale: Option<&'a str>,
    /// Makes this the user's primary device (clearing the flag on the others).
    pub primary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceRecord {
    pub id: i64,
    pub app_id: String,
    pub user_id: Option<i64>,
    pub install_id: Option<String>,
    #[sqlx(try_from = "String")]
    pub platform: Platform,
    pub token: String,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    pub is_primary: bool,
    #[sqlx(try_from = "String")]
    pub state: DeviceState,
    pub invalid_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub trait AudienceStore: Send + Sync {
    fn user_upsert(
        &self,
        user: &UserUpsert<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Creates or updates many users in one transaction of a few set-based
    /// statements, each as [`AudienceStore::user_upsert`] would (a user listed twice as if
    /// its rows came one after the other). Returns how many rows were given.
    fn user_upsert_many(
        &self,
        users: &[UserUpsert<'_>],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Attaches the devices of anonymous installs to users, `(external id,
    /// install id)` each: the install's devices become the user's and take the
    /// user's zone and language where they have none of their own. Returns the
    /// devices moved.
    fn device_attach_installs(
        &self,
        app_id: &str,
        pairs: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Keeps a user's `max` most recently registered active devices and
    /// deactivates the rest (`invalid`, reason `device_limit`); the tokens
    /// deactivated.
    fn device_trim_for_user(
        &self,
        user_id: i64,
        max: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    fn device_upsert(
        &self,
        device: &DeviceUpsert<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<DeviceRecord, StoreError>> + Send;

    fn device_get_by_token(
        &self,
        app_id: &str,
        token: &str,
    ) -> impl Future<Output = Result<Option<DeviceRecord>, StoreError>> + Send;

    /// Marks a token dead so no later campaign uses it. False if it was already invalid.
    fn device_invalidate(
        &self,
        device_id: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a user's choice for topics; the user must exist.
    fn subscription_set(
        &self,
        app_id: &str,
        external_id: &str,
        choices: &[(&str, bool)],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The external ids of an app's users with this phone number (normalised,
    /// E.164), at most 20.
    fn user_find_by_phone(
        &self,
        app_id: &str,
        phone: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// A user's explicit topic choices, by topic; `None` when the user does not exist.
    fn subscription_list(
        &self,
        app_id: &str,
        external_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<(String, bool)>>, StoreError>> + Send;

    /// Recipients of the segment per zone.
    fn audience_count_by_zone(
        &self,
        segment: &Segment<'_>,
    ) -> impl Future<Output = Result<Vec<ZoneCount>, StoreError>> + Send;
}

impl<D: Dialect> AudienceStore for SqlStore<D>
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
    async fn user_upsert(
        &self,
        u: &super::UserUpsert<'_>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(USER_UPSERT)
            .bind(u.app_id)
            .bind(u.external_id)
            .bind(u.phone)
            .bind(u.timezone)
            .bind(u.locale)
            .bind(u.attributes.map(sqlx::types::Json))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        if u.timezone.is_some() || u.locale.is_some() {
            sqlx::query(&user_devices_inherit())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    async fn user_upsert_many(
        &self,
        users: &[super::UserUpsert<'_>],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        use {user_batch_devices_zone, user_batch_insert, user_batch_update};
        if users.is_empty() {
            return Ok(0);
        }
        let rows = super::UserUpsert::json_rows(users);
        let source = D::json_rows("$1", USER_BATCH_COLUMNS);
        let mut tx = self.begin_write().await?;
        for sql in [user_batch_insert(&source), user_batch_update(&source)] {
            sqlx::query(&sql)
                .bind(D::json(rows.clone()))
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        if users
            .iter()
            .any(|u| u.timezone.is_some() || u.locale.is_some())
        {
            sqlx::query(&user_batch_devices_zone(&source))
                .bind(D::json(rows))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(users.len() as u64)
    }

    async fn device_attach_installs(
        &self,
        app_id: &str,
        pairs: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if pairs.is_empty() {
            return Ok(0);
        }
        let rows: Vec<Value> = pairs
            .iter()
            .map(|(user, install)| serde_json::json!({"external_id": user, "install_id": install}))
            .collect();
        let source = D::json_rows("$2", &[("external_id", "text"), ("install_id", "text")]);
        let sql = format!(
            "UPDATE devices SET user_id = u.id, \
               zone = COALESCE(devices.timezone, u.timezone, ''), \
               lang = COALESCE(devices.locale, u.locale), \
               is_primary = FALSE, updated_at = $3 \
             FROM {source} JOIN users u ON u.app_id = $1 AND u.external_id = x.external_id \
             WHERE devices.app_id = $1 AND devices.install_id = x.install_id \
               AND devices.user_id IS DISTINCT FROM u.id"
        );
        let done = sqlx::query(&sql)
            .bind(app_id)
            .bind(D::json(Value::Array(rows)))
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    async fn device_trim_for_user(
        &self,
        user_id: i64,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "UPDATE devices SET state = 'invalid', invalid_reason = 'device_limit', \
               invalidated_at = $3, is_primary = FALSE, updated_at = $3 \
             WHERE id IN ( \
               SELECT id FROM ( \
                 SELECT id, ROW_NUMBER() OVER (ORDER BY updated_at DESC, id DESC) AS newest \
                 FROM devices WHERE user_id = $1 AND state = 'active' \
               ) ranked WHERE newest > $2 \
             ) \
             RETURNING token",
        )
        .bind(user_id)
        .bind(i64::from(max))
        .bind(now)
        .fetch_all(&self.write)
        .await?)
    }

    async fn device_upsert(
        &self,
        d: &super::DeviceUpsert<'_>,
        now: DateTime<Utc>,
    ) -> Result<super::DeviceRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let user_id: Option<i64> = match d.user_external_id {
            Some(ext) => Some(
                sqlx::query_scalar(USER_ENSURE)
                    .bind(d.app_id)
                    .bind(ext)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?,
            ),
            None => None,
        };
        if let (true, Some(uid)) = (d.primary, user_id) {
            sqlx::query(DEVICE_CLEAR_PRIMARY)
                .bind(uid)
                .bind(d.app_id)
                .bind(d.token)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let record: super::DeviceRecord = sqlx::query_as(DEVICE_UPSERT)
            .bind(d.app_id)
            .bind(user_id)
            .bind(d.install_id)
            .bind(d.platform.as_str())
            .bind(d.token)
            .bind(d.timezone)
            .bind(d.locale)
            .bind(d.primary && user_id.is_some())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn device_get_by_token(
        &self,
        app_id: &str,
        token: &str,
    ) -> Result<Option<super::DeviceRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM devices WHERE app_id = $1 AND token = $2",
            DEVICE_COLUMNS
        );
        Ok(sqlx::query_as(&sql)
            .bind(app_id)
            .bind(token)
            .fetch_optional(&self.read)
            .await?)
    }

    async fn device_invalidate(
        &self,
        device_id: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE devices SET state = 'invalid', invalid_reason = $2, invalidated_at = $3, updated_at = $3 \
             WHERE id = $1 AND state = 'active'",
        )
        .bind(device_id)
        .bind(reason)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn subscription_set(
        &self,
        app_id: &str,
        external_id: &str,
        choices: &[(&str, bool)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let user_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM users WHERE app_id = $1 AND external_id = $2")
                .bind(app_id)
                .bind(external_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(user_id) = user_id else {
            return Err(StoreError::NotFound {
                what: format!("user {external_id:?}"),
            });
        };
        for (topic, opted_in) in choices {
            sqlx::query(
                "INSERT INTO subscriptions (user_id, topic, opted_in, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, topic) DO UPDATE SET opted_in = excluded.opted_in, updated_at = excluded.updated_at",
            )
            .bind(user_id)
            .bind(*topic)
            .bind(*opted_in)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn user_find_by_phone(
        &self,
        app_id: &str,
        phone: &str,
    ) -> Result<Vec<String>, StoreError> {
        // Read through `users_by_phone` (app_id, phone).
        Ok(sqlx::query_scalar(
            "SELECT external_id FROM users WHERE app_id = $1 AND phone = $2 ORDER BY external_id LIMIT 20",
        )
        .bind(app_id)
        .bind(phone)
        .fetch_all(&self.read)
        .await?)
    }

    async fn subscription_list(
        &self,
        app_id: &str,
        external_id: &str,
    ) -> Result<Option<Vec<(String, bool)>>, StoreError> {
        let user_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM users WHERE app_id = $1 AND external_id = $2")
                .bind(app_id)
                .bind(external_id)
                .fetch_optional(&self.read)
                .await?;
        let Some(user_id) = user_id else {
            return Ok(None);
        };
        Ok(Some(
            sqlx::query_as(
                "SELECT topic, opted_in FROM subscriptions WHERE user_id = $1 ORDER BY topic",
            )
            .bind(user_id)
            .fetch_all(&self.read)
            .await?,
        ))
    }

    async fn audience_count_by_zone(
        &self,
        segment: &super::Segment<'_>,
    ) -> Result<Vec<crate::domain::planner::ZoneCount>, StoreError> {
        let (sql, binds) = super::segment::zone_counts_sql::<D>(segment);
        let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
        for b in binds {
            q = Self::bind_segment(q, b);
        }
        let rows = q.fetch_all(&self.read).await?;
        Ok(rows
            .into_iter()
            .map(|(zone, n)| crate::domain::planner::ZoneCount {
                zone,
                recipients: u64::try_from(n).unwrap_or(0),
            })
            .collect())
    }
}
