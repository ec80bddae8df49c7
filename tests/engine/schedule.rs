//! Releasing slots: each zone at its own time, recurring occurrences, pause,
//! resume and cancel, fairness between campaigns.

use super::*;
use meridian::config::DatabaseKind;

async fn each_zone_is_released_at_its_own_nine<S: Store + Clone>(db: &TestDb<S>) {
    // The week of 1 November 2026: New York and St John's fall back that morning,
    // London fell back a week before, Lord Howe and Chatham are on summer time.
    let rig = rig(db, at(2026, 10, 29, 0, 0)).await;
    let zones = [
        ("Pacific/Chatham", at(2026, 10, 31, 19, 15)),
        ("Australia/Lord_Howe", at(2026, 10, 31, 22, 0)),
        ("Asia/Kathmandu", at(2026, 11, 1, 3, 15)),
        ("Europe/London", at(2026, 11, 1, 9, 0)),
        ("America/St_Johns", at(2026, 11, 1, 12, 30)),
        ("America/New_York", at(2026, 11, 1, 14, 0)),
    ];
    let mut tokens: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (i, (zone, _)) in zones.iter().enumerate() {
        for k in 0..4u32 {
            let platform = if k % 2 == 0 {
                Platform::Ios
            } else {
                Platform::Android
            };
            tokens
                .entry(zone)
                .or_default()
                .push(rig.device(i as u32 * 10 + k, zone, platform, false).await);
        }
    }
    rig.schedule("nine", "type = \"local\"\nat = \"2026-11-01T09:00\"")
        .await;
    let engine = rig.engine("worker-a", 500);
    assert!(
        !engine.run_until_idle().await.unwrap().did_work(),
        "nothing is due yet"
    );
    for (i, (zone, due)) in zones.iter().enumerate() {
        rig.clock.set(*due - TimeDelta::seconds(1));
        engine.run_until_idle().await.unwrap();
        assert!(
            tokens[zone].iter().all(|t| rig.accepted(t) == 0),
            "{zone} sent before its 09:00"
        );
        rig.clock.set(*due);
        engine.run_until_idle().await.unwrap();
        assert!(
            tokens[zone].iter().all(|t| rig.accepted(t) == 1),
            "{zone} not sent at its 09:00"
        );
        for (later, _) in &zones[i + 1..] {
            assert!(
                tokens[later].iter().all(|t| rig.accepted(t) == 0),
                "{later} sent early"
            );
        }
    }
    // Zones planned for recipients who might register keep it running until the
    // last 09:00 on Earth has passed.
    assert_eq!(rig.state("nine").await, CampaignState::Running);
    rig.clock.set(at(2026, 11, 1, 21, 0));
    engine.run_until_idle().await.unwrap();
    assert_eq!(rig.state("nine").await, CampaignState::Completed);
}

/// A `local` campaign whose wall time had passed in every zone before anyone of
/// its audience registered is planned with every slot skipped: it completes
/// (its slots counted as skipped) instead of staying `scheduled` for good.
async fn a_campaign_whose_every_slot_was_skipped_completes<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    // Nobody takes `marketing` yet: no zone is populated, so the plan is kept.
    let id = rig
        .schedule(
            "gone",
            "type = \"local\"\nat = \"2026-11-20T09:00\"\nmissed = \"skip\"",
        )
        .await;
    let slots = rig.store.slot_list(id).await.unwrap();
    assert!(!slots.is_empty());
    assert!(
        slots
            .iter()
            .all(|s| s.state == meridian::domain::state::SlotState::Skipped),
        "{slots:?}"
    );
    assert_eq!(rig.state("gone").await, CampaignState::Scheduled);
    rig.engine("w", 10).run_until_idle().await.unwrap();
    assert_eq!(rig.state("gone").await, CampaignState::Completed);
}

/// A recurring campaign's slot is completed together with its zone's next
/// occurrence: when the next slot cannot be written (a trigger refuses it here,
/// as a crash after the completion's commit would leave it), the slot stays
/// released and the next pass completes it and plans what comes next.
/// Completed and planned in two commits, that zone of the campaign ended.
async fn a_recurring_slot_completes_with_its_next_occurrence<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 8, 30)).await;
    let token = rig.device(1, "UTC", Platform::Android, false).await;
    let id = rig
        .schedule("daily", "type = \"cron\"\ncron = \"0 9 * * *\"")
        .await;
    let engine = rig.engine("w", 10);
    rig.clock.advance(TimeDelta::minutes(30));
    let sqlite = db.url.starts_with("sqlite:");
    let refuse: &[&str] = if sqlite {
        &["CREATE TRIGGER refuse_slots BEFORE INSERT ON slots BEGIN SELECT RAISE(ABORT, 'refused'); END"]
    } else {
        &[
            "CREATE FUNCTION refuse_slots() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused'; END $$",
            "CREATE TRIGGER refuse_slots BEFORE INSERT ON slots FOR EACH ROW EXECUTE FUNCTION refuse_slots()",
        ]
    };
    for sql in refuse {
        db.raw(sql).await.unwrap();
    }
    let failed = engine.run_until_idle().await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(rig.accepted(&token), 1, "the 09:00 message went out");
    let drop = if sqlite {
        "DROP TRIGGER refuse_slots"
    } else {
        "DROP TRIGGER refuse_slots ON slots"
    };
    db.raw(drop).await.unwrap();
    engine.run_until_idle().await.unwrap();
    let utc: Vec<(String, meridian::domain::state::SlotState)> = rig
        .store
        .slot_list(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.zone == "UTC")
        .map(|s| (s.occurrence, s.state))
        .collect();
    use meridian::domain::state::SlotState;
    assert_eq!(
        utc,
        [
            ("2026-11-23T09:00".to_owned(), SlotState::Completed),
            ("2026-11-24T09:00".to_owned(), SlotState::Pending)
        ],
        "{utc:?}"
    );
    assert_eq!(rig.accepted(&token), 1, "sent once");
}

async fn pause_holds_everything_and_resume_continues<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let mut tokens = Vec::new();
    for n in 0..40 {
        tokens.push(rig.device(n, "UTC", Platform::Android, false).await);
    }
    rig.schedule("p", "type = \"now\"").await;
    let engine = rig.engine("worker-a", 10);
    let c = rig.store.campaign_get("shop", "p").await.unwrap().unwrap();
    assert_eq!(
        definitions::pause(&*rig.store, &c, rig.clock.now())
            .await
            .unwrap(),
        CampaignState::Paused
    );
    assert!(
        !engine.run_until_idle().await.unwrap().did_work(),
        "a paused campaign is not released"
    );
    assert_eq!(rig.sim.stats().total_accepted(), 0);
    let c = rig.store.campaign_get("shop", "p").await.unwrap().unwrap();
    assert_eq!(
        definitions::resume(&*rig.store, &c, rig.clock.now())
            .await
            .unwrap(),
        CampaignState::Scheduled
    );
    // Released, then paused again before anything is leased: chunks wait.
    let now = rig.clock.now();
    let due = rig.store.slot_list_due(now, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let def = definition_of(&due[0]);
    let segment = segment_of(&rig.config, &def);
    release_one(&*rig.store, &due[0], &segment, 10, "worker-a", now)
        .await
        .unwrap()
        .unwrap();
    let c = rig.store.campaign_get("shop", "p").await.unwrap().unwrap();
    assert_eq!(c.state, CampaignState::Running);
    definitions::pause(&*rig.store, &c, now).await.unwrap();
    assert!(
        !engine.run_until_idle().await.unwrap().did_work(),
        "a paused campaign's chunks are not leased"
    );
    let c = rig.store.campaign_get("shop", "p").await.unwrap().unwrap();
    assert_eq!(
        definitions::resume(&*rig.store, &c, now).await.unwrap(),
        CampaignState::Running
    );
    engine.run_until_idle().await.unwrap();
    assert!(tokens.iter().all(|t| rig.accepted(t) == 1));
    assert_eq!(rig.state("p").await, CampaignState::Completed);
}

async fn cancel_stops_the_zones_not_yet_sent<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 30, 0, 0)).await;
    let tokyo = rig.device(1, "Asia/Tokyo", Platform::Ios, false).await;
    let berlin = rig.device(2, "Europe/Berlin", Platform::Ios, false).await;
    let id = rig
        .schedule("c", "type = \"local\"\nat = \"2026-12-01T09:00\"")
        .await;
    let engine = rig.engine("worker-a", 10);
    rig.clock.set(at(2026, 12, 1, 0, 0)); // 09:00 in Tokyo
    engine.run_until_idle().await.unwrap();
    assert_eq!(rig.accepted(&tokyo), 1);
    let c = rig.store.campaign_get("shop", "c").await.unwrap().unwrap();
    definitions::cancel(&*rig.store, &c, rig.clock.now())
        .await
        .unwrap();
    assert_eq!(rig.state("c").await, CampaignState::Cancelled);
    rig.clock.set(at(2026, 12, 1, 8, 0)); // 09:00 in Berlin
    engine.run_until_idle().await.unwrap();
    assert_eq!(rig.accepted(&berlin), 0, "a cancelled campaign sent");
    let slots = rig.store.slot_list(id).await.unwrap();
    let berlin_slot = slots.iter().find(|s| s.zone == "Europe/Berlin").unwrap();
    assert_eq!(
        berlin_slot.state,
        meridian::domain::state::SlotState::Cancelled
    );
    db.assert_tallies_match(id).await;
    // Cancelled is final.
    let c = rig.store.campaign_get("shop", "c").await.unwrap().unwrap();
    assert!(definitions::resume(&*rig.store, &c, rig.clock.now())
        .await
        .is_err());
}

async fn a_device_registered_after_scheduling_gets_its_own_nine<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 30, 0, 0)).await;
    let berlin = rig.device(1, "Europe/Berlin", Platform::Ios, false).await;
    rig.schedule("late", "type = \"local\"\nat = \"2026-12-01T09:00\"")
        .await;
    // Registered after the plan was made, in a zone nobody was in.
    let tokyo = rig.device(2, "Asia/Tokyo", Platform::Android, false).await;
    let engine = rig.engine("worker-a", 10);
    rig.clock.set(at(2026, 11, 30, 23, 59));
    engine.run_until_idle().await.unwrap();
    assert_eq!(rig.accepted(&tokyo), 0);
    rig.clock.set(at(2026, 12, 1, 0, 0)); // 09:00 in Tokyo
    engine.run_until_idle().await.unwrap();
    assert_eq!(rig.accepted(&tokyo), 1);
    assert_eq!(rig.accepted(&berlin), 0);
    rig.clock.set(at(2026, 12, 1, 8, 0));
    engine.run_until_idle().await.unwrap();
    assert_eq!(rig.accepted(&berlin), 1);
}

/// A slot that comes due while a large one is being sent gets its first chunk
/// leased next, not after the large slot's backlog; its lag is recorded.
async fn a_new_slot_is_not_queued_behind_a_large_one<S: Store + Clone>(db: &TestDb<S>) {
    let t0 = at(2026, 11, 23, 10, 0);
    let rig = rig(db, t0).await;
    for n in 0..40 {
        rig.device(n, "Europe/Berlin", Platform::Android, false)
            .await;
    }
    let tokyo = rig.device(100, "Asia/Tokyo", Platform::Ios, false).await;
    let big = rig.schedule("big", "type = \"now\"").await;
    let s = &rig.store;
    release_all(&**s, &rig.config, t0).await;
    // The big campaign's first chunks are in flight when the next one comes due.
    let lease = |limit| async move {
        let terms = LeaseTerms {
            owner: "a",
            until: t0 + TimeDelta::seconds(60),
            limit,
        };
        s.chunk_lease(&terms, t0).await
    };
    let first = lease(2).await.unwrap();
    assert!(first.iter().all(|c| c.campaign_id == big));
    rig.clock.set(t0 + TimeDelta::seconds(1));
    let small = rig.schedule("small", "type = \"now\"").await;
    release_all(&**s, &rig.config, rig.clock.now()).await;
    let next = lease(1).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].campaign_id, small,
        "the new slot's first chunk goes first"
    );

    // Sent by the engine, the slot's first send is noted next to its due time.
    let engine = rig.engine("a", 5);
    rig.clock.set(t0 + TimeDelta::seconds(120)); // the leases above lapse
    engine.run_until_idle().await.unwrap();
    assert_eq!(rig.accepted(&tokyo), 2, "one from each campaign");
    assert_eq!(rig.sim.stats().total_accepted(), 2 * 41);
    for id in [big, small] {
        let slots = s.slot_list(id).await.unwrap();
        let sent: Vec<_> = slots.iter().filter_map(|x| x.first_sent_at).collect();
        assert_eq!(sent, [rig.clock.now()], "campaign {id}");
        assert!(slots[0].first_sent_at >= Some(slots[0].fire_at));
    }
}

/// Zones due at the same instant are released together; each slot still gets its
/// own chunks and its own counts.
async fn zones_due_together_keep_their_own_counts<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 30, 12, 0)).await;
    for n in 0..4 {
        rig.device(n, "Europe/Berlin", Platform::Ios, false).await;
    }
    for n in 10..12 {
        rig.device(n, "Europe/Paris", Platform::Android, false)
            .await;
    }
    rig.device(12, "Europe/Paris", Platform::Android, true)
        .await;
    rig.unsubscribed("not-opted-in", "Europe/Paris").await;
    let id = rig
        .schedule("nine", "type = \"local\"\nat = \"2026-12-01T09:00\"")
        .await;
    let engine = rig.engine("a", 2);
    rig.clock.set(at(2026, 12, 1, 8, 0)); // 09:00 in Berlin and in Paris
                                          // Every zone already at 09:00 or later is due now (all zones are planned).
    let report = engine.run_until_idle().await.unwrap();
    assert!(report.released > 2, "{report:?}");
    let slots = rig.store.slot_list(id).await.unwrap();
    let zone_of: BTreeMap<i64, String> = slots.iter().map(|s| (s.id, s.zone.clone())).collect();
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (slot, kind, n) in rig.store.slot_count_by_state(id).await.unwrap() {
        counts.insert((zone_of[&slot].clone(), kind), n);
    }
    let get = |zone: &str, kind: &str| counts.get(&(zone.to_owned(), kind.to_owned())).copied();
    assert_eq!(get("Europe/Berlin", "recipients"), Some(4));
    // The dead token is still active at release; sending finds it dead.
    assert_eq!(get("Europe/Paris", "recipients"), Some(3));
    assert_eq!(get("Europe/Berlin", "excluded:opted_out"), Some(0));
    assert_eq!(get("Europe/Paris", "excluded:opted_out"), Some(1));
    assert_eq!(get("Europe/Paris", "excluded:invalid_token"), Some(0));
    assert_eq!(get("Asia/Tokyo", "recipients"), Some(0));
    assert_eq!(rig.sim.stats().total_accepted(), 6);
    let statuses = rig.store.delivery_count_by_status(id).await.unwrap();
    assert_eq!(statuses.get("sent"), Some(&6));
    assert_eq!(statuses.get("token_invalid"), Some(&1));
}

/// Zones released together share their chunks: each chunk is one range of device
/// ids over all of them (so its deliveries are consecutive in every index keyed by
/// device), and each delivery still belongs to the slot of its device's zone.
async fn zones_released_together_share_key_ranges<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 30, 12, 0)).await;
    // Registered in turn, so each zone's devices are spread over the id space.
    for n in 0..6 {
        let zone = if n % 2 == 0 {
            "Europe/Berlin"
        } else {
            "Europe/Paris"
        };
        rig.device(n, zone, Platform::Android, false).await;
    }
    let id = rig
        .schedule("shared", "type = \"local\"\nat = \"2026-12-01T09:00\"")
        .await;
    let now = at(2026, 12, 1, 8, 0); // 09:00 in Berlin and in Paris
    rig.clock.set(now);
    let s = &rig.store;
    let due: Vec<_> = s
        .slot_list_due(now, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| {
            d.campaign_id == id && ["Europe/Berlin", "Europe/Paris"].contains(&d.zone.as_str())
        })
        .collect();
    assert_eq!(due.len(), 2);
    let def = definition_of(&due[0]);
    let segment = segment_of(&rig.config, &def);
    let won = s
        .slot_release(
            &meridian::store::SlotRelease {
                slots: &due,
                segment: &segment,
                chunk_size: 2,
                worker: "a",
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(won.len(), 2);
    for (_, r) in &won {
        assert_eq!(r.counted, Some(3));
    }
    let chunks = s
        .chunk_lease(
            &LeaseTerms {
                owner: "a",
                until: now + TimeDelta::seconds(60),
                limit: 10,
            },
            now,
        )
        .await
        .unwrap();
    // Six recipients in chunks of two: three chunks, not two per zone.
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    let slot_of_zone: BTreeMap<String, i64> =
        due.iter().map(|d| (d.zone.clone(), d.slot_id)).collect();
    let mut last = i64::MIN;
    let mut ranges = chunks.clone();
    ranges.sort_by_key(|c| c.first_device_id);
    for c in &ranges {
        assert!(c.first_device_id > last, "chunks overlap: {ranges:?}");
        last = c.last_device_id;
        let slot = s.slot_get_info(c.lead_slot_id).await.unwrap().unwrap();
        let recipients = s
            .chunk_recipient_list(c, &slot, &segment, now)
            .await
            .unwrap();
        assert_eq!(recipients.len(), 2, "{recipients:?}");
        let slots: Vec<i64> = recipients.iter().map(|r| r.slot_id).collect();
        assert!(
            slots.contains(&slot_of_zone["Europe/Berlin"])
                && slots.contains(&slot_of_zone["Europe/Paris"]),
            "a chunk spans both zones: {recipients:?}"
        );
        s.chunk_return(c, now).await.unwrap();
    }
    // Sent, each delivery is counted under its own zone's slot, and both slots
    // note their first send.
    rig.engine("a", 2).run_until_idle().await.unwrap();
    let by_slot = s.delivery_count_by_slot(id).await.unwrap();
    for zone in ["Europe/Berlin", "Europe/Paris"] {
        assert!(
            by_slot.contains(&(slot_of_zone[zone], "sent".to_owned(), 3)),
            "{zone}: {by_slot:?}"
        );
    }
    let slots = s.slot_list(id).await.unwrap();
    for zone in ["Europe/Berlin", "Europe/Paris"] {
        let slot = slots.iter().find(|x| x.zone == zone).unwrap();
        assert_eq!(slot.first_sent_at, Some(now), "{zone}");
        assert_eq!(
            slot.state,
            meridian::domain::state::SlotState::Completed,
            "{zone}"
        );
    }
    assert_eq!(rig.sim.stats().total_accepted(), 6);
}

/// A campaign the engine cannot send as stored is paused instead of being
/// taken, given back and taken again ahead of every other campaign: one was
/// released and then its definition stopped parsing (its chunks were retaken
/// in a loop that never went idle), one names an app no longer configured.
/// The other campaign is sent; theirs wait, pending, for an operator.
async fn an_unsendable_campaign_is_paused_and_the_others_go_on<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let mut tokens = Vec::new();
    for n in 0..20 {
        tokens.push(rig.device(n, "UTC", Platform::Android, false).await);
    }
    let broken = rig.schedule("broken", "type = \"now\"").await;
    let gone = rig.schedule("gone", "type = \"now\"").await;
    rig.schedule("fine", "type = \"now\"").await;
    let now = rig.clock.now();
    let due = rig.store.slot_list_due(now, 10).await.unwrap();
    let slot = due.iter().find(|s| s.campaign_id == broken).unwrap();
    let def = definition_of(slot);
    let segment = segment_of(&rig.config, &def);
    release_one(&*rig.store, slot, &segment, 5, "w", now)
        .await
        .unwrap()
        .unwrap();
    db.raw(&format!(
        "UPDATE campaigns SET definition = '{{\"app\": 5}}', revision = revision + 1 WHERE id = {broken}"
    ))
    .await
    .unwrap();
    let set_app = match rig.store.kind() {
        DatabaseKind::Postgres => "jsonb_set(definition, '{app}', '\"gone\"')",
        DatabaseKind::Sqlite => "json_set(definition, '$.app', 'gone')",
    };
    db.raw(&format!(
        "UPDATE campaigns SET definition = {set_app}, revision = revision + 1 WHERE id = {gone}"
    ))
    .await
    .unwrap();
    let engine = rig.engine("worker-a", 5);
    tokio::time::timeout(std::time::Duration::from_secs(60), engine.run_until_idle())
        .await
        .expect("the engine goes idle")
        .unwrap();
    assert!(
        tokens.iter().all(|t| rig.accepted(t) == 1),
        "fine is sent once"
    );
    assert_eq!(rig.state("fine").await, CampaignState::Completed);
    assert_eq!(rig.state("broken").await, CampaignState::Paused);
    assert_eq!(rig.state("gone").await, CampaignState::Paused);
    for id in [broken, gone] {
        assert!(rig
            .store
            .delivery_count_by_status(id)
            .await
            .unwrap()
            .is_empty());
    }
    let pending = db
        .raw_texts(&format!(
            "SELECT state FROM slot_chunks WHERE campaign_id = {broken}"
        ))
        .await
        .unwrap();
    assert!(
        !pending.is_empty() && pending.iter().all(|s| s == "pending"),
        "{pending:?}"
    );
    // Paused, they are no longer taken: the next pass does nothing.
    assert!(!engine.run_until_idle().await.unwrap().did_work());
}

storage_tests!(
    an_unsendable_campaign_is_paused_and_the_others_go_on,
    a_campaign_whose_every_slot_was_skipped_completes,
    a_recurring_slot_completes_with_its_next_occurrence,
    zones_due_together_keep_their_own_counts,
    zones_released_together_share_key_ranges,
    a_new_slot_is_not_queued_behind_a_large_one,
    a_device_registered_after_scheduling_gets_its_own_nine,
    pause_holds_everything_and_resume_continues,
    cancel_stops_the_zones_not_yet_sent,
    each_zone_is_released_at_its_own_nine,
);
