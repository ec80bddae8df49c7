//! The embedded SQLite store: the default, for one instance.
//!
//! Writes go through a pool of one connection, so transactions never contend
//! for SQLite's single write lock inside the process; reads use a WAL snapshot
//! each. Several processes on one file are not supported (use Postgres).

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Weak};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::deliveries::{new_delivery_arrays, NEW_DELIVERY_COLUMNS};
use super::dialect::Dialect;
use super::sql::SqlStore;
use super::{NewDelivery, StoreError};
use crate::config::{DatabaseConfig, DatabaseKind};

/// WAL frames after which the writer checkpoints by itself: a backstop for when
/// the checkpointer falls behind (SQLite's default is 1,000).
const WRITER_CHECKPOINT_PAGES: &str = "100000";

/// Bytes the WAL file is cut back to once a checkpoint lets it restart.
const WAL_SIZE_LIMIT: &str = "67108864";

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Copies committed WAL frames into the database file from a connection of its
/// own, so that the one writer does not. In WAL mode every commit appends each
/// page it dirtied; a batch of deliveries dirties a page of every index per row
/// (recipients of a zone are spread over the id space), and checkpointing those
/// pages (reading them back, writing them, fsync) inside the writer's commit
/// held up every other write. A PASSIVE checkpoint never blocks the writer or
/// readers. Ends within a tick of the store being closed or its last handle
/// dropped (then its hold on the write pool goes too).
async fn checkpoint_loop(checkpointer: SqlitePool, write: SqlitePool, store: Weak<()>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if write.is_closed() || store.strong_count() == 0 {
            break;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&checkpointer)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed; retried at the next tick");
        }
    }
    checkpointer.close().await;
}

/// The embedded store.
pub type SqliteStore = SqlStore<SqliteDialect>;

/// SQLite's side of every backend difference (see [`Dialect`]), and what only
/// it holds.
#[derive(Debug, Clone)]
pub struct SqliteDialect {
    /// Held by every handle of the store; the checkpointer stops once none is left.
    _handles: Arc<()>,
    /// Delivery ids reserved in the database and not handed out yet: `(next,
    /// last)`. Blocks of [`ID_BLOCK`] spare the one writer a statement per
    /// chunk; a restart leaves the rest of a block unused.
    ids: Arc<tokio::sync::Mutex<(i64, i64)>>,
}

/// Delivery ids reserved from the database at a time.
const ID_BLOCK: i64 = 65_536;

/// A timestamp exactly as sqlx writes `DateTime<Utc>` to SQLite, so text written
/// through JSON compares correctly with text written through binds.
pub(crate) fn sqlite_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

impl SqliteStore {
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(&cfg.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(cfg.busy_timeout)
            .foreign_keys(true)
            // The worker thread stops at a full row buffer until the async side,
            // sharing a busy runtime, drains it; at the default of 50 a chunk's
            // recipient query spent most of its time waiting there.
            .row_buffer_size(2048);
        let file = options.get_filename();
        if file != Path::new(":memory:") {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
                    .pragma("journal_size_limit", WAL_SIZE_LIMIT),
            )
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections)
            .connect_with(options.clone().read_only(true))
            .await?;
        let handles = Arc::new(());
        if file != Path::new(":memory:") {
            let checkpointer = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            tokio::spawn(checkpoint_loop(
                checkpointer,
                write.clone(),
                Arc::downgrade(&handles),
            ));
        }
        Ok(Self {
            write,
            read,
            dialect: SqliteDialect {
                _handles: handles,
                ids: Arc::new(tokio::sync::Mutex::new((1, 0))),
            },
        })
    }
}

impl Dialect for SqliteDialect {
    type Db = Sqlite;
    type Json = String;
    type Ids = String;
    type Texts = String;

    const KIND: DatabaseKind = DatabaseKind::Sqlite;

    /// SQLite has one write connection: a statement runs alone.
    const ONE_WRITER: bool = true;

    /// A write transaction takes the write lock at `BEGIN`: another process on the
    /// same file (the CLI beside the daemon) is then waited for (busy timeout). A
    /// deferred one reads first and fails at its first write with "database is
    /// locked", as its snapshot cannot become a writer.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    /// One writer: nothing to lock against.
    const FOR_UPDATE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";

    /// SQLite has one writer (this process's single write connection), so the
    /// lease is a plain `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING`.
    const LEASE_CHUNKS: &'static str = "\
        UPDATE slot_chunks SET state = 'leased', attempt = attempt + 1, previous_owner = lease_owner, \
            lease_owner = $3, lease_expires_at = $4, updated_at = $1 \
        WHERE id IN ( \
            SELECT c.id FROM slot_chunks c JOIN campaigns k ON k.id = c.campaign_id \
            WHERE k.state = 'running' AND (c.state = 'pending' OR (c.state = 'leased' AND c.lease_expires_at < $1)) \
            ORDER BY c.seq, c.id LIMIT $2) \
        RETURNING id, slot_id, campaign_id, first_device_id, last_device_id, previous_owner, \
            lease_owner, attempt AS lease_attempt, lease_expires_at";

    /// Each way a row becomes leasable is read through its own partial index, the
    /// campaign's state checked inside each branch so rows of a paused campaign
    /// never fill a branch's limit. With the two conditions under one `OR`, SQLite
    /// can use neither index: it scanned the whole table, 0.2 s a lease at 1M sent
    /// rows, every second, on the one write connection.
    const LEASE_DELIVERIES: &'static str = "\
        UPDATE deliveries SET status = 'leased', attempts = attempts + 1, lease_owner = $3, \
            lease_expires_at = $4, updated_at = $1 \
        WHERE id IN ( \
            SELECT id FROM ( \
                SELECT * FROM ( \
                    SELECT d.id, d.priority, d.next_attempt_at FROM deliveries d \
                    WHERE d.status IN ('queued', 'retry') AND d.next_attempt_at <= $1 \
                      AND (d.campaign_id IS NULL OR EXISTS ( \
                           SELECT 1 FROM campaigns k WHERE k.id = d.campaign_id AND k.state = 'running')) \
                    ORDER BY d.priority DESC, d.next_attempt_at LIMIT $2) \
                UNION ALL \
                SELECT * FROM ( \
                    SELECT d.id, d.priority, d.next_attempt_at FROM deliveries d \
                    WHERE d.status = 'leased' AND d.lease_expires_at < $1 \
                      AND (d.campaign_id IS NULL OR EXISTS ( \
                           SELECT 1 FROM campaigns k WHERE k.id = d.campaign_id AND k.state = 'running')) \
                    ORDER BY d.lease_expires_at LIMIT $2)) \
            ORDER BY priority DESC, next_attempt_at LIMIT $2) \
        RETURNING id";

    const ID_IN: &'static str = "IN (SELECT value FROM json_each($1))";

    const COMPACT_TALLIES: &'static str =
        "DELETE FROM delivery_tallies WHERE n = 0 AND campaign_id IN (SELECT value FROM json_each($1))";

    const NO_ACTIVE_DEVICE: &'static str =
        "WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = u.id AND d.state = 'active') AND";

    /// `OFFSET 0` alone does not stop SQLite from flattening; it needs a `LIMIT`.
    const FENCE: &'static str = " LIMIT -1 OFFSET 0";

    async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/sqlite").run(pool).await?;
        Ok(())
    }

    /// Hands out ids from a block reserved by moving the AUTOINCREMENT counter
    /// of `deliveries` past it: SQLite never gives out an id at or below the
    /// counter, so nothing else can take them (0013).
    async fn reserve_ids(&self, write: &SqlitePool, n: i64) -> Result<Vec<i64>, StoreError> {
        let mut ids = self.ids.lock().await;
        let (next, last) = *ids;
        if last - next + 1 < n {
            let block = n.max(ID_BLOCK);
            let end: Option<i64> = sqlx::query_scalar(
                "UPDATE sqlite_sequence SET seq = seq + $1 WHERE name = 'deliveries' RETURNING seq",
            )
            .bind(block)
            .fetch_optional(write)
            .await?;
            let end = end.ok_or_else(|| {
                StoreError::Invariant(
                    "deliveries has no AUTOINCREMENT counter (migration 0013)".into(),
                )
            })?;
            *ids = (end - block + 1, end);
        }
        let (next, last) = *ids;
        *ids = (next + n, last);
        Ok((next..next + n).collect())
    }

    /// Rows of a JSON array as a relation `x`.
    fn json_rows(param: &str, columns: &[(&str, &str)]) -> String {
        let cols: Vec<String> = columns
            .iter()
            .map(|(n, _)| format!("value ->> '{n}' AS {n}"))
            .collect();
        format!("(SELECT {} FROM json_each({param})) AS x", cols.join(", "))
    }

    fn json(rows: Value) -> String {
        rows.to_string()
    }

    fn time_json(t: DateTime<Utc>) -> Value {
        serde_json::json!(sqlite_time(t))
    }

    fn ids(ids: &[i64]) -> String {
        Value::from(ids.to_vec()).to_string()
    }

    fn texts(items: Vec<String>) -> String {
        Value::from(items).to_string()
    }

    /// A batch of new deliveries as positional JSON arrays (`value ->> 0`): a
    /// third less work for the one writer than named keys.
    fn new_delivery_source(param: &str) -> String {
        let cols: Vec<String> = NEW_DELIVERY_COLUMNS
            .iter()
            .enumerate()
            .map(|(i, (n, _))| format!("value ->> {i} AS {n}"))
            .collect();
        format!("(SELECT {} FROM json_each({param})) AS x", cols.join(", "))
    }

    fn new_delivery_arg(rows: &[NewDelivery]) -> Result<String, StoreError> {
        new_delivery_arrays(rows, sqlite_time)
    }

    /// "Not yet served": SQLite probes the unique index per recipient for NOT EXISTS.
    fn not_served(campaign: &str, occurrence: &str) -> (String, String) {
        (
            String::new(),
            format!(
                "NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.campaign_id = {campaign} \
                 AND x.occurrence = {occurrence} AND x.device_id = r.device_id)"
            ),
        )
    }

    fn text_in(expr: &str, param: &str) -> String {
        format!("{expr} IN (SELECT value FROM json_each({param}))")
    }

    fn attribute_param(name: &str) -> String {
        format!("$.\"{name}\"")
    }

    fn attribute(param: &str) -> String {
        format!(
            "(CASE json_type(u.attributes, {param}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' \
             WHEN 'null' THEN NULL ELSE CAST(json_extract(u.attributes, {param}) AS TEXT) END)"
        )
    }

    fn has_topic(param: &str) -> String {
        format!("EXISTS (SELECT 1 FROM json_each(k.definition, '$.audience.topics') j WHERE j.value = {param})")
    }

    fn seconds_between(later: &str, earlier: &str) -> String {
        format!("((julianday({later}) - julianday({earlier})) * 86400.0)")
    }

    fn epoch_minute(column: &str) -> String {
        format!("(CAST(strftime('%s', {column}) AS INTEGER) / 60)")
    }
}
