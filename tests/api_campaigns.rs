//! Campaigns over the REST API through real HTTP, on SQLite and on Postgres:
//! create, read, list, edit, lifecycle, slots, idempotency, preview, bad input
//! and tenancy.

mod common;

use common::api::{start, Api};
use common::TestDb;
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::definitions::topic_rules;
use meridian::store::{Segment, Store};
use serde_json::{json, Value};

/// A draft sent at 09:00 on 1 December 2030 in each recipient's zone.
fn morning(key: &str) -> Value {
    json!({
        "key": key,
        "name": "Morning",
        "message": {"title": "Good morning", "body": "Hello", "ttl": "6h"},
        "audience": {"topics": ["marketing"]},
        "schedule": {"type": "local", "at": "2030-12-01T09:00"},
    })
}

/// Two subscribed users in Kathmandu (+05:45), one in St John's (-03:30), and
/// one in Kathmandu who did not opt in to marketing.
async fn seed<S: Store>(api: &Api<S>) {
    let shop = Some(api.shop.as_str());
    for (n, user, zone, marketing) in [
        (1u8, "ann", "Asia/Kathmandu", true),
        (2, "bob", "Asia/Kathmandu", true),
        (3, "cy", "America/St_Johns", true),
        (4, "dee", "Asia/Kathmandu", false),
    ] {
        let token = format!("{n:02x}").repeat(32);
        let (status, body) = api
            .call(
                "POST",
                "/v1/devices",
                shop,
                Some(json!({"platform": "ios", "token": token, "userId": user, "timezone": zone})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = api
            .call(
                "PUT",
                &format!("/v1/users/{user}/subscriptions"),
                shop,
                Some(json!({"marketing": marketing})),
            )
            .await;
        assert_eq!(status, 200);
    }
}

fn slot<'a>(view: &'a Value, zone: &str) -> &'a Value {
    view["slots"]
        .as_array()
        .and_then(|slots| slots.iter().find(|s| s["zone"] == zone))
        .unwrap_or_else(|| panic!("no slot for {zone} in {view}"))
}

/// What the engine does when the Kathmandu slot comes due: release it, counting
/// recipients and who is left out; then one message is sent.
async fn release_kathmandu<S: Store>(api: &Api<S>, id: i64) {
    let config: Config = toml::from_str(common::api::CONFIG).unwrap();
    let app = config.app("shop").unwrap();
    let far = chrono::DateTime::parse_from_rfc3339("2031-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let due: Vec<_> = api
        .store
        .slot_list_due(far, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.campaign_id == id && s.zone == "Asia/Kathmandu")
        .collect();
    assert_eq!(due.len(), 1);
    let def = due[0].definition.0.clone().unwrap();
    let segment = Segment {
        app_id: "shop",
        audience: &def.audience,
        topics: topic_rules(app, &def.audience.topics),
    };
    let won = api
        .store
        .slot_release(
            &meridian::store::SlotRelease {
                slots: &due,
                segment: &segment,
                chunk_size: 100,
                worker: "test",
            },
            SystemClock.now(),
        )
        .await
        .unwrap();
    assert_eq!(won.len(), 1);
}

async fn record_a_sent_message<S: Store>(db: &TestDb<S>, id: i64) {
    db.raw(&format!(
        "INSERT INTO deliveries (app_id, campaign_id, slot_id, occurrence, user_id, device_id, status, attempts, \
           created_at, updated_at, sent_at) \
         SELECT 'shop', s.campaign_id, s.id, s.occurrence, d.user_id, d.id, 'sent', 1, \
           '2030-12-01T03:15:01+00:00', '2030-12-01T03:15:01+00:00', '2030-12-01T03:15:01+00:00' \
         FROM slots s, devices d WHERE s.campaign_id = {id} AND s.zone = 'Asia/Kathmandu' AND d.token = '{}'",
        "01".repeat(32)
    ))
    .await
    .unwrap();
}

/// Create → get → patch → schedule → pause → resume → (released) → cancel, with
/// the state machine refusing what it does not allow and slots re-planned on edit.
async fn a_campaign_goes_through_its_lifecycle<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    seed(&api).await;
    let shop = Some(api.shop.as_str());

    let (status, created) = api
        .call("POST", "/v1/campaigns", shop, Some(morning("morning")))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(
        (created["key"].as_str(), created["state"].as_str()),
        (Some("morning"), Some("draft"))
    );
    assert_eq!(created["definition"]["app"], "shop", "the app is the key's");
    assert_eq!(created["slots"], json!([]), "a draft has no plan");
    let path = format!("/v1/campaigns/{id}");

    // The same definition again changes nothing; another one under the key is a conflict.
    let (status, again) = api
        .call("POST", "/v1/campaigns", shop, Some(morning("morning")))
        .await;
    assert_eq!((status, again["id"].as_i64()), (200, Some(id)), "{again}");
    assert_eq!(again["revision"], 1);
    let mut other = morning("morning");
    other["message"]["title"] = json!("Something else");
    let (status, body) = api.call("POST", "/v1/campaigns", shop, Some(other)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().starts_with("key: "),
        "{body}"
    );

    let (status, got) = api.call("GET", &path, shop, None).await;
    assert_eq!(status, 200);
    assert_eq!(got, created);

    // A merge patch: the title changes, the rest stays.
    let patched = api
        .request("PATCH", &path, shop)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"message": {"title": "Namaste"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status().as_u16(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["revision"], 2);
    assert_eq!(
        patched["definition"]["message"],
        json!({"title": "Namaste", "body": "Hello", "ttl": "6h", "priority": "high"})
    );

    for (action, want) in [
        ("pause", "cannot pause a draft campaign"),
        ("resume", "cannot resume a draft campaign"),
    ] {
        let (status, body) = api
            .call("POST", &format!("{path}/{action}"), shop, None)
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(
            body,
            json!({"error": "invalid_transition", "message": want})
        );
    }
    let (status, body) = api
        .call("POST", &format!("{path}/launch"), shop, None)
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    // Scheduling plans a slot per zone: 09:00 local in each.
    let (status, scheduled) = api
        .call("POST", &format!("{path}/schedule"), shop, None)
        .await;
    assert_eq!(status, 200, "{scheduled}");
    assert_eq!(scheduled["state"], "scheduled");
    let ktm = slot(&scheduled, "Asia/Kathmandu");
    assert_eq!(
        (
            ktm["dueAt"].as_str(),
            ktm["localDueAt"].as_str(),
            ktm["planned"].as_i64()
        ),
        (
            Some("2030-12-01T03:15:00Z"),
            Some("2030-12-01T09:00:00+05:45"),
            Some(2)
        )
    );
    assert_eq!(
        slot(&scheduled, "America/St_Johns")["localDueAt"],
        "2030-12-01T09:00:00-03:30"
    );
    assert_eq!(
        scheduled["slots"].as_array().unwrap().len(),
        2,
        "{scheduled}"
    );
    assert!(
        scheduled["emptySlots"].as_u64().unwrap() > 300,
        "every zone is planned"
    );
    let (status, body) = api
        .call("POST", &format!("{path}/schedule"), shop, None)
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (409, Some("cannot schedule a scheduled campaign"))
    );

    // Editable while nothing is released: the plan follows the edit.
    let (status, moved) = api
        .call(
            "PATCH",
            &path,
            shop,
            Some(json!({"schedule": {"at": "2030-12-02T09:00"}})),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["state"], "scheduled");
    assert_eq!(
        slot(&moved, "Asia/Kathmandu")["dueAt"],
        "2030-12-02T03:15:00Z"
    );

    // The whole plan, empty zones included.
    let (status, plan) = api.call("GET", &format!("{path}/slots"), shop, None).await;
    assert_eq!(status, 200, "{plan}");
    let all = plan["slots"].as_array().unwrap();
    assert_eq!(
        all.len() as u64,
        2 + moved["emptySlots"].as_u64().unwrap(),
        "{plan}"
    );
    let tokyo = slot(&plan, "Asia/Tokyo");
    assert_eq!(
        (
            tokyo["localDueAt"].as_str(),
            tokyo["state"].as_str(),
            tokyo["planned"].as_i64()
        ),
        (Some("2030-12-02T09:00:00+09:00"), Some("pending"), Some(0))
    );
    assert_eq!(slot(&plan, "Asia/Kathmandu")["localZone"], "Asia/Kathmandu");

    let (status, paused) = api.call("POST", &format!("{path}/pause"), shop, None).await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")));
    let (status, body) = api
        .call("PATCH", &path, shop, Some(json!({"name": "x"})))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_editable")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("paused"),
        "{body}"
    );
    let (status, resumed) = api
        .call("POST", &format!("{path}/resume"), shop, None)
        .await;
    assert_eq!(
        (status, resumed["state"].as_str()),
        (200, Some("scheduled"))
    );

    // Once a slot is released the campaign runs: counts appear, edits are refused.
    release_kathmandu(&api, id).await;
    record_a_sent_message(db, id).await;
    let (status, running) = api.call("GET", &path, shop, None).await;
    assert_eq!(status, 200);
    assert_eq!(running["state"], "running");
    assert_eq!(running["recipients"], 2, "{running}");
    assert_eq!(running["excluded"]["opted_out"], 1, "{running}");
    assert_eq!(running["deliveries"], json!({"sent": 1}));
    let ktm = slot(&running, "Asia/Kathmandu");
    assert_eq!(
        (
            ktm["state"].as_str(),
            ktm["recipients"].as_i64(),
            &ktm["deliveries"]
        ),
        (Some("released"), Some(2), &json!({"sent": 1}))
    );
    assert!(slot(&running, "America/St_Johns")["recipients"].is_null());
    let (status, body) = api
        .call("PATCH", &path, shop, Some(json!({"name": "x"})))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            409,
            Some("campaign \"morning\" is running: it can no longer be edited")
        )
    );

    let (status, cancelled) = api
        .call("POST", &format!("{path}/cancel"), shop, None)
        .await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("cancelled"))
    );
    assert_eq!(slot(&cancelled, "America/St_Johns")["state"], "cancelled");
    let (status, body) = api
        .call("POST", &format!("{path}/cancel"), shop, None)
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (409, Some("cannot cancel a cancelled campaign"))
    );
}

/// Newest first, paged by an opaque cursor, filtered by state.
async fn campaigns_are_listed_newest_first_by_page<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let shop = Some(api.shop.as_str());
    for n in 1..=5 {
        let mut def = morning(&format!("c{n}"));
        if n % 2 == 0 {
            def["status"] = json!("scheduled");
        }
        let (status, body) = api.call("POST", "/v1/campaigns", shop, Some(def)).await;
        assert_eq!(status, 201, "{body}");
    }
    let keys = |page: &Value| -> Vec<String> {
        page["campaigns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["key"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut seen = Vec::new();
    let mut query = "/v1/campaigns?limit=2".to_owned();
    loop {
        let (status, page) = api.call("GET", &query, shop, None).await;
        assert_eq!(status, 200, "{page}");
        seen.push(keys(&page));
        match page["nextCursor"].as_str() {
            Some(cursor) => query = format!("/v1/campaigns?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, [vec!["c5", "c4"], vec!["c3", "c2"], vec!["c1"]]);

    let (_, page) = api
        .call("GET", "/v1/campaigns?state=scheduled&limit=1", shop, None)
        .await;
    assert_eq!(keys(&page), ["c4"]);
    assert_eq!(page["campaigns"][0]["state"], "scheduled");
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, page) = api
        .call(
            "GET",
            &format!("/v1/campaigns?state=scheduled&limit=1&cursor={cursor}"),
            shop,
            None,
        )
        .await;
    assert_eq!(keys(&page), ["c2"]);
    let (_, page) = api
        .call("GET", "/v1/campaigns?state=draft", shop, None)
        .await;
    assert_eq!(keys(&page), ["c5", "c3", "c1"]);
    assert!(page["nextCursor"].is_null());
    let (_, page) = api
        .call("GET", "/v1/campaigns", Some(&api.other), None)
        .await;
    assert_eq!(keys(&page), Vec::<String>::new(), "another app sees none");

    for (query, field) in [
        ("state=sending", "state"),
        ("cursor=MTI", "cursor"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("colour=red", "colour"),
    ] {
        api.bad_request("GET", &format!("/v1/campaigns?{query}"), shop, None, field)
            .await;
    }
}

/// Same key and body: the first answer again and one campaign; same key with
/// another body: 422 and nothing written.
async fn an_idempotency_key_creates_once<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let post = |key: &str, idem: &str, body: &Value| {
        api.request("POST", "/v1/campaigns", Some(key))
            .header("Idempotency-Key", idem)
            .json(body)
            .send()
    };
    let first = post(&api.shop, "order-7", &morning("promo")).await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = first.text().await.unwrap();

    // Key order and spelled-out defaults do not make it another request.
    let mut same = morning("promo");
    same["status"] = json!("draft");
    same["app"] = json!("shop");
    let again = post(&api.shop, "order-7", &same).await.unwrap();
    assert_eq!(
        again.status().as_u16(),
        201,
        "the first answer, status included"
    );
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(again.text().await.unwrap(), first, "byte for byte");

    let mut changed = morning("promo-2");
    changed["message"]["title"] = json!("Other");
    let refused = post(&api.shop, "order-7", &changed).await.unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "idempotency_mismatch", "{body}");
    let shop_campaigns = || async {
        api.store
            .campaign_list(Some("shop"))
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shop_campaigns().await,
        ["promo"],
        "one campaign, nothing else"
    );

    // Keys are per app: the other app's "order-7" is its own.
    let theirs = post(&api.other, "order-7", &morning("promo"))
        .await
        .unwrap();
    assert_eq!(theirs.status().as_u16(), 201);

    // A refused request keeps nothing: the key is free for a corrected one.
    let mut bad = morning("promo-3");
    bad["message"]["title"] = json!("");
    let res = post(&api.shop, "order-8", &bad).await.unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let res = post(&api.shop, "order-8", &morning("promo-3"))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);

    // After 24 hours a key may be used again.
    db.raw("UPDATE idempotency_keys SET created_at = '2000-01-01T00:00:00+00:00'")
        .await
        .unwrap();
    let res = post(&api.shop, "order-7", &changed).await.unwrap();
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(shop_campaigns().await, ["promo", "promo-2", "promo-3"]);

    let res = post(&api.shop, &"k".repeat(256), &morning("promo-4"))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Idempotency-Key: "),
        "{body}"
    );
}

/// A preview plans against the audience as it is and writes nothing.
async fn a_preview_plans_and_writes_nothing<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    seed(&api).await;
    let shop = Some(api.shop.as_str());
    let (status, preview) = api
        .call("POST", "/v1/campaigns:preview", shop, Some(morning("look")))
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["recipients"], 3);
    assert_eq!(preview["recipientsByDisposition"], json!({"on_time": 3}));
    assert_eq!(preview["firstDueAt"], "2030-12-01T03:15:00Z");
    let ktm = slot(&preview, "Asia/Kathmandu");
    assert_eq!(
        (ktm["recipients"].as_u64(), ktm["localDueAt"].as_str()),
        (Some(2), Some("2030-12-01T09:00:00+05:45"))
    );
    assert_eq!(preview["slots"].as_array().unwrap().len(), 2);

    // One instant for everyone, read in the schedule's zone.
    let mut cron = morning("look");
    cron["schedule"] = json!({"type": "cron", "cron": "0 9 * * *", "zone": "America/New_York",
                              "until": "2099-01-01T00:00:00Z"});
    let (status, preview) = api
        .call("POST", "/v1/campaigns:preview", shop, Some(cron))
        .await;
    assert_eq!(status, 200, "{preview}");
    let every = slot(&preview, "*");
    assert_eq!(every["localZone"], "America/New_York");
    assert!(
        every["localDueAt"]
            .as_str()
            .unwrap()
            .contains("T09:00:00-0"),
        "{every}"
    );

    let mut past = morning("look");
    past["schedule"] = json!({"type": "at", "at": "2001-01-01T00:00:00Z"});
    let (status, body) = api
        .call("POST", "/v1/campaigns:preview", shop, Some(past))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("schedule.at: "));

    assert!(
        api.store.campaign_list(None).await.unwrap().is_empty(),
        "nothing written"
    );
    let (_, list) = api.call("GET", "/v1/campaigns", shop, None).await;
    assert_eq!(list["campaigns"], json!([]));
}

/// A schedule that can never be planned is a 400 naming its field, for a
/// preview, a scheduled campaign and a draft alike: a cron expression that never
/// fires (30 February took seconds of CPU per request and left a campaign
/// `scheduled` with no slot), a year 0001 or 9999, a grace past a week. A draft
/// whose time has merely passed is kept: it is scheduled later. Nothing is written.
async fn schedules_that_can_never_be_planned_are_refused<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    seed(&api).await;
    let shop = Some(api.shop.as_str());
    let with = |status: &str, schedule: Value| {
        let mut d = morning("never");
        d["status"] = json!(status);
        d["schedule"] = schedule;
        d
    };
    let never = json!({"type": "cron", "cron": "0 9 30 2 *"});
    let cases = [
        (never.clone(), "schedule.cron: "),
        (
            json!({"type": "cron", "cron": "0 9 30 2 *", "zone": "UTC"}),
            "schedule.cron: ",
        ),
        (
            json!({"type": "local", "at": "9999-12-01T09:00"}),
            "schedule.at: ",
        ),
        (
            json!({"type": "local", "at": "0001-01-01T09:00", "missed": "send_now"}),
            "schedule.at: ",
        ),
        (
            json!({"type": "at", "at": "9999-12-31T00:00:00Z"}),
            "schedule.at: ",
        ),
        (
            json!({"type": "local", "at": "2030-12-01T09:00", "grace": "30d"}),
            "schedule.grace: ",
        ),
    ];
    for (schedule, field) in cases {
        let (status, body) = api
            .call(
                "POST",
                "/v1/campaigns:preview",
                shop,
                Some(with("scheduled", schedule.clone())),
            )
            .await;
        assert_eq!(status, 400, "preview {schedule}: {body}");
        assert!(
            body["message"].as_str().unwrap().starts_with(field),
            "{body}"
        );
        for state in ["scheduled", "draft"] {
            let (status, body) = api
                .call(
                    "POST",
                    "/v1/campaigns",
                    shop,
                    Some(with(state, schedule.clone())),
                )
                .await;
            assert_eq!(status, 400, "{state} {schedule}: {body}");
            assert!(
                body["message"].as_str().unwrap().starts_with(field),
                "{body}"
            );
        }
    }
    assert!(
        api.store.campaign_list(None).await.unwrap().is_empty(),
        "nothing written"
    );
    let two_days_ago = SystemClock.now() - chrono::TimeDelta::days(2);
    let passed = json!({"type": "at", "at": two_days_ago.to_rfc3339()});
    let (status, body) = api
        .call("POST", "/v1/campaigns", shop, Some(with("draft", passed)))
        .await;
    assert_eq!(status, 201, "a draft whose time has passed is kept: {body}");
}

/// Bad input: 400 naming the field, for create, preview and edit, and nothing written.
async fn bad_campaigns_are_named_and_write_nothing<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let shop = Some(api.shop.as_str());
    let with = |change: &dyn Fn(&mut Value)| {
        let mut d = morning("bad");
        change(&mut d);
        d
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            with(&|d| drop(d.as_object_mut().unwrap().remove("message"))),
            "message: is required",
        ),
        (
            with(&|d| drop(d["message"].as_object_mut().unwrap().remove("title"))),
            "message.title: is required",
        ),
        (
            with(&|d| d["message"]["title"] = json!("  ")),
            "message.title: must not be empty",
        ),
        (
            with(&|d| d["throttle_per_minute"] = json!("fast")),
            "throttle_per_minute: invalid type",
        ),
        (
            with(&|d| d["message"]["ttl"] = json!(60)),
            "message.ttl: invalid type",
        ),
        (
            with(&|d| d["colour"] = json!("red")),
            "colour: unknown field",
        ),
        (
            with(&|d| d["schedule"]["type"] = json!("weekly")),
            "schedule.type: unknown variant",
        ),
        (
            with(&|d| {
                d["schedule"] = json!({"type": "cron", "cron": "0 9 * * *", "zone": "Mars/Olympus"})
            }),
            "schedule.zone: unknown IANA time zone",
        ),
        (
            with(&|d| d["audience"]["topics"] = json!(["sms"])),
            "audience.topics[0]: unknown topic",
        ),
        (with(&|d| d["app"] = json!("other")), "app: "),
        (json!("a campaign"), "body: invalid type"),
    ];
    for route in ["/v1/campaigns", "/v1/campaigns:preview"] {
        for (body, want) in &cases {
            let message = api
                .bad_request("POST", route, shop, Some(body.clone()), want)
                .await;
            assert!(
                message.starts_with(want),
                "{route}: {message:?} should start {want:?}"
            );
        }
    }
    assert!(
        api.store.campaign_list(None).await.unwrap().is_empty(),
        "nothing written"
    );

    let (status, draft) = api
        .call("POST", "/v1/campaigns", shop, Some(morning("draft")))
        .await;
    assert_eq!(status, 201);
    let path = format!("/v1/campaigns/{}", draft["id"]);
    for (patch, want) in [
        (
            json!({"message": {"title": ""}}),
            "message.title: must not be empty",
        ),
        (json!({"message": null}), "message: is required"),
        (json!({"colour": 1}), "colour: unknown field"),
        (
            json!({"schedule": {"type": "cron", "at": null, "cron": "0 9 * * *", "zone": "Mars/Olympus"}}),
            "schedule.zone: unknown IANA time zone",
        ),
        (
            json!({"audience": {"topics": ["sms"]}}),
            "audience.topics[0]: unknown topic",
        ),
        (json!({"key": "renamed"}), "key: cannot change"),
        (json!({"app": "other"}), "app: cannot change"),
    ] {
        let message = api
            .bad_request("PATCH", &path, shop, Some(patch.clone()), want)
            .await;
        assert!(
            message.starts_with(want),
            "{patch}: {message:?} should start {want:?}"
        );
    }
    let (_, after) = api.call("GET", &path, shop, None).await;
    assert_eq!(after, draft, "unchanged");
    let keys: Vec<String> = api
        .store
        .campaign_list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(keys, ["draft"]);

    let (status, body) = api.call("GET", "/v1/campaigns/draft", shop, None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("id: a campaign is addressed by its numeric id"))
    );
    let res = api
        .request("POST", "/v1/campaigns", shop)
        .body("key = \"toml\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
}

/// Another app's key finds none of this app's campaigns, on any route, and
/// changes nothing.
async fn another_apps_key_gets_404<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let (status, created) = api
        .call(
            "POST",
            "/v1/campaigns",
            Some(&api.shop),
            Some(morning("mine")),
        )
        .await;
    assert_eq!(status, 201);
    let path = format!("/v1/campaigns/{}", created["id"]);
    let other = Some(api.other.as_str());
    let routes = [
        ("GET", path.clone(), None),
        ("PATCH", path.clone(), Some(json!({"name": "theirs"}))),
        ("GET", format!("{path}/slots"), None),
        ("POST", format!("{path}/schedule"), None),
        ("POST", format!("{path}/pause"), None),
        ("POST", format!("{path}/resume"), None),
        ("POST", format!("{path}/cancel"), None),
    ];
    for (method, route, body) in &routes {
        let (status, answer) = api.call(method, route, other, body.clone()).await;
        assert_eq!(
            (status, answer),
            (
                404,
                json!({"error": "not_found", "message": format!("campaign {} not found", created["id"])})
            ),
            "{method} {route}"
        );
        let (status, answer) = api.call(method, route, None, body.clone()).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    let (status, _) = api
        .call("GET", "/v1/campaigns/999999", Some(&api.shop), None)
        .await;
    assert_eq!(status, 404);
    let (_, mine) = api.call("GET", &path, Some(&api.shop), None).await;
    assert_eq!(mine, created, "untouched");
}

/// A stored definition that no longer reads (a hand-edited row) is the store's
/// broken invariant: a 500 that says nothing of the row, never a 400 blaming
/// the request, and the row stays as it was.
async fn a_broken_stored_definition_is_not_the_callers_fault<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let shop = Some(api.shop.as_str());
    let (status, created) = api
        .call("POST", "/v1/campaigns", shop, Some(morning("broken")))
        .await;
    assert_eq!(status, 201, "{created}");
    db.raw(&format!(
        "UPDATE campaigns SET definition = '{{\"nonsense\": true}}' WHERE id = {}",
        created["id"]
    ))
    .await
    .unwrap();
    let path = format!("/v1/campaigns/{}/schedule", created["id"]);
    let (status, answer) = api.call("POST", &path, shop, None).await;
    assert_eq!(
        (status, answer),
        (
            500,
            json!({"error": "internal", "message": "an internal error; it was logged"})
        )
    );
}

storage_tests!(
    a_broken_stored_definition_is_not_the_callers_fault,
    a_campaign_goes_through_its_lifecycle,
    campaigns_are_listed_newest_first_by_page,
    an_idempotency_key_creates_once,
    a_preview_plans_and_writes_nothing,
    schedules_that_can_never_be_planned_are_refused,
    bad_campaigns_are_named_and_write_nothing,
    another_apps_key_gets_404,
);
