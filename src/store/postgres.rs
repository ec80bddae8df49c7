//! The Postgres store: for scale and for several instances sharing one database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgPoolOptions};
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres, Transaction};

use super::segment::Bind;
use super::shared::shared_store_methods;
use super::{NewSlot, Store, StoreError};
use crate::config::{DatabaseConfig, DatabaseKind};

#[derive(Debug, Clone)]
pub struct PgStore {
    /// Postgres needs no separate writer: both names share one pool.
    write: PgPool,
    read: PgPool,
}

impl PgStore {
    const FOR_UPDATE: &'static str = " FOR UPDATE";

    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&cfg.url)
            .await?;
        Ok(Self {
            write: pool.clone(),
            read: pool,
        })
    }

    /// Wraps an existing pool (tests and benchmarks).
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            write: pool.clone(),
            read: pool,
        }
    }

    fn bind_segment<'q, O>(
        q: QueryAs<'q, Postgres, O, PgArguments>,
        b: Bind,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        match b {
            Bind::Text(s) => q.bind(s),
            Bind::TextList(v) => q.bind(v),
        }
    }

    async fn insert_slots(
        tx: &mut Transaction<'_, Postgres>,
        campaign_id: i64,
        slots: &[NewSlot],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if slots.is_empty() {
            return Ok(());
        }
        let rows = NewSlot::json_rows(slots, |s| serde_json::json!(s.fire_at));
        sqlx::query(
            "INSERT INTO slots (campaign_id, occurrence, zone, fire_at, disposition, state, planned_count, created_at) \
             SELECT $1, x.occurrence, x.zone, x.fire_at, x.disposition, x.state, x.planned_count, $2 \
             FROM jsonb_to_recordset($3) AS x(occurrence text, zone text, fire_at timestamptz, \
                                             disposition text, state text, planned_count bigint)",
        )
        .bind(campaign_id)
        .bind(now)
        .bind(sqlx::types::Json(rows))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

impl Store for PgStore {
    fn kind(&self) -> DatabaseKind {
        DatabaseKind::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.write)
            .await?;
        Ok(())
    }

    shared_store_methods!();
}
