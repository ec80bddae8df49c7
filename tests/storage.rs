//! The storage suite: every test runs on SQLite and on Postgres.

mod common;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::TestDb;
use meridian::config::DatabaseKind;
use meridian::domain::campaign::{AttributeFilter, Audience, DevicePolicy, FilterOp, Platform};
use meridian::domain::planner::{Disposition, ZoneCount};
use meridian::domain::state::{
    CampaignState, ChunkState, DeliveryStatus, DeviceState, FallbackState, OutboxState, SlotState,
    StateMachine,
};
use meridian::store::prelude::*;
use meridian::store::{
    AppRecord, CampaignSave, DeviceUpsert, NewSlot, SaveOutcome, Segment, Store, StoreError,
    TopicRule, UserUpsert,
};
use meridian::store::{Dialect, LeaseTerms, PgDialect, SqliteDialect};
use serde_json::json;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}

async fn app<S: Store>(s: &S, id: &str) {
    s.app_sync(
        &AppRecord {
            id: id.into(),
            name: id.into(),
            default_timezone: "UTC".into(),
        },
        now(),
    )
    .await
    .expect("sync app");
}

fn device<'a>(app: &'a str, user: Option<&'a str>, token: &'a str) -> DeviceUpsert<'a> {
    DeviceUpsert {
        app_id: app,
        user_external_id: user,
        install_id: None,
        platform: Platform::Ios,
        token,
        timezone: None,
        locale: None,
        primary: false,
    }
}

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

async fn user_upsert_keeps_what_is_not_given<S: Store>(db: &TestDb<S>) {
    let s = &db.store;
    app(s, "shop").await;
    let attrs = json!({"tier": "gold"});
    let id = s
        .user_upsert(
            &UserUpsert {
                app_id: "shop",
                external_id: "u1",
                phone: Some("+4915112345678"),
                timezone: Some("Europe/Berlin"),
                locale: Some("de"),
                attributes: Some(&attrs),
            },
            now(),
        )
        .await
        .unwrap();
    let again = s
        .user_upsert(
            &UserUpsert {
                app_id: "shop",
                external_id: "u1",
                locale: Some("de-AT"),
                ..Default::default()
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(id, again);
    let bad_phone = s
        .user_upsert(
            &UserUpsert {
                app_id: "shop",
                external_id: "u2",
                phone: Some("12345"),
                ..Default::default()
            },
            now(),
        )
        .await;
    assert!(bad_phone.is_err(), "phone not in E.164 accepted");
    // Attributes survived the second upsert: the attribute filter still finds the user.
    s.device_upsert(&device("shop", Some("u1"), "tok-a"), now())
        .await
        .unwrap();
    let audience = Audience {
        attributes: vec![AttributeFilter {
            attribute: "tier".into(),
            op: FilterOp::Eq,
            value: Some(json!("gold")),
        }],
        ..Audience::default()
    };
    let zones = s
        .audience_count_by_zone(&Segment {
            app_id: "shop",
            audience: &audience,
            topics: vec![],
        })
        .await
        .unwrap();
    assert_eq!(
        zones,
        vec![ZoneCount {
            zone: "Europe/Berlin".into(),
            recipients: 1
        }]
    );
}

async fn devices_reactivate_and_move_primary<S: Store>(db: &TestDb<S>) {
    let s = &db.store;
    app(s, "shop").await;
    let first = s
        .device_upsert(
            &DeviceUpsert {
                primary: true,
                ..device("shop", Some("u1"), "tok-1")
            },
            now(),
        )
        .await
        .unwrap();
    assert!(first.is_primary);
    assert_eq!(first.state, DeviceState::Active);
    let second = s
        .device_upsert(
            &DeviceUpsert {
                primary: true,
                ..device("shop", Some("u1"), "tok-2")
            },
            now(),
        )
        .await
        .unwrap();
    assert!(second.is_primary);
    let first = s
        .device_get_by_token("shop", "tok-1")
        .await
        .unwrap()
        .unwrap();
    assert!(!first.is_primary, "the old primary keeps its flag");

    assert!(s
        .device_invalidate(first.id, "Unregistered", now())
        .await
        .unwrap());
    assert!(
        !s.device_invalidate(first.id, "Unregistered", now())
            .await
            .unwrap(),
        "invalidated twice"
    );
    let dead = s
        .device_get_by_token("shop", "tok-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.state, DeviceState::Invalid);
    assert_eq!(dead.invalid_reason.as_deref(), Some("Unregistered"));

    let later = now() + TimeDelta::hours(1);
    let back = s
        .device_upsert(&device("shop", Some("u1"), "tok-1"), later)
        .await
        .unwrap();
    assert_eq!(back.id, first.id);
    assert_eq!(back.state, DeviceState::Active);
    assert_eq!(back.invalid_reason, None);
    assert_eq!(back.updated_at, later);
    assert_eq!(back.created_at, now());
    // The same token in another app is another device.
    app(s, "other").await;
    let elsewhere = s
        .device_upsert(&device("other", Some("u1"), "tok-1"), now())
        .await
        .unwrap();
    assert_ne!(elsewhere.id, first.id);
}

async fn subscriptions_need_a_known_user<S: Store>(db: &TestDb<S>) {
    app(&db.store, "shop").await;
    let err = db
        .store
        .subscription_set("shop", "ghost", &[("marketing", true)], now())
        .await;
    assert!(matches!(err, Err(StoreError::NotFound { .. })), "{err:?}");
}

/// Builds a small population and checks every segment rule against it.
async fn audience_zones_apply_every_rule<S: Store>(db: &TestDb<S>) {
    let s = &db.store;
    app(s, "shop").await;
    app(s, "other").await;
    let user = |ext: &'static str, tz: Option<&'static str>, attrs: serde_json::Value| async move {
        s.user_upsert(
            &UserUpsert {
                app_id: "shop",
                external_id: ext,
                timezone: tz,
                attributes: Some(&attrs),
                ..Default::default()
            },
            now(),
        )
        .await
        .unwrap();
    };
    user(
        "alice",
        Some("Europe/Berlin"),
        json!({"tier": "gold", "age": 31, "beta": true}),
    )
    .await;
    user(
        "bob",
        Some("Asia/Kathmandu"),
        json!({"tier": "silver", "age": 25}),
    )
    .await;
    user("carol", None, json!({"beta": false})).await;
    user("dave", Some("America/St_Johns"), json!({})).await;

    let reg = |ext: Option<&'static str>,
               token: &'static str,
               platform: Platform,
               tz: Option<&'static str>,
               locale: Option<&'static str>,
               primary: bool,
               at: i64| async move {
        s.device_upsert(
            &DeviceUpsert {
                app_id: "shop",
                user_external_id: ext,
                install_id: if ext.is_none() {
                    Some("install-1")
                } else {
                    None
                },
                platform,
                token,
                timezone: tz,
                locale,
                primary,
            },
            now() + TimeDelta::minutes(at),
        )
        .await
        .unwrap()
    };
    // alice: an iPhone (her zone from the user) and a primary Android in Tokyo.
    reg(
        Some("alice"),
        "a-ios",
        Platform::Ios,
        None,
        Some("de_DE"),
        false,
        0,
    )
    .await;
    reg(
        Some("alice"),
        "a-android",
        Platform::Android,
        Some("Asia/Tokyo"),
        Some("de"),
        true,
        1,
    )
    .await;
    // bob: two iPhones, none primary: the newer one is "primary".
    reg(
        Some("bob"),
        "b-old",
        Platform::Ios,
        None,
        Some("en-US"),
        false,
        2,
    )
    .await;
    reg(
        Some("bob"),
        "b-new",
        Platform::Ios,
        None,
        Some("en-US"),
        false,
        3,
    )
    .await;
    // carol: no zone anywhere.
    reg(
        Some("carol"),
        "c-1",
        Platform::Android,
        None,
        Some("fr"),
        false,
        4,
    )
    .await;
    // dave: his only device is dead.
    let dead = reg(Some("dave"), "d-1", Platform::Ios, None, None, false, 5).await;
    s.device_invalidate(dead.id, "BadDeviceToken", now())
        .await
        .unwrap();
    // an anonymous install.
    reg(
        None,
        "anon-1",
        Platform::Android,
        Some("Europe/Berlin"),
        None,
        false,
        6,
    )
    .await;
    // another app's device never counts.
    s.device_upsert(&device("other", Some("alice"), "x-1"), now())
        .await
        .unwrap();

    s.subscription_set("shop", "alice", &[("marketing", true)], now())
        .await
        .unwrap();
    s.subscription_set(
        "shop",
        "bob",
        &[("marketing", true), ("transactional", false)],
        now(),
    )
    .await
    .unwrap();
    s.subscription_set("shop", "carol", &[("marketing", false)], now())
        .await
        .unwrap();

    let count = |audience: Audience, topics: Vec<TopicRule<'static>>| async move {
        let zones = s
            .audience_count_by_zone(&Segment {
                app_id: "shop",
                audience: &audience,
                topics,
            })
            .await
            .unwrap();
        zones
            .into_iter()
            .map(|z| (z.zone, z.recipients))
            .collect::<Vec<_>>()
    };
    let z = |pairs: &[(&str, u64)]| {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), *b))
            .collect::<Vec<_>>()
    };

    // Everyone active: device zone, else user zone, else "".
    assert_eq!(
        count(Audience::default(), vec![]).await,
        z(&[
            ("", 1),
            ("Asia/Kathmandu", 2),
            ("Asia/Tokyo", 1),
            ("Europe/Berlin", 2)
        ])
    );
    // Marketing needs an opt-in.
    let marketing = vec![TopicRule {
        name: "marketing",
        default_subscribed: false,
        cap: None,
    }];
    assert_eq!(
        count(Audience::default(), marketing.clone()).await,
        z(&[
            ("Asia/Kathmandu", 2),
            ("Asia/Tokyo", 1),
            ("Europe/Berlin", 1)
        ])
    );
    // Transactional reaches everyone who did not opt out (bob did), anonymous installs included.
    let transactional = vec![TopicRule {
        name: "transactional",
        default_subscribed: true,
        cap: None,
    }];
    assert_eq!(
        count(Audience::default(), transactional).await,
        z(&[("", 1), ("Asia/Tokyo", 1), ("Europe/Berlin", 2)])
    );
    // Primary device only: alice's Android, bob's newest iPhone.
    let primary = Audience {
        devices: DevicePolicy::Primary,
        ..Audience::default()
    };
    assert_eq!(
        count(primary.clone(), marketing.clone()).await,
        z(&[("Asia/Kathmandu", 1), ("Asia/Tokyo", 1)])
    );
    // Primary and iOS only: alice's primary is Android, so she is not targeted.
    let primary_ios = Audience {
        platforms: vec![Platform::Ios],
        ..primary
    };
    assert_eq!(
        count(primary_ios, marketing.clone()).await,
        z(&[("Asia/Kathmandu", 1)])
    );
    // Locales: "de" matches de and de_DE.
    let german = Audience {
        locales: vec!["de".into()],
        ..Audience::default()
    };
    assert_eq!(
        count(german, vec![]).await,
        z(&[("Asia/Tokyo", 1), ("Europe/Berlin", 1)])
    );
    // Attributes as text: number, boolean, in, exists, ne.
    let attr = |attribute: &str, op: FilterOp, value: Option<serde_json::Value>| Audience {
        attributes: vec![AttributeFilter {
            attribute: attribute.into(),
            op,
            value,
        }],
        devices: DevicePolicy::Primary,
        ..Audience::default()
    };
    assert_eq!(
        count(attr("age", FilterOp::Eq, Some(json!(25))), vec![]).await,
        z(&[("Asia/Kathmandu", 1)])
    );
    assert_eq!(
        count(attr("beta", FilterOp::Eq, Some(json!(true))), vec![]).await,
        z(&[("Asia/Tokyo", 1)])
    );
    assert_eq!(
        count(attr("beta", FilterOp::Eq, Some(json!(false))), vec![]).await,
        z(&[("", 1)])
    );
    assert_eq!(
        count(
            attr("tier", FilterOp::In, Some(json!(["gold", "silver"]))),
            vec![]
        )
        .await,
        z(&[("Asia/Kathmandu", 1), ("Asia/Tokyo", 1)])
    );
    assert_eq!(
        count(attr("beta", FilterOp::Exists, None), vec![]).await,
        z(&[("", 1), ("Asia/Tokyo", 1)])
    );
    assert_eq!(
        count(attr("tier", FilterOp::Ne, Some(json!("gold"))), vec![]).await,
        z(&[("", 1), ("Asia/Kathmandu", 1)])
    );
    // An explicit list of users.
    let listed = Audience {
        users: vec!["bob".into(), "carol".into(), "nobody".into()],
        ..Audience::default()
    };
    assert_eq!(
        count(listed, vec![]).await,
        z(&[("", 1), ("Asia/Kathmandu", 2)])
    );
}

fn slot(zone: &str, fire_at: DateTime<Utc>, disposition: Disposition, n: u64) -> NewSlot {
    NewSlot {
        occurrence: "2026-12-01T09:00".into(),
        zone: zone.into(),
        fire_at,
        disposition,
        planned_count: n,
    }
}

async fn campaigns_save_idempotently_and_lock_when_running<S: Store>(db: &TestDb<S>) {
    let s = &db.store;
    app(s, "shop").await;
    let def = json!({"key": "k", "message": {"title": "t"}});
    let fire =
        Utc.with_ymd_and_hms(2026, 12, 1, 3, 15, 0).unwrap() + TimeDelta::microseconds(123_456);
    let slots = vec![
        slot("Asia/Kathmandu", fire, Disposition::OnTime, 3),
        slot(
            "Asia/Tokyo",
            fire - TimeDelta::hours(3),
            Disposition::Skipped,
            2,
        ),
    ];
    let save = CampaignSave {
        app_id: "shop",
        key: "k",
        name: "K",
        definition: &def,
        state: CampaignState::Scheduled,
        slots: &slots,
        tzdata_version: Some("2025b"),
    };
    let (c, outcome) = s.campaign_save(&save, now()).await.unwrap();
    assert_eq!(outcome, SaveOutcome::Created);
    assert_eq!(c.state, CampaignState::Scheduled);
    assert_eq!(c.revision, 1);
    assert_eq!(c.tzdata_version.as_deref(), Some("2025b"));
    let stored = s.slot_list(c.id).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].zone, "Asia/Tokyo");
    assert_eq!(stored[0].state, SlotState::Skipped);
    assert_eq!(stored[1].fire_at, fire, "fire_at keeps microseconds");
    assert_eq!(stored[1].state, SlotState::Pending);
    assert_eq!(stored[1].planned_count, 3);

    // The same definition again changes nothing.
    let (same, outcome) = s
        .campaign_save(&save, now() + TimeDelta::minutes(1))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Unchanged);
    assert_eq!(same, c);

    // An edit replaces the plan and bumps the revision.
    let def2 = json!({"key": "k", "message": {"title": "t2"}});
    let slots2 = vec![slot("Europe/Berlin", fire, Disposition::OnTime, 7)];
    let (edited, outcome) = s
        .campaign_save(
            &CampaignSave {
                definition: &def2,
                slots: &slots2,
                ..save.clone()
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Updated);
    assert_eq!(edited.id, c.id);
    assert_eq!(edited.revision, 2);
    assert_eq!(edited.definition.0, def2);
    let stored = s.slot_list(c.id).await.unwrap();
    assert_eq!(
        stored.iter().map(|s| s.zone.as_str()).collect::<Vec<_>>(),
        ["Europe/Berlin"]
    );

    // Back to draft drops the plan.
    let (draft, _) = s
        .campaign_save(
            &CampaignSave {
                state: CampaignState::Draft,
                slots: &[],
                ..save.clone()
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(draft.state, CampaignState::Draft);
    assert!(s.slot_list(c.id).await.unwrap().is_empty());

    // Once running, edits are refused and nothing changes.
    s.campaign_save(&save, now()).await.unwrap();
    s.campaign_set_state(
        c.id,
        CampaignState::Scheduled,
        CampaignState::Running,
        now(),
    )
    .await
    .unwrap();
    let err = s
        .campaign_save(
            &CampaignSave {
                definition: &def2,
                ..save.clone()
            },
            now(),
        )
        .await;
    assert!(
        matches!(
            err,
            Err(StoreError::NotEditable {
                state: CampaignState::Running,
                ..
            })
        ),
        "{err:?}"
    );
    let after = s.campaign_get("shop", "k").await.unwrap().unwrap();
    assert_eq!(after.definition.0, def);
    assert_eq!(after.state, CampaignState::Running);

    // Transitions are fenced by the expected state and checked against the table.
    let stale = s
        .campaign_set_state(c.id, CampaignState::Scheduled, CampaignState::Paused, now())
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let illegal = s
        .campaign_set_state(c.id, CampaignState::Running, CampaignState::Draft, now())
        .await;
    assert!(matches!(illegal, Err(StoreError::State(_))), "{illegal:?}");

    assert_eq!(s.campaign_list(Some("shop")).await.unwrap().len(), 1);
    assert_eq!(s.campaign_list(Some("other")).await.unwrap().len(), 0);
    assert_eq!(s.campaign_list_by_key("k").await.unwrap().len(), 1);
}

/// Draft campaign `k` of app `shop`, with no slots.
fn draft_k(def: &serde_json::Value) -> CampaignSave<'_> {
    CampaignSave {
        app_id: "shop",
        key: "k",
        name: "K",
        definition: def,
        state: CampaignState::Draft,
        slots: &[],
        tzdata_version: None,
    }
}

/// Saves `save` while another connection holds a write: the save must still be
/// waiting after 300 ms; then `release` ends the other's write.
async fn save_while_held<S: Store>(
    s: &S,
    save: &CampaignSave<'_>,
    release: impl std::future::Future<Output = ()>,
) -> Result<(meridian::store::CampaignRecord, SaveOutcome), StoreError> {
    let saving = s.campaign_save(save, now());
    tokio::pin!(saving);
    let waited = tokio::time::timeout(std::time::Duration::from_millis(300), &mut saving).await;
    assert!(
        waited.is_err(),
        "the save waits for the other writer: {waited:?}"
    );
    release.await;
    saving.await
}

/// Two callers create one campaign key at the same moment (two instances on one
/// Postgres): the one that loses the unique key gets `Conflict` ("try again",
/// a 409 from the API), never a storage error, and trying again finds the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_created_twice_at_once_is_a_conflict_on_postgres() {
    use sqlx::Connection;
    let Some(db) = common::postgres().await else {
        return;
    };
    common::run_and_finish(db, |db| {
        Box::pin(async move {
            let s = &db.store;
            app(s, "shop").await;
            // The other caller's row: inserted, not yet committed.
            let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut other).await.unwrap();
            sqlx::query(
                "INSERT INTO campaigns (app_id, key, name, definition, state, created_at, updated_at) \
                 VALUES ('shop', 'k', 'other', '{}', 'draft', now(), now())",
            )
            .execute(&mut other)
            .await
            .unwrap();
            let def = json!({"key": "k", "message": {"title": "t"}});
            let save = draft_k(&def);
            let commit = async {
                sqlx::query("COMMIT").execute(&mut other).await.unwrap();
            };
            let lost = save_while_held(s, &save, commit).await;
            assert!(
                matches!(lost, Err(StoreError::Conflict { .. })),
                "{lost:?}"
            );
            let (again, outcome) = s.campaign_save(&save, now()).await.unwrap();
            assert_eq!(outcome, SaveOutcome::Updated);
            assert_eq!(again.name, "K");
            assert_eq!(s.campaign_list_by_key("k").await.unwrap().len(), 1);
        })
    })
    .await;
}

/// Another process writing the same SQLite file (`meridian campaign apply` or
/// `pause` beside the daemon) holds the write lock while the store saves: the
/// store waits for it (busy timeout) and then saves, instead of failing because
/// what it read before the other's commit is stale. Write transactions begin
/// IMMEDIATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_beside_another_sqlite_process_waits_its_turn() {
    use sqlx::Connection;
    let db = common::sqlite().await;
    common::run_and_finish(db, |db| {
        Box::pin(async move {
            let s = &db.store;
            app(s, "shop").await;
            let mut other = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
            sqlx::query(
                "INSERT INTO campaigns (app_id, key, name, definition, state, created_at, updated_at) \
                 VALUES ('shop', 'other', 'other', '{}', 'draft', '2026-11-23T10:00:00+00:00', '2026-11-23T10:00:00+00:00')",
            )
            .execute(&mut other)
            .await
            .unwrap();
            let def = json!({"key": "k", "message": {"title": "t"}});
            let commit = async {
                sqlx::query("COMMIT").execute(&mut other).await.unwrap();
            };
            let (saved, outcome) = save_while_held(s, &draft_k(&def), commit).await.unwrap();
            assert_eq!(outcome, SaveOutcome::Created);
            assert_eq!(saved.key, "k");
            assert_eq!(s.campaign_list_by_key("other").await.unwrap().len(), 1);
        })
    })
    .await;
}

storage_tests!(
    migrations_are_idempotent,
    campaign_transitions_match_code,
    state_enums_match_the_schema_checks,
    schema_refuses_bad_rows,
    user_upsert_keeps_what_is_not_given,
    devices_reactivate_and_move_primary,
    subscriptions_need_a_known_user,
    audience_zones_apply_every_rule,
    campaigns_save_idempotently_and_lock_when_running,
    chunk_read_uses_the_covering_zone_index,
    push_statements_probe_an_index_per_id,
    outbox_write_backs_are_fenced_by_attempt,
    reserved_delivery_ids_are_never_taken_again,
    row_lease_reads_only_its_partial_indexes,
    row_lease_takes_due_and_lapsed_rows_in_order,
);

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

/// The plan the backend chooses for `sql` (its binds written in): SQLite's
/// `EXPLAIN QUERY PLAN`, or Postgres's `EXPLAIN` with `table` analysed and
/// sequential and bitmap scans priced out, so that only a statement no index can
/// serve is planned as a scan on a table this small.
async fn plan_of<S: Store>(db: &TestDb<S>, sql: &str, table: &str) -> String {
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
