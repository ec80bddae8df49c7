//! The Postgres store: for scale and for several instances sharing one database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions};
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres, Transaction};

use super::api::api_store_methods;
use super::dispatch::{shared_dispatch_helpers, shared_dispatch_methods};
use super::hooks::hook_store_methods;
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
    /// Several workers and instances write at once: fences take row locks.
    const ONE_WRITER: bool = false;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        self.write.begin().await
    }
    const FOR_UPDATE: &'static str = " FOR UPDATE";

    /// A CTE picks the rows (an optimisation fence: the planner cannot lease more
    /// than the LIMIT), SKIP LOCKED lets several instances lease side by side.
    const LEASE_CHUNKS: &'static str = "\
        WITH next AS ( \
            SELECT c.id FROM slot_chunks c JOIN campaigns k ON k.id = c.campaign_id \
            WHERE k.state = 'running' AND (c.state = 'pending' OR (c.state = 'leased' AND c.lease_expires_at < $1)) \
            ORDER BY c.seq, c.id LIMIT $2 FOR UPDATE OF c SKIP LOCKED) \
        UPDATE slot_chunks c SET state = 'leased', attempt = c.attempt + 1, lease_owner = $3, \
            lease_expires_at = $4, updated_at = $1 \
        FROM next WHERE c.id = next.id \
        RETURNING c.id, c.slot_id, c.campaign_id, c.first_device_id, c.last_device_id, c.attempt";

    /// Each way a row becomes leasable is read through its own partial index in
    /// the index's order, so a lease stops after `LIMIT` rows instead of gathering
    /// and sorting every due row (one `OR` over both conditions can only be served
    /// by combining both indexes in full). The campaign's state is checked inside
    /// each branch, so rows of a paused campaign never fill a branch's limit.
    pub const LEASE_DELIVERIES: &'static str = "\
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

    fn bind_ids<'q, O>(
        q: QueryAs<'q, Postgres, O, PgArguments>,
        ids: &[i64],
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        q.bind(ids.to_vec())
    }

    /// Rows of a JSON array as a relation `x` with typed columns.
    pub fn json_rows(param: &str, columns: &[(&str, &str)]) -> String {
        let cols: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
        format!("jsonb_to_recordset({param}) AS x({})", cols.join(", "))
    }

    /// SQL for the seconds from `earlier` to `later` (two timestamps).
    fn seconds_between(later: &str, earlier: &str) -> String {
        format!("EXTRACT(EPOCH FROM ({later} - {earlier}))")
    }

    fn time_json(t: DateTime<Utc>) -> serde_json::Value {
        serde_json::json!(t)
    }

    fn json_arg(v: serde_json::Value) -> sqlx::types::Json<serde_json::Value> {
        sqlx::types::Json(v)
    }

    fn new_delivery_source(param: &str) -> String {
        Self::json_rows(param, super::dispatch::NEW_DELIVERY_COLUMNS)
    }

    fn new_delivery_arg(
        rows: &[super::NewDelivery],
    ) -> Result<sqlx::types::Json<serde_json::Value>, StoreError> {
        Ok(Self::json_arg(super::dispatch::new_delivery_rows(
            rows,
            Self::time_json,
        )))
    }

    shared_dispatch_helpers!(Postgres);

    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self, StoreError> {
        // JIT compiling pays off for long analytical queries; here it turned a 10 ms
        // count into 300 ms of compiling on every release batch.
        let options = cfg
            .url
            .parse::<PgConnectOptions>()?
            .options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
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
            Bind::Int(i) => q.bind(i),
            Bind::Time(t) => q.bind(t),
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
                                             disposition text, state text, planned_count bigint) \
             ON CONFLICT (campaign_id, occurrence, zone) DO NOTHING",
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

    /// Draws `n` values of the table's identity sequence, which every insert
    /// without an id draws from too (0013).
    async fn reserve_delivery_ids(&self, n: usize) -> Result<Vec<i64>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let n = i64::try_from(n).map_err(|_| StoreError::Invalid(format!("{n} ids")))?;
        // The identity's sequence by its name (0001 made it): looking it up with
        // `pg_get_serial_sequence` per value cost 6 µs each, nextval itself under 1.
        Ok(
            sqlx::query_scalar("SELECT nextval('deliveries_id_seq') FROM generate_series(1, $1)")
                .bind(n)
                .fetch_all(&self.write)
                .await?,
        )
    }

    shared_store_methods!();
    shared_dispatch_methods!();
    api_store_methods!();
    hook_store_methods!();
}
