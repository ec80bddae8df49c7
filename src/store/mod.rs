//! Storage: one [`Store`], written once over a [`Dialect`] and run on SQLite or
//! Postgres.
//!
//! **Invariant:** only this module names sqlx. The SQL is shared text (`$N`
//! placeholders work on both backends); every difference between the backends
//! goes through [`Dialect`] (see its table). Methods are grouped by the
//! aggregate they change, one trait and one file each; [`Store`] is all of them.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::config::{DatabaseConfig, DatabaseKind};
use crate::domain::state::{CampaignState, StateError};

mod apps;
mod audience;
mod campaigns;
mod chunks;
mod deliveries;
pub mod dialect;
mod hooks;
mod idempotency;
mod ids;
mod messages;
mod operators;
mod postgres;
pub mod push;
mod release;
mod retention;
pub mod segment;
mod sql;
mod sqlite;

pub use apps::{ApiKeyRecord, AppOverview, AppRecord, AppStore, KeyOwner, NewApiKey};
pub use audience::{AudienceStore, DeviceRecord, DeviceUpsert, UserUpsert};
pub use campaigns::{
    CampaignFilter, CampaignRecord, CampaignSave, CampaignStore, NewSlot, SaveOutcome,
    SlotProgress, SlotRecord,
};
pub use chunks::{ChunkStore, ChunkWrite, LeasedChunk, Recipient};
pub use deliveries::{DeliveryStore, DeliveryUpdate, LeasedDelivery, NewDelivery, SlotMinuteCount};
pub use dialect::Dialect;
pub use hooks::{
    FallbackFinish, FallbackOutcome, HookStore, LeasedFallback, OutboxEvent, OutboxRetry,
};
pub use idempotency::{ClaimOutcome, ClaimTimes, IdempotencyKey, IdempotencyStore};
pub use messages::{
    DeliveryEvent, DeliveryFilter, DeliveryRecord, MessageStore, NewPush, PushMessage, PushQueued,
    Receipt, ReceiptOutcome,
};
pub use operators::{
    AuditEntry, NewOperator, NewSession, OperatorRecord, OperatorStore, SessionRecord,
};
pub use postgres::{PgDialect, PgStore};
pub use release::{
    CampaignSlot, ReleaseStore, Released, SlotCompletion, SlotRelease, StoredDefinition,
};
pub use retention::{RetentionKind, RetentionStore};
pub use segment::{Segment, TopicRule};
pub use sql::SqlStore;
pub use sqlite::{SqliteDialect, SqliteStore};

/// Why a store call failed. Callers tell the caller's fault (`Invalid`,
/// `NotFound`, the domain refusals) from the database's (`Database`,
/// `Migrate`) and from a bug (`Invariant`), which no input can cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached; trying again may help.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The TLS handshake with the database server failed; the message says why.
    #[error("database TLS: {0}")]
    Tls(String),
    /// The schema could not be brought up to date.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `database.url` cannot be used (its scheme, its directory).
    #[error("database.url: {0}")]
    Config(String),
    /// What the call named does not exist (or belongs to another app).
    #[error("{what} not found")]
    NotFound { what: String },
    /// A domain refusal: the campaign is past the states that can be edited.
    #[error("campaign {key:?} is {state}: it can no longer be edited")]
    NotEditable { key: String, state: CampaignState },
    /// Another writer changed it first; the call may be repeated.
    #[error("campaign {key:?} changed concurrently; try again")]
    Conflict { key: String },
    /// A state change its machine does not allow.
    #[error(transparent)]
    State(#[from] StateError),
    /// The caller's input is unacceptable; the message names what.
    #[error("{0}")]
    Invalid(String),
    /// The lease was taken over (it expired) or released: the write-back is refused.
    #[error("lease lost on {what}")]
    LeaseLost { what: String },
    /// What the database holds, or what the code handed the store, breaks an
    /// invariant: a bug or a hand-edited database, never the caller's input.
    #[error("broken invariant: {0}")]
    Invariant(String),
}

/// Everything the rest of Meridian asks of the database: its lifecycle here,
/// the rest by aggregate.
///
/// Methods return `Send` futures so callers may spawn them; each implementation
/// writes them as plain `async fn`.
pub trait Store:
    AppStore
    + AudienceStore
    + CampaignStore
    + ReleaseStore
    + ChunkStore
    + DeliveryStore
    + MessageStore
    + IdempotencyStore
    + HookStore
    + OperatorStore
    + RetentionStore
    + Send
    + Sync
    + 'static
{
    fn kind(&self) -> DatabaseKind;

    /// Applies pending migrations.
    fn migrate(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// What a worker asks for when it leases work, the same for every queue: who
/// it is, until when the lease holds, and how many items at most. Each leased
/// item comes back carrying its [`Lease`].
#[derive(Debug, Clone, Copy)]
pub struct LeaseTerms<'a> {
    pub owner: &'a str,
    pub until: DateTime<Utc>,
    pub limit: i64,
}

/// The lease a leased item (chunk, delivery row, webhook event, fallback) is
/// held under, carried by the item so a write-back needs nothing else. Every
/// write-back is fenced by `owner` and `attempt`: one whose lease lapsed and
/// was taken over (a higher attempt) or released is `StoreError::LeaseLost`,
/// never zero rows ignored. Read from the columns `lease_owner`,
/// `lease_attempt` (each table's attempt counter, aliased) and `lease_expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Lease {
    #[sqlx(rename = "lease_owner")]
    pub owner: String,
    /// Counts every lease of the item, the first one 1: a retake increments it.
    #[sqlx(rename = "lease_attempt")]
    pub attempt: i32,
    /// When the lease ends as taken; an extension moves it in the database only.
    #[sqlx(rename = "lease_expires_at")]
    pub until: DateTime<Utc>,
}

/// A store of either kind, chosen by the configured URL.
pub enum AnyStore {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl AnyStore {
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let kind = cfg.kind().map_err(|e| StoreError::Config(e.to_string()))?;
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

/// The store's traits, for code that calls a concrete store's methods.
pub mod prelude {
    pub use super::{
        AppStore, AudienceStore, CampaignStore, ChunkStore, DeliveryStore, HookStore,
        IdempotencyStore, MessageStore, OperatorStore, ReleaseStore, RetentionStore, Store,
    };
}
