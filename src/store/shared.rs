//! Store methods whose SQL and Rust are the same on both backends.
//!
//! `shared_store_methods!()` expands inside each backend's `impl Store`; the
//! backend provides `self.write` / `self.read` pools, `Self::FOR_UPDATE`,
//! `Self::bind_segment` and `Self::insert_slots`.

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

pub(super) const CAMPAIGN_COLUMNS: &str =
    "id, app_id, key, name, definition, state, revision, tzdata_version, \
    created_at, updated_at, scheduled_at";

pub(super) const SLOT_COLUMNS: &str =
    "id, campaign_id, occurrence, zone, fire_at, disposition, state, \
    planned_count, released_at, first_sent_at";

/// A message as the API shows it. No foreign keys on deliveries (see 0004): user
/// and device are left joins.
pub(super) const MESSAGE_SELECT: &str =
    "SELECT d.id, d.campaign_id, d.request_id, u.external_id AS user_external_id, v.token, v.platform, \
       d.status, d.attempts, d.provider_id, d.error_reason, d.created_at, d.updated_at, d.sent_at \
     FROM deliveries d LEFT JOIN users u ON u.id = d.user_id LEFT JOIN devices v ON v.id = d.device_id";

macro_rules! shared_store_methods {
    () => {
        async fn ping(&self) -> Result<(), $crate::store::StoreError> {
            sqlx::query("SELECT 1").execute(&self.read).await?;
            Ok(())
        }

        async fn close(&self) {
            self.write.close().await;
            self.read.close().await;
        }

        async fn sync_app(
            &self,
            app: &$crate::store::AppRecord,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(
                "INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, default_timezone = excluded.default_timezone, \
                 updated_at = excluded.updated_at \
                 WHERE apps.name <> excluded.name OR apps.default_timezone <> excluded.default_timezone",
            )
            .bind(&app.id)
            .bind(&app.name)
            .bind(&app.default_timezone)
            .bind(now)
            .execute(&self.write)
            .await?;
            Ok(())
        }

        async fn upsert_user(
            &self,
            u: &$crate::store::UserUpsert<'_>,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<i64, $crate::store::StoreError> {
            let mut tx = self.begin_write().await?;
            let id: i64 = sqlx::query_scalar($crate::store::shared::USER_UPSERT)
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
                sqlx::query(&$crate::store::shared::user_devices_inherit()).bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(id)
        }

        async fn upsert_users(
            &self,
            users: &[$crate::store::UserUpsert<'_>],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<u64, $crate::store::StoreError> {
            use $crate::store::shared::{user_batch_devices_zone, user_batch_insert, user_batch_update};
            if users.is_empty() {
                return Ok(0);
            }
            let rows = $crate::store::UserUpsert::json_rows(users);
            let source = Self::json_rows("$1", $crate::store::shared::USER_BATCH_COLUMNS);
            let mut tx = self.begin_write().await?;
            for sql in [user_batch_insert(&source), user_batch_update(&source)] {
                sqlx::query(&sql).bind(Self::json_arg(rows.clone())).bind(now).execute(&mut *tx).await?;
            }
            if users.iter().any(|u| u.timezone.is_some() || u.locale.is_some()) {
                sqlx::query(&user_batch_devices_zone(&source))
                    .bind(Self::json_arg(rows))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(users.len() as u64)
        }

        async fn upsert_device(
            &self,
            d: &$crate::store::DeviceUpsert<'_>,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<$crate::store::DeviceRecord, $crate::store::StoreError> {
            let mut tx = self.begin_write().await?;
            let user_id: Option<i64> = match d.user_external_id {
                Some(ext) => Some(
                    sqlx::query_scalar($crate::store::shared::USER_ENSURE)
                        .bind(d.app_id)
                        .bind(ext)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?,
                ),
                None => None,
            };
            if let (true, Some(uid)) = (d.primary, user_id) {
                sqlx::query($crate::store::shared::DEVICE_CLEAR_PRIMARY)
                    .bind(uid)
                    .bind(d.app_id)
                    .bind(d.token)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            let record: $crate::store::DeviceRecord = sqlx::query_as($crate::store::shared::DEVICE_UPSERT)
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

        async fn device_by_token(
            &self,
            app_id: &str,
            token: &str,
        ) -> Result<Option<$crate::store::DeviceRecord>, $crate::store::StoreError> {
            let sql = format!(
                "SELECT {} FROM devices WHERE app_id = $1 AND token = $2",
                $crate::store::shared::DEVICE_COLUMNS
            );
            Ok(sqlx::query_as(&sql).bind(app_id).bind(token).fetch_optional(&self.read).await?)
        }

        async fn invalidate_device(
            &self,
            device_id: i64,
            reason: &str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<bool, $crate::store::StoreError> {
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

        async fn set_subscriptions(
            &self,
            app_id: &str,
            external_id: &str,
            choices: &[(&str, bool)],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::store::StoreError> {
            let mut tx = self.begin_write().await?;
            let user_id: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE app_id = $1 AND external_id = $2")
                .bind(app_id)
                .bind(external_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(user_id) = user_id else {
                return Err($crate::store::StoreError::NotFound {
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

        async fn subscriptions(
            &self,
            app_id: &str,
            external_id: &str,
        ) -> Result<Option<Vec<(String, bool)>>, $crate::store::StoreError> {
            let user_id: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE app_id = $1 AND external_id = $2")
                .bind(app_id)
                .bind(external_id)
                .fetch_optional(&self.read)
                .await?;
            let Some(user_id) = user_id else { return Ok(None) };
            Ok(Some(
                sqlx::query_as("SELECT topic, opted_in FROM subscriptions WHERE user_id = $1 ORDER BY topic")
                    .bind(user_id)
                    .fetch_all(&self.read)
                    .await?,
            ))
        }

        async fn messages(
            &self,
            app_id: &str,
            f: &$crate::store::MessageFilter<'_>,
        ) -> Result<Vec<$crate::store::MessageRecord>, $crate::store::StoreError> {
            use $crate::state::StateMachine;
            use $crate::store::segment::Bind;
            let mut binds = vec![Bind::Text(app_id.to_owned())];
            let mut sql = format!("{} WHERE d.app_id = $1", $crate::store::shared::MESSAGE_SELECT);
            let param = |b: Bind, binds: &mut Vec<Bind>| {
                binds.push(b);
                format!("${}", binds.len())
            };
            if let Some(user) = f.user_external_id {
                let p = param(Bind::Text(user.to_owned()), &mut binds);
                sql.push_str(&format!(" AND d.user_id = (SELECT id FROM users WHERE app_id = $1 AND external_id = {p})"));
            }
            if let Some(c) = f.campaign_id {
                sql.push_str(&format!(" AND d.campaign_id = {}", param(Bind::Int(c), &mut binds)));
            }
            if let Some(r) = f.request_id {
                sql.push_str(&format!(" AND d.request_id = {}", param(Bind::Text(r.to_owned()), &mut binds)));
            }
            if let Some(st) = f.status {
                sql.push_str(&format!(" AND d.status = {}", param(Bind::Text(st.as_str().to_owned()), &mut binds)));
            }
            if let Some(t) = f.since {
                sql.push_str(&format!(" AND d.created_at >= {}", param(Bind::Time(t), &mut binds)));
            }
            if let Some(id) = f.before_id {
                sql.push_str(&format!(" AND d.id < {}", param(Bind::Int(id), &mut binds)));
            }
            sql.push_str(&format!(" ORDER BY d.id DESC LIMIT {}", param(Bind::Int(f.limit), &mut binds)));
            let mut q = sqlx::query_as::<_, $crate::store::MessageRecord>(&sql);
            for b in binds {
                q = Self::bind_segment(q, b);
            }
            Ok(q.fetch_all(&self.read).await?)
        }

        async fn message(
            &self,
            app_id: &str,
            id: i64,
        ) -> Result<Option<($crate::store::MessageRecord, Vec<$crate::store::MessageEvent>)>, $crate::store::StoreError> {
            let sql = format!("{} WHERE d.id = $1 AND d.app_id = $2", $crate::store::shared::MESSAGE_SELECT);
            let record: Option<$crate::store::MessageRecord> = sqlx::query_as(&sql)
            .bind(id)
            .bind(app_id)
            .fetch_optional(&self.read)
            .await?;
            let Some(record) = record else { return Ok(None) };
            let events = sqlx::query_as(
                "SELECT status, attempt, detail, at FROM delivery_events WHERE delivery_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&self.read)
            .await?;
            Ok(Some((record, events)))
        }

        async fn record_receipt(
            &self,
            app_id: &str,
            id: i64,
            status: $crate::state::DeliveryStatus,
            events: bool,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<$crate::store::ReceiptOutcome, $crate::store::StoreError> {
            use $crate::state::{DeliveryStatus, StateMachine};
            let mut tx = self.begin_write().await?;
            let lock = format!("SELECT status FROM deliveries WHERE id = $1 AND app_id = $2{}", Self::FOR_UPDATE);
            let current: Option<String> = sqlx::query_scalar(&lock)
                .bind(id)
                .bind(app_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(current) = current else {
                return Err($crate::store::StoreError::NotFound { what: format!("message {id}") });
            };
            let current = DeliveryStatus::parse(&current)?;
            if current.check_transition(status).is_err() {
                return Ok($crate::store::ReceiptOutcome::Unchanged);
            }
            sqlx::query("UPDATE deliveries SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2")
                .bind(id)
                .bind(current.as_str())
                .bind(status.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            Self::insert_events(&mut tx, &[(id, status.as_str().to_owned(), 0, Some("receipt".to_owned()))], now).await?;
            if events {
                Self::outbox_deliveries(&mut tx, &[id], now).await?;
            }
            tx.commit().await?;
            Ok($crate::store::ReceiptOutcome::Recorded)
        }

        async fn queue_push(
            &self,
            p: &$crate::store::NewPush<'_>,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<$crate::store::PushQueued, $crate::store::StoreError> {
            let ids: Vec<serde_json::Value> = p
                .users
                .iter()
                .map(|(ext, phone)| serde_json::json!({"kind": "user", "ext": ext, "phone": phone}))
                .chain(p.install_ids.iter().map(|ext| serde_json::json!({"kind": "install", "ext": ext})))
                .enumerate()
                .map(|(ord, mut v)| {
                    v["ord"] = serde_json::json!(ord);
                    v
                })
                .collect();
            // Resolved on the read pool, before the write transaction: the one
            // SQLite writer is held only for the inserts.
            let matched: Vec<(i64, Option<i64>, Option<i64>)> =
                sqlx::query_as(&$crate::store::push::resolve_sql(Self::json_rows))
                    .bind(p.app_id)
                    .bind(Self::json_arg(serde_json::Value::from(ids)))
                    .fetch_all(&self.read)
                    .await?;
            let known: std::collections::HashSet<i64> = matched.iter().map(|m| m.0).collect();
            let unknown: Vec<String> = p
                .users
                .iter()
                .map(|(ext, _)| ext)
                .chain(p.install_ids.iter())
                .enumerate()
                .filter(|(ord, _)| !known.contains(&(*ord as i64)))
                .map(|(_, ext)| ext.clone())
                .collect();
            let users: std::collections::BTreeSet<i64> = matched.iter().filter_map(|m| m.1).collect();
            let devices: std::collections::BTreeSet<i64> = matched.iter().filter_map(|m| m.2).collect();
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO push_requests (id, app_id, topic, message, created_at, fallback, no_receipt_after_secs) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(p.request_id)
            .bind(p.app_id)
            .bind(p.topic.as_ref().map(|t| t.name))
            .bind(Self::json_arg(p.message.clone()))
            .bind(now)
            .bind(p.fallback)
            .bind(p.no_receipt_after.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
            .execute(&mut *tx)
            .await?;
            let insert = $crate::store::push::insert_sql(Self::json_rows, p.primary_only, p.topic.is_some());
            let as_rows = |ids: &std::collections::BTreeSet<i64>| {
                Self::json_arg(serde_json::Value::from(
                    ids.iter().map(|id| serde_json::json!({"id": id})).collect::<Vec<_>>(),
                ))
            };
            let queued: Vec<i64> = sqlx::query_scalar(&insert)
                .bind(p.app_id)
                .bind(p.request_id)
                .bind(p.priority)
                .bind(now)
                .bind(as_rows(&users))
                .bind(as_rows(&devices))
                .bind(p.topic.as_ref().map(|t| t.name))
                .bind(p.topic.as_ref().map(|t| t.default_subscribed))
                .fetch_all(&mut *tx)
                .await?;
            let no_device: Vec<i64> = sqlx::query_scalar(&$crate::store::push::no_device_sql(Self::json_rows))
                .bind(p.app_id)
                .bind(p.request_id)
                .bind(p.priority)
                .bind(now)
                .bind(as_rows(&users))
                .fetch_all(&mut *tx)
                .await?;
            if p.events {
                Self::outbox_deliveries(&mut tx, &queued, now).await?;
                Self::outbox_deliveries(&mut tx, &no_device, now).await?;
            }
            if p.fallback {
                // Users push cannot reach at all fall back at once.
                let sql = $crate::store::push::no_device_fallback_sql(Self::json_rows);
                sqlx::query(&sql)
                    .bind(p.app_id)
                    .bind(p.request_id)
                    .bind(now)
                    .bind(as_rows(&users))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok($crate::store::PushQueued { deliveries: queued.len() as u64, unknown })
        }

        async fn queue_depth(
            &self,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
            Ok(sqlx::query_as(
                "SELECT 'chunks_pending', COUNT(*) FROM slot_chunks WHERE state = 'pending' \
                 UNION ALL SELECT 'chunks_leased', COUNT(*) FROM slot_chunks WHERE state = 'leased' \
                 UNION ALL SELECT 'deliveries_queued', COUNT(*) FROM deliveries WHERE status = 'queued' \
                 UNION ALL SELECT 'deliveries_retry', COUNT(*) FROM deliveries WHERE status = 'retry' \
                 UNION ALL SELECT 'slots_due', COUNT(*) FROM slots WHERE state = 'pending' AND fire_at <= $1 \
                 UNION ALL SELECT 'webhook_events', COUNT(*) FROM webhook_outbox WHERE state <> 'dead' \
                 UNION ALL SELECT 'fallbacks', COUNT(*) FROM fallbacks WHERE state IN ('pending', 'leased')",
            )
            .bind(now)
            .fetch_all(&self.read)
            .await?)
        }

        async fn push_messages(
            &self,
            request_ids: &[String],
        ) -> Result<Vec<$crate::store::PushMessage>, $crate::store::StoreError> {
            if request_ids.is_empty() {
                return Ok(vec![]);
            }
            let sql = format!(
                "SELECT id, message, created_at FROM push_requests WHERE id IN (SELECT x.id FROM {})",
                Self::json_rows("$1", &[("id", "text")])
            );
            let ids: Vec<serde_json::Value> = request_ids.iter().map(|id| serde_json::json!({"id": id})).collect();
            Ok(sqlx::query_as(&sql)
                .bind(Self::json_arg(serde_json::Value::from(ids)))
                .fetch_all(&self.read)
                .await?)
        }

        async fn create_api_key(
            &self,
            key: &$crate::store::NewApiKey<'_>,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<i64, $crate::store::StoreError> {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO api_keys (app_id, name, prefix, key_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(key.app_id)
            .bind(key.name)
            .bind(key.prefix)
            .bind(key.hash)
            .bind(now)
            .fetch_optional(&self.write)
            .await?;
            id.ok_or_else(|| $crate::store::StoreError::Conflict { key: key.name.to_owned() })
        }

        async fn api_key_app(&self, hash: &str) -> Result<Option<String>, $crate::store::StoreError> {
            Ok(sqlx::query_scalar("SELECT app_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
                .bind(hash)
                .fetch_optional(&self.read)
                .await?)
        }

        async fn api_keys(&self, app_id: &str) -> Result<Vec<$crate::store::ApiKeyRecord>, $crate::store::StoreError> {
            Ok(sqlx::query_as(
                "SELECT id, app_id, name, prefix, created_at, revoked_at FROM api_keys WHERE app_id = $1 ORDER BY id",
            )
            .bind(app_id)
            .fetch_all(&self.read)
            .await?)
        }

        async fn revoke_api_key(
            &self,
            app_id: &str,
            name: &str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<bool, $crate::store::StoreError> {
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

        async fn audience_zones(
            &self,
            segment: &$crate::store::Segment<'_>,
        ) -> Result<Vec<$crate::planner::ZoneCount>, $crate::store::StoreError> {
            let (sql, binds) = $crate::store::segment::zone_counts_sql(self.kind(), segment);
            let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
            for b in binds {
                q = Self::bind_segment(q, b);
            }
            let rows = q.fetch_all(&self.read).await?;
            Ok(rows
                .into_iter()
                .map(|(zone, n)| $crate::planner::ZoneCount {
                    zone,
                    recipients: u64::try_from(n).unwrap_or(0),
                })
                .collect())
        }

        async fn save_campaign(
            &self,
            c: &$crate::store::CampaignSave<'_>,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<($crate::store::CampaignRecord, $crate::store::SaveOutcome), $crate::store::StoreError> {
            use $crate::state::{CampaignState, StateMachine};
            use $crate::store::{CampaignRecord, SaveOutcome, StoreError};
            let scheduled_at = (c.state == CampaignState::Scheduled).then_some(now);
            let mut tx = self.begin_write().await?;
            let select = format!(
                "SELECT {} FROM campaigns WHERE app_id = $1 AND key = $2{}",
                $crate::store::shared::CAMPAIGN_COLUMNS,
                Self::FOR_UPDATE
            );
            let existing: Option<CampaignRecord> = sqlx::query_as(&select)
                .bind(c.app_id)
                .bind(c.key)
                .fetch_optional(&mut *tx)
                .await?;
            let (id, outcome) = match existing {
                // Past the editable states the file's status is history, not a request.
                Some(e)
                    if e.definition.0 == *c.definition
                        && e.name == c.name
                        && (e.state == c.state || !e.state.is_editable()) =>
                {
                    tx.rollback().await?;
                    return Ok((e, SaveOutcome::Unchanged));
                }
                Some(e) if !e.state.is_editable() => {
                    return Err(StoreError::NotEditable {
                        key: c.key.to_owned(),
                        state: e.state,
                    })
                }
                Some(e) => {
                    e.state.check_transition(c.state).or_else(|err| {
                        if e.state == c.state { Ok(()) } else { Err(err) }
                    })?;
                    let done = sqlx::query(
                        "UPDATE campaigns SET name = $2, definition = $3, state = $4, revision = revision + 1, \
                         tzdata_version = $5, updated_at = $6, scheduled_at = $7 WHERE id = $1 AND state = $8",
                    )
                    .bind(e.id)
                    .bind(c.name)
                    .bind(sqlx::types::Json(c.definition))
                    .bind(c.state.as_str())
                    .bind(c.tzdata_version)
                    .bind(now)
                    .bind(scheduled_at)
                    .bind(e.state.as_str())
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err(StoreError::Conflict { key: c.key.to_owned() });
                    }
                    sqlx::query("DELETE FROM slots WHERE campaign_id = $1").bind(e.id).execute(&mut *tx).await?;
                    (e.id, SaveOutcome::Updated)
                }
                None => {
                    // Another caller creating the same key at the same moment wins
                    // the unique key; this one is told to try again, not a storage error.
                    let id: Option<i64> = sqlx::query_scalar(
                        "INSERT INTO campaigns (app_id, key, name, definition, state, tzdata_version, created_at, updated_at, scheduled_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT (app_id, key) DO NOTHING RETURNING id",
                    )
                    .bind(c.app_id)
                    .bind(c.key)
                    .bind(c.name)
                    .bind(sqlx::types::Json(c.definition))
                    .bind(c.state.as_str())
                    .bind(c.tzdata_version)
                    .bind(now)
                    .bind(scheduled_at)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(id) = id else {
                        return Err(StoreError::Conflict { key: c.key.to_owned() });
                    };
                    (id, SaveOutcome::Created)
                }
            };
            Self::insert_slots(&mut tx, id, c.slots, now).await?;
            let select = format!("SELECT {} FROM campaigns WHERE id = $1", $crate::store::shared::CAMPAIGN_COLUMNS);
            let record: CampaignRecord = sqlx::query_as(&select).bind(id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok((record, outcome))
        }

        async fn campaign(
            &self,
            app_id: &str,
            key: &str,
        ) -> Result<Option<$crate::store::CampaignRecord>, $crate::store::StoreError> {
            let sql = format!(
                "SELECT {} FROM campaigns WHERE app_id = $1 AND key = $2",
                $crate::store::shared::CAMPAIGN_COLUMNS
            );
            Ok(sqlx::query_as(&sql).bind(app_id).bind(key).fetch_optional(&self.read).await?)
        }

        async fn campaigns_by_key(&self, key: &str) -> Result<Vec<$crate::store::CampaignRecord>, $crate::store::StoreError> {
            let sql = format!(
                "SELECT {} FROM campaigns WHERE key = $1 ORDER BY app_id",
                $crate::store::shared::CAMPAIGN_COLUMNS
            );
            Ok(sqlx::query_as(&sql).bind(key).fetch_all(&self.read).await?)
        }

        async fn campaigns(&self, app_id: Option<&str>) -> Result<Vec<$crate::store::CampaignRecord>, $crate::store::StoreError> {
            let sql = format!(
                "SELECT {} FROM campaigns WHERE $1 IS NULL OR app_id = $1 ORDER BY app_id, key",
                $crate::store::shared::CAMPAIGN_COLUMNS
            );
            Ok(sqlx::query_as(&sql).bind(app_id).fetch_all(&self.read).await?)
        }

        async fn slots(&self, campaign_id: i64) -> Result<Vec<$crate::store::SlotRecord>, $crate::store::StoreError> {
            let sql = format!(
                "SELECT {} FROM slots WHERE campaign_id = $1 ORDER BY fire_at, zone",
                $crate::store::shared::SLOT_COLUMNS
            );
            Ok(sqlx::query_as(&sql).bind(campaign_id).fetch_all(&self.read).await?)
        }

        async fn set_campaign_state(
            &self,
            campaign_id: i64,
            from: $crate::state::CampaignState,
            to: $crate::state::CampaignState,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), $crate::store::StoreError> {
            use $crate::state::StateMachine;
            from.check_transition(to)?;
            let done = sqlx::query(
                "UPDATE campaigns SET state = $3, updated_at = $4, \
                 completed_at = CASE WHEN $3 = 'completed' THEN $4 ELSE completed_at END \
                 WHERE id = $1 AND state = $2",
            )
            .bind(campaign_id)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(now)
            .execute(&self.write)
            .await?;
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                Err($crate::store::StoreError::Conflict {
                    key: format!("#{campaign_id}"),
                })
            }
        }

        async fn campaign_transitions(&self) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
            Ok(sqlx::query_as("SELECT from_state, to_state FROM campaign_transitions ORDER BY from_state, to_state")
                .fetch_all(&self.read)
                .await?)
        }
    };
}

pub(super) use shared_store_methods;
