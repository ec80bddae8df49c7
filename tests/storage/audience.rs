//! Users, devices, subscriptions and the audience counts by zone.

use super::*;

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

/// A user's messages are read through the devices they have had
/// (`device_users`) and `deliveries_by_device`, the index the send path writes
/// in order: neither a frequency cap nor the per-user message list scans
/// `deliveries`, and no index on `deliveries` is keyed by user.
async fn a_users_messages_are_read_through_their_devices<S: Store>(db: &TestDb<S>) {
    // Enough rows that a full index scan is costed as what it is: 20,000
    // messages, to 2,000 users of 4,000 devices, in 10 campaigns.
    let p = "2026-12-08T10:00:00+00:00";
    let series = |n: i64| {
        if db.url.starts_with("sqlite:") {
            format!("(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) SELECT g FROM s) s")
        } else {
            format!("generate_series(1, {n}) s(g)")
        }
    };
    for sql in [
        format!("INSERT INTO apps (id, name, default_timezone, created_at, updated_at) VALUES ('a', 'a', 'UTC', '{p}', '{p}')"),
        format!(
            "INSERT INTO users (app_id, external_id, created_at, updated_at) \
             SELECT 'a', 'u' || g, '{p}', '{p}' FROM {}",
            series(2_000)
        ),
        format!(
            "INSERT INTO device_users (user_id, device_id) SELECT 1 + g % 2000, g FROM {}",
            series(4_000)
        ),
        format!(
            "INSERT INTO deliveries (app_id, campaign_id, occurrence, user_id, device_id, status, attempts, \
               sent_at, created_at, updated_at) \
             SELECT 'a', 1 + g % 10, 'o' || (g / 4000), 1 + g % 2000, 1 + g % 4000, 'sent', 1, '{p}', '{p}', '{p}' \
             FROM {}",
            series(20_000)
        ),
    ] {
        db.raw(&sql).await.unwrap();
    }
    if db.url.starts_with("sqlite:") {
        db.raw("ANALYZE").await.unwrap();
    }
    let cap = "SELECT u.id, (SELECT COUNT(*) FROM (SELECT DISTINCT x.campaign_id, x.occurrence FROM deliveries x \
               JOIN campaigns k ON k.id = x.campaign_id \
               WHERE x.device_id IN (SELECT du.device_id FROM device_users du WHERE du.user_id = u.id) \
               AND x.user_id = u.id AND x.sent_at > '2026-01-01' \
               AND NOT (x.campaign_id = 1 AND x.occurrence = 'o')) p) FROM users u WHERE u.id = 7";
    let user = "(SELECT id FROM users WHERE app_id = 'a' AND external_id = 'u')";
    let list = format!(
        "SELECT d.id FROM deliveries d LEFT JOIN users u ON u.id = d.user_id \
         LEFT JOIN devices v ON v.id = d.device_id WHERE d.app_id = 'a' AND d.id IN (\
           SELECT x.id FROM deliveries x \
           WHERE x.device_id IN (SELECT du.device_id FROM device_users du WHERE du.user_id = {user}) \
             AND x.user_id = {user} \
           UNION ALL \
           SELECT x.id FROM deliveries x WHERE x.device_id IS NULL AND x.user_id = {user}) \
         ORDER BY d.id DESC LIMIT 50"
    );
    for sql in [cap, &list] {
        let plan = super::dispatch::plan_of(db, sql, "deliveries").await;
        assert!(plan.contains("deliveries_by_device"), "{sql}: {plan}");
        assert!(
            !plan.contains("SCAN d") && !plan.contains("SCAN x") && !plan.contains("Seq Scan"),
            "{sql}: {plan}"
        );
    }
    // A user push's `no_device` messages are found by user.
    let plan = super::dispatch::plan_of(db, &list, "deliveries").await;
    assert!(plan.contains("deliveries_without_device"), "{plan}");
    let sql = if db.url.starts_with("sqlite:") {
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries' \
         AND sql LIKE '%(user_id%' AND sql NOT LIKE '%WHERE device_id IS NULL'"
    } else {
        "SELECT indexname FROM pg_indexes WHERE tablename = 'deliveries' AND indexdef LIKE '%(user_id%' \
         AND indexdef NOT LIKE '%WHERE (device_id IS NULL)'"
    };
    assert_eq!(db.raw_texts(sql).await.unwrap(), Vec::<String>::new());
}

storage_tests!(
    a_users_messages_are_read_through_their_devices,
    user_upsert_keeps_what_is_not_given,
    devices_reactivate_and_move_primary,
    subscriptions_need_a_known_user,
    audience_zones_apply_every_rule,
);
