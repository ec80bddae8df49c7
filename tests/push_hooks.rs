//! Transactional pushes and the outgoing hooks end to end on both backends:
//! addressing, priority over campaign traffic, status webhooks, fallbacks.

mod common;

use std::sync::Arc;

use chrono::TimeDelta;
use common::rig::{at, get, post, rig, rig_with, Receiver};
use common::TestDb;
use meridian::clock::Clock;
use meridian::domain::campaign::Platform;
use meridian::store::Store;

/// A transactional push reaches users by external id, by phone (an id of digits
/// that is no external id) and by install id, each active device once, through
/// the same leased pipeline and history as campaigns.
async fn a_push_reaches_users_by_id_phone_and_install<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let ios = format!("{:064x}", 42);
    rig.device_of(Some("user-42"), None, &ios, true).await;
    rig.device_of(Some("user-42"), None, "fcm-42-tablet", false)
        .await;
    rig.device_of(Some("u-phone"), None, "fcm-phone", false)
        .await;
    rig.device_of(None, Some("iid-1"), "fcm-anon", false).await;
    rig.device_of(Some("stale"), None, "fcm-stale", false).await;
    for (user, phone) in [("u-phone", Some("+79999999999")), ("nodevice", None)] {
        rig.user(user, phone).await;
    }
    let stale = rig
        .store
        .device_get_by_token("shop", "fcm-stale")
        .await
        .unwrap()
        .unwrap();
    rig.store
        .device_invalidate(stale.id, "Unregistered", rig.clock.now())
        .await
        .unwrap();
    let engine = rig.engine("worker-a", 100);
    let (base, key) = rig.api(None).await;
    let message =
        serde_json::json!({"title": "Order shipped", "summary": "Your order 1234 is on its way"});
    let (status, body) = post(
        &base,
        &key,
        "/v1/push",
        serde_json::json!({
            "userIds": ["79999999999", "user-42", "ghost", "nodevice", "stale"],
            "installIds": ["iid-1", "iid-ghost"],
            "message": message, "deeplink": "shop://orders/1234", "topic": "promo",
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["accepted"], 4, "{body}");
    assert_eq!(body["unknown"], serde_json::json!(["ghost", "iid-ghost"]));
    let request_id = body["requestId"].as_str().unwrap().to_owned();
    assert!(request_id.starts_with("req_"), "{request_id}");
    let report = engine.run_until_idle().await.unwrap();
    assert_eq!((report.retried, report.sent), (4, 4), "{report:?}");
    for t in [ios.as_str(), "fcm-42-tablet", "fcm-phone", "fcm-anon"] {
        assert_eq!(rig.accepted(t), 1, "{t}");
    }
    assert_eq!(rig.accepted("fcm-stale"), 0);
    let listed = get(&base, &key, "/v1/messages?user=user-42").await;
    let messages = listed["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{listed}");
    for m in messages {
        assert_eq!(m["status"], "sent", "{m}");
        assert_eq!(m["requestId"], request_id.as_str(), "{m}");
    }
    // The four sent, and one `no_device` message for each user with no active
    // device: the push leaves a trace for them too.
    let by_request = get(&base, &key, &format!("/v1/messages?request={request_id}")).await;
    let mut statuses: Vec<(String, String)> = by_request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["status"].as_str().unwrap().to_owned(),
                m["userId"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    statuses.sort();
    let want = [
        ("no_device", "nodevice"),
        ("no_device", "stale"),
        ("sent", "-"),
        ("sent", "u-phone"),
        ("sent", "user-42"),
        ("sent", "user-42"),
    ];
    assert_eq!(
        statuses,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{by_request}"
    );
    let one = get(&base, &key, &format!("/v1/messages/{}", messages[0]["id"])).await;
    let steps: Vec<&str> = one["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["queued", "sent"], "{one}");

    // Only the primary device; and a topic the user never opted in to reaches no one.
    let (_, body) = post(
        &base,
        &key,
        "/v1/push",
        serde_json::json!({
        "userIds": ["user-42"], "message": message, "devices": "primary"}),
    )
    .await;
    assert_eq!(body["accepted"], 1, "{body}");
    let (_, body) = post(
        &base,
        &key,
        "/v1/push",
        serde_json::json!({
        "userIds": ["user-42"], "message": message, "topic": "marketing"}),
    )
    .await;
    assert_eq!(
        (body["accepted"].clone(), body["unknown"].clone()),
        (serde_json::json!(0), serde_json::json!([])),
        "{body}"
    );
    engine.run_until_idle().await.unwrap();
    assert_eq!(rig.accepted(&ios), 2);
    assert_eq!(rig.accepted("fcm-42-tablet"), 1);
}

/// The running engine sends a push at once, even while a campaign's chunk is
/// being sent (here held back by its throttle of one send a minute).
async fn a_push_is_not_queued_behind_campaign_traffic<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let mut tokens = Vec::new();
    for n in 0..5 {
        tokens.push(rig.device(n, "UTC", Platform::Android, false).await);
    }
    rig.device_of(Some("vip"), None, "fcm-vip", false).await;
    rig.save(
        "key = \"slow\"\napp = \"shop\"\nstatus = \"scheduled\"\nthrottle_per_minute = 1\n\
         [message]\ntitle = \"Hello\"\nbody = \"World\"\n[audience]\ntopics = [\"marketing\"]\n\
         [schedule]\ntype = \"now\"\n",
    )
    .await;
    let engine = Arc::new(rig.engine("worker-a", 100));
    let (base, key) = rig.api(Some(&engine)).await;
    let runner = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    // The campaign's one chunk is leased and has sent its first message.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rig.sim.stats().total_accepted() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the campaign never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = post(
        &base,
        &key,
        "/v1/push",
        serde_json::json!({
        "userIds": ["vip"], "message": {"title": "Code", "summary": "123456"}}),
    )
    .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, serde_json::json!(1)),
        "{body}"
    );
    while rig.accepted("fcm-vip") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the push waited behind the campaign"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let campaign_sent: u64 = tokens.iter().map(|t| rig.accepted(t)).sum();
    assert_eq!(campaign_sent, 1, "the throttled campaign is still sending");
    engine.stop();
    tokio::time::timeout(std::time::Duration::from_secs(20), runner)
        .await
        .unwrap()
        .unwrap();
}

/// Every status change of an app's messages reaches its webhook, signed, in
/// batches of `batch_size`, oldest first; a refused batch is retried later.
async fn status_changes_reach_the_webhook_in_signed_batches<S: Store + Clone>(db: &TestDb<S>) {
    let (receiver, url) = Receiver::start().await;
    let extra = format!(
        "[apps.shop.webhook]\nurl = \"{url}\"\nsecret_file = \"{{dir}}/hook.secret\"\nbatch_size = 3\n"
    );
    let rig = rig_with(db, at(2026, 11, 23, 10, 0), &extra).await;
    let a = rig.device(1, "UTC", Platform::Android, false).await;
    rig.device(2, "UTC", Platform::Android, true).await;
    rig.schedule("hello", "type = \"now\"").await;
    let engine = rig.engine("worker-a", 100);
    let (base, key) = rig.api(Some(&engine)).await;
    let (status, body) = post(
        &base,
        &key,
        "/v1/push",
        serde_json::json!({
        "userIds": ["user-1"], "message": {"title": "Code", "summary": "123456"}}),
    )
    .await;
    assert_eq!(status, 200);
    engine.run_until_idle().await.unwrap();
    assert_eq!(rig.accepted(&a), 2);
    let listed = get(
        &base,
        &key,
        &format!(
            "/v1/messages?request={}",
            body["requestId"].as_str().unwrap()
        ),
    )
    .await;
    let push_id = listed["messages"][0]["id"].as_i64().unwrap();
    let (status, _) = post(
        &base,
        &key,
        "/v1/receipts",
        serde_json::json!({"messageId": push_id, "status": "opened"}),
    )
    .await;
    assert_eq!(status, 200);
    // The endpoint is down for the first attempt: nothing is lost, it comes later.
    receiver
        .fail_next
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let first = engine.deliver_hooks().await.unwrap();
    assert_eq!(
        (first.events_sent, first.events_failed),
        (0, 3),
        "{first:?}"
    );
    let early = engine.deliver_hooks().await.unwrap();
    assert_eq!(
        early.events_sent, 0,
        "nothing overtakes the batch waiting for its retry"
    );
    rig.clock.advance(TimeDelta::seconds(6));
    let later = engine.deliver_hooks().await.unwrap();
    // queued (push), sent (campaign), token_invalid (campaign), sent (push), opened (push).
    assert_eq!(later.events_sent, 5, "{later:?}");
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 2, "batches of at most 3: {bodies:?}");
    let events: Vec<serde_json::Value> = bodies
        .iter()
        .flat_map(|b| {
            assert_eq!(b["app"], "shop");
            b["events"].as_array().unwrap().clone()
        })
        .collect();
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    let mut seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let kind = if e["requestId"].is_string() {
                "push"
            } else {
                "campaign"
            };
            (kind.to_owned(), e["status"].as_str().unwrap().to_owned())
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String)> = [
        ("campaign", "sent"),
        ("campaign", "token_invalid"),
        ("push", "opened"),
        ("push", "queued"),
        ("push", "sent"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, want);
    assert!(events
        .iter()
        .any(|e| e["messageId"] == push_id && e["status"] == "opened" && e["userId"] == "user-1"));
    // Taken once: nothing is sent again.
    assert_eq!(engine.deliver_hooks().await.unwrap().events_sent, 0);
    assert_eq!(receiver.bodies().len(), 2);
}

/// A webhook batch keeps its events and its `Idempotency-Key` across retries,
/// even when more events arrived while it waited (they regrouped into it
/// before); once the outbox drains, later events get new ids and keys (SQLite
/// reused its rowids: receivers saw `status-1-1` twice with different events).
async fn webhook_keys_and_event_ids_never_repeat<S: Store + Clone>(db: &TestDb<S>) {
    use std::sync::atomic::Ordering;
    let (receiver, url) = Receiver::start().await;
    let extra = format!(
        "[apps.shop.webhook]\nurl = \"{url}\"\nsecret_file = \"{{dir}}/hook.secret\"\nbatch_size = 10\n"
    );
    let rig = rig_with(db, at(2026, 11, 23, 10, 0), &extra).await;
    rig.device(1, "UTC", Platform::Android, false).await;
    let engine = rig.engine("worker-a", 100);
    let (base, key) = rig.api(Some(&engine)).await;
    let push = || {
        post(
            &base,
            &key,
            "/v1/push",
            serde_json::json!({"userIds": ["user-1"], "message": {"title": "Code", "summary": "1"}}),
        )
    };
    assert_eq!(push().await.0, 200);
    receiver.fail_next.store(1, Ordering::SeqCst);
    assert_eq!(engine.deliver_hooks().await.unwrap().events_failed, 1);
    // Another change arrives while the refused batch waits for its retry.
    assert_eq!(push().await.0, 200);
    rig.clock.advance(TimeDelta::seconds(6));
    assert_eq!(engine.deliver_hooks().await.unwrap().events_sent, 2);
    let tried = receiver.tried.lock().unwrap().clone();
    assert_eq!(
        tried.len(),
        3,
        "the refused batch, its retry, the next: {tried:?}"
    );
    assert_eq!(
        tried[0], tried[1],
        "a retry is the same events under the same key"
    );
    assert_ne!(tried[1].0, tried[2].0);
    // Drained: what comes next has ids and keys never used before.
    assert_eq!(engine.deliver_hooks().await.unwrap().events_sent, 0);
    for _ in 0..2 {
        assert_eq!(push().await.0, 200);
        assert_eq!(engine.deliver_hooks().await.unwrap().events_sent, 1);
    }
    let tried = receiver.tried.lock().unwrap().clone();
    assert_eq!(tried.len(), 5, "{tried:?}");
    let keys: std::collections::HashSet<&String> = tried[1..].iter().map(|t| &t.0).collect();
    assert_eq!(keys.len(), 4, "a key names one batch for good: {tried:?}");
    let ids: Vec<i64> = tried[1..].iter().flat_map(|t| t.1.clone()).collect();
    let unique: std::collections::HashSet<&i64> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (4, 4), "event ids: {ids:?}");
}

/// A transactional push falls back to the partner's channel, once per user and
/// push: at once for a user with no device, after the send for one whose every
/// token is dead, after `no_receipt_after` for one sent but never confirmed, never
/// for one who opened it; each fallback is a step in the message's history.
async fn a_push_falls_back_once_when_push_cannot_reach<S: Store + Clone>(db: &TestDb<S>) {
    let (receiver, url) = Receiver::start().await;
    let extra = format!(
        "[apps.shop.fallback]\nurl = \"{url}\"\nsecret_file = \"{{dir}}/hook.secret\"\nno_receipt_after = \"10m\"\n"
    );
    let rig = rig_with(db, at(2026, 11, 23, 10, 0), &extra).await;
    rig.device(1, "UTC", Platform::Android, true).await; // user-1: a dead token
    rig.device(2, "UTC", Platform::Android, false).await; // user-2: sent, never confirmed
    rig.device(3, "UTC", Platform::Android, false).await; // user-3: opens it
    for (user, phone) in [
        ("user-1", Some("+4915100000001")),
        ("user-2", Some("+4915100000002")),
        ("user-3", Some("+4915100000003")),
        ("nodevice", Some("+4915100000004")),
        ("nophone", None),
    ] {
        rig.user(user, phone).await;
    }
    let engine = rig.engine("worker-a", 100);
    let (base, key) = rig.api(Some(&engine)).await;
    let (status, body) = post(
        &base,
        &key,
        "/v1/push",
        serde_json::json!({
        "userIds": ["user-1", "user-2", "user-3", "nodevice", "nophone"],
        "message": {"title": "Order shipped", "summary": "On its way"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let request_id = body["requestId"].as_str().unwrap().to_owned();
    // The gateway is down at first: the fallback is retried, not lost.
    receiver
        .fail_next
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let first = engine.deliver_hooks().await.unwrap();
    assert_eq!(
        (first.fallbacks_sent, first.fallbacks_failed),
        (0, 1),
        "nophone fails at once: {first:?}"
    );
    engine.run_until_idle().await.unwrap();
    let listed = get(&base, &key, "/v1/messages?user=user-3").await;
    let opened = listed["messages"][0]["id"].as_i64().unwrap();
    post(
        &base,
        &key,
        "/v1/receipts",
        serde_json::json!({"messageId": opened, "status": "opened"}),
    )
    .await;
    rig.clock.advance(TimeDelta::seconds(6));
    let second = engine.deliver_hooks().await.unwrap();
    assert_eq!(
        (second.fallbacks_found, second.fallbacks_sent),
        (1, 2),
        "{second:?}"
    );
    let phones = |r: &Receiver| {
        let mut p: Vec<String> = r
            .bodies()
            .iter()
            .map(|b| b["phone"].as_str().unwrap().to_owned())
            .collect();
        p.sort();
        p
    };
    assert_eq!(phones(&receiver), ["+4915100000001", "+4915100000004"]);
    let b = &receiver.bodies()[0];
    assert_eq!(b["title"], "Order shipped");
    assert_eq!(b["text"], "On its way");
    assert_eq!(b["requestId"], request_id.as_str());
    let reasons: Vec<String> = receiver
        .bodies()
        .iter()
        .map(|b| b["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        reasons.contains(&"no_active_device".to_owned())
            && reasons.contains(&"all_tokens_invalid".to_owned()),
        "{reasons:?}"
    );
    // Pushes the sweep still watches: this one, for user-2's receipt window.
    let watched = || db.raw("UPDATE push_requests SET fallback = fallback WHERE fallback");
    assert_eq!(watched().await.unwrap(), 1);
    // user-2 was sent but has not confirmed: after ten minutes it falls back too.
    rig.clock.advance(TimeDelta::minutes(11));
    let third = engine.deliver_hooks().await.unwrap();
    assert_eq!(
        (third.fallbacks_found, third.fallbacks_sent),
        (1, 1),
        "{third:?}"
    );
    assert_eq!(
        phones(&receiver),
        ["+4915100000001", "+4915100000002", "+4915100000004"]
    );
    // Never twice.
    rig.clock.advance(TimeDelta::hours(1));
    let again = engine.deliver_hooks().await.unwrap();
    assert_eq!(
        (again.fallbacks_found, again.fallbacks_sent),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(receiver.bodies().len(), 3);
    assert_eq!(
        watched().await.unwrap(),
        0,
        "a settled push leaves the sweep"
    );
    // The step is in the history of the dead-token message.
    let dead = get(&base, &key, "/v1/messages?user=user-1").await;
    let id = dead["messages"][0]["id"].as_i64().unwrap();
    let one = get(&base, &key, &format!("/v1/messages/{id}")).await;
    let steps: Vec<&str> = one["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["queued", "token_invalid", "fallback_sent"], "{one}");
    // A user push found no device for has a message too: `no_device`, moved by
    // the fallback's outcome (a user without a phone fails at once).
    for (user, outcome) in [
        ("nodevice", "fallback_sent"),
        ("nophone", "fallback_failed"),
    ] {
        let listed = get(&base, &key, &format!("/v1/messages?user={user}")).await;
        let messages = listed["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1, "{listed}");
        assert_eq!(messages[0]["status"], outcome, "{listed}");
        assert_eq!(messages[0]["requestId"], request_id.as_str());
        let one = get(&base, &key, &format!("/v1/messages/{}", messages[0]["id"])).await;
        let steps: Vec<&str> = one["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["no_device", outcome], "{one}");
    }
}

storage_tests!(
    status_changes_reach_the_webhook_in_signed_batches,
    webhook_keys_and_event_ids_never_repeat,
    a_push_falls_back_once_when_push_cannot_reach,
    a_push_reaches_users_by_id_phone_and_install,
    a_push_is_not_queued_behind_campaign_traffic,
);
