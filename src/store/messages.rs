//! Messages as the API shows them, their history and receipts, and pushes queued by partners.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect};
use super::segment::TopicRule;
use super::sql::SqlStore;
use super::StoreError;
use crate::domain::ids::DeliveryId;

/// A message as the API shows it. No foreign keys on deliveries (see 0004): user
/// and device are left joins.
pub(super) const MESSAGE_SELECT: &str =
    "SELECT d.id, d.campaign_id, d.request_id, u.external_id AS user_external_id, v.token, v.platform, \
       d.status, d.attempts, d.provider_id, d.error_reason, d.created_at, d.updated_at, d.sent_at \
     FROM deliveries d LEFT JOIN users u ON u.id = d.user_id LEFT JOIN devices v ON v.id = d.device_id";

/// A receipt the app reported for one of its messages.
#[derive(Debug, Clone, Copy)]
pub struct Receipt<'a> {
    pub app_id: &'a str,
    /// The delivery's id (the message id the payload carried).
    pub id: i64,
    pub status: crate::domain::state::DeliveryStatus,
    /// The button the user tapped (an `opened` receipt), kept in the history.
    pub action: Option<&'a str>,
    /// The app has a status webhook: the change also goes to its outbox.
    pub webhook: bool,
}

/// One message (delivery) as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub id: i64,
    pub campaign_id: Option<i64>,
    pub request_id: Option<String>,
    pub user_external_id: Option<String>,
    pub token: Option<String>,
    pub platform: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub provider_id: Option<String>,
    pub error_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// A transactional push to queue (`POST /v1/push`).
#[derive(Debug, Clone)]
pub struct NewPush<'a> {
    pub app_id: &'a str,
    pub request_id: &'a str,
    /// The message as `campaign::Message` serializes it.
    pub message: &'a serde_json::Value,
    /// External ids, each with the phone number it is tried as when no external id
    /// matches (ids of digits only).
    pub users: &'a [(String, Option<String>)],
    pub install_ids: &'a [String],
    /// Only users this topic reaches (opted in, or not opted out of a default one).
    pub topic: Option<TopicRule<'a>>,
    /// One device per user: the primary one, else the most recently registered.
    pub primary_only: bool,
    /// Leased ahead of lower priorities (campaign retries are 0).
    pub priority: i16,
    /// The app has a status webhook: the queued messages go to its outbox.
    pub webhook: bool,
    /// A fallback channel applies: users with no active device get a fallback now,
    /// and the sweep watches the others' deliveries.
    pub fallback: bool,
    /// Also fall back when a sent push has no receipt this long after it was sent.
    pub no_receipt_after: Option<std::time::Duration>,
}

/// What `queue_push` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushQueued {
    /// Deliveries queued (one per device).
    pub deliveries: u64,
    /// Ids, in request order, that matched no user or install.
    pub unknown: Vec<String>,
}

/// A transactional push's stored message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PushMessage {
    pub id: String,
    pub message: sqlx::types::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// Which of an app's messages to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter<'a> {
    pub user_external_id: Option<&'a str>,
    pub campaign_id: Option<i64>,
    pub request_id: Option<&'a str>,
    pub status: Option<crate::domain::state::DeliveryStatus>,
    pub since: Option<DateTime<Utc>>,
    /// Only messages with a smaller id (the cursor of the previous page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// One recorded status change of a message.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryEvent {
    pub status: String,
    pub attempt: i32,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// What a receipt did to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// The status moved forward and the history has a new step.
    Recorded,
    /// Nothing changed: the message is already there or further (receipts can
    /// arrive twice or out of order).
    Unchanged,
}

pub trait MessageStore: Send + Sync {
    /// One of an app's messages with its recorded events, oldest first.
    fn message_get(
        &self,
        app_id: &str,
        id: i64,
    ) -> impl Future<Output = Result<Option<(DeliveryRecord, Vec<DeliveryEvent>)>, StoreError>> + Send;

    /// A page of an app's messages, newest first.
    fn message_list(
        &self,
        app_id: &str,
        filter: &DeliveryFilter<'_>,
    ) -> impl Future<Output = Result<Vec<DeliveryRecord>, StoreError>> + Send;

    /// A receipt from the app (`delivered`, `opened`, `dismissed`) for one of its
    /// messages: moves the status forward along the delivery state machine and
    /// appends the step to the history. `NotFound` for another app's message.
    fn receipt_record(
        &self,
        receipt: &Receipt<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ReceiptOutcome, StoreError>> + Send;

    /// The app a message belongs to: whose key checks a receipt token posted
    /// without an API key.
    fn message_app_get(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Queues a transactional push: stores its message and one `queued` delivery
    /// per reachable device, in one transaction, so a request is all or nothing.
    fn push_queue(
        &self,
        push: &NewPush<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PushQueued, StoreError>> + Send;

    /// Work waiting, by kind (for the `meridian_queue_depth` gauge): chunks
    /// pending and leased, delivery rows queued and waiting to retry, slots due,
    /// webhook events and fallbacks not yet delivered.
    fn push_queue_depth(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;

    /// The stored messages of transactional pushes: (request id, message, created at).
    fn push_message_list(
        &self,
        request_ids: &[String],
    ) -> impl Future<Output = Result<Vec<PushMessage>, StoreError>> + Send;
}

impl<D: Dialect> MessageStore for SqlStore<D>
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
    async fn message_get(
        &self,
        app_id: &str,
        id: i64,
    ) -> Result<Option<(super::DeliveryRecord, Vec<super::DeliveryEvent>)>, StoreError> {
        let sql = format!("{} WHERE d.id = $1 AND d.app_id = $2", MESSAGE_SELECT);
        let record: Option<super::DeliveryRecord> = sqlx::query_as(&sql)
            .bind(id)
            .bind(app_id)
            .fetch_optional(&self.read)
            .await?;
        let Some(record) = record else {
            return Ok(None);
        };
        let events = sqlx::query_as(
            "SELECT status, attempt, detail, at FROM delivery_events WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        Ok(Some((record, events)))
    }

    async fn message_list(
        &self,
        app_id: &str,
        f: &super::DeliveryFilter<'_>,
    ) -> Result<Vec<super::DeliveryRecord>, StoreError> {
        use super::segment::Bind;
        use crate::domain::state::StateMachine;
        let mut binds = vec![Bind::Text(app_id.to_owned())];
        let mut sql = format!("{} WHERE d.app_id = $1", MESSAGE_SELECT);
        let param = |b: Bind, binds: &mut Vec<Bind>| {
            binds.push(b);
            format!("${}", binds.len())
        };
        if let Some(user) = f.user_external_id {
            let p = param(Bind::Text(user.to_owned()), &mut binds);
            // Through every device the user has had (`device_users`, then
            // `deliveries_by_device`, as frequency caps read it), and the user's
            // `no_device` messages by user: no index on deliveries is keyed by
            // user alone (0019).
            let user = format!("(SELECT id FROM users WHERE app_id = $1 AND external_id = {p})");
            sql.push_str(&format!(
                " AND d.id IN (\
                   SELECT x.id FROM deliveries x \
                   WHERE x.device_id IN (SELECT du.device_id FROM device_users du WHERE du.user_id = {user}) \
                     AND x.user_id = {user} \
                   UNION ALL \
                   SELECT x.id FROM deliveries x WHERE x.device_id IS NULL AND x.user_id = {user})"
            ));
        }
        if let Some(c) = f.campaign_id {
            sql.push_str(&format!(
                " AND d.campaign_id = {}",
                param(Bind::Int(c), &mut binds)
            ));
        }
        if let Some(r) = f.request_id {
            sql.push_str(&format!(
                " AND d.request_id = {}",
                param(Bind::Text(r.to_owned()), &mut binds)
            ));
        }
        if let Some(st) = f.status {
            sql.push_str(&format!(
                " AND d.status = {}",
                param(Bind::Text(st.as_str().to_owned()), &mut binds)
            ));
        }
        if let Some(t) = f.since {
            sql.push_str(&format!(
                " AND d.created_at >= {}",
                param(Bind::Time(t), &mut binds)
            ));
        }
        if let Some(id) = f.before_id {
            sql.push_str(&format!(" AND d.id < {}", param(Bind::Int(id), &mut binds)));
        }
        sql.push_str(&format!(
            " ORDER BY d.id DESC LIMIT {}",
            param(Bind::Int(f.limit), &mut binds)
        ));
        let mut q = sqlx::query_as::<_, super::DeliveryRecord>(&sql);
        for b in binds {
            q = Self::bind_segment(q, b);
        }
        Ok(q.fetch_all(&self.read).await?)
    }

    async fn message_app_get(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT app_id FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    async fn receipt_record(
        &self,
        receipt: &Receipt<'_>,
        now: DateTime<Utc>,
    ) -> Result<super::ReceiptOutcome, StoreError> {
        let Receipt {
            app_id,
            id,
            status,
            action,
            webhook,
        } = *receipt;
        use crate::domain::state::{DeliveryStatus, StateMachine};
        let mut tx = self.begin_write().await?;
        let lock = format!(
            "SELECT status FROM deliveries WHERE id = $1 AND app_id = $2{}",
            D::FOR_UPDATE
        );
        let current: Option<String> = sqlx::query_scalar(&lock)
            .bind(id)
            .bind(app_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = current else {
            return Err(StoreError::NotFound {
                what: format!("message {id}"),
            });
        };
        let current = DeliveryStatus::parse(&current)?;
        if current.check_transition(status).is_err() {
            return Ok(super::ReceiptOutcome::Unchanged);
        }
        sqlx::query(
            "UPDATE deliveries SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2",
        )
        .bind(id)
        .bind(current.as_str())
        .bind(status.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Self::insert_events(
            &mut tx,
            &[(
                DeliveryId::new(id),
                status.as_str().to_owned(),
                0,
                Some(match action {
                    Some(button) => format!("receipt: button {button}"),
                    None => "receipt".to_owned(),
                }),
            )],
            now,
        )
        .await?;
        if webhook {
            Self::outbox_deliveries(&mut tx, &[DeliveryId::new(id)], now).await?;
        }
        tx.commit().await?;
        Ok(super::ReceiptOutcome::Recorded)
    }

    async fn push_queue(
        &self,
        p: &super::NewPush<'_>,
        now: DateTime<Utc>,
    ) -> Result<super::PushQueued, StoreError> {
        let ids: Vec<serde_json::Value> = p
            .users
            .iter()
            .map(|(ext, phone)| serde_json::json!({"kind": "user", "ext": ext, "phone": phone}))
            .chain(
                p.install_ids
                    .iter()
                    .map(|ext| serde_json::json!({"kind": "install", "ext": ext})),
            )
            .enumerate()
            .map(|(ord, mut v)| {
                v["ord"] = serde_json::json!(ord);
                v
            })
            .collect();
        // Resolved on the read pool, before the write transaction: the one
        // SQLite writer is held only for the inserts.
        let matched: Vec<(i64, Option<i64>, Option<i64>)> =
            sqlx::query_as(&super::push::resolve_sql(D::json_rows))
                .bind(p.app_id)
                .bind(D::json(serde_json::Value::from(ids)))
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
        .bind(D::json(p.message.clone()))
        .bind(now)
        .bind(p.fallback)
        .bind(p.no_receipt_after.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
        .execute(&mut *tx)
        .await?;
        let insert = super::push::insert_sql(D::json_rows, p.primary_only, p.topic.is_some());
        let as_rows = |ids: &std::collections::BTreeSet<i64>| {
            D::json(serde_json::Value::from(
                ids.iter()
                    .map(|id| serde_json::json!({"id": id}))
                    .collect::<Vec<_>>(),
            ))
        };
        let queued: Vec<DeliveryId> = sqlx::query_scalar(&insert)
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
        let no_device: Vec<DeliveryId> =
            sqlx::query_scalar(&super::push::no_device_sql(D::json_rows))
                .bind(p.app_id)
                .bind(p.request_id)
                .bind(p.priority)
                .bind(now)
                .bind(as_rows(&users))
                .fetch_all(&mut *tx)
                .await?;
        if p.webhook {
            Self::outbox_deliveries(&mut tx, &queued, now).await?;
            Self::outbox_deliveries(&mut tx, &no_device, now).await?;
        }
        if p.fallback {
            // Users push cannot reach at all fall back at once.
            let sql = super::push::no_device_fallback_sql(D::json_rows);
            sqlx::query(&sql)
                .bind(p.app_id)
                .bind(p.request_id)
                .bind(now)
                .bind(as_rows(&users))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(super::PushQueued {
            deliveries: queued.len() as u64,
            unknown,
        })
    }

    async fn push_queue_depth(&self, now: DateTime<Utc>) -> Result<Vec<(String, i64)>, StoreError> {
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

    async fn push_message_list(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<super::PushMessage>, StoreError> {
        if request_ids.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT id, message, created_at FROM push_requests WHERE id IN (SELECT x.id FROM {})",
            D::json_rows("$1", &[("id", "text")])
        );
        let ids: Vec<serde_json::Value> = request_ids
            .iter()
            .map(|id| serde_json::json!({"id": id}))
            .collect();
        Ok(sqlx::query_as(&sql)
            .bind(D::json(serde_json::Value::from(ids)))
            .fetch_all(&self.read)
            .await?)
    }
}
