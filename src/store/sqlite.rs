//! The embedded SQLite store: the default, for one instance.
//!
//! Writes go through a pool of one connection, so transactions never contend
//! for SQLite's single write lock inside the process; reads use a WAL snapshot
//! each. Several processes on one file are not supported (use Postgres).

use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::query::QueryAs;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::segment::Bind;
use super::shared::shared_store_methods;
use super::{NewSlot, Store, StoreError};
use crate::config::{DatabaseConfig, DatabaseKind};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
}

/// A timestamp exactly as sqlx writes `DateTime<Utc>` to SQLite, so text written
/// through JSON compares correctly with text written through binds.
pub(crate) fn sqlite_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

impl SqliteStore {
    const FOR_UPDATE: &'static str = "";

    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(&cfg.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(cfg.busy_timeout)
            .foreign_keys(true);
        let file = options.get_filename();
        if file != Path::new(":memory:") {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Invalid(format!(
                        "database.url: cannot create {}: {e}",
                        dir.display()
                    ))
                })?;
            }
        }
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { write, read })
    }

    fn bind_segment<'q, O>(
        q: QueryAs<'q, Sqlite, O, SqliteArguments<'q>>,
        b: Bind,
    ) -> QueryAs<'q, Sqlite, O, SqliteArguments<'q>> {
        match b {
            Bind::Text(s) => q.bind(s),
            Bind::TextList(v) => q.bind(serde_json::Value::from(v).to_string()),
        }
    }

    async fn insert_slots(
        tx: &mut Transaction<'_, Sqlite>,
        campaign_id: i64,
        slots: &[NewSlot],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if slots.is_empty() {
            return Ok(());
        }
        let rows = NewSlot::json_rows(slots, |s| serde_json::json!(sqlite_time(s.fire_at)));
        sqlx::query(
            "INSERT INTO slots (campaign_id, occurrence, zone, fire_at, disposition, state, planned_count, created_at) \
             SELECT $1, value ->> 'occurrence', value ->> 'zone', value ->> 'fire_at', value ->> 'disposition', \
                    value ->> 'state', value ->> 'planned_count', $2 \
             FROM json_each($3)",
        )
        .bind(campaign_id)
        .bind(now)
        .bind(rows.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn kind(&self) -> DatabaseKind {
        DatabaseKind::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/sqlite").run(&self.write).await?;
        Ok(())
    }

    shared_store_methods!();
}
