//! Leases, write-backs and the plans of the statements the engine polls.

use super::*;

/// A chunk's recipients are read from the covering zone index alone: on SQLite a
/// covering-index search, on Postgres an index-only scan (the table being
/// all-visible after VACUUM), never a table page per recipient.
async fn chunk_read_uses_the_covering_zone_index<S: Store>(db: &TestDb<S>) {
    use meridian::store::segment::recipients_in_range_sql;
    let audience = Audience::default();
    let segment = Segment {
        app_id: "shop",
        audience: &audience,
        topics: Vec::new(),
    };
    let zone = Some("Europe/Paris");
    let (sql, _) = match db.store.kind() {
        DatabaseKind::Sqlite => {
            recipients_in_range_sql::<SqliteDialect>(&segment, zone, Some((1, 1000)))
        }
        DatabaseKind::Postgres => {
            recipients_in_range_sql::<PgDialect>(&segment, zone, Some((1, 1000)))
        }
    };
    // The binds, in order: app, zone, first and last device id.
    let sql = sql
        .replace("$1", "'shop'")
        .replace("$2", "'Europe/Paris'")
        .replace("$3", "1")
        .replace("$4", "1000");
    let plan = plan_of(db, &sql, "devices").await;
    let expected = if db.url.starts_with("sqlite:") {
        "USING COVERING INDEX devices_active_by_zone"
    } else {
        "Index Only Scan using devices_active_by_zone"
    };
    assert!(plan.contains(expected), "chunk read plan: {plan}");
}

/// A transactional push costs the ids it names, never the app's size: each
/// statement of `queue_push` runs from the request's list of ids and probes one
/// index per id by its whole key. On SQLite the id lookup searched the app's
/// users by `app_id` alone and scanned the list under each (102 s for 1,000 ids
/// at 100,000 users); Postgres must not hash or merge the app's rows either.
async fn push_statements_probe_an_index_per_id<S: Store>(db: &TestDb<S>) {
    use meridian::store::push::{insert_sql, no_device_fallback_sql, resolve_sql};
    let sqlite = db.url.starts_with("sqlite:");
    if !sqlite {
        // Postgres plans by its statistics: an app of 20,000 users and devices
        // makes hashing or scanning the app's rows cost what it would.
        app(&db.store, "shop").await;
        for sql in [
            "INSERT INTO users (app_id, external_id, phone, created_at, updated_at) \
             SELECT 'shop', 'u' || g, '+49151' || lpad(g::text, 7, '0'), now(), now() \
             FROM generate_series(1, 20000) g",
            "INSERT INTO devices (app_id, user_id, install_id, platform, token, zone, created_at, updated_at) \
             SELECT 'shop', u.id, 'i' || u.id, 'android', 't' || u.id, 'UTC', now(), now() FROM users u",
            "ANALYZE users",
            "ANALYZE devices",
        ] {
            db.raw(sql).await.unwrap();
        }
    }
    let rows = |param: &str, cols: &[(&str, &str)]| {
        if sqlite {
            SqliteDialect::json_rows(param, cols)
        } else {
            PgDialect::json_rows(param, cols)
        }
    };
    let ids = r#"'[{"ord": 0, "kind": "user", "ext": "u1", "phone": "491511"}, {"ord": 1, "kind": "install", "ext": "i1", "phone": null}]'"#;
    let id_rows = r#"'[{"id": 1}, {"id": 2}]'"#;
    let at = "'2026-12-01 09:00:00+00:00'";
    // Binds written in from the last, so that `$1` does not match the start of `$10`.
    let write_in = |sql: String, binds: &[&str]| {
        binds
            .iter()
            .enumerate()
            .rev()
            .fold(sql, |sql, (i, b)| sql.replace(&format!("${}", i + 1), b))
    };
    let statements = [
        ("resolve", write_in(resolve_sql(rows), &["'shop'", ids])),
        (
            "insert, all devices, a topic",
            write_in(
                insert_sql(rows, false, true),
                &[
                    "'shop'", "'req_1'", "10", at, id_rows, id_rows, "'orders'", "TRUE",
                ],
            ),
        ),
        (
            "insert, the primary device",
            write_in(
                insert_sql(rows, true, false),
                &[
                    "'shop'", "'req_1'", "10", at, id_rows, id_rows, "NULL", "NULL",
                ],
            ),
        ),
        (
            "fallback",
            write_in(
                no_device_fallback_sql(rows),
                &["'shop'", "'req_1'", at, id_rows],
            ),
        ),
    ];
    for (what, sql) in statements {
        let plan = plan_of(db, &sql, "users").await;
        if sqlite {
            // Every read of users or devices is a search by a whole key.
            let keyed = [
                "external_id=?",
                "phone=?",
                "install_id=?",
                "rowid=?",
                "user_id=?",
            ];
            for line in plan.lines() {
                let step = line.trim_start_matches(|c: char| !c.is_alphabetic());
                let table = step.split_whitespace().nth(1).unwrap_or("");
                let reads_table = (step.starts_with("SCAN ") || step.starts_with("SEARCH "))
                    && ["u", "e", "v", "d", "q"].contains(&table);
                assert!(
                    !reads_table || keyed.iter().any(|k| step.contains(k)),
                    "{what}: `{step}` reads users or devices by more than a key:\n{plan}"
                );
            }
        } else {
            for bad in ["Seq Scan", "Hash Join", "Merge Join"] {
                assert!(!plan.contains(bad), "{what}: {bad}:\n{plan}");
            }
            // Every scan of users or devices has a key in its index condition
            // (the old insert walked `devices_by_user` on `state` alone).
            let lines: Vec<&str> = plan.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if !(line.contains(" on users ") || line.contains(" on devices ")) {
                    continue;
                }
                let cond = lines[i + 1..]
                    .iter()
                    .take_while(|l| !l.contains("->"))
                    .find(|l| l.contains("Index Cond:"))
                    .copied()
                    .unwrap_or("");
                let keyed = [
                    "external_id =",
                    "phone =",
                    "install_id =",
                    "(id =",
                    "user_id =",
                ]
                .iter()
                .any(|k| cond.contains(k));
                assert!(
                    keyed,
                    "{what}: `{}` reads by more than a key:\n{plan}",
                    line.trim()
                );
            }
        }
    }
}

/// A webhook batch's write-back is fenced by the attempt it was leased with,
/// as chunks and rows are: the same worker whose lease lapsed and who leased
/// the batch again cannot acknowledge it with the old lease (it was fenced by
/// owner only), and a lost lease is `LeaseLost`, never zero rows ignored.
async fn outbox_write_backs_are_fenced_by_attempt<S: Store>(db: &TestDb<S>) {
    app(&db.store, "shop").await;
    db.raw(
        "INSERT INTO webhook_outbox (app_id, request_id, status, at, next_attempt_at) \
         VALUES ('shop', 'req_1', 'queued', '2026-11-23T10:00:00+00:00', '2026-11-23T10:00:00+00:00')",
    )
    .await
    .unwrap();
    let s = &db.store;
    let t = now();
    let first = s
        .outbox_lease(
            "shop",
            &LeaseTerms {
                owner: "w",
                until: t + TimeDelta::seconds(30),
                limit: 10,
            },
            t,
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let later = t + TimeDelta::seconds(31);
    let again = s
        .outbox_lease(
            "shop",
            &LeaseTerms {
                owner: "w",
                until: later + TimeDelta::seconds(30),
                limit: 10,
            },
            later,
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].lease.attempt, first[0].lease.attempt + 1);
    for stale in [
        s.outbox_ack(&first).await,
        s.outbox_retry(&meridian::store::OutboxRetry {
            events: &first,
            next_attempt_at: later,
            error: "x",
            max_attempts: 10,
        })
        .await,
    ] {
        assert!(
            matches!(stale, Err(StoreError::LeaseLost { .. })),
            "{stale:?}"
        );
    }
    assert_eq!(s.outbox_ack(&again).await.unwrap(), 1);
}

/// Delivery ids reserved before a campaign's send are never handed out again:
/// a row inserted without an id afterwards (a push) gets one past them, and a
/// second reservation gets others.
async fn reserved_delivery_ids_are_never_taken_again<S: Store>(db: &TestDb<S>) {
    app(&db.store, "shop").await;
    let first = db.store.delivery_id_reserve(3).await.unwrap();
    assert_eq!(first.len(), 3);
    db.raw(
        "INSERT INTO deliveries (app_id, request_id, device_id, status, created_at, updated_at) \
         VALUES ('shop', 'req_1', 1, 'queued', '2026-11-23T10:00:00+00:00', '2026-11-23T10:00:00+00:00')",
    )
    .await
    .unwrap();
    let second = db.store.delivery_id_reserve(2).await.unwrap();
    let all: std::collections::BTreeSet<meridian::domain::ids::DeliveryId> =
        first.iter().chain(&second).copied().collect();
    assert_eq!(all.len(), 5, "{first:?} {second:?}");
    // No row, the pushed one included, took a reserved id.
    for id in &all {
        let taken = db
            .raw(&format!(
                "UPDATE deliveries SET updated_at = updated_at WHERE id = {id}"
            ))
            .await
            .unwrap();
        assert_eq!(taken, 0, "reserved id {id} was given to another row");
    }
}

/// The row lease reads each way a row becomes leasable (due, or its lease lapsed)
/// through that way's partial index and never scans `deliveries`: the table holds
/// every delivery ever made, and SQLite runs the lease on its one write connection
/// each second.
async fn row_lease_reads_only_its_partial_indexes<S: Store>(db: &TestDb<S>) {
    let sqlite = db.url.starts_with("sqlite:");
    let lease = if sqlite {
        SqliteDialect::LEASE_DELIVERIES
    } else {
        PgDialect::LEASE_DELIVERIES
    };
    // The binds, in order: now, how many, the worker, the lease's end.
    let at = "'2026-12-01 09:00:00+00:00'";
    let sql = lease
        .replace("$1", at)
        .replace("$2", "500")
        .replace("$3", "'w'")
        .replace("$4", at);
    let plan = plan_of(db, &sql, "deliveries").await;
    for index in ["deliveries_leasable", "deliveries_leased"] {
        assert!(
            plan.contains(index),
            "row lease plan without {index}: {plan}"
        );
    }
    let scans = |l: &str| {
        if sqlite {
            l.trim_start_matches(|c: char| !c.is_alphabetic()) == "SCAN d"
        } else {
            l.contains("Seq Scan on deliveries")
        }
    };
    assert!(
        !plan.lines().any(scans),
        "row lease scans deliveries: {plan}"
    );
}

/// A release counts each zone's users with no active device by one probe of the
/// user's devices per user: the index on (user, state) answers it alone, where an
/// index on the user only sent every probe on to the device rows. SQLite only:
/// Postgres picks among indexes by table statistics that a test's empty tables
/// do not have.
#[tokio::test]
async fn no_device_count_probes_the_index_alone() {
    let db = common::sqlite().await;
    use meridian::store::segment::{zone_population_sql, Bind, Zones};
    let audience = Audience::default();
    let segment = Segment {
        app_id: "shop",
        audience: &audience,
        topics: Vec::new(),
    };
    let zones = Zones::One("Europe/Paris");
    let (mut sql, binds) = match db.store.kind() {
        DatabaseKind::Sqlite => zone_population_sql::<SqliteDialect>(&segment, zones),
        DatabaseKind::Postgres => zone_population_sql::<PgDialect>(&segment, zones),
    };
    // Written in from the last, so that `$1` does not match the start of `$10`.
    for (i, b) in binds.iter().enumerate().rev() {
        let Bind::Text(t) = b else {
            panic!("the count binds only text here: {b:?}");
        };
        sql = sql.replace(&format!("${}", i + 1), &format!("'{t}'"));
    }
    let plan = plan_of(&db, &sql, "devices").await;
    assert!(
        plan.contains("USING COVERING INDEX devices_by_user"),
        "no-device count plan: {plan}"
    );
    db.finish().await;
}

/// The row lease takes due rows by priority and then time, takes over rows whose
/// lease lapsed (attempt + 1) but not those still held, leaves rows of a paused
/// campaign and rows not yet due alone, and never lets skipped rows use up its
/// limit: the paused campaign's row outranks every other.
async fn row_lease_takes_due_and_lapsed_rows_in_order<S: Store>(db: &TestDb<S>) {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let t = |m: i64| (now + TimeDelta::minutes(m)).to_rfc3339();
    let (past, before, ago, later) = (t(-5), t(-10), t(-1), t(30));
    let mut setup = vec![
        "INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ('a', 'a', 'UTC', '{p}', '{p}')".to_owned(),
        "INSERT INTO campaigns (app_id, key, name, definition, state, created_at, updated_at) \
         VALUES ('a', 'run', 'run', '{}', 'running', '{p}', '{p}'), ('a', 'held', 'held', '{}', 'paused', '{p}', '{p}')".to_owned(),
    ];
    for d in 1..=6 {
        setup.push(format!(
            "INSERT INTO devices (app_id, install_id, platform, token, created_at, updated_at) \
             VALUES ('a', 'i{d}', 'ios', 't{d}', '{{p}}', '{{p}}')"
        ));
    }
    // (id, campaign, request, priority, status, next attempt, lease owner, lease end)
    let rows = [
        (
            1,
            "NULL",
            "'r1'",
            1,
            "queued",
            past.as_str(),
            "NULL",
            "NULL".to_owned(),
        ),
        (
            2,
            "1",
            "NULL",
            0,
            "retry",
            past.as_str(),
            "NULL",
            "NULL".to_owned(),
        ),
        (
            3,
            "2",
            "NULL",
            5,
            "retry",
            before.as_str(),
            "NULL",
            "NULL".to_owned(),
        ),
        (
            4,
            "NULL",
            "'r4'",
            0,
            "leased",
            before.as_str(),
            "'dead'",
            format!("'{ago}'"),
        ),
        (
            5,
            "NULL",
            "'r5'",
            0,
            "leased",
            before.as_str(),
            "'alive'",
            format!("'{later}'"),
        ),
        (
            6,
            "1",
            "NULL",
            0,
            "retry",
            later.as_str(),
            "NULL",
            "NULL".to_owned(),
        ),
    ];
    for (id, campaign, request, priority, status, next, owner, until) in rows {
        setup.push(format!(
            "INSERT INTO deliveries (app_id, campaign_id, request_id, occurrence, device_id, priority, status, \
               attempts, next_attempt_at, lease_owner, lease_expires_at, created_at, updated_at) \
             VALUES ('a', {campaign}, {request}, 'o', {id}, {priority}, '{status}', 1, '{next}', {owner}, {until}, '{{p}}', '{{p}}')"
        ));
    }
    // Ids follow insertion order in a fresh database: campaigns 1 (running) and
    // 2 (paused), devices and deliveries 1 to 6, delivery n to device n.
    for sql in setup {
        db.raw(&sql.replace("{p}", &before)).await.unwrap();
    }
    let until = now + TimeDelta::seconds(60);
    let lease = |limit| async move {
        let terms = LeaseTerms {
            owner: "w",
            until,
            limit,
        };
        db.store.delivery_lease(&terms, now).await
    };
    let ids = |rows: Vec<meridian::store::LeasedDelivery>| {
        rows.iter()
            .map(|r| (r.id.get(), r.lease.attempt))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(lease(1).await.unwrap()),
        [(1, 2)],
        "highest priority first"
    );
    assert_eq!(
        ids(lease(1).await.unwrap()),
        [(4, 2)],
        "then the oldest, a lapsed lease"
    );
    assert_eq!(
        ids(lease(10).await.unwrap()),
        [(2, 2)],
        "then the rest that is due"
    );
    assert!(
        lease(10).await.unwrap().is_empty(),
        "nothing else is leasable"
    );
}

/// A campaign's counts come from tallies the database keeps beside every
/// insert and change of its deliveries, whatever statement makes it: batches,
/// single rows, changes of `sent_at`, updates that change neither (nothing),
/// pushes without a campaign (not counted). Compacting keeps every sum and
/// leaves one row per key.
async fn tallies_follow_every_change_and_survive_compaction<S: Store>(db: &TestDb<S>) {
    let p = "2026-12-01T08:55:00+00:00";
    let sent = "2026-12-01T09:01:30+00:00";
    let mut setup = vec![
        format!("INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ('a', 'a', 'UTC', '{p}', '{p}')"),
        format!("INSERT INTO campaigns (app_id, key, name, definition, state, created_at, updated_at) \
                 VALUES ('a', 'run', 'run', '{{}}', 'running', '{p}', '{p}')"),
    ];
    for d in 1..=6 {
        setup.push(format!(
            "INSERT INTO devices (app_id, install_id, platform, token, created_at, updated_at) \
             VALUES ('a', 'i{d}', 'ios', 't{d}', '{p}', '{p}')"
        ));
    }
    // Five deliveries of campaign 1 over slots 7 and 8 in one statement, and a push.
    setup.push(format!(
        "INSERT INTO deliveries (app_id, campaign_id, slot_id, occurrence, device_id, status, attempts, created_at, updated_at) \
         VALUES ('a', 1, 7, 'o', 1, 'queued', 0, '{p}', '{p}'), ('a', 1, 7, 'o', 2, 'queued', 0, '{p}', '{p}'), \
                ('a', 1, 7, 'o', 3, 'queued', 0, '{p}', '{p}'), ('a', 1, 8, 'o', 4, 'queued', 0, '{p}', '{p}'), \
                ('a', 1, 8, 'o', 5, 'queued', 0, '{p}', '{p}')"
    ));
    setup.push(format!(
        "INSERT INTO deliveries (app_id, request_id, device_id, status, attempts, created_at, updated_at) \
         VALUES ('a', 'r1', 6, 'queued', 0, '{p}', '{p}')"
    ));
    for sql in setup {
        db.raw(&sql).await.unwrap();
    }
    let counts = || async { db.delivery_counts(1).await };
    assert_eq!(counts().await.1, ["7|queued|0|3", "8|queued|0|2"]);
    let steps = [
        format!("UPDATE deliveries SET status = 'leased', lease_owner = 'w', lease_expires_at = '{p}' WHERE device_id <= 4"),
        format!("UPDATE deliveries SET status = 'sent', sent_at = '{sent}', lease_owner = NULL, lease_expires_at = NULL \
                 WHERE device_id IN (1, 2, 4)"),
        "UPDATE deliveries SET attempts = attempts + 1".to_owned(),
        format!("UPDATE deliveries SET status = 'retry', lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = '{p}' \
                 WHERE device_id = 3"),
        "UPDATE deliveries SET status = 'delivered' WHERE device_id = 1".to_owned(),
        "UPDATE deliveries SET status = 'cancelled' WHERE status IN ('queued', 'retry')".to_owned(),
    ];
    for sql in &steps {
        db.raw(sql).await.unwrap();
        let (by_hand, tallied) = counts().await;
        assert_eq!(tallied, by_hand, "after {sql}");
    }
    let minute = sent_minute(sent);
    assert_eq!(
        counts().await.1,
        [
            "7|cancelled|0|1".to_owned(),
            format!("7|delivered|{minute}|1"),
            format!("7|sent|{minute}|1"),
            "8|cancelled|0|1".to_owned(),
            format!("8|sent|{minute}|1"),
        ]
    );
    let rows = || async {
        db.raw_texts("SELECT CAST(COUNT(*) AS TEXT) FROM delivery_tallies WHERE campaign_id = 1")
            .await
            .unwrap()[0]
            .parse::<usize>()
            .unwrap()
    };
    assert!(
        rows().await > 5,
        "zeroed keys or deltas are kept until compacted"
    );
    db.store.delivery_tally_compact(&[1]).await.unwrap();
    assert_eq!(rows().await, 5, "one row per key with a count");
    db.assert_tallies_match(1).await;
    db.store.delivery_tally_compact(&[1]).await.unwrap();
    db.assert_tallies_match(1).await;

    // Reading a campaign's tallies searches its own, never another's.
    let sql = "SELECT slot_id, status, minute, SUM(n) FROM delivery_tallies WHERE campaign_id = 1 \
               GROUP BY slot_id, status, minute";
    let plan = plan_of(db, sql, "delivery_tallies").await;
    let expected = if db.url.starts_with("sqlite:") {
        "SEARCH delivery_tallies USING PRIMARY KEY (campaign_id=?)"
    } else {
        "delivery_tallies_by_campaign"
    };
    assert!(plan.contains(expected), "{plan}");
}

fn sent_minute(at: &str) -> i64 {
    DateTime::parse_from_rfc3339(at).unwrap().timestamp() / 60
}

/// A restart takes back the leases its previous run left, without waiting
/// for them to lapse: an owner's own (Postgres, a configured `worker_id`), or
/// every one (SQLite, one instance). The next lease takes them with a new
/// attempt.
async fn a_restart_reclaims_its_previous_runs_leases<S: Store>(db: &TestDb<S>) {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let p = (now - TimeDelta::minutes(5)).to_rfc3339();
    let until = (now + TimeDelta::minutes(10)).to_rfc3339();
    let mut setup = vec![format!(
        "INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ('a', 'a', 'UTC', '{p}', '{p}')"
    )];
    for (d, owner) in [(1, "a"), (2, "b")] {
        setup.push(format!(
            "INSERT INTO devices (app_id, install_id, platform, token, created_at, updated_at) \
             VALUES ('a', 'i{d}', 'ios', 't{d}', '{p}', '{p}')"
        ));
        setup.push(format!(
            "INSERT INTO deliveries (app_id, request_id, device_id, status, attempts, next_attempt_at, \
               lease_owner, lease_expires_at, created_at, updated_at) \
             VALUES ('a', 'r{d}', {d}, 'leased', 1, '{p}', '{owner}', '{until}', '{p}', '{p}')"
        ));
    }
    for sql in setup {
        db.raw(&sql).await.unwrap();
    }
    let lease = || async {
        let terms = LeaseTerms {
            owner: "new",
            until: now + TimeDelta::seconds(60),
            limit: 10,
        };
        let rows = db.store.delivery_lease(&terms, now).await.unwrap();
        rows.iter()
            .map(|r| (r.id.get(), r.lease.attempt))
            .collect::<Vec<_>>()
    };
    assert!(lease().await.is_empty(), "both leases still run");
    let reclaimed = db.store.lease_reclaim(Some("a"), now).await.unwrap();
    assert!(reclaimed.contains(&("rows", 1)), "{reclaimed:?}");
    assert_eq!(lease().await, [(1, 2)], "a's row, at its next attempt");
    let reclaimed = db.store.lease_reclaim(None, now).await.unwrap();
    // The row just leased by `new` is ended too: `None` is for an instance
    // that knows it is alone.
    assert!(reclaimed.contains(&("rows", 2)), "{reclaimed:?}");
    let mut ids: Vec<i64> = lease().await.into_iter().map(|(id, _)| id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
}

/// The plan the backend chooses for `sql` (its binds written in): SQLite's
/// `EXPLAIN QUERY PLAN`, or Postgres's `EXPLAIN` with `table` analysed and
/// sequential and bitmap scans priced out, so that only a statement no index can
/// serve is planned as a scan on a table this small.
pub(super) async fn plan_of<S: Store>(db: &TestDb<S>, sql: &str, table: &str) -> String {
    use sqlx::Connection;
    let plan: Vec<String> = if db.url.starts_with("sqlite:") {
        let opts: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut c)
                .await
                .unwrap();
        rows.into_iter().map(|r| r.3).collect()
    } else {
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        for s in [
            format!("VACUUM ANALYZE {table}"),
            "SET enable_seqscan = off".to_owned(),
            "SET enable_bitmapscan = off".to_owned(),
        ] {
            sqlx::query(&s).execute(&mut c).await.unwrap();
        }
        sqlx::query_scalar(&format!("EXPLAIN {sql}"))
            .fetch_all(&mut c)
            .await
            .unwrap()
    };
    plan.join("\n")
}

storage_tests!(
    chunk_read_uses_the_covering_zone_index,
    push_statements_probe_an_index_per_id,
    outbox_write_backs_are_fenced_by_attempt,
    reserved_delivery_ids_are_never_taken_again,
    row_lease_reads_only_its_partial_indexes,
    row_lease_takes_due_and_lapsed_rows_in_order,
    tallies_follow_every_change_and_survive_compaction,
    a_restart_reclaims_its_previous_runs_leases,
);
