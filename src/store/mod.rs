//! Storage: one [`Store`] API, implemented for Postgres and for SQLite.
//!
//! **Invariant:** only this module names sqlx. SQL is shared text wherever the
//! dialects agree (`$N` placeholders work on both); each backend adds only what
//! differs (JSON row sources, locking, list parameters).

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use crate::campaign::Platform;
use crate::config::{DatabaseConfig, DatabaseKind};
use crate::planner::{Disposition, ZoneCount};
use crate::state::{CampaignState, DeviceState, SlotState, StateError};

mod api;
pub mod dispatch;
pub(crate) mod hooks;
mod postgres;
pub mod push;
pub mod segment;
mod shared;
mod sqlite;

pub use api::{CampaignFilter, ClaimOutcome, ClaimTimes, IdempotencyKey};
pub use dispatch::{
    ChunkWrite, DeliveryUpdate, DueSlot, LeasedChunk, LeasedDelivery, NewDelivery, Recipient,
    Released, SlotCompletion, SlotInfo,
};
pub use hooks::{FallbackOutcome, LeasedFallback, OutboxEvent};
pub use postgres::PgStore;
pub use segment::{Segment, TopicRule};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("campaign {key:?} is {state}: it can no longer be edited")]
    NotEditable { key: String, state: CampaignState },
    #[error("campaign {key:?} changed concurrently; try again")]
    Conflict { key: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Invalid(String),
    /// The lease was taken over (it expired) or released: the write-back is refused.
    #[error("lease lost on {what}")]
    LeaseLost { what: String },
}

/// An API key to store: the secret itself never reaches the database.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub app_id: &'a str,
    pub name: &'a str,
    pub prefix: &'a str,
    pub hash: &'a str,
}

/// A stored API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub app_id: String,
    pub name: String,
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

impl UserUpsert<'_> {
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
    pub platform: String,
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

/// A slot as planned, to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSlot {
    pub occurrence: String,
    pub zone: String,
    pub fire_at: DateTime<Utc>,
    pub disposition: Disposition,
    pub planned_count: u64,
}

impl NewSlot {
    /// The slots as a JSON array for one set-based INSERT; `time` writes `fire_at`
    /// the way the backend compares it.
    fn json_rows(slots: &[NewSlot], time: impl Fn(&NewSlot) -> Value) -> Value {
        slots
            .iter()
            .map(|s| {
                serde_json::json!({
                    "occurrence": s.occurrence, "zone": s.zone, "fire_at": time(s),
                    "disposition": s.disposition.as_str(), "state": s.state().to_string(),
                    "planned_count": s.planned_count,
                })
            })
            .collect()
    }

    fn state(&self) -> SlotState {
        if self.disposition == Disposition::Skipped {
            SlotState::Skipped
        } else {
            SlotState::Pending
        }
    }
}

/// A campaign definition to create or replace, with its plan when scheduled.
#[derive(Debug, Clone)]
pub struct CampaignSave<'a> {
    pub app_id: &'a str,
    pub key: &'a str,
    pub name: &'a str,
    pub definition: &'a Value,
    /// `Draft` or `Scheduled`.
    pub state: CampaignState,
    pub slots: &'a [NewSlot],
    pub tzdata_version: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CampaignRecord {
    pub id: i64,
    pub app_id: String,
    pub key: String,
    pub name: String,
    pub definition: Json<Value>,
    #[sqlx(try_from = "String")]
    pub state: CampaignState,
    pub revision: i32,
    pub tzdata_version: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlotRecord {
    pub id: i64,
    pub campaign_id: i64,
    pub occurrence: String,
    pub zone: String,
    pub fire_at: DateTime<Utc>,
    pub disposition: String,
    #[sqlx(try_from = "String")]
    pub state: SlotState,
    pub planned_count: i64,
    pub released_at: Option<DateTime<Utc>>,
    /// When the slot's first send left (its lag is this minus `fire_at`).
    pub first_sent_at: Option<DateTime<Utc>>,
}

/// Everything the rest of Meridian asks of the database.
///
/// Methods return `Send` futures so callers may spawn them; each implementation
/// writes them as plain `async fn`.
pub trait Store: Send + Sync + 'static {
    fn kind(&self) -> DatabaseKind;

    /// Applies pending migrations.
    fn migrate(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Creates or updates a configured app.
    fn sync_app(
        &self,
        app: &AppRecord,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn upsert_user(
        &self,
        user: &UserUpsert<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Creates or updates many users in one transaction of a few set-based
    /// statements, each as [`Store::upsert_user`] would (a user listed twice as if
    /// its rows came one after the other). Returns how many rows were given.
    fn upsert_users(
        &self,
        users: &[UserUpsert<'_>],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn upsert_device(
        &self,
        device: &DeviceUpsert<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<DeviceRecord, StoreError>> + Send;

    fn device_by_token(
        &self,
        app_id: &str,
        token: &str,
    ) -> impl Future<Output = Result<Option<DeviceRecord>, StoreError>> + Send;

    /// Marks a token dead so no later campaign uses it. False if it was already invalid.
    fn invalidate_device(
        &self,
        device_id: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a user's choice for topics; the user must exist.
    fn set_subscriptions(
        &self,
        app_id: &str,
        external_id: &str,
        choices: &[(&str, bool)],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A user's explicit topic choices, by topic; `None` when the user does not exist.
    fn subscriptions(
        &self,
        app_id: &str,
        external_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<(String, bool)>>, StoreError>> + Send;

    /// Stores a new API key (its hash); a key of the same name, even revoked, is a conflict.
    fn create_api_key(
        &self,
        key: &NewApiKey<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The app a live key (by hash) belongs to.
    fn api_key_app(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// An app's keys, live and revoked, oldest first.
    fn api_keys(
        &self,
        app_id: &str,
    ) -> impl Future<Output = Result<Vec<ApiKeyRecord>, StoreError>> + Send;

    /// Revokes an app's live key by name; false when there is none.
    fn revoke_api_key(
        &self,
        app_id: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Recipients of the segment per zone.
    fn audience_zones(
        &self,
        segment: &Segment<'_>,
    ) -> impl Future<Output = Result<Vec<ZoneCount>, StoreError>> + Send;

    /// Creates or replaces a campaign and its planned slots in one transaction.
    /// Refuses a campaign that is no longer editable; a definition and state equal
    /// to what is stored changes nothing.
    fn save_campaign(
        &self,
        campaign: &CampaignSave<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(CampaignRecord, SaveOutcome), StoreError>> + Send;

    fn campaign(
        &self,
        app_id: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<CampaignRecord>, StoreError>> + Send;

    /// Campaigns with this key in any app (a key is unique per app).
    fn campaigns_by_key(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Vec<CampaignRecord>, StoreError>> + Send;

    fn campaigns(
        &self,
        app_id: Option<&str>,
    ) -> impl Future<Output = Result<Vec<CampaignRecord>, StoreError>> + Send;

    fn slots(
        &self,
        campaign_id: i64,
    ) -> impl Future<Output = Result<Vec<SlotRecord>, StoreError>> + Send;

    /// Moves a campaign from `from` to `to`, fenced by `from`.
    fn set_campaign_state(
        &self,
        campaign_id: i64,
        from: CampaignState,
        to: CampaignState,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The campaign state machine as the database enforces it.
    fn campaign_transitions(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;

    // ---- the API's campaign routes (src/store/api.rs) ----

    /// One of an app's campaigns by id; `None` for an unknown id or another app's.
    fn campaign_by_id(
        &self,
        app_id: &str,
        id: i64,
    ) -> impl Future<Output = Result<Option<CampaignRecord>, StoreError>> + Send;

    /// A page of an app's campaigns, newest first.
    fn campaign_page(
        &self,
        app_id: &str,
        filter: &CampaignFilter,
    ) -> impl Future<Output = Result<Vec<CampaignRecord>, StoreError>> + Send;

    /// Claims an idempotency key for a request (dropping the app's expired keys),
    /// or says what became of an earlier request with that key.
    fn claim_idempotency_key(
        &self,
        key: &IdempotencyKey<'_>,
        times: ClaimTimes,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;

    /// Keeps a claimed key's successful answer for replay.
    fn finish_idempotency_key(
        &self,
        key: &IdempotencyKey<'_>,
        status: u16,
        response: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Drops an unfinished claim (its request failed), so a retry runs again.
    fn release_idempotency_key(
        &self,
        key: &IdempotencyKey<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    // ---- the engine (src/store/dispatch.rs) ----

    /// Pending slots due at `now` of scheduled or running campaigns, oldest first.
    fn due_slots(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<DueSlot>, StoreError>> + Send;

    /// The earliest `fire_at` of a pending slot (to sleep until).
    fn next_due_at(&self)
        -> impl Future<Output = Result<Option<DateTime<Utc>>, StoreError>> + Send;

    /// Releases a slot if it is still pending (one instance wins): splits its
    /// audience into chunks of `chunk_size` device ids and moves the campaign to
    /// running. `None` when another worker released it first.
    fn release_slot(
        &self,
        slot: &DueSlot,
        segment: &Segment<'_>,
        chunk_size: i64,
        worker: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Released>, StoreError>> + Send;

    /// Releases due slots of one campaign occurrence together, in one transaction
    /// with a few set-based statements however many zones: the slots this instance
    /// wins, each with its counts and the number of chunks that hold its recipients.
    /// The chunks are key ranges over all the won zones together, owned by the
    /// first won slot (`released_with`).
    fn release_slots(
        &self,
        slots: &[DueSlot],
        segment: &Segment<'_>,
        chunk_size: i64,
        worker: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(i64, Released)>, StoreError>> + Send;

    /// Leases up to `limit` chunks of running campaigns: pending ones and ones whose
    /// lease expired (their owner died), each with its attempt incremented.
    fn lease_chunks(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<LeasedChunk>, StoreError>> + Send;

    fn extend_chunk_lease(
        &self,
        chunk: &LeasedChunk,
        worker: &str,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn slot_info(
        &self,
        slot_id: i64,
    ) -> impl Future<Output = Result<Option<SlotInfo>, StoreError>> + Send;

    /// The chunk's recipients not yet served for the slot's occurrence, over every
    /// zone released with the chunk's slot (`slot` is that slot), each with the slot
    /// of its zone and the frequency cap that holds it back at `now`, if any.
    fn chunk_recipients(
        &self,
        chunk: &LeasedChunk,
        slot: &SlotInfo,
        segment: &Segment<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Recipient>, StoreError>> + Send;

    /// `n` delivery ids no row has and no later insert will take: a campaign's
    /// deliveries are written after their send, and each notification carries
    /// its delivery's id, so the ids are drawn before sending.
    fn reserve_delivery_ids(
        &self,
        n: usize,
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// Writes a batch of first outcomes as delivery rows (and the history of the
    /// ones not sent, and dead tokens), only while the chunk's lease holds.
    fn record_chunk(
        &self,
        write: &ChunkWrite<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Notes that a send of each slot left at its time (the earliest one is kept):
    /// a slot's scheduler lag is `first_sent_at - fire_at`.
    fn note_slots_sending(
        &self,
        first_sends: &[(i64, DateTime<Utc>)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks a leased chunk done, fenced by owner and attempt: `LeaseLost` when
    /// another worker has taken it over.
    fn finish_chunk(
        &self,
        chunk: &LeasedChunk,
        worker: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives a leased chunk back unfinished (graceful shutdown, a failed pass),
    /// fenced like `finish_chunk`.
    fn return_chunk(
        &self,
        chunk: &LeasedChunk,
        worker: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Leases delivery rows due for an attempt (retries, queued transactional
    /// pushes) and rows whose lease expired, highest priority first.
    fn lease_deliveries(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<LeasedDelivery>, StoreError>> + Send;

    /// Writes attempts' outcomes in one statement, fenced by worker and attempt;
    /// returns how many rows were still ours.
    fn record_deliveries(
        &self,
        worker: &str,
        updates: &[DeliveryUpdate],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Released slots with no chunk and no delivery left pending: (slot id,
    /// campaign id). Reads only.
    fn completable_slots(&self)
        -> impl Future<Output = Result<Vec<(i64, i64)>, StoreError>> + Send;

    /// Completes those of `slots` that are still completable and, in the same
    /// transaction, adds each one's next occurrence: a crash cannot complete a
    /// recurring campaign's slot without planning its zone's next one. Returns
    /// the slots completed (slot id, campaign id).
    fn complete_slots(
        &self,
        slots: &[SlotCompletion],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(i64, i64)>, StoreError>> + Send;

    /// Completes running campaigns with no slot and no delivery left pending.
    fn complete_campaigns(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// Cancels a campaign: pending slots, chunks and retries become cancelled
    /// (with history); sends in flight finish. Returns the deliveries cancelled.
    fn cancel_campaign(
        &self,
        campaign_id: i64,
        from: CampaignState,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Per-slot counts: (slot id, kind, n), where kind is `recipients` or
    /// `excluded:<reason>`: opted_out, segment, invalid_token, no_device (counted at
    /// release) and capped (suppressed deliveries, counted as they are decided).
    fn slot_counts(
        &self,
        campaign_id: i64,
    ) -> impl Future<Output = Result<Vec<(i64, String, i64)>, StoreError>> + Send;

    /// Deliveries of a campaign by slot and status: (slot id, status, count).
    fn slot_delivery_counts(
        &self,
        campaign_id: i64,
    ) -> impl Future<Output = Result<Vec<(i64, String, i64)>, StoreError>> + Send;

    /// Deliveries of a campaign by status.
    fn delivery_counts(
        &self,
        campaign_id: i64,
    ) -> impl Future<Output = Result<std::collections::BTreeMap<String, i64>, StoreError>> + Send;

    /// One of an app's messages with its recorded events, oldest first.
    fn message(
        &self,
        app_id: &str,
        id: i64,
    ) -> impl Future<Output = Result<Option<(MessageRecord, Vec<MessageEvent>)>, StoreError>> + Send;

    /// A page of an app's messages, newest first.
    fn messages(
        &self,
        app_id: &str,
        filter: &MessageFilter<'_>,
    ) -> impl Future<Output = Result<Vec<MessageRecord>, StoreError>> + Send;

    /// A receipt from the app (`delivered`, `opened`, `dismissed`) for one of its
    /// messages: moves the status forward along the delivery state machine and
    /// appends the step to the history. `NotFound` for another app's message.
    fn record_receipt(
        &self,
        app_id: &str,
        id: i64,
        status: crate::state::DeliveryStatus,
        events: bool,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ReceiptOutcome, StoreError>> + Send;

    /// Queues a transactional push: stores its message and one `queued` delivery
    /// per reachable device, in one transaction, so a request is all or nothing.
    fn queue_push(
        &self,
        push: &NewPush<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PushQueued, StoreError>> + Send;

    /// Leases the oldest status changes waiting for the app's webhook.
    fn lease_outbox(
        &self,
        app_id: &str,
        worker: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<OutboxEvent>, StoreError>> + Send;

    /// Removes status changes the webhook took, fenced by the batch's lease:
    /// `worker` and the `attempts` it was leased with (`LeaseLost` otherwise).
    fn ack_outbox(
        &self,
        worker: &str,
        ids: &[i64],
        attempts: i32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Puts status changes the webhook refused back for a later attempt, or marks
    /// them dead after `max_attempts`.
    fn retry_outbox(
        &self,
        worker: &str,
        ids: &[i64],
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
        max_attempts: i32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Queues a fallback for each user of a push (queued since `since`) that
    /// push did not reach: every delivery final and none sent, or sent with no
    /// receipt within the push's receipt timeout. Returns how many were queued.
    fn sweep_fallbacks(
        &self,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn lease_fallbacks(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<LeasedFallback>, StoreError>> + Send;

    /// Writes a fallback attempt's outcome, fenced by worker and attempt; a final
    /// one becomes a step in the history of the user's messages of the push.
    /// `LeaseLost` when another worker has taken the fallback over.
    fn finish_fallback(
        &self,
        fallback: &LeasedFallback,
        worker: &str,
        outcome: &FallbackOutcome,
        events: bool,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Work waiting, by kind (for the `meridian_queue_depth` gauge): chunks
    /// pending and leased, delivery rows queued and waiting to retry, slots due,
    /// webhook events and fallbacks not yet delivered.
    fn queue_depth(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;

    /// The stored messages of transactional pushes: (request id, message, created at).
    fn push_messages(
        &self,
        request_ids: &[String],
    ) -> impl Future<Output = Result<Vec<PushMessage>, StoreError>> + Send;
}

/// One message (delivery) as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MessageRecord {
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
    pub events: bool,
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
pub struct MessageFilter<'a> {
    pub user_external_id: Option<&'a str>,
    pub campaign_id: Option<i64>,
    pub request_id: Option<&'a str>,
    pub status: Option<crate::state::DeliveryStatus>,
    pub since: Option<DateTime<Utc>>,
    /// Only messages with a smaller id (the cursor of the previous page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// One recorded status change of a message.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MessageEvent {
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

/// A store of either kind, chosen by the configured URL.
pub enum AnyStore {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl AnyStore {
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let kind = cfg.kind().map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(match kind {
            DatabaseKind::Postgres => Self::Postgres(PgStore::connect(cfg).await?),
            DatabaseKind::Sqlite => Self::Sqlite(SqliteStore::connect(cfg).await?),
        })
    }
}

/// Calls `$body` with `$s` bound to the concrete store, so callers stay generic.
#[macro_export]
macro_rules! with_store {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            $crate::store::AnyStore::Postgres($s) => $body,
            $crate::store::AnyStore::Sqlite($s) => $body,
        }
    };
}
