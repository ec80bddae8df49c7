//! The database's share of the two designs issue 4 left open, for one campaign
//! over N devices in every zone, all due at once, with no network in between:
//!
//! - **lazy** (what the engine does): release the slots into key-range chunks,
//!   then per chunk lease it, read its recipients, write each delivery once with
//!   its outcome (batches of 500), finish it — through the store's own methods;
//! - **eager**: `INSERT … SELECT` one queued delivery per recipient at release,
//!   then lease them 1,000 at a time (in the order of the queue's index, with
//!   their tokens) and write their outcomes back (batches of 500) through the
//!   store's fenced write-back, the path of retries and transactional pushes.
//!
//!     cargo bench --bench designs -- [--devices N] [--backend sqlite|postgres]
//!
//! One task does the work in turn, so each figure is the database's time per
//! design on this machine; sending has to fit beside it within the end-to-end
//! target (BENCHMARKS.md). The deliveries of one design are deleted before the
//! other runs, so both write into an empty table.

mod common;

use common::arg;

use std::time::Instant;

use chrono::TimeDelta;
use meridian::clock::{Clock, SystemClock};
use meridian::config::{Config, DatabaseConfig};
use meridian::definitions;
use meridian::domain::campaign::{parse_toml, CampaignDefinition};
use meridian::domain::ids::{DeliveryId, DeviceId};
use meridian::domain::state::DeliveryStatus;
use meridian::store::{
    ChunkWrite, DeliveryUpdate, Lease, LeaseTerms, NewDelivery, SqliteStore, Store,
};
use sqlx::Connection;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONFIG: &str =
    "[apps.shop]\n[apps.shop.topics]\nmarketing = { default_subscribed = false }\n";

/// Deliveries of campaign `$1` for every active, opted-in device, one per device,
/// in the slot of the device's zone: the eager design's release.
const MATERIALIZE: &str =
    "INSERT INTO deliveries (app_id, campaign_id, slot_id, occurrence, user_id, device_id, \
      priority, status, attempts, next_attempt_at, created_at, updated_at) \
    SELECT 'shop', s.campaign_id, s.id, s.occurrence, d.user_id, d.id, 0, 'queued', 0, $2, $2, $2 \
    FROM devices d JOIN slots s ON s.campaign_id = $1 AND s.zone = d.zone \
    WHERE d.app_id = 'shop' AND d.state = 'active' AND EXISTS (SELECT 1 FROM subscriptions x \
      WHERE x.user_id = d.user_id AND x.topic = 'marketing' AND x.opted_in)";

#[tokio::main]
async fn main() {
    let devices: i64 = arg("--devices")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let backend = arg("--backend").unwrap_or_else(|| "sqlite".to_owned());
    let config: Config = toml::from_str(CONFIG).unwrap();
    println!("meridian designs bench: {devices} devices, backend {backend}");
    match backend.as_str() {
        "postgres" => {
            let (mut c, url) = common::fresh_pg_database("meridian_designs").await;
            let store = common::pg_store(&url).await;
            ready(&store, &config).await;
            common::seed_postgres(url.to_string(), devices, false).await;
            let clear = ["TRUNCATE delivery_events, deliveries"];
            compare(&store, &config, url.as_str(), &clear).await;
            store.close().await;
            // MERIDIAN_DESIGNS_KEEP=1 keeps the database for a look at what was written.
            if std::env::var_os("MERIDIAN_DESIGNS_KEEP").is_none() {
                common::drop_pg_database(&mut c, "meridian_designs").await;
            }
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("designs.db").display());
            let store = SqliteStore::connect(&DatabaseConfig {
                url: url.clone(),
                ..DatabaseConfig::default()
            })
            .await
            .unwrap();
            ready(&store, &config).await;
            common::seed_sqlite(url.clone(), devices, false).await;
            let clear = ["DELETE FROM delivery_events", "DELETE FROM deliveries"];
            compare(&store, &config, &url, &clear).await;
            store.close().await;
        }
    }
}

/// Migrates and registers the app.
async fn ready<S: Store>(store: &S, config: &Config) {
    store.migrate().await.unwrap();
    definitions::sync_apps(store, config, SystemClock.now())
        .await
        .unwrap();
}

/// Runs both designs on their own campaign, clearing the deliveries between.
async fn compare<S: Store + Clone>(store: &S, config: &Config, url: &str, clear: &[&str]) {
    let lazy = lazy(store, config).await;
    let raw = Raw::connect(url).await;
    for sql in clear {
        raw.execute(sql).await;
    }
    let eager = eager(store, config, &raw).await;
    for (name, phases) in [("lazy", lazy), ("eager", eager)] {
        let total: f64 = phases.iter().map(|(_, s)| s).sum();
        let parts: Vec<String> = phases
            .iter()
            .map(|(p, s)| format!("{p} {s:.1} s"))
            .collect();
        println!(
            "{name}: {total:.1} s of database time ({})",
            parts.join(", ")
        );
    }
}

/// Saves a `local` campaign already due in every zone; returns its id and definition.
async fn campaign<S: Store>(store: &S, config: &Config, key: &str) -> (i64, CampaignDefinition) {
    let text = format!(
        "key = \"{key}\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Hello\"\n\
         body = \"A benchmark message of ordinary length.\"\n[audience]\ntopics = [\"marketing\"]\n\
         [schedule]\ntype = \"local\"\nat = \"2020-01-01T09:00\"\nmissed = \"send_now\"\n"
    );
    let def = parse_toml(&format!("{key}.toml"), &text).unwrap();
    let prepared = definitions::prepare(store, config, &def, SystemClock.now())
        .await
        .unwrap();
    let id = definitions::save(store, prepared, SystemClock.now())
        .await
        .unwrap()
        .record
        .id;
    (id, def)
}

async fn lazy<S: Store>(store: &S, config: &Config) -> Vec<(&'static str, f64)> {
    let (id, def) = campaign(store, config, "lazy").await;
    let segment = meridian::store::Segment {
        app_id: "shop",
        audience: &def.audience,
        topics: definitions::topic_rules(&config.apps["shop"], &def.audience.topics),
    };
    let now = SystemClock.now();
    let t = Instant::now();
    let due: Vec<_> = store
        .slot_list_due(now, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.campaign_id == id)
        .collect();
    for batch in due.chunks(32) {
        store
            .slot_release(
                &meridian::store::SlotRelease {
                    slots: batch,
                    segment: &segment,
                    chunk_size: 1000,
                    worker: "bench",
                },
                now,
            )
            .await
            .unwrap();
    }
    let release = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut written = 0;
    loop {
        let now = SystemClock.now();
        let chunks = store
            .chunk_lease(
                &LeaseTerms {
                    owner: "bench",
                    until: now + TimeDelta::seconds(60),
                    limit: 8,
                },
                now,
            )
            .await
            .unwrap();
        if chunks.is_empty() {
            break;
        }
        for chunk in &chunks {
            let slot = store
                .slot_get_info(chunk.lead_slot_id)
                .await
                .unwrap()
                .unwrap();
            let recipients = store
                .chunk_recipient_list(chunk, &slot, &segment, now)
                .await
                .unwrap();
            let ids = store.delivery_id_reserve(recipients.len()).await.unwrap();
            let rows: Vec<NewDelivery> = recipients
                .iter()
                .zip(ids)
                .map(|(r, id)| NewDelivery {
                    id,
                    device_id: r.device_id,
                    slot_id: r.slot_id,
                    user_id: r.user_id,
                    status: DeliveryStatus::Sent,
                    provider_id: Some(format!(
                        "00000000-0000-4000-8000-{:012x}",
                        r.device_id.get()
                    )),
                    error_reason: None,
                    next_attempt_at: None,
                })
                .collect();
            for batch in rows.chunks(500) {
                let w = ChunkWrite {
                    chunk,
                    app_id: "shop",
                    occurrence: &slot.occurrence,
                    deliveries: batch,
                    webhook: false,
                };
                written += store.chunk_record(&w, SystemClock.now()).await.unwrap();
            }
            store.chunk_finish(chunk, SystemClock.now()).await.unwrap();
        }
    }
    let send = t.elapsed().as_secs_f64();
    println!("lazy: {written} deliveries written");
    vec![("release", release), ("lease + read + write", send)]
}

async fn eager<S: Store>(store: &S, config: &Config, raw: &Raw) -> Vec<(&'static str, f64)> {
    let (id, _) = campaign(store, config, "eager").await;
    let t = Instant::now();
    let queued = raw.materialize(id, SystemClock.now()).await;
    // Released: its rows may be leased (the engine's release moves it so).
    raw.execute(&format!(
        "UPDATE campaigns SET state = 'running' WHERE id = {id}"
    ))
    .await;
    let release = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut written = 0;
    loop {
        let now = SystemClock.now();
        let rows = raw.lease(now, now + TimeDelta::seconds(60), 1000).await;
        if rows.is_empty() {
            break;
        }
        let until = now + TimeDelta::seconds(60);
        let updates: Vec<DeliveryUpdate> = rows
            .iter()
            .map(|r| DeliveryUpdate {
                id: DeliveryId::new(r.0),
                lease: Lease {
                    owner: "bench".into(),
                    attempt: r.1,
                    until,
                },
                device_id: DeviceId::new(r.2),
                status: DeliveryStatus::Sent,
                provider_id: Some(format!("00000000-0000-4000-8000-{:012x}", r.0)),
                error_reason: None,
                next_attempt_at: None,
                webhook: false,
            })
            .collect();
        for batch in updates.chunks(500) {
            written += store
                .delivery_record(batch, SystemClock.now())
                .await
                .unwrap();
        }
    }
    let send = t.elapsed().as_secs_f64();
    println!("eager: {queued} deliveries queued, {written} written back");
    vec![
        ("release (materialize)", release),
        ("lease + write back", send),
    ]
}

/// The eager design's lease: queued rows in the order of their partial index,
/// then what a send needs of each (its device's token). The store's own row lease
/// also takes over lapsed leases in the same statement; its `OR` keeps the planner
/// from walking the index in order, which costs little for retries and pushes but
/// sorted the whole queue on every lease here (92 s for 100,000 rows on SQLite).
const LEASE_PG: &str = "WITH next AS (SELECT id FROM deliveries WHERE status IN ('queued', 'retry') \
      AND next_attempt_at <= $1 ORDER BY priority DESC, next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
    UPDATE deliveries d SET status = 'leased', attempts = d.attempts + 1, lease_owner = 'bench', \
      lease_expires_at = $2, updated_at = $1 FROM next WHERE d.id = next.id RETURNING d.id, d.attempts, d.device_id";
const LEASE_SQLITE: &str = "UPDATE deliveries SET status = 'leased', attempts = attempts + 1, lease_owner = 'bench', \
      lease_expires_at = $2, updated_at = $1 WHERE id IN (SELECT id FROM deliveries \
      WHERE status IN ('queued', 'retry') AND next_attempt_at <= $1 ORDER BY priority DESC, next_attempt_at LIMIT $3) \
    RETURNING id, attempts, device_id";
const TOKENS_PG: &str = "SELECT v.token FROM devices v WHERE v.id = ANY($1)";
const TOKENS_SQLITE: &str =
    "SELECT v.token FROM devices v WHERE v.id IN (SELECT value FROM json_each($1))";

/// A plain connection to the store's database, for what the store has no method for.
enum Raw {
    Pg(tokio::sync::Mutex<sqlx::PgConnection>),
    Sqlite(tokio::sync::Mutex<sqlx::SqliteConnection>),
}

impl Raw {
    async fn connect(url: &str) -> Self {
        if url.starts_with("postgres") {
            Raw::Pg(tokio::sync::Mutex::new(
                sqlx::PgConnection::connect(url).await.unwrap(),
            ))
        } else {
            Raw::Sqlite(tokio::sync::Mutex::new(
                sqlx::SqliteConnection::connect(url).await.unwrap(),
            ))
        }
    }

    async fn execute(&self, sql: &str) {
        match self {
            Raw::Pg(c) => {
                sqlx::query(sql)
                    .execute(&mut *c.lock().await)
                    .await
                    .unwrap();
            }
            Raw::Sqlite(c) => {
                sqlx::query(sql)
                    .execute(&mut *c.lock().await)
                    .await
                    .unwrap();
            }
        }
    }

    async fn lease(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Vec<(i64, i32, i64)> {
        // The same two statements on either connection; ids bind as the dialect takes lists.
        macro_rules! lease_on {
            ($c:expr, $lease:expr, $tokens:expr, $ids:expr) => {{
                let mut c = $c.lock().await;
                let rows: Vec<(i64, i32, i64)> = sqlx::query_as($lease)
                    .bind(now)
                    .bind(until)
                    .bind(limit)
                    .fetch_all(&mut *c)
                    .await
                    .unwrap();
                let ids: Vec<i64> = rows.iter().map(|r| r.2).collect();
                let tokens: Vec<(String,)> = sqlx::query_as($tokens)
                    .bind($ids(ids))
                    .fetch_all(&mut *c)
                    .await
                    .unwrap();
                assert_eq!(tokens.len(), rows.len());
                rows
            }};
        }
        match self {
            Raw::Pg(c) => lease_on!(c, LEASE_PG, TOKENS_PG, |ids: Vec<i64>| ids),
            Raw::Sqlite(c) => lease_on!(c, LEASE_SQLITE, TOKENS_SQLITE, |ids: Vec<i64>| {
                serde_json::to_string(&ids).unwrap()
            }),
        }
    }

    async fn materialize(&self, campaign: i64, now: chrono::DateTime<chrono::Utc>) -> u64 {
        macro_rules! on {
            ($c:expr) => {
                sqlx::query(MATERIALIZE)
                    .bind(campaign)
                    .bind(now)
                    .execute(&mut *$c.lock().await)
                    .await
                    .unwrap()
                    .rows_affected()
            };
        }
        match self {
            Raw::Pg(c) => on!(c),
            Raw::Sqlite(c) => on!(c),
        }
    }
}
