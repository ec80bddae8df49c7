//! Test databases: a fresh SQLite file or a fresh Postgres database per test.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use meridian::clock::SystemClock;
use meridian::config::{Config, DatabaseConfig};
use meridian::store::{PgStore, SqliteStore, Store};
use sqlx::Connection;

pub mod api;
pub mod console;
pub mod rig;
pub mod sim;
pub mod webdriver;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A migrated store on its own database, and the URL to reach that database directly.
pub struct TestDb<S> {
    pub store: S,
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

/// A port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

pub fn pg_url() -> String {
    std::env::var("MERIDIAN_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

fn pg_required() -> bool {
    std::env::var("MERIDIAN_REQUIRE_PG").is_ok_and(|v| v == "1" || v == "true")
}

pub async fn sqlite() -> TestDb<SqliteStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("meridian.db").display());
    let cfg = DatabaseConfig {
        url: url.clone(),
        ..DatabaseConfig::default()
    };
    let store = SqliteStore::connect(&cfg).await.expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    TestDb {
        store,
        url,
        cleanup: Cleanup::Sqlite(dir),
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh Postgres database, or `None` (with a note) when no server answers
/// and `MERIDIAN_REQUIRE_PG` is not set.
pub async fn postgres() -> Option<TestDb<PgStore>> {
    let admin_url = pg_url();
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(c) => c,
        Err(e) if !pg_required() => {
            eprintln!("SKIPPED: no Postgres at {admin_url} ({e}); set MERIDIAN_REQUIRE_PG=1 to fail instead");
            return None;
        }
        Err(e) => panic!("Postgres required but unreachable at {admin_url}: {e}"),
    };
    let name = format!(
        "meridian_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop stale test database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    admin.close().await.ok();
    let mut url = url::Url::parse(&admin_url).expect("MERIDIAN_TEST_PG_URL is a URL");
    url.set_path(&name);
    let url = url.to_string();
    let cfg = DatabaseConfig {
        url: url.clone(),
        max_connections: 4,
        ..DatabaseConfig::default()
    };
    let store = PgStore::connect(&cfg)
        .await
        .expect("connect to test database");
    store.migrate().await.expect("migrate postgres");
    Some(TestDb {
        store,
        url,
        cleanup: Cleanup::Postgres { admin_url, name },
    })
}

impl<S: Store> TestDb<S> {
    /// Runs one statement on a separate connection, bypassing the store
    /// (to prove that the schema itself refuses bad rows).
    pub async fn raw(&self, sql: &str) -> Result<u64, sqlx::Error> {
        if self.url.starts_with("sqlite:") {
            let opts: sqlx::sqlite::SqliteConnectOptions = self.url.parse()?;
            let mut c = sqlx::SqliteConnection::connect_with(&opts.foreign_keys(true)).await?;
            let r = sqlx::query(sql).execute(&mut c).await?.rows_affected();
            c.close().await?;
            Ok(r)
        } else {
            let mut c = sqlx::PgConnection::connect(&self.url).await?;
            let r = sqlx::query(sql).execute(&mut c).await?.rows_affected();
            c.close().await?;
            Ok(r)
        }
    }

    /// One text column of every row a query returns, on a separate connection.
    pub async fn raw_texts(&self, sql: &str) -> Result<Vec<String>, sqlx::Error> {
        if self.url.starts_with("sqlite:") {
            let opts: sqlx::sqlite::SqliteConnectOptions = self.url.parse()?;
            let mut c = sqlx::SqliteConnection::connect_with(&opts).await?;
            let r = sqlx::query_scalar(sql).fetch_all(&mut c).await?;
            c.close().await?;
            Ok(r)
        } else {
            let mut c = sqlx::PgConnection::connect(&self.url).await?;
            let r = sqlx::query_scalar(sql).fetch_all(&mut c).await?;
            c.close().await?;
            Ok(r)
        }
    }

    /// A campaign's counts by slot, status and minute sent, as
    /// `slot|status|minute|n` lines: `by_hand` counts its deliveries, the other
    /// reads the store (the tallies the database keeps, 0016).
    pub async fn delivery_counts(&self, campaign_id: i64) -> (Vec<String>, Vec<String>) {
        let minute = if self.url.starts_with("sqlite:") {
            "CAST(strftime('%s', sent_at) AS INTEGER) / 60"
        } else {
            "CAST(FLOOR(EXTRACT(EPOCH FROM sent_at)) AS BIGINT) / 60"
        };
        let mut by_hand = self
            .raw_texts(&format!(
                "SELECT CAST(COALESCE(slot_id, 0) AS TEXT) || '|' || status || '|' || \
                   CAST(COALESCE({minute}, 0) AS TEXT) || '|' || CAST(COUNT(*) AS TEXT) \
                 FROM deliveries WHERE campaign_id = {campaign_id} \
                 GROUP BY slot_id, status, {minute}"
            ))
            .await
            .expect("count deliveries");
        let mut tallied: Vec<String> = self
            .store
            .delivery_count_by_slot_minute(campaign_id)
            .await
            .expect("read tallies")
            .into_iter()
            .map(|c| {
                format!(
                    "{}|{}|{}|{}",
                    c.slot_id.unwrap_or(0),
                    c.status,
                    c.minute.unwrap_or(0),
                    c.n
                )
            })
            .collect();
        by_hand.sort();
        tallied.sort();
        (by_hand, tallied)
    }

    /// Fails unless the store's counts of a campaign are its deliveries'.
    pub async fn assert_tallies_match(&self, campaign_id: i64) {
        let (by_hand, tallied) = self.delivery_counts(campaign_id).await;
        assert!(!by_hand.is_empty(), "campaign {campaign_id} has deliveries");
        assert_eq!(tallied, by_hand, "tallies of campaign {campaign_id}");
    }

    pub async fn finish(self) {
        self.store.close().await;
        if let Cleanup::Postgres { admin_url, name } = self.cleanup {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
                let _ = admin.close().await;
            }
        }
    }
}

/// Serves the REST API over `store` on a free loopback port; its base URL.
pub async fn serve_api<S: Store>(store: Arc<S>, config: Config) -> String {
    let router = meridian::api::router(meridian::api::ApiState::new(
        store,
        Arc::new(config),
        Arc::new(SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    // With the peer's address, as `serve` runs it (limits per address).
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    base
}

/// Runs each listed `async fn NAME<S: Store>(db: &TestDb<S>)` once on SQLite and once on Postgres.
#[macro_export]
macro_rules! storage_tests {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::sqlite().await;
                    $crate::common::run_and_finish(db, |db| Box::pin(super::$name(db))).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::common::postgres().await else { return };
                    $crate::common::run_and_finish(db, |db| Box::pin(super::$name(db))).await;
                }
            )*
        }
    };
}

/// Runs a test body and always drops its database, re-raising the body's panic.
pub async fn run_and_finish<S, F>(db: TestDb<S>, body: F)
where
    S: Store,
    F: for<'a> FnOnce(
        &'a TestDb<S>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>,
{
    use futures::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(body(&db)).catch_unwind().await;
    db.finish().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
