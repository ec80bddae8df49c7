//! The Postgres store: for scale and for several instances sharing one database.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres};

use super::deliveries::{new_delivery_rows, NEW_DELIVERY_COLUMNS};
use super::dialect::Dialect;
use super::sql::SqlStore;
use super::{NewDelivery, StoreError};
use crate::config::{DatabaseConfig, DatabaseKind};

/// The store for several instances sharing one database.
pub type PgStore = SqlStore<PgDialect>;

/// Postgres's side of every backend difference (see [`Dialect`]).
#[derive(Debug, Clone, Copy)]
pub struct PgDialect;

impl PgStore {
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = Self::connect_options(cfg)?;
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| connect_error(e, cfg))?;
        Ok(Self::from_pool(pool))
    }

    /// The connection options of `database`: the URL's (host or `?host=` socket
    /// directory, `sslmode`, `sslrootcert` …) and the session settings.
    pub fn connect_options(cfg: &DatabaseConfig) -> Result<PgConnectOptions, StoreError> {
        // JIT compiling pays off for long analytical queries; here it turned a 10 ms
        // count into 300 ms of compiling on every release batch.
        let mut settings = vec![("jit", "off".to_owned())];
        if !cfg.statement_timeout.is_zero() {
            settings.push((
                "statement_timeout",
                cfg.statement_timeout.as_millis().to_string(),
            ));
        }
        Ok(cfg.url.parse::<PgConnectOptions>()?.options(settings))
    }

    /// Wraps an existing pool (tests and benchmarks).
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            write: pool.clone(),
            read: pool,
            dialect: PgDialect,
        }
    }
}

/// A failed connection in words: a refused TLS handshake says why (the
/// certificate's name, its CA) rather than rustls's variant name alone.
fn connect_error(e: sqlx::Error, cfg: &DatabaseConfig) -> StoreError {
    let host = url::Url::parse(&cfg.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "the database server".to_owned());
    match &e {
        sqlx::Error::Io(io) if crate::tls::is_tls(io) => {
            StoreError::Tls(crate::tls::reason(io, &host, "the URL's sslrootcert"))
        }
        // sqlx's own refusals: `sslmode=require` against a server without
        // TLS, an unreadable or invalid `sslrootcert`.
        sqlx::Error::Tls(reason) => StoreError::Tls(format!("{host}: {reason}")),
        _ => StoreError::Database(e),
    }
}

impl Dialect for PgDialect {
    type Db = Postgres;
    type Json = Json<Value>;
    type Ids = Vec<i64>;
    type Texts = Vec<String>;

    const KIND: DatabaseKind = DatabaseKind::Postgres;

    /// Many connections write at once: checks and writes race unless locked.
    const ONE_WRITER: bool = false;

    const BEGIN_WRITE: &'static str = "BEGIN";

    const FOR_UPDATE: &'static str = " FOR UPDATE";

    /// Workers leasing at once each take rows no other has locked.
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    /// A CTE picks the rows (an optimisation fence: the planner cannot lease more
    /// than the LIMIT), SKIP LOCKED lets several instances lease side by side.
    const LEASE_CHUNKS: &'static str = "\
        WITH next AS ( \
            SELECT c.id FROM slot_chunks c JOIN campaigns k ON k.id = c.campaign_id \
            WHERE k.state = 'running' AND (c.state = 'pending' OR (c.state = 'leased' AND c.lease_expires_at < $1)) \
            ORDER BY c.seq, c.id LIMIT $2 FOR UPDATE OF c SKIP LOCKED) \
        UPDATE slot_chunks c SET state = 'leased', attempt = c.attempt + 1, previous_owner = c.lease_owner, \
            lease_owner = $3, lease_expires_at = $4, updated_at = $1 \
        FROM next WHERE c.id = next.id \
        RETURNING c.id, c.slot_id, c.campaign_id, c.first_device_id, c.last_device_id, c.previous_owner, \
            c.lease_owner, c.attempt AS lease_attempt, c.lease_expires_at";

    /// Each way a row becomes leasable is read through its own partial index in
    /// the index's order, so a lease stops after `LIMIT` rows instead of gathering
    /// and sorting every due row (one `OR` over both conditions can only be served
    /// by combining both indexes in full). The campaign's state is checked inside
    /// each branch, so rows of a paused campaign never fill a branch's limit.
    const LEASE_DELIVERIES: &'static str = "\
        WITH due AS ( \
            SELECT d.id, d.priority, d.next_attempt_at FROM deliveries d \
            WHERE d.status IN ('queued', 'retry') AND d.next_attempt_at <= $1 \
              AND (d.campaign_id IS NULL OR EXISTS ( \
                   SELECT 1 FROM campaigns k WHERE k.id = d.campaign_id AND k.state = 'running')) \
            ORDER BY d.priority DESC, d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED), \
        lapsed AS ( \
            SELECT d.id, d.priority, d.next_attempt_at FROM deliveries d \
            WHERE d.status = 'leased' AND d.lease_expires_at < $1 \
              AND (d.campaign_id IS NULL OR EXISTS ( \
                   SELECT 1 FROM campaigns k WHERE k.id = d.campaign_id AND k.state = 'running')) \
            ORDER BY d.lease_expires_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED), \
        next AS ( \
            SELECT id FROM (SELECT * FROM due UNION ALL SELECT * FROM lapsed) u \
            ORDER BY priority DESC, next_attempt_at LIMIT $2) \
        UPDATE deliveries d SET status = 'leased', attempts = d.attempts + 1, lease_owner = $3, \
            lease_expires_at = $4, updated_at = $1 \
        FROM next WHERE d.id = next.id RETURNING d.id";

    const ID_IN: &'static str = "= ANY($1)";

    const COMPACT_TALLIES: &'static str = "\
        WITH gone AS ( \
          DELETE FROM delivery_tallies WHERE campaign_id = ANY($1) \
          RETURNING campaign_id, slot_id, status, minute, n \
        ) \
        INSERT INTO delivery_tallies (campaign_id, slot_id, status, minute, n) \
        SELECT campaign_id, slot_id, status, minute, SUM(n) FROM gone \
        GROUP BY campaign_id, slot_id, status, minute HAVING SUM(n) <> 0";

    const NO_ACTIVE_DEVICE: &'static str =
        "LEFT JOIN LATERAL (SELECT 1 AS has FROM devices d WHERE d.user_id = u.id AND d.state = 'active' LIMIT 1) x \
         ON TRUE WHERE x.has IS NULL AND";

    const FENCE: &'static str = " OFFSET 0";

    /// On one connection without `database.statement_timeout`: a migration
    /// that builds an index on a large table may run for minutes.
    async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
        let mut conn = pool.acquire().await?;
        sqlx::query("SET statement_timeout = 0")
            .execute(&mut *conn)
            .await?;
        let migrated = sqlx::migrate!("migrations/postgres")
            .run_direct(&mut *conn)
            .await;
        if let Err(e) = migrated {
            // Not back into the pool without its statement_timeout.
            let _ = conn.close().await;
            return Err(e.into());
        }
        sqlx::query("RESET statement_timeout")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Draws `n` values of the table's identity sequence, which every insert
    /// without an id draws from too (0013).
    async fn reserve_ids(&self, write: &PgPool, n: i64) -> Result<Vec<i64>, StoreError> {
        // The identity's sequence by its name (0001 made it): looking it up with
        // `pg_get_serial_sequence` per value cost 6 µs each, nextval itself under 1.
        Ok(
            sqlx::query_scalar("SELECT nextval('deliveries_id_seq') FROM generate_series(1, $1)")
                .bind(n)
                .fetch_all(write)
                .await?,
        )
    }

    fn json_rows(param: &str, columns: &[(&str, &str)]) -> String {
        let cols: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
        format!("jsonb_to_recordset({param}) AS x({})", cols.join(", "))
    }

    fn json(rows: Value) -> Json<Value> {
        Json(rows)
    }

    fn time_json(t: DateTime<Utc>) -> Value {
        serde_json::json!(t)
    }

    fn ids(ids: &[i64]) -> Vec<i64> {
        ids.to_vec()
    }

    fn texts(items: Vec<String>) -> Vec<String> {
        items
    }

    fn new_delivery_source(param: &str) -> String {
        Self::json_rows(param, NEW_DELIVERY_COLUMNS)
    }

    fn new_delivery_arg(rows: &[NewDelivery]) -> Result<Json<Value>, StoreError> {
        Ok(Json(new_delivery_rows(rows, Self::time_json)))
    }

    /// "Not yet served" as a LATERAL probe of the unique index per recipient: an
    /// anti-join would be planned from statistics that lag far behind a
    /// deliveries table growing by thousands of rows a second.
    fn not_served(campaign: &str, occurrence: &str) -> (String, String) {
        (
            format!(
                "LEFT JOIN LATERAL (SELECT 1 AS served FROM deliveries x WHERE x.campaign_id = {campaign} \
                 AND x.occurrence = {occurrence} AND x.device_id = r.device_id LIMIT 1) done ON TRUE"
            ),
            "done.served IS NULL".to_owned(),
        )
    }

    fn text_in(expr: &str, param: &str) -> String {
        format!("{expr} = ANY({param}::text[])")
    }

    fn attribute_param(name: &str) -> String {
        name.to_owned()
    }

    fn attribute(param: &str) -> String {
        format!("(u.attributes ->> {param})")
    }

    fn has_topic(param: &str) -> String {
        format!("(k.definition -> 'audience' -> 'topics') @> jsonb_build_array({param}::text)")
    }

    fn seconds_between(later: &str, earlier: &str) -> String {
        format!("EXTRACT(EPOCH FROM ({later} - {earlier}))")
    }

    fn epoch_minute(column: &str) -> String {
        // FLOOR first: a cast to an integer rounds, which would move 59.7 s on.
        format!("(CAST(FLOOR(EXTRACT(EPOCH FROM {column})) AS BIGINT) / 60)")
    }
}
