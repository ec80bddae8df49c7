//! Retention: the oldest finished records go a batch at a time, nothing that
//! is still in use or not yet old enough goes, and the deletes read the
//! primary key, not the rows that stay.

use super::*;
use crate::common::TestDb;
use meridian::store::RetentionKind;

/// One table's ids, in order.
async fn ids<S: Store>(db: &TestDb<S>, table: &str) -> Vec<String> {
    db.raw_texts(&format!("SELECT CAST(id AS TEXT) FROM {table} ORDER BY id"))
        .await
        .unwrap()
}

async fn retention_prunes_old_finished_records_in_batches<S: Store>(db: &TestDb<S>) {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let at = |days: i64| (now - TimeDelta::days(days)).to_rfc3339();
    let (old, new) = (at(100), at(1));
    let before = now - TimeDelta::days(90);
    let mut setup = vec![
        format!("INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ('a', 'a', 'UTC', '{old}', '{old}')"),
        format!("INSERT INTO users (app_id, external_id, created_at, updated_at) VALUES ('a', 'u1', '{old}', '{old}')"),
        format!("INSERT INTO devices (app_id, user_id, platform, token, created_at, updated_at) VALUES ('a', 1, 'ios', 't1', '{old}', '{old}')"),
        format!("INSERT INTO campaigns (app_id, key, name, definition, state, created_at, updated_at) VALUES ('a', 'k', 'k', '{{}}', 'completed', '{old}', '{old}')"),
        format!("INSERT INTO slots (campaign_id, occurrence, zone, fire_at, disposition, state, created_at) VALUES (1, 'o', 'UTC', '{old}', 'on_time', 'completed', '{old}')"),
    ];
    // Deliveries 1-5 of the campaign: 1, 2 and 4 old and finished, 3 old but
    // waiting for a retry, 5 recent. Each has one history row of its own time.
    for (id, status, t) in [
        (1, "sent", &old),
        (2, "delivered", &old),
        (3, "retry", &old),
        (4, "token_invalid", &old),
        (5, "sent", &new),
    ] {
        setup.push(format!(
            "INSERT INTO deliveries (id, app_id, campaign_id, slot_id, occurrence, user_id, device_id, status, attempts, \
               sent_at, created_at, updated_at) \
             VALUES ({id}, 'a', 1, 1, 'o', 1, {id}, '{status}', 1, '{t}', '{t}', '{t}')"
        ));
        setup.push(format!(
            "INSERT INTO delivery_events (delivery_id, status, attempt, at) VALUES ({id}, '{status}', 1, '{t}')"
        ));
    }
    for (id, t) in [("p-old", &old), ("p-wait", &old), ("p-new", &new)] {
        setup.push(format!(
            "INSERT INTO push_requests (id, app_id, message, created_at) VALUES ('{id}', 'a', '{{}}', '{t}')"
        ));
    }
    for (request, state, t) in [
        ("p-old", "sent", &old),
        ("p-wait", "pending", &old),
        ("p-new", "failed", &new),
    ] {
        setup.push(format!(
            "INSERT INTO fallbacks (app_id, request_id, user_id, reason, state, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ('a', '{request}', 1, 'no_device', '{state}', 1, '{t}', '{t}', '{t}')"
        ));
    }
    for (state, t) in [("dead", &old), ("pending", &old), ("dead", &new)] {
        setup.push(format!(
            "INSERT INTO webhook_outbox (app_id, status, at, state, next_attempt_at) VALUES ('a', 'sent', '{t}', '{state}', '{t}')"
        ));
    }
    for (key, t) in [("k-old", &old), ("k-new", &new)] {
        setup.push(format!(
            "INSERT INTO idempotency_keys (app_id, key, request_hash, created_at) VALUES ('a', '{key}', 'h', '{t}')"
        ));
    }
    for (state, t) in [("done", &old), ("cancelled", &old), ("done", &new)] {
        setup.push(format!(
            "INSERT INTO slot_chunks (slot_id, campaign_id, first_device_id, last_device_id, recipients, state, created_at, updated_at) \
             VALUES (1, 1, 1, 5, 5, '{state}', '{t}', '{t}')"
        ));
    }
    for sql in setup {
        db.raw(&sql).await.unwrap();
    }
    let counts = db.store.delivery_count_by_status(1).await.unwrap();
    let prune = |kind, limit| db.store.retention_prune(kind, before, limit);

    // A batch at a time, oldest first; the retry waits, the recent one stays.
    assert_eq!(prune(RetentionKind::Deliveries, 2).await.unwrap(), 2);
    assert_eq!(ids(db, "deliveries").await, ["3", "4", "5"]);
    assert_eq!(prune(RetentionKind::Deliveries, 2).await.unwrap(), 1);
    assert_eq!(prune(RetentionKind::Deliveries, 2).await.unwrap(), 0);
    assert_eq!(ids(db, "deliveries").await, ["3", "5"]);
    // Their history went with them; a kept one's old history goes in History's turn.
    let history = || {
        db.raw_texts(
            "SELECT CAST(delivery_id AS TEXT) || ':' || status FROM delivery_events ORDER BY id",
        )
    };
    assert_eq!(history().await.unwrap(), ["3:retry", "5:sent"]);
    assert_eq!(prune(RetentionKind::History, 10).await.unwrap(), 1);
    assert_eq!(history().await.unwrap(), ["5:sent"]);
    // The campaign's counts outlive its messages.
    assert_eq!(db.store.delivery_count_by_status(1).await.unwrap(), counts);

    assert_eq!(prune(RetentionKind::PushRequests, 10).await.unwrap(), 1);
    assert_eq!(
        db.raw_texts("SELECT id FROM push_requests ORDER BY id")
            .await
            .unwrap(),
        ["p-new", "p-wait"],
        "a push whose fallback still waits keeps its message"
    );
    assert_eq!(prune(RetentionKind::Fallbacks, 10).await.unwrap(), 1);
    assert_eq!(ids(db, "fallbacks").await, ["2", "3"]);
    assert_eq!(prune(RetentionKind::Webhooks, 10).await.unwrap(), 1);
    assert_eq!(
        db.raw_texts("SELECT state FROM webhook_outbox ORDER BY id")
            .await
            .unwrap(),
        ["pending", "dead"]
    );
    assert_eq!(prune(RetentionKind::IdempotencyKeys, 10).await.unwrap(), 1);
    assert_eq!(
        db.raw_texts("SELECT key FROM idempotency_keys")
            .await
            .unwrap(),
        ["k-new"]
    );
    assert_eq!(prune(RetentionKind::Chunks, 1).await.unwrap(), 1);
    assert_eq!(prune(RetentionKind::Chunks, 1).await.unwrap(), 1);
    assert_eq!(prune(RetentionKind::Chunks, 1).await.unwrap(), 0);
    assert_eq!(ids(db, "slot_chunks").await, ["3"]);
    // Nothing is old enough any more: every kind finds nothing.
    for kind in RetentionKind::ALL {
        assert_eq!(prune(kind, 10).await.unwrap(), 0, "{kind:?}");
    }
    // An empty table is no error.
    db.raw("DELETE FROM slot_chunks").await.unwrap();
    assert_eq!(prune(RetentionKind::Chunks, 10).await.unwrap(), 0);

    // The batch is read through the primary key below the boundary, never by
    // scanning the rows that stay.
    let end = 5;
    let plan = super::dispatch::plan_of(
        db,
        &format!(
            "SELECT id FROM deliveries WHERE id < {end} AND created_at < '{old}' \
               AND status NOT IN ('queued', 'leased', 'retry') ORDER BY id LIMIT 10"
        ),
        "deliveries",
    )
    .await;
    let by_key = if db.url.starts_with("sqlite:") {
        plan.contains("USING INTEGER PRIMARY KEY (rowid<?)")
    } else {
        plan.contains("Index Scan using deliveries_pkey")
    };
    assert!(by_key, "{plan}");
    // The ends of an id range are read from the index's ends, never by a scan
    // (SQLite scans for MIN and MAX in one SELECT: each gets its own subquery).
    for (sql, table) in [
        (
            "SELECT (SELECT MIN(id) FROM deliveries), (SELECT MAX(id) FROM deliveries)",
            "deliveries",
        ),
        (
            "SELECT (SELECT MIN(id) FROM devices WHERE app_id = 'a' AND zone = 'UTC' AND state = 'active'), \
                    (SELECT MAX(id) FROM devices WHERE app_id = 'a' AND zone = 'UTC' AND state = 'active')",
            "devices",
        ),
    ] {
        let plan = super::dispatch::plan_of(db, sql, table).await;
        assert!(
            !plan.contains(&format!("SCAN {table}")) && !plan.contains("Seq Scan"),
            "{sql}: {plan}"
        );
    }
    // Push requests and idempotency keys are found per app through their
    // (app_id, created_at) indexes.
    for (table, index) in [
        ("push_requests", "push_requests_by_app"),
        ("idempotency_keys", "idempotency_keys_by_age"),
    ] {
        let plan = super::dispatch::plan_of(
            db,
            &format!(
                "SELECT t.app_id FROM apps a JOIN {table} t ON t.app_id = a.id \
                 WHERE t.created_at < '{old}' LIMIT 10"
            ),
            table,
        )
        .await;
        assert!(plan.contains(index), "{plan}");
    }
}

storage_tests!(retention_prunes_old_finished_records_in_batches);
