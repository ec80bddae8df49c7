//! What the benchmarks share: seeding an app's users, devices and subscriptions
//! in bulk with raw SQL (benchmarks may reach around the store on purpose).
//!
//! Devices are seeded in user order, so a zone's devices are spread over the whole
//! id space as they are when people register over time.

use meridian::clock::{Clock, SystemClock};
use meridian::domain::zone::canonical_zones;
use sqlx::Connection;

// Not every bench starts the simulator; the tests' helper is the one helper.
#[allow(dead_code)]
#[path = "../../tests/common/sim.rs"]
pub mod sim;

/// App `shop`'s topics in the benchmarks.
#[allow(dead_code)]
pub const BENCH_APP: &str = "[apps.shop.topics]\nmarketing = { default_subscribed = false }";
/// Each provider's connections in the benchmarks (as before the shared helper).
#[allow(dead_code)]
pub const BENCH_CONNECTION: &str = "connections = 2\nconcurrency = 1024";

const SEED_USERS_PG: &str = "INSERT INTO users (app_id, external_id, timezone, created_at, updated_at) \
    SELECT 'shop', 'u' || g, ($2::text[])[1 + g % array_length($2::text[], 1)], $3, $3 FROM generate_series(1, $1) g";
const SEED_USERS_SQLITE: &str = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $1) \
    INSERT INTO users (app_id, external_id, timezone, created_at, updated_at) \
    SELECT 'shop', 'u' || n, json_extract($2, '$[' || (n % json_array_length($2)) || ']'), $3, $3 FROM g";
/// Even users get an iOS token (64 hex digits), odd ones an Android token.
const SEED_DEVICES_PG: &str = "INSERT INTO devices (app_id, user_id, platform, token, timezone, zone, created_at, updated_at) \
    SELECT 'shop', id, CASE WHEN id % 2 = 0 AND NOT $2 THEN 'ios' ELSE 'android' END, \
      CASE WHEN id % 2 = 0 AND NOT $2 THEN lpad(id::text, 64, '0') ELSE 'fcm-' || id END, timezone, timezone, $1, $1 FROM users ORDER BY id";
const SEED_DEVICES_SQLITE: &str = "INSERT INTO devices (app_id, user_id, platform, token, timezone, zone, created_at, updated_at) \
    SELECT 'shop', id, CASE WHEN id % 2 = 0 AND NOT $2 THEN 'ios' ELSE 'android' END, \
      CASE WHEN id % 2 = 0 AND NOT $2 THEN substr('0000000000000000000000000000000000000000000000000000000000000000' || id, -64, 64) \
           ELSE 'fcm-' || id END, timezone, timezone, $1, $1 FROM users ORDER BY id";
const SEED_SUBSCRIPTIONS: &str = "INSERT INTO subscriptions (user_id, topic, opted_in, updated_at) SELECT id, 'marketing', TRUE, $1 FROM users";

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn zones() -> Vec<String> {
    canonical_zones()
        .iter()
        .map(|z| z.name().to_owned())
        .collect()
}

/// A new, empty database `name` on the test server (`MERIDIAN_TEST_PG_URL`):
/// a connection to the server's own database, and the new one's URL.
pub async fn fresh_pg_database(name: &str) -> (sqlx::PgConnection, url::Url) {
    let admin = std::env::var("MERIDIAN_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    drop_pg_database(&mut c, name).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(name);
    (c, url)
}

/// The store on database `url`, with the pool the benchmarks use.
pub async fn pg_store(url: &url::Url) -> meridian::store::PgStore {
    meridian::store::PgStore::connect(&meridian::config::DatabaseConfig {
        url: url.to_string(),
        max_connections: 8,
        ..meridian::config::DatabaseConfig::default()
    })
    .await
    .unwrap()
}

pub async fn drop_pg_database(c: &mut sqlx::PgConnection, name: &str) {
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(c)
        .await
        .unwrap();
}

/// The three seeding statements on connection `c`; `zones` is bound as the
/// dialect takes a list.
macro_rules! seed {
    ($c:expr, $users:expr, $devices:expr, $n:expr, $zones:expr, $android:expr) => {{
        let now = SystemClock.now();
        sqlx::query($users)
            .bind($n)
            .bind($zones)
            .bind(now)
            .execute(&mut $c)
            .await
            .unwrap();
        sqlx::query($devices)
            .bind(now)
            .bind($android)
            .execute(&mut $c)
            .await
            .unwrap();
        sqlx::query(SEED_SUBSCRIPTIONS)
            .bind(now)
            .execute(&mut $c)
            .await
            .unwrap();
    }};
}

/// `n` users of app `shop` over every canonical zone, one device each (iOS for
/// even users unless `android`), all opted in to `marketing`; then vacuumed: a
/// table the app filled over months is mostly all-visible (autovacuum), a bulk
/// insert a moment ago is not.
pub async fn seed_postgres(url: String, n: i64, android: bool) {
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    seed!(c, SEED_USERS_PG, SEED_DEVICES_PG, n, zones(), android);
    sqlx::query("VACUUM ANALYZE").execute(&mut c).await.unwrap();
}

/// As [`seed_postgres`], on SQLite (then `ANALYZE`).
pub async fn seed_sqlite(url: String, n: i64, android: bool) {
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let zones = serde_json::to_string(&zones()).unwrap();
    seed!(c, SEED_USERS_SQLITE, SEED_DEVICES_SQLITE, n, zones, android);
    sqlx::query("ANALYZE").execute(&mut c).await.unwrap();
}
