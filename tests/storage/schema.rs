//! Migrations and the schema: checks that match the code, upgrades that keep
//! rows, SQLite's connections.

use super::*;

async fn migrations_are_idempotent<S: Store>(db: &TestDb<S>) {
    db.store.migrate().await.expect("second migrate is a no-op");
    db.store.ping().await.expect("ping");
}

async fn campaign_transitions_match_code<S: Store>(db: &TestDb<S>) {
    let mut in_sql = db.store.campaign_transition_list().await.unwrap();
    in_sql.sort();
    let mut in_code: Vec<(String, String)> = CampaignState::transitions()
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    in_code.sort();
    assert_eq!(in_sql, in_code);
}

/// The values a column's `CHECK (column IN (…))` allows, read from the schema
/// as the database holds it.
async fn checked_values<S: Store>(db: &TestDb<S>, table: &str, column: &str) -> Vec<String> {
    let (texts, start) = if db.url.starts_with("sqlite:") {
        let sql =
            format!("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{table}'");
        (db.raw_texts(&sql).await.unwrap(), format!("{column} IN ("))
    } else {
        let sql = format!(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c \
             JOIN pg_class t ON t.oid = c.conrelid WHERE t.relname = '{table}' AND c.contype = 'c'"
        );
        (
            db.raw_texts(&sql).await.unwrap(),
            format!("({column} = ANY (ARRAY["),
        )
    };
    let text = texts
        .iter()
        .find_map(|t| t.split_once(&start).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no CHECK on {table}.{column} in {texts:?}"));
    let list = &text[..text.find(')').unwrap()];
    let mut values: Vec<String> = list
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    values.sort();
    values
}

/// Every state machine's values are exactly what its table's `CHECK` allows,
/// and so are the platforms: a row the code reads always parses.
async fn state_enums_match_the_schema_checks<S: Store>(db: &TestDb<S>) {
    fn names<M: StateMachine>() -> Vec<String> {
        let mut v: Vec<String> = M::ALL.iter().map(|s| s.as_str().to_owned()).collect();
        v.sort();
        v
    }
    let cases = [
        ("campaigns", "state", names::<CampaignState>()),
        ("slots", "state", names::<SlotState>()),
        ("devices", "state", names::<DeviceState>()),
        ("deliveries", "status", names::<DeliveryStatus>()),
        ("slot_chunks", "state", names::<ChunkState>()),
        ("webhook_outbox", "state", names::<OutboxState>()),
        ("fallbacks", "state", names::<FallbackState>()),
        (
            "devices",
            "platform",
            vec!["android".to_owned(), "ios".to_owned()],
        ),
    ];
    for (table, column, in_code) in cases {
        assert_eq!(
            checked_values(db, table, column).await,
            in_code,
            "{table}.{column}"
        );
    }
    for p in [Platform::Ios, Platform::Android] {
        assert_eq!(Platform::try_from(p.as_str().to_owned()), Ok(p));
    }
}

async fn schema_refuses_bad_rows<S: Store>(db: &TestDb<S>) {
    app(&db.store, "shop").await;
    db.store
        .device_upsert(&device("shop", Some("u1"), "tok-1"), now())
        .await
        .unwrap();
    let t = "'2026-11-23T10:00:00+00:00'";
    // Unique token per app.
    let dup = format!(
        "INSERT INTO devices (app_id, install_id, platform, token, created_at, updated_at) \
         VALUES ('shop', 'i1', 'ios', 'tok-1', {t}, {t})"
    );
    assert!(db.raw(&dup).await.is_err(), "duplicate token accepted");
    // Allowed platform values.
    let bad_platform = format!(
        "INSERT INTO devices (app_id, install_id, platform, token, created_at, updated_at) \
         VALUES ('shop', 'i1', 'windows', 'tok-2', {t}, {t})"
    );
    assert!(
        db.raw(&bad_platform).await.is_err(),
        "unknown platform accepted"
    );
    // Foreign keys.
    let orphan = format!(
        "INSERT INTO devices (app_id, install_id, platform, token, created_at, updated_at) \
         VALUES ('nope', 'i1', 'ios', 'tok-3', {t}, {t})"
    );
    assert!(
        db.raw(&orphan).await.is_err(),
        "device of unknown app accepted"
    );
    // A device belongs to a user or an install.
    let nobody = format!(
        "INSERT INTO devices (app_id, platform, token, created_at, updated_at) VALUES ('shop', 'ios', 'tok-4', {t}, {t})"
    );
    assert!(db.raw(&nobody).await.is_err(), "ownerless device accepted");
    // Allowed delivery statuses.
    let c = format!(
        "INSERT INTO campaigns (app_id, key, name, definition, state, created_at, updated_at) \
         VALUES ('shop', 'k', 'k', '{{}}', 'draft', {t}, {t})"
    );
    db.raw(&c).await.expect("valid campaign row");
    let bad_status = format!(
        "INSERT INTO deliveries (app_id, campaign_id, occurrence, device_id, status, created_at, updated_at) \
         SELECT 'shop', c.id, 'o', d.id, 'teleported', {t}, {t} FROM campaigns c, devices d"
    );
    assert!(
        db.raw(&bad_status).await.is_err(),
        "unknown delivery status accepted"
    );
    let good_status = bad_status.replace("'teleported'", "'queued'");
    assert_eq!(db.raw(&good_status).await.expect("valid delivery row"), 1);
    // The campaign state machine holds in SQL too.
    assert!(
        db.raw("UPDATE campaigns SET state = 'completed'")
            .await
            .is_err(),
        "draft -> completed accepted"
    );
    assert_eq!(
        db.raw("UPDATE campaigns SET state = 'scheduled'")
            .await
            .unwrap(),
        1
    );
    assert!(db
        .raw("UPDATE campaigns SET state = 'draft', name = 'x' WHERE state = 'nope'")
        .await
        .is_ok());
    assert!(
        db.raw("UPDATE campaigns SET state = 'bogus'")
            .await
            .is_err(),
        "unknown state accepted"
    );
}

/// SQLite cannot alter a CHECK, so `0003` rebuilds `deliveries` and
/// `delivery_events`: rows written under `0002` must survive it (and `0011`'s
/// rebuild after it), history included.
#[tokio::test]
async fn sqlite_rebuild_in_0003_keeps_deliveries_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let t = "2026-11-23T10:00:00+00:00";
    let pool = sqlite_upgraded_from(&dir.path().join("m.db"), 3, t, &[
        "INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ('a', 'a', 'UTC', $1, $1)",
        "INSERT INTO devices (app_id, install_id, platform, token, created_at, updated_at) VALUES ('a', 'i', 'ios', 't', $1, $1)",
        "INSERT INTO deliveries (app_id, request_id, device_id, status, created_at, updated_at, sent_at) \
         VALUES ('a', 'r', 1, 'sent', $1, $1, $1)",
        "INSERT INTO delivery_events (delivery_id, status, attempt, at) VALUES (1, 'sent', 1, $1)",
    ])
    .await;
    let kept: (String, Option<String>, i64) = sqlx::query_as(
        "SELECT d.status, d.sent_at, (SELECT COUNT(*) FROM delivery_events e WHERE e.delivery_id = d.id) \
         FROM deliveries d WHERE d.id = 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kept, ("sent".to_owned(), Some(t.to_owned()), 1));
    sqlx::query("UPDATE deliveries SET status = 'suppressed' WHERE id = 1")
        .execute(&pool)
        .await
        .unwrap();
}

/// `0011` rebuilds `deliveries` and `delivery_events` without foreign keys (as
/// Postgres' `0004` dropped them): rows and history written before it survive,
/// with their ids, and neither table names a parent any more, so the engine's
/// insert of a delivery looks up no apps, campaigns, slots, users or devices.
#[tokio::test]
async fn sqlite_0011_drops_delivery_foreign_keys_and_keeps_rows() {
    let dir = tempfile::tempdir().unwrap();
    let t = "2026-12-03T10:00:00+00:00";
    let pool = sqlite_upgraded_from(&dir.path().join("m.db"), 11, t, &[
        "INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ('a', 'a', 'UTC', $1, $1)",
        "INSERT INTO devices (app_id, install_id, platform, token, created_at, updated_at) VALUES ('a', 'i', 'ios', 't', $1, $1)",
        "INSERT INTO deliveries (id, app_id, request_id, device_id, status, attempts, created_at, updated_at, next_attempt_at) \
         VALUES (7, 'a', 'r', 1, 'retry', 1, $1, $1, $1)",
        "INSERT INTO delivery_events (delivery_id, status, attempt, detail, at) VALUES (7, 'retry', 1, 'busy', $1)",
    ])
    .await;
    let kept: (i64, String, Option<String>, String) = sqlx::query_as(
        "SELECT d.id, d.status, d.next_attempt_at, e.detail FROM deliveries d \
         JOIN delivery_events e ON e.delivery_id = d.id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        kept,
        (7, "retry".to_owned(), Some(t.to_owned()), "busy".to_owned())
    );
    for table in ["deliveries", "delivery_events"] {
        let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pragma_foreign_key_list($1)")
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(keys, 0, "{table} still has foreign keys");
    }
    // The queue's partial index came back with the table.
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE status IN ('queued', 'retry') \
         ORDER BY priority DESC, next_attempt_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|r| r.3.contains("deliveries_leasable")),
        "{plan:?}"
    );
}

/// `0019` records every user each device has had: its current user from
/// `devices`, earlier ones from the deliveries sent while it was theirs (a user
/// since gone is left out), so caps and message lists keep their history.
#[tokio::test]
async fn sqlite_0019_keeps_each_devices_earlier_users() {
    let dir = tempfile::tempdir().unwrap();
    let t = "2026-12-08T10:00:00+00:00";
    let pool = sqlite_upgraded_from(&dir.path().join("m.db"), 19, t, &[
        "INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ('a', 'a', 'UTC', $1, $1)",
        "INSERT INTO users (id, app_id, external_id, created_at, updated_at) VALUES (1, 'a', 'ann', $1, $1), (2, 'a', 'bob', $1, $1)",
        "INSERT INTO devices (id, app_id, user_id, platform, token, created_at, updated_at) VALUES (5, 'a', 2, 'ios', 't', $1, $1)",
        "INSERT INTO deliveries (id, app_id, request_id, user_id, device_id, status, attempts, created_at, updated_at) \
         VALUES (7, 'a', 'r', 1, 5, 'sent', 1, $1, $1), (8, 'a', 'r2', 9, 5, 'sent', 1, $1, $1)",
    ])
    .await;
    let pairs: Vec<(i64, i64)> =
        sqlx::query_as("SELECT user_id, device_id FROM device_users ORDER BY user_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(pairs, [(1, 5), (2, 5)]);
    // The triggers keep it from now on: a new device, and a device moving on.
    for sql in [
        "INSERT INTO devices (id, app_id, user_id, platform, token, created_at, updated_at) VALUES (6, 'a', 1, 'ios', 'u', $1, $1)",
        "UPDATE devices SET user_id = 1 WHERE id = 5",
    ] {
        sqlx::query(sql).bind(t).execute(&pool).await.unwrap();
    }
    let pairs: Vec<(i64, i64)> =
        sqlx::query_as("SELECT user_id, device_id FROM device_users ORDER BY user_id, device_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(pairs, [(1, 5), (1, 6), (2, 5)]);
}

/// `0009` gives every slot released before it a release of its own, the one its
/// chunks already belong to (the slot itself); a pending slot waits for its
/// release to name it. The engine reads a chunk's zones and completes its slots
/// through `released_with` alone.
#[tokio::test]
async fn slots_released_before_0009_own_their_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let t = "2026-11-23T10:00:00+00:00";
    let pool = sqlite_upgraded_from(&dir.path().join("m.db"), 9, t, &[
        "INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ('a', 'a', 'UTC', $1, $1)",
        "INSERT INTO campaigns (id, app_id, key, name, definition, state, created_at, updated_at) \
         VALUES (1, 'a', 'k', 'k', '{}', 'running', $1, $1)",
        "INSERT INTO slots (id, campaign_id, occurrence, zone, fire_at, disposition, state, released_at, created_at) \
         VALUES (1, 1, 'o', 'UTC', $1, 'on_time', 'released', $1, $1), \
                (2, 1, 'o', 'Asia/Tokyo', $1, 'on_time', 'pending', NULL, $1)",
    ])
    .await;
    let groups: Vec<(i64, Option<i64>)> =
        sqlx::query_as("SELECT id, released_with FROM slots ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(groups, [(1, Some(1)), (2, None)]);
}

/// The SQLite writer checkpoints only past 100,000 WAL frames; a connection of
/// the store's own copies committed frames back into the database file within
/// seconds. A reader that ignores the WAL (`immutable`) sees a committed row only
/// once it has been checkpointed.
#[tokio::test]
async fn sqlite_wal_is_checkpointed_by_its_own_connection() {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::Connection;
    let db = common::sqlite().await;
    db.raw(
        "INSERT INTO apps (id, name, default_timezone, created_at, updated_at) \
         VALUES ('ckpt', 'ckpt', 'UTC', '2026-12-02T00:00:00+00:00', '2026-12-02T00:00:00+00:00')",
    )
    .await
    .unwrap();
    let file = db.url.trim_start_matches("sqlite://").to_owned();
    let in_file = || async {
        let opts = SqliteConnectOptions::new()
            .filename(&file)
            .read_only(true)
            .immutable(true);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        // Before the first checkpoint the file does not even hold the schema.
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apps WHERE id = 'ckpt'")
            .fetch_one(&mut c)
            .await
            .unwrap_or(0);
        c.close().await.ok();
        n
    };
    let mut seen = 0;
    for _ in 0..50 {
        seen = in_file().await;
        if seen == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(seen, 1, "the committed row reached the database file");
    db.finish().await;
}

/// A store dropped without `close` leaves no connection to its file behind: its
/// checkpointer stops and lets go of the write pool. Leaving WAL mode needs the
/// file to itself, so it fails while any other connection is open.
#[tokio::test]
async fn a_dropped_sqlite_store_leaves_no_connection_open() {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.db");
    let store = migrated_sqlite_at(&file).await;
    drop(store);
    let opts = SqliteConnectOptions::new()
        .filename(&file)
        .busy_timeout(std::time::Duration::ZERO);
    let mut left = String::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        let mode: Result<String, _> = sqlx::query_scalar("PRAGMA journal_mode = DELETE")
            .fetch_one(&mut c)
            .await;
        c.close().await.ok();
        match mode {
            Ok(m) if m == "delete" => return,
            Ok(m) => left = m,
            Err(e) => left = e.to_string(),
        }
    }
    panic!("another connection still holds the file: {left}");
}

/// A one-connection pool on a new SQLite file with the migrations before `version` applied.
async fn sqlite_migrated_below(file: &std::path::Path, version: i64) -> sqlx::SqlitePool {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let mut before = sqlx::migrate!("migrations/sqlite");
    before.migrations = std::borrow::Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < version)
            .cloned()
            .collect(),
    );
    before.run(&pool).await.unwrap();
    pool
}

/// A SQLite file migrated below `version`, given `rows` (each statement binds
/// `t` as `$1`), then opened and migrated by the store: a pool on the upgraded
/// file, foreign keys on.
async fn sqlite_upgraded_from(
    file: &std::path::Path,
    version: i64,
    t: &str,
    rows: &[&str],
) -> sqlx::SqlitePool {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let pool = sqlite_migrated_below(file, version).await;
    for sql in rows {
        sqlx::query(sql).bind(t).execute(&pool).await.unwrap();
    }
    pool.close().await;
    migrated_sqlite_at(file).await.close().await;
    SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(file)
                .foreign_keys(true),
        )
        .await
        .unwrap()
}

/// The store opened (and migrated) on a given SQLite file.
async fn migrated_sqlite_at(file: &std::path::Path) -> meridian::store::SqliteStore {
    let store = meridian::store::SqliteStore::connect(&meridian::config::DatabaseConfig {
        url: format!("sqlite://{}", file.display()),
        ..meridian::config::DatabaseConfig::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
}

storage_tests!(
    migrations_are_idempotent,
    campaign_transitions_match_code,
    state_enums_match_the_schema_checks,
    schema_refuses_bad_rows,
);
