//! The engine end to end on both backends, driven step by step with a manual
//! clock, sending over TLS HTTP/2 to the provider simulator.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use common::rig::{at, get, post, release_one, rig};
use common::TestDb;
use meridian::clock::Clock;
use meridian::config::Config;
use meridian::definitions;
use meridian::domain::campaign::Platform;
use meridian::domain::state::{CampaignState, DeviceState};
use meridian::simulator::Behaviour;
use meridian::store::LeaseTerms;
use meridian::store::{DeviceUpsert, Store, StoreError};

async fn every_device_gets_exactly_one<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let mut tokens = Vec::new();
    for n in 0..120 {
        let zone = ["Europe/Berlin", "Asia/Tokyo", "America/Chicago"][n as usize % 3];
        let platform = if n % 2 == 0 {
            Platform::Ios
        } else {
            Platform::Android
        };
        tokens.push(rig.device(n, zone, platform, false).await);
    }
    // One user never opted in to marketing: left out, and counted as such.
    rig.unsubscribed("no-opt-in", "UTC").await;
    let id = rig.schedule("now", "type = \"now\"").await;
    let engine = rig.engine("worker-a", 25);
    let report = engine.run_until_idle().await.unwrap();
    assert_eq!(report.sent, 120, "{report:?}");
    assert_eq!(report.completed_campaigns, 1);
    assert_eq!(rig.state("now").await, CampaignState::Completed);
    for t in &tokens {
        assert_eq!(rig.accepted(t), 1, "{t}");
    }
    let stats = rig.sim.stats();
    assert_eq!(stats.total_accepted(), 120);
    assert_eq!(
        rig.store.delivery_count_by_status(id).await.unwrap(),
        BTreeMap::from([("sent".to_owned(), 120)])
    );
    assert_eq!(rig.accepted("fcm-no-opt-in"), 0);
    let counts = rig.counts_by_kind(id).await;
    assert_eq!(counts["recipients"], 120);
    assert_eq!(counts["excluded:opted_out"], 1);
    assert_eq!(counts["excluded:segment"], 0);
    assert_eq!(counts["excluded:invalid_token"], 0);
    // Nothing left to do, and doing nothing sends nothing.
    assert!(!engine.run_until_idle().await.unwrap().did_work());
    assert_eq!(rig.sim.stats().total_accepted(), 120);
}

/// The chunk read ahead waits for a turn to send: however many chunks are leased,
/// at most `chunks_in_flight × sends_per_chunk` sends are in flight, the figure
/// the kill-duplicate bound rests on.
async fn a_chunk_read_ahead_does_not_send_before_its_turn<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    for n in 0..40 {
        rig.device(n, "UTC", Platform::Android, false).await;
    }
    rig.schedule("turns", "type = \"now\"").await;
    rig.sim.set_behaviour(Behaviour {
        latency_ms: 100,
        ..Behaviour::default()
    });
    // Five chunks of 8; one sends at a time, 4 sends at once, one more is read ahead.
    let engine = rig.engine_with("worker-a", 8, |s| {
        s.chunks_in_flight = 1;
        s.sends_per_chunk = 4;
    });
    let report = engine.run_until_idle().await.unwrap();
    assert_eq!(report.sent, 40, "{report:?}");
    assert_eq!(rig.sim.stats().most_sends_at_once, 4);
}

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

async fn faults_are_retried_and_dead_tokens_skipped_later<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for n in 0..60 {
        let platform = if n % 2 == 0 {
            Platform::Ios
        } else {
            Platform::Android
        };
        if n % 12 == 0 {
            dead.push(rig.device(n, "Europe/Berlin", platform, true).await);
        } else {
            live.push(rig.device(n, "Europe/Berlin", platform, false).await);
        }
    }
    let mut b = rig.sim.behaviour();
    b.fail_rate = 0.3;
    b.fail_status = 503;
    rig.sim.set_behaviour(b.clone());
    let id = rig.schedule("flaky", "type = \"now\"").await;
    let engine = rig.engine("worker-a", 20);
    engine.run_until_idle().await.unwrap();
    let first_503s = rig
        .sim
        .stats()
        .responses_by_status
        .get(&503)
        .copied()
        .unwrap_or(0);
    assert!(first_503s > 0, "the simulator failed some sends");
    // Now the provider rate-limits with a long Retry-After: nothing may be retried before it.
    b.fail_rate = 0.0;
    b.fail_next = 5;
    b.fail_status = 429;
    b.retry_after_secs = Some(3600);
    rig.sim.set_behaviour(b);
    // A 429'd delivery waits out its hour: the campaign cannot finish sooner.
    let mut first_429_at = None;
    for _ in 0..40 {
        if rig.state("flaky").await == CampaignState::Completed {
            break;
        }
        rig.clock.advance(TimeDelta::minutes(20));
        engine.run_until_idle().await.unwrap();
        if first_429_at.is_none() && rig.sim.stats().responses_by_status.contains_key(&429) {
            first_429_at = Some(rig.clock.now());
        }
    }
    let first_429_at = first_429_at.expect("the simulator answered 429");
    assert!(
        rig.clock.now() - first_429_at >= TimeDelta::minutes(60),
        "Retry-After was not honoured"
    );
    assert_eq!(rig.state("flaky").await, CampaignState::Completed);
    let stats = rig.sim.stats();
    assert_eq!(stats.responses_by_status.get(&429), Some(&5));
    for t in &live {
        assert_eq!(rig.accepted(t), 1, "{t}");
    }
    for t in &dead {
        assert_eq!(rig.accepted(t), 0, "{t}");
        assert_eq!(
            rig.store
                .device_get_by_token("shop", t)
                .await
                .unwrap()
                .unwrap()
                .state,
            DeviceState::Invalid
        );
    }
    let counts = rig.store.delivery_count_by_status(id).await.unwrap();
    assert_eq!(counts.get("sent"), Some(&(live.len() as i64)), "{counts:?}");
    assert_eq!(
        counts.get("token_invalid"),
        Some(&(dead.len() as i64)),
        "{counts:?}"
    );
    assert_eq!(
        stats.total_accepted(),
        live.len() as u64,
        "nothing counted sent that was not accepted"
    );

    // A later campaign never tries the dead tokens again.
    let dead_answers = stats
        .errors_by_reason
        .get("Unregistered")
        .copied()
        .unwrap_or(0)
        + stats
            .errors_by_reason
            .get("UNREGISTERED")
            .copied()
            .unwrap_or(0);
    let later = rig.schedule("later", "type = \"now\"").await;
    engine.run_until_idle().await.unwrap();
    let counts = rig.store.slot_count_by_state(later).await.unwrap();
    let count = |kind: &str| {
        counts
            .iter()
            .find(|(_, k, _)| k == kind)
            .map(|(_, _, n)| *n)
    };
    assert_eq!(count("recipients"), Some(live.len() as i64));
    assert_eq!(count("excluded:invalid_token"), Some(dead.len() as i64));
    assert_eq!(
        count("excluded:no_device"),
        Some(dead.len() as i64),
        "users whose only device died"
    );
    let stats = rig.sim.stats();
    let dead_after = stats
        .errors_by_reason
        .get("Unregistered")
        .copied()
        .unwrap_or(0)
        + stats
            .errors_by_reason
            .get("UNREGISTERED")
            .copied()
            .unwrap_or(0);
    assert_eq!(dead_after, dead_answers);
    for t in &live {
        assert_eq!(rig.accepted(t), 2, "{t}");
    }
}

async fn a_lost_lease_cannot_write_back<S: Store + Clone>(db: &TestDb<S>) {
    use meridian::domain::state::DeliveryStatus;
    use meridian::store::{ChunkWrite, NewDelivery};
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    rig.device(1, "UTC", Platform::Ios, false).await;
    let id = rig.schedule("lease", "type = \"now\"").await;
    let s = &rig.store;
    let now = rig.clock.now();
    let due = s.slot_list_due(now, 10).await.unwrap();
    let def = definition_of(&due[0]);
    let segment = segment_of(&rig.config, &def);
    assert!(release_one(&**s, &due[0], &segment, 100, "a", now)
        .await
        .unwrap()
        .is_some());
    assert!(
        release_one(&**s, &due[0], &segment, 100, "b", now)
            .await
            .unwrap()
            .is_none(),
        "released twice"
    );
    let a = s
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
    assert_eq!(a.len(), 1);
    assert!(s
        .chunk_lease(
            &LeaseTerms {
                owner: "b",
                until: now + TimeDelta::seconds(60),
                limit: 10
            },
            now
        )
        .await
        .unwrap()
        .is_empty());
    // A's lease lapses (A is stuck or dead); B takes the chunk over.
    let later = now + TimeDelta::seconds(61);
    let b = s
        .chunk_lease(
            &LeaseTerms {
                owner: "b",
                until: later + TimeDelta::seconds(60),
                limit: 10,
            },
            later,
        )
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].lease.attempt, a[0].lease.attempt + 1);
    assert_eq!(b[0].lease.owner, "b");
    let slot = s.slot_get_info(a[0].lead_slot_id).await.unwrap().unwrap();
    let recipients = s
        .chunk_recipient_list(&b[0], &slot, &segment, rig.clock.now())
        .await
        .unwrap();
    let delivery = NewDelivery {
        id: s.delivery_id_reserve(1).await.unwrap()[0],
        device_id: recipients[0].device_id,
        slot_id: recipients[0].slot_id,
        user_id: recipients[0].user_id,
        status: DeliveryStatus::Sent,
        provider_id: Some("x".into()),
        error_reason: None,
        next_attempt_at: None,
    };
    let write = |chunk| ChunkWrite {
        chunk,
        app_id: "shop",
        occurrence: &slot.occurrence,
        deliveries: std::slice::from_ref(&delivery),
        webhook: false,
    };
    let stale = s.chunk_record(&write(&a[0]), later).await;
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { .. })),
        "{stale:?}"
    );
    assert_eq!(s.chunk_record(&write(&b[0]), later).await.unwrap(), 1);
    let stale = s.chunk_finish(&a[0], later).await;
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { .. })),
        "a lost lease is an error, never an ignored bool: {stale:?}"
    );
    let stale = s.chunk_return(&a[0], later).await;
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { .. })),
        "{stale:?}"
    );
    let until = later + TimeDelta::seconds(60);
    let stale = s.chunk_lease_extend(&a[0], until).await;
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { .. })),
        "{stale:?}"
    );
    s.chunk_lease_extend(&b[0], until).await.unwrap();
    s.chunk_finish(&b[0], later).await.unwrap();
    assert_eq!(
        s.delivery_count_by_status(id).await.unwrap().get("sent"),
        Some(&1)
    );
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

/// The stored definition of a due slot's campaign.
fn definition_of(
    slot: &meridian::store::CampaignSlot,
) -> meridian::domain::campaign::CampaignDefinition {
    slot.definition.0.clone().unwrap()
}

/// The segment a campaign of the shop app sends to, as the engine builds it.
fn segment_of<'a>(
    config: &'a Config,
    def: &'a meridian::domain::campaign::CampaignDefinition,
) -> meridian::store::Segment<'a> {
    meridian::store::Segment {
        app_id: "shop",
        audience: &def.audience,
        topics: definitions::topic_rules(&config.apps["shop"], &def.audience.topics),
    }
}

/// Releases every due slot into chunks of 5, as the engine's release stage does.
async fn release_all<S: Store>(s: &S, config: &Config, now: DateTime<Utc>) {
    for slot in s.slot_list_due(now, 10).await.unwrap() {
        let def = definition_of(&slot);
        let segment = segment_of(config, &def);
        release_one(s, &slot, &segment, 5, "a", now).await.unwrap();
    }
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
        assert_eq!(r.recipients, 3);
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

/// A chunk whose write-back fails gives its lease back at once, and the chunks
/// sent beside it finish and are recorded instead of being dropped mid-flight.
async fn a_failed_chunk_does_not_strand_its_siblings<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let mut tokens = Vec::new();
    for n in 0..80 {
        tokens.push(rig.device(n, "UTC", Platform::Android, false).await);
    }
    let poisoned = "fcm-token-30";
    // The database itself refuses one device's delivery row, failing one chunk's write.
    if db.url.starts_with("sqlite:") {
        db.raw(&format!(
            "CREATE TRIGGER poison BEFORE INSERT ON deliveries \
             WHEN (SELECT token FROM devices WHERE id = NEW.device_id) = '{poisoned}' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        ))
        .await
        .unwrap();
    } else {
        db.raw(&format!(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF EXISTS (SELECT 1 FROM devices WHERE id = NEW.device_id AND token = '{poisoned}') \
             THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$"
        ))
        .await
        .unwrap();
        db.raw("CREATE TRIGGER poison BEFORE INSERT ON deliveries FOR EACH ROW EXECUTE FUNCTION poison()")
            .await
            .unwrap();
    }
    let id = rig.schedule("poison", "type = \"now\"").await;
    // Four chunks of 20, all in flight together.
    let engine = rig.engine("worker-a", 20);
    assert_eq!(engine.settings().chunks_in_flight, 4);
    let failed = engine.step().await;
    assert!(failed.is_err(), "{failed:?}");
    // The three healthy chunks were recorded in that same pass.
    assert_eq!(
        rig.store
            .delivery_count_by_status(id)
            .await
            .unwrap()
            .get("sent"),
        Some(&60)
    );
    if db.url.starts_with("sqlite:") {
        db.raw("DROP TRIGGER poison").await.unwrap();
    } else {
        db.raw("DROP TRIGGER poison ON deliveries").await.unwrap();
    }
    // No time passes: the failed chunk is leasable again without waiting for expiry.
    let report = engine.run_until_idle().await.unwrap();
    assert_eq!(report.sent, 20, "{report:?}");
    assert_eq!(rig.state("poison").await, CampaignState::Completed);
    assert_eq!(
        rig.store.delivery_count_by_status(id).await.unwrap(),
        BTreeMap::from([("sent".to_owned(), 80)])
    );
    // Only the failed chunk's sends, never recorded, went out twice.
    let twice: Vec<&String> = tokens.iter().filter(|t| rig.accepted(t) == 2).collect();
    assert_eq!(
        twice.len(),
        20,
        "{twice:?} {:?} {:?}",
        rig.sim.stats(),
        report
    );
    assert!(twice.iter().any(|t| *t == poisoned));
    assert!(tokens.iter().all(|t| (1..=2).contains(&rig.accepted(t))));
}

/// `/metrics` answers Prometheus text with the families ops read: deliveries by
/// status and provider, provider latency, retries by reason, invalidated tokens,
/// scheduler lag, lease takeovers, queue depth, rate-limit waits, API requests.
async fn metrics_expose_the_engine_and_the_api<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    rig.device(1, "UTC", Platform::Android, false).await;
    rig.device(2, "UTC", Platform::Ios, false).await;
    rig.device(3, "UTC", Platform::Android, true).await;
    rig.schedule("hello", "type = \"now\"").await;
    let engine = rig.engine("worker-a", 100);
    let (base, key) = rig.api(Some(&engine)).await;
    engine.run_until_idle().await.unwrap();
    // A push the provider turns away once: a retry.
    rig.sim.set_behaviour(Behaviour {
        fail_next: 1,
        fail_status: 503,
        ..Behaviour::default()
    });
    post(
        &base,
        &key,
        "/v1/push",
        serde_json::json!({"userIds": ["user-1"], "message": {"title": "t", "summary": "s"}}),
    )
    .await;
    engine.run_until_idle().await.unwrap();
    get(&base, &key, "/v1/messages").await;
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "# TYPE meridian_deliveries_total counter",
        "meridian_deliveries_total{status=\"sent\",provider=\"fcm\"}",
        "meridian_deliveries_total{status=\"token_invalid\",provider=\"fcm\"}",
        "meridian_deliveries_total{status=\"retry\",provider=",
        "meridian_provider_request_duration_seconds_bucket{provider=\"fcm\",outcome=\"accepted\"",
        "meridian_provider_request_duration_seconds_bucket{provider=\"apns\",outcome=",
        "meridian_retries_total{reason=",
        "meridian_tokens_invalidated_total{provider=\"fcm\"}",
        "meridian_scheduler_lag_seconds_bucket",
        "meridian_lease_takeovers_total",
        "meridian_queue_depth{kind=\"chunks_pending\"}",
        "meridian_queue_depth{kind=\"deliveries_retry\"}",
        "meridian_rate_limit_waits_total{provider=\"apns\"}",
        "meridian_api_requests_total{route=\"/v1/messages\",method=\"GET\",status=\"200\"}",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
}

/// `/healthz` answers while the process does; `/readyz` only while the database
/// answers and the scheduler has turned recently, and names what is not ready.
async fn readiness_follows_the_database_and_the_scheduler<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let engine = Arc::new(rig.engine("worker-a", 100));
    let probe = engine.clone();
    let (base, _) = rig
        .api_probed(Some(&engine), Some(Arc::new(move || probe.ticking())))
        .await;
    let fetch = |path: &'static str| {
        let url = format!("{base}{path}");
        async move {
            let res = reqwest::get(url).await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    assert_eq!(fetch("/healthz").await, (200, "ok".to_owned()));
    let (status, body) = fetch("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("not_ready") && body.contains("has not turned yet"),
        "{body}"
    );
    let runner = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = fetch("/readyz").await;
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"status": "ready", "database": "ok", "scheduler": "ok"})
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    engine.stop();
    runner.await.unwrap();
    // A loop that stopped turning is no longer ready.
    rig.clock.advance(TimeDelta::minutes(10));
    let (status, body) = fetch("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("scheduler: the scheduler last turned 600 s ago"),
        "{body}"
    );
    // Nor is one whose database is gone; the process still answers.
    rig.store.close().await;
    let (status, body) = fetch("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database: "), "{body}");
    assert_eq!(fetch("/healthz").await.0, 200);
}

storage_tests!(
    a_chunk_read_ahead_does_not_send_before_its_turn,
    readiness_follows_the_database_and_the_scheduler,
    metrics_expose_the_engine_and_the_api,
    a_campaign_whose_every_slot_was_skipped_completes,
    a_recurring_slot_completes_with_its_next_occurrence,
    a_failed_chunk_does_not_strand_its_siblings,
    a_user_list_is_counted_against_the_users_it_names,
    an_attribute_audience_counts_devices_without_a_user,
    zones_due_together_keep_their_own_counts,
    zones_released_together_share_key_ranges,
    a_new_slot_is_not_queued_behind_a_large_one,
    frequency_caps_suppress_and_count,
    a_device_registered_after_scheduling_gets_its_own_nine,
    pause_holds_everything_and_resume_continues,
    cancel_stops_the_zones_not_yet_sent,
    every_device_gets_exactly_one,
    each_zone_is_released_at_its_own_nine,
    faults_are_retried_and_dead_tokens_skipped_later,
    a_lost_lease_cannot_write_back,
);
