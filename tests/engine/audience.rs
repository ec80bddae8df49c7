//! Who a campaign reaches: frequency caps, attribute audiences, user lists.

use super::*;

/// `promo` is capped at 2 pushes per user in any 24 hours (see the rig's config).
async fn frequency_caps_suppress_and_count<S: Store + Clone>(db: &TestDb<S>) {
    let t0 = at(2026, 11, 23, 10, 0);
    let rig = rig(db, t0).await;
    let mut tokens = Vec::new();
    for n in 0..5 {
        let platform = if n % 2 == 0 {
            Platform::Ios
        } else {
            Platform::Android
        };
        tokens.push(rig.device(n, "Europe/Berlin", platform, false).await);
    }
    // user-4 has a second device: one push to a user is one push however many
    // devices it reaches, so both devices go or neither does.
    let second = "fcm-second-device-of-user-4";
    rig.store
        .device_upsert(
            &DeviceUpsert {
                app_id: "shop",
                user_external_id: Some("user-4"),
                install_id: None,
                platform: Platform::Android,
                token: second,
                timezone: Some("Europe/Berlin"),
                locale: None,
                primary: false,
            },
            t0,
        )
        .await
        .unwrap();
    tokens.push(second.to_owned());
    let engine = rig.engine("worker-a", 4);
    let counts = |id: i64| {
        let store = rig.store.clone();
        async move {
            let mut totals = BTreeMap::new();
            for (_, kind, n) in store.slot_count_by_state(id).await.unwrap() {
                *totals.entry(kind).or_insert(0) += n;
            }
            (store.delivery_count_by_status(id).await.unwrap(), totals)
        }
    };
    let sent_all = |n: u64| tokens.iter().all(|t| rig.accepted(t) == n);

    rig.schedule_for("p1", "promo", "type = \"now\"").await;
    engine.run_until_idle().await.unwrap();
    rig.clock.set(t0 + TimeDelta::hours(1));
    rig.schedule_for("p2", "promo", "type = \"now\"").await;
    engine.run_until_idle().await.unwrap();
    assert!(sent_all(2), "two promo pushes are within the cap");
    // Another topic has no cap and does not count towards promo's.
    rig.clock.set(t0 + TimeDelta::hours(2));
    rig.schedule("m1", "type = \"now\"").await;
    engine.run_until_idle().await.unwrap();
    assert!(sent_all(3));

    rig.clock.set(t0 + TimeDelta::hours(3));
    let p3 = rig.schedule_for("p3", "promo", "type = \"now\"").await;
    engine.run_until_idle().await.unwrap();
    assert!(sent_all(3), "the third promo push in 24 h is held back");
    let (by_status, by_reason) = counts(p3).await;
    assert_eq!(by_status, BTreeMap::from([("suppressed".to_owned(), 6)]));
    assert_eq!(by_reason["recipients"], 6);
    assert_eq!(by_reason["excluded:capped"], 6);
    db.assert_tallies_match(p3).await;
    assert_eq!(rig.state("p3").await, CampaignState::Completed);

    // Once the first push leaves the 24-hour window there is room for one more.
    rig.clock
        .set(t0 + TimeDelta::hours(24) + TimeDelta::minutes(1));
    let p4 = rig.schedule_for("p4", "promo", "type = \"now\"").await;
    engine.run_until_idle().await.unwrap();
    assert!(sent_all(4));
    let (by_status, by_reason) = counts(p4).await;
    assert_eq!(by_status, BTreeMap::from([("sent".to_owned(), 6)]));
    assert!(!by_reason.contains_key("excluded:capped"));
}

/// An audience filtered by attributes still counts every device of the zone: one
/// whose user lacks the attribute is left out by the segment, and a device with no
/// user at all (it cannot have opted in) is counted as opted out, not dropped.
async fn an_attribute_audience_counts_devices_without_a_user<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 30, 12, 0)).await;
    for n in 0..3 {
        rig.device(n, "UTC", Platform::Ios, false).await;
    }
    let gold = serde_json::json!({"plan": "gold"});
    for n in 0..2 {
        rig.store
            .user_upsert(
                &meridian::store::UserUpsert {
                    app_id: "shop",
                    external_id: &format!("user-{n}"),
                    phone: None,
                    timezone: Some("UTC"),
                    locale: None,
                    attributes: Some(&gold),
                },
                rig.clock.now(),
            )
            .await
            .unwrap();
    }
    rig.device_of(None, Some("install-1"), "fcm-anonymous", false)
        .await;
    let text =
        "key = \"gold\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Hi\"\n\
                body = \"Gold\"\n[audience]\ntopics = [\"marketing\"]\n\
                [[audience.attributes]]\nattribute = \"plan\"\nop = \"eq\"\nvalue = \"gold\"\n\
                [schedule]\ntype = \"now\"\n";
    let id = rig.save(text).await;
    rig.engine("a", 10).run_until_idle().await.unwrap();
    let counts = rig.counts_by_kind(id).await;
    assert_eq!(counts["recipients"], 2, "{counts:?}");
    assert_eq!(counts["excluded:segment"], 1, "{counts:?}");
    assert_eq!(counts["excluded:opted_out"], 1, "{counts:?}");
    assert_eq!(rig.sim.stats().total_accepted(), 2);
}

/// An audience that names its users is counted against those users: the rest of
/// the app is not "left out by the segment".
async fn a_user_list_is_counted_against_the_users_it_names<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 30, 12, 0)).await;
    for n in 0..6 {
        rig.device(n, "UTC", Platform::Ios, false).await;
    }
    rig.unsubscribed("user-9", "UTC").await;
    let text = "key = \"listed\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Hi\"\n\
                body = \"You\"\n[audience]\ntopics = [\"marketing\"]\nusers = [\"user-1\", \"user-2\", \"user-9\"]\n\
                [schedule]\ntype = \"now\"\n";
    let id = rig.save(text).await;
    rig.engine("a", 10).run_until_idle().await.unwrap();
    let counts = rig.counts_by_kind(id).await;
    assert_eq!(counts["recipients"], 2, "{counts:?}");
    assert_eq!(counts["excluded:opted_out"], 1, "{counts:?}");
    assert_eq!(counts["excluded:segment"], 0, "{counts:?}");
    assert_eq!(counts["excluded:no_device"], 0, "{counts:?}");
    assert_eq!(rig.sim.stats().total_accepted(), 2);
}

/// A device that moves to another user (a shared phone, a new login) takes no
/// history with it: the messages sent while it was the first user's stay in
/// that user's list and count towards that user's caps, never the new one's.
/// Both read a user's messages through every device they have had.
async fn a_device_moving_to_another_user_leaves_its_history_behind<S: Store + Clone>(
    db: &TestDb<S>,
) {
    let t0 = at(2026, 11, 23, 10, 0);
    let rig = rig(db, t0).await;
    let phone = rig.device(0, "Europe/Berlin", Platform::Ios, false).await;
    let other = rig
        .device(1, "Europe/Berlin", Platform::Android, false)
        .await;
    let engine = rig.engine("worker-a", 4);
    for (n, key) in ["p1", "p2"].into_iter().enumerate() {
        rig.clock.set(t0 + TimeDelta::hours(n as i64));
        rig.schedule_for(key, "promo", "type = \"now\"").await;
        engine.run_until_idle().await.unwrap();
    }
    assert_eq!((rig.accepted(&phone), rig.accepted(&other)), (2, 2));

    // user-0's phone is signed in as user-1 now; user-0 keeps a new device.
    rig.device_of(Some("user-1"), None, &phone, false).await;
    rig.device_of(Some("user-0"), None, "fcm-new-phone-of-user-0", false)
        .await;
    rig.store
        .subscription_set("shop", "user-1", &[("promo", true)], rig.clock.now())
        .await
        .unwrap();
    let list = |user: &'static str| {
        let store = rig.store.clone();
        async move {
            let filter = meridian::store::DeliveryFilter {
                user_external_id: Some(user),
                campaign_id: None,
                request_id: None,
                status: None,
                since: None,
                before_id: None,
                limit: 100,
            };
            let mut rows: Vec<(Option<String>, Option<String>)> = store
                .message_list("shop", &filter)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.user_external_id, r.token))
                .collect();
            rows.sort();
            rows
        }
    };
    let user = |u: &str, t: &str| (Some(u.to_owned()), Some(t.to_owned()));
    assert_eq!(
        list("user-0").await,
        [user("user-0", &phone), user("user-0", &phone)]
    );
    assert_eq!(
        list("user-1").await,
        [user("user-1", &other), user("user-1", &other)]
    );

    // user-0 has had two promo pushes (on the phone they no longer hold): their
    // new device is capped. user-1 has had two as well, on the other device, so
    // the phone is capped through user-1's history, not through its own.
    rig.clock.set(t0 + TimeDelta::hours(3));
    let p3 = rig.schedule_for("p3", "promo", "type = \"now\"").await;
    engine.run_until_idle().await.unwrap();
    let counts = rig.counts_by_kind(p3).await;
    assert_eq!(counts["excluded:capped"], 3, "{counts:?}");
    assert_eq!(rig.accepted("fcm-new-phone-of-user-0"), 0);

    // A third user takes the phone: nothing sent to it before was theirs, so
    // they are within the cap and it goes.
    rig.device_of(Some("user-2"), None, &phone, false).await;
    rig.store
        .subscription_set("shop", "user-2", &[("promo", true)], rig.clock.now())
        .await
        .unwrap();
    rig.clock.set(t0 + TimeDelta::hours(4));
    let p4 = rig.schedule_for("p4", "promo", "type = \"now\"").await;
    engine.run_until_idle().await.unwrap();
    assert_eq!(
        rig.accepted(&phone),
        3,
        "user-2 is not capped by the phone's past"
    );
    assert_eq!(rig.counts_by_kind(p4).await["excluded:capped"], 2);
    assert_eq!(list("user-2").await, [user("user-2", &phone)]);
    // user-0's list: the two pushes the phone got while it was theirs, and the
    // two held back by the cap on their new device.
    let mut expected = vec![user("user-0", &phone); 2];
    expected.extend(vec![user("user-0", "fcm-new-phone-of-user-0"); 2]);
    expected.sort();
    assert_eq!(list("user-0").await, expected);
}

storage_tests!(
    a_device_moving_to_another_user_leaves_its_history_behind,
    a_user_list_is_counted_against_the_users_it_names,
    an_attribute_audience_counts_devices_without_a_user,
    frequency_caps_suppress_and_count,
);
