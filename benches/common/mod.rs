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

/// How a benchmark's audience is laid out (`--layout`).
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One app, one device per user, users spread evenly over the 489 canonical
    /// zones, devices in user order (the benchmarks' layout before issue 21).
    Uniform,
    /// One app, one device per user; a third of the users in three zones and the
    /// rest over a dozen; devices registered in an order unrelated to users or
    /// zones (people register over months and reinstall); half iOS, half Android.
    Skewed,
    /// Three apps (`shop`, `news`, `games`) sending at once, users with one to
    /// three devices (two on average, the first primary), 5% of tokens
    /// unregistered at the provider, zones skewed and ids unordered as above.
    Multi,
}

#[allow(dead_code)]
impl Layout {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "uniform" => Some(Self::Uniform),
            "skewed" => Some(Self::Skewed),
            "multi" => Some(Self::Multi),
            _ => None,
        }
    }

    pub fn apps(self) -> &'static [&'static str] {
        match self {
            Self::Multi => &["shop", "news", "games"],
            _ => &["shop"],
        }
    }

    /// Users for `devices` devices.
    pub fn users(self, devices: i64) -> i64 {
        match self {
            Self::Multi => devices / 2,
            _ => devices,
        }
    }
}

/// The zones of the skewed layouts: three large ones first, then a dozen.
const SKEWED_ZONES: [&str; 15] = [
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Moscow",
    "Asia/Tokyo",
    "Asia/Shanghai",
    "Asia/Kathmandu",
    "Australia/Adelaide",
    "Australia/Sydney",
    "Africa/Lagos",
];

/// A user's zone in the skewed layouts: every third user in one of the three
/// large zones, the others over the dozen (1-based into `SKEWED_ZONES`).
const SKEWED_ZONE_INDEX: &str = "CASE WHEN g % 3 = 0 THEN 1 + (g / 3) % 3 ELSE 4 + g % 12 END";

/// Devices of the skewed layouts, from `users` (`u`) and up to three per user
/// (`k`): `x` numbers them, `h` is a fixed permutation of `x` that orders the
/// inserts (ids unrelated to users and zones) and picks platform and dead tokens.
/// `$1` now, `$2` devices per user at most (1 or 3).
const SKEWED_DEVICES: &str = "INSERT INTO devices (app_id, user_id, platform, token, timezone, zone, is_primary, created_at, updated_at) \
    SELECT app_id, id, CASE WHEN (h / 128) % 2 = 0 THEN 'ios' ELSE 'android' END, \
      CASE WHEN $2 > 1 AND (h / 1024) % 20 = 0 THEN 'dead' ELSE '' END || \
      CASE WHEN (h / 128) % 2 = 0 \
        THEN {ios} \
        ELSE 'fcm-' || x END, \
      timezone, timezone, k = 1, $1, $1 \
    FROM (SELECT u.app_id, u.id, u.timezone, k, u.id * 4 + k AS x, ((u.id * 4 + k) * 2654435761) % 4294967296 AS h \
          FROM users u JOIN {series} ON k <= CASE WHEN $2 > 1 THEN 1 + u.id % 3 ELSE 1 END) d \
    ORDER BY h";

/// Seeds `layout` with `devices` devices on the database at `url`
/// (`postgres://…` or `sqlite://…`), every user opted in to `marketing`, then
/// gathers statistics.
/// `bulk`: the seeded tables' secondary indexes are dropped for the load and
/// built again after it (see [`seed_indexes_drop`]).
#[allow(dead_code)]
pub async fn seed_layout(url: &str, layout: Layout, devices: i64, bulk: bool) {
    let rebuild = if bulk {
        seed_indexes_drop(url).await
    } else {
        Vec::new()
    };
    seed_layout_rows(url, layout, devices).await;
    if bulk {
        seed_indexes_create(url, rebuild).await;
    }
}

/// The tables a seed loads.
const SEEDED: &str = "('users', 'devices', 'subscriptions')";

/// Drops the secondary indexes of the seeded tables (not those behind a
/// constraint) and returns the statements that make them again. Inserting ten
/// million rows in an order unrelated to an index puts each entry at a random
/// page of it: with the indexes in place, seeding 10M devices on Postgres had
/// not finished after 15 minutes. `CREATE INDEX` sorts once instead.
async fn seed_indexes_drop(url: &str) -> Vec<String> {
    let list = if url.starts_with("postgres") {
        format!(
            "SELECT indexname, indexdef FROM pg_indexes i WHERE schemaname = current_schema() \
             AND tablename IN {SEEDED} \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        )
    } else {
        format!(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' \
             AND tbl_name IN {SEEDED} AND sql IS NOT NULL"
        )
    };
    let indexes: Vec<(String, String)> = if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let rows = sqlx::query_as(&list).fetch_all(&mut c).await.unwrap();
        for (name, _) in &rows {
            sqlx::query(&format!("DROP INDEX {name}"))
                .execute(&mut c)
                .await
                .unwrap();
        }
        rows
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let rows = sqlx::query_as(&list).fetch_all(&mut c).await.unwrap();
        for (name, _) in &rows {
            sqlx::query(&format!("DROP INDEX {name}"))
                .execute(&mut c)
                .await
                .unwrap();
        }
        rows
    };
    println!(
        "bulk seed: {} secondary indexes of {SEEDED} dropped for the load, built after it",
        indexes.len()
    );
    indexes.into_iter().map(|(_, sql)| sql).collect()
}

/// Makes the indexes [`seed_indexes_drop`] dropped, then gathers statistics.
async fn seed_indexes_create(url: &str, statements: Vec<String>) {
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query("SET maintenance_work_mem = '1GB'")
            .execute(&mut c)
            .await
            .unwrap();
        for sql in statements {
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        }
        sqlx::query("VACUUM ANALYZE").execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query("PRAGMA cache_size = -1000000")
            .execute(&mut c)
            .await
            .unwrap();
        for sql in statements {
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        }
        sqlx::query("ANALYZE").execute(&mut c).await.unwrap();
    }
}

async fn seed_layout_rows(url: &str, layout: Layout, devices: i64) {
    if layout == Layout::Uniform {
        return if url.starts_with("postgres") {
            seed_postgres(url.to_owned(), devices, false).await
        } else {
            seed_sqlite(url.to_owned(), devices, false).await
        };
    }
    let now = SystemClock.now();
    let users = layout.users(devices);
    let apps = layout.apps();
    let per_user: i64 = if layout == Layout::Multi { 3 } else { 1 };
    let pad = |n: usize| format!("'{}'", "0".repeat(n));
    // A dead token keeps 64 hex digits: "dead" and 60 more.
    let ios_len = "CASE WHEN $2 > 1 AND (h / 1024) % 20 = 0 THEN 60 ELSE 64 END";
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(&format!(
            "INSERT INTO users (app_id, external_id, timezone, created_at, updated_at) \
             SELECT ($2::text[])[1 + g % array_length($2::text[], 1)], 'u' || g, \
               ($3::text[])[{SKEWED_ZONE_INDEX}], $4, $4 FROM generate_series(1, $1) g"
        ))
        .bind(users)
        .bind(apps)
        .bind(SKEWED_ZONES)
        .bind(now)
        .execute(&mut c)
        .await
        .unwrap();
        let sql = SKEWED_DEVICES
            .replace("{ios}", &format!("lpad(x::text, {ios_len}, '0')"))
            .replace("{series}", "generate_series(1, 3) k");
        sqlx::query(&sql)
            .bind(now)
            .bind(per_user)
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query(SEED_SUBSCRIPTIONS)
            .bind(now)
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("VACUUM ANALYZE").execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let apps = serde_json::to_string(apps).unwrap();
        let zones = serde_json::to_string(&SKEWED_ZONES).unwrap();
        sqlx::query(&format!(
            "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $1) \
             INSERT INTO users (app_id, external_id, timezone, created_at, updated_at) \
             SELECT json_extract($2, '$[' || (g % json_array_length($2)) || ']'), 'u' || g, \
               json_extract($3, '$[' || ({SKEWED_ZONE_INDEX} - 1) || ']'), $4, $4 FROM s"
        ))
        .bind(users)
        .bind(apps)
        .bind(zones)
        .bind(now)
        .execute(&mut c)
        .await
        .unwrap();
        let sql = SKEWED_DEVICES
            .replace(
                "{ios}",
                &format!("substr({} || x, -({ios_len}), {ios_len})", pad(64)),
            )
            .replace(
                "{series}",
                "(SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3) k",
            );
        sqlx::query(&sql)
            .bind(now)
            .bind(per_user)
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query(SEED_SUBSCRIPTIONS)
            .bind(now)
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("ANALYZE").execute(&mut c).await.unwrap();
    }
}
