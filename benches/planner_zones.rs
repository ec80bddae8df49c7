//! Benchmark: the planner over every IANA zone, and the audience zone query for
//! 1,000,000 users on SQLite and Postgres.
//!
//!     cargo bench --bench planner_zones -- [--users N] [--backend sqlite|postgres|both]
//!
//! Postgres: MERIDIAN_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres);
//! the benchmark creates and drops its own database. Figures go in BENCHMARKS.md.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use meridian::clock::{Clock, SystemClock};
use meridian::config::DatabaseConfig;
use meridian::domain::campaign::{Audience, DevicePolicy, Missed, PlanSchedule};
use meridian::domain::planner::{plan, PlanRequest, ZoneCount};
use meridian::domain::zone::canonical_zones;
use meridian::store::{PgStore, Segment, SqliteStore, Store, TopicRule};
use sqlx::Connection;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench_planner(users: u64) {
    let zones: Vec<ZoneCount> = canonical_zones()
        .iter()
        .map(|tz| ZoneCount {
            zone: tz.name().to_owned(),
            recipients: users / 400,
        })
        .collect();
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
    let local = PlanSchedule::Local {
        at: meridian::domain::campaign::parse_local_datetime("2026-12-01T09:00").unwrap(),
        missed: Missed::Skip,
        grace: Duration::from_secs(3600),
    };
    let cron = PlanSchedule::Cron {
        cron: Box::new(
            croner::parser::CronParser::builder()
                .build()
                .parse("0 9 * * MON")
                .unwrap(),
        ),
        zone: None,
        until: None,
    };
    for (name, schedule) in [("local 09:00", &local), ("cron 0 9 * * MON", &cron)] {
        let mut times = Vec::new();
        let mut slots = 0;
        for _ in 0..200 {
            let t = Instant::now();
            let p = plan(&PlanRequest {
                schedule,
                quiet_hours: None,
                zones: &zones,
                default_zone: chrono_tz::UTC,
                now,
            })
            .unwrap();
            times.push(t.elapsed());
            slots = p.slots.len();
        }
        println!(
            "planner  {name:<18} {} zones -> {slots} slots: median {:?} per plan",
            zones.len(),
            median(times)
        );
    }
}

/// The segment variants measured.
fn segments(
    audience_all: &Audience,
    audience_primary: &Audience,
) -> Vec<(&'static str, Segment<'static>)> {
    // Leaked once per run: the benchmark is a short-lived process.
    let all: &'static Audience = Box::leak(Box::new(audience_all.clone()));
    let primary: &'static Audience = Box::leak(Box::new(audience_primary.clone()));
    let marketing = vec![TopicRule {
        name: "marketing",
        default_subscribed: false,
        cap: None,
    }];
    vec![
        (
            "all devices",
            Segment {
                app_id: "bench",
                audience: all,
                topics: vec![],
            },
        ),
        (
            "topic marketing",
            Segment {
                app_id: "bench",
                audience: all,
                topics: marketing.clone(),
            },
        ),
        (
            "marketing, primary",
            Segment {
                app_id: "bench",
                audience: primary,
                topics: marketing,
            },
        ),
    ]
}

async fn bench_zone_query<S: Store>(label: &str, store: &S) {
    let all = Audience::default();
    let primary = Audience {
        devices: DevicePolicy::Primary,
        ..Audience::default()
    };
    for (name, segment) in segments(&all, &primary) {
        let mut times = Vec::new();
        let mut zones = 0;
        let mut recipients = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let z = store.audience_count_by_zone(&segment).await.unwrap();
            times.push(t.elapsed());
            zones = z.len();
            recipients = z.iter().map(|z| z.recipients).sum::<u64>();
        }
        println!(
            "{label:<8} zone query {name:<20} {zones} zones, {recipients} recipients: median {:?} (best {:?})",
            median(times.clone()),
            times.iter().min().unwrap()
        );
    }
}

/// Seeds `users` users with one device each over every canonical zone; 60% opted in to marketing.
/// Raw SQL: generating a million rows is the benchmark's business, not the store's.
const SEED_COMMON: &[&str] = &[
    "INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ('bench', 'bench', 'UTC', $1, $1)",
];

async fn seed_postgres(url: &str, users: u64, zones: &[String]) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let now = SystemClock.now();
    for q in SEED_COMMON {
        sqlx::query(q).bind(now).execute(&mut c).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO users (app_id, external_id, timezone, created_at, updated_at) \
         SELECT 'bench', 'u' || g, ($2::text[])[1 + g % array_length($2::text[], 1)], $3, $3 \
         FROM generate_series(1, $1) g",
    )
    .bind(users as i64)
    .bind(zones)
    .bind(now)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO devices (app_id, user_id, platform, token, timezone, created_at, updated_at) \
         SELECT 'bench', id, CASE WHEN id % 2 = 0 THEN 'ios' ELSE 'android' END, 'tok' || id, timezone, $1, $1 FROM users",
    )
    .bind(now)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO subscriptions (user_id, topic, opted_in, updated_at) \
         SELECT id, 'marketing', TRUE, $1 FROM users WHERE id % 10 < 6",
    )
    .bind(now)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&mut c).await.unwrap();
    c.close().await.ok();
}

async fn seed_sqlite(url: &str, users: u64, zones: &[String]) {
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    let now = SystemClock.now();
    for q in SEED_COMMON {
        sqlx::query(q).bind(now).execute(&mut c).await.unwrap();
    }
    let zones_json = serde_json::to_string(zones).unwrap();
    sqlx::query(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $1) \
         INSERT INTO users (app_id, external_id, timezone, created_at, updated_at) \
         SELECT 'bench', 'u' || n, json_extract($2, '$[' || (n % json_array_length($2)) || ']'), $3, $3 FROM g",
    )
    .bind(users as i64)
    .bind(&zones_json)
    .bind(now)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO devices (app_id, user_id, platform, token, timezone, created_at, updated_at) \
         SELECT 'bench', id, CASE WHEN id % 2 = 0 THEN 'ios' ELSE 'android' END, 'tok' || id, timezone, $1, $1 FROM users",
    )
    .bind(now)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO subscriptions (user_id, topic, opted_in, updated_at) \
         SELECT id, 'marketing', 1, $1 FROM users WHERE id % 10 < 6",
    )
    .bind(now)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&mut c).await.unwrap();
    c.close().await.ok();
}

#[tokio::main]
async fn main() {
    let users: u64 = arg("--users")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let backend = arg("--backend").unwrap_or_else(|| "both".to_owned());
    let zones: Vec<String> = canonical_zones()
        .iter()
        .map(|tz| tz.name().to_owned())
        .collect();
    println!("meridian bench: {users} users over {} zones", zones.len());
    bench_planner(users);

    if backend == "sqlite" || backend == "both" {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let cfg = DatabaseConfig {
            url: url.clone(),
            ..DatabaseConfig::default()
        };
        let store = SqliteStore::connect(&cfg).await.unwrap();
        store.migrate().await.unwrap();
        let t = Instant::now();
        seed_sqlite(&url, users, &zones).await;
        println!("sqlite   seeded in {:?}", t.elapsed());
        bench_zone_query("sqlite", &store).await;
        store.close().await;
    }
    if backend == "postgres" || backend == "both" {
        let admin = std::env::var("MERIDIAN_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query("DROP DATABASE IF EXISTS meridian_bench WITH (FORCE)")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("CREATE DATABASE meridian_bench")
            .execute(&mut c)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path("meridian_bench");
        let cfg = DatabaseConfig {
            url: url.to_string(),
            ..DatabaseConfig::default()
        };
        let store = PgStore::connect(&cfg).await.unwrap();
        store.migrate().await.unwrap();
        let t = Instant::now();
        seed_postgres(url.as_str(), users, &zones).await;
        println!("postgres seeded in {:?}", t.elapsed());
        bench_zone_query("postgres", &store).await;
        store.close().await;
        sqlx::query("DROP DATABASE IF EXISTS meridian_bench WITH (FORCE)")
            .execute(&mut c)
            .await
            .unwrap();
    }
}
