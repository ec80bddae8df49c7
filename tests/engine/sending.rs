//! Sending: every device exactly once, retries and dead tokens, leases lost and chunks failed.

use super::*;

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
    db.assert_tallies_match(id).await;
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
    db.assert_tallies_match(id).await;

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
    assert_eq!(a[0].previous_owner, None, "a first lease");
    assert_eq!(b[0].previous_owner.as_deref(), Some("a"), "taken from a");
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

/// A large release (at least 16 chunks' worth planned) is cut into key ranges
/// without reading its audience: its chunks exist before any count, every
/// recipient gets exactly one message, and the counts that follow are the
/// exact ones (opted out, invalid, no device). A count cut short by a stop is
/// made by the next start.
async fn a_large_release_sends_first_and_counts_after<S: Store + Clone>(db: &TestDb<S>) {
    let start = at(2026, 11, 23, 10, 0);
    let rig = rig(db, start).await;
    for n in 1..=20 {
        let zone = if n % 2 == 0 { "UTC" } else { "Europe/Berlin" };
        rig.device(n, zone, Platform::Android, false).await;
    }
    rig.unsubscribed("out-1", "UTC").await;
    rig.unsubscribed("out-2", "UTC").await;
    rig.device(21, "UTC", Platform::Android, false).await;
    db.raw(&format!(
        "UPDATE devices SET state = 'invalid', invalid_reason = 'gone', invalidated_at = '{}' \
         WHERE token = 'fcm-token-21'",
        start.to_rfc3339()
    ))
    .await
    .unwrap();
    let id = rig.schedule("big", "type = \"now\"").await;
    let due = rig.store.slot_list_due(start, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let def = definition_of(&due[0]);
    let segment = segment_of(&rig.config, &def);
    // Released by ranges of one chunk (20 planned ≥ 16 × 1): no count yet.
    let released = release_one(rig.store.as_ref(), &due[0], &segment, 1, "a", start)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(released.counted, None);
    assert!(released.chunks >= 20, "{released:?}");
    assert!(rig.counts_by_kind(id).await.is_empty());
    // A new engine counts what the stopped one left uncounted, and sends.
    let engine = rig.engine("worker-b", 1);
    engine.recover().await;
    engine.run_until_idle().await.unwrap();
    let counts = rig.counts_by_kind(id).await;
    assert_eq!(counts.get("recipients"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("excluded:opted_out"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("excluded:invalid_token"), Some(&1), "{counts:?}");
    let sent = rig.store.delivery_count_by_status(id).await.unwrap();
    assert_eq!(sent.get("sent"), Some(&20), "{sent:?}");
    assert_eq!(sent.values().sum::<i64>(), 20, "{sent:?}");
    assert_eq!(rig.state("big").await, CampaignState::Completed);

    // Through the engine alone: released, sent and counted in its steps.
    let id = rig.schedule("again", "type = \"now\"").await;
    rig.engine("worker-c", 1).run_until_idle().await.unwrap();
    let counts = rig.counts_by_kind(id).await;
    assert_eq!(counts.get("recipients"), Some(&20), "{counts:?}");
    let sent = rig.store.delivery_count_by_status(id).await.unwrap();
    assert_eq!(sent.get("sent"), Some(&20), "{sent:?}");
}

/// A chunk given back (a failed sibling, a paused campaign) is released
/// before it is leased again: its next lease counts its attempt up but names
/// no previous owner, so the engine neither logs nor counts it as a takeover.
async fn a_chunk_given_back_is_not_taken_over<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    rig.device(1, "UTC", Platform::Ios, false).await;
    rig.schedule("back", "type = \"now\"").await;
    let s = &rig.store;
    let now = rig.clock.now();
    let due = s.slot_list_due(now, 10).await.unwrap();
    let def = definition_of(&due[0]);
    let segment = segment_of(&rig.config, &def);
    release_one(&**s, &due[0], &segment, 100, "a", now)
        .await
        .unwrap();
    let terms = |owner| LeaseTerms {
        owner,
        until: now + TimeDelta::seconds(60),
        limit: 10,
    };
    let a = s.chunk_lease(&terms("a"), now).await.unwrap();
    s.chunk_return(&a[0], now).await.unwrap();
    let b = s.chunk_lease(&terms("b"), now).await.unwrap();
    assert_eq!(b[0].lease.attempt, a[0].lease.attempt + 1);
    assert_eq!(b[0].previous_owner, None, "given back, not taken over");
}

storage_tests!(
    a_chunk_given_back_is_not_taken_over,
    a_large_release_sends_first_and_counts_after,
    a_chunk_read_ahead_does_not_send_before_its_turn,
    a_failed_chunk_does_not_strand_its_siblings,
    every_device_gets_exactly_one,
    faults_are_retried_and_dead_tokens_skipped_later,
    a_lost_lease_cannot_write_back,
);
