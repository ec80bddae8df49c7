//! The REST API through real HTTP, on SQLite and on Postgres: keys, tenancy,
//! users, devices and subscriptions, and their bad inputs.

mod common;

use common::api::{key_for, start};
use common::TestDb;
use meridian::api;
use meridian::clock::{Clock, SystemClock};
use meridian::domain::state::DeviceState;
use meridian::store::Store;
use serde_json::{json, Value};

fn ios_token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// No key, a wrong key and a revoked key are all 401 with a JSON body. (A
/// receipt may come without a key, with the push's token: a wrong key is
/// still refused there.)
async fn every_route_needs_a_live_key<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let (status, _) = api.call("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    for (key, why) in [(None, "missing"), (Some("mrd_not-a-key"), "wrong")] {
        for (method, path) in [
            ("PUT", "/v1/users/u1"),
            ("GET", "/v1/users/u1/subscriptions"),
            ("POST", "/v1/devices"),
            ("DELETE", "/v1/devices/abc"),
            ("GET", "/v1/messages/1"),
            ("POST", "/v1/receipts"),
        ] {
            if key.is_none() && path == "/v1/receipts" {
                continue;
            }
            let (status, body) = api.call(method, path, key, Some(json!({}))).await;
            assert_eq!(status, 401, "{why} key on {method} {path}: {body}");
            assert_eq!(body["error"], "unauthorized", "{body}");
            assert!(body["message"].is_string());
        }
    }
    let (status, _) = api
        .call("PUT", "/v1/users/u1", Some(&api.shop), Some(json!({})))
        .await;
    assert_eq!(status, 200);
    assert!(api
        .store
        .api_key_revoke("shop", "backend", SystemClock.now())
        .await
        .unwrap());
    let (status, body) = api
        .call("PUT", "/v1/users/u1", Some(&api.shop), Some(json!({})))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
}

/// The `Bearer` scheme is matched without regard to case (RFC 9110); two
/// `Authorization` headers are ambiguous and refused with a 400; a path that is
/// not UTF-8 and a body over the limit are JSON errors like every other, the
/// 413 naming its limit.
async fn headers_paths_and_bodies_are_refused_as_json<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let res = api
            .http
            .put(format!("{}/v1/users/u1", api.base))
            .header("authorization", format!("{scheme} {}", api.shop))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{scheme}");
    }
    let res = api
        .http
        .put(format!("{}/v1/users/u1", api.base))
        .header("authorization", format!("Bearer {}", api.shop))
        .header("authorization", format!("Bearer {}", api.other))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Authorization: "),
        "{body}"
    );

    let res = api
        .request("PUT", "/v1/users/%FF%FE", Some(&api.shop))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "bad_request", "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("path: "),
        "{body}"
    );

    let big = format!("{{\"phone\": \"{}\"}}", "1".repeat(api::BODY_LIMIT));
    let res = api
        .request("PUT", "/v1/users/u1", Some(&api.shop))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["message"],
        format!("body: larger than the limit of {} bytes", api::BODY_LIMIT),
        "{body}"
    );
}

/// A user, a device and subscriptions, read back with defaults filled in.
async fn users_devices_and_subscriptions<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let key = Some(api.shop.as_str());
    let (status, body) = api
        .call(
            "PUT",
            "/v1/users/user-42",
            key,
            Some(json!({"phone": "+49 151 1234-5678", "timezone": "Asia/Kathmandu", "locale": "de-DE",
                        "attributes": {"tier": "gold"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phone"], "+4915112345678");
    let token = ios_token(7);
    let (status, body) = api
        .call(
            "POST",
            "/v1/devices",
            key,
            Some(json!({"platform": "ios", "token": token, "userId": "user-42", "primary": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["state"].as_str(), body["primary"].as_bool()),
        (Some("active"), Some(true))
    );
    let (status, body) = api
        .call("GET", "/v1/users/user-42/subscriptions", key, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"marketing": false, "news": true}),
        "topic defaults"
    );
    let (status, body) = api
        .call(
            "PUT",
            "/v1/users/user-42/subscriptions",
            key,
            Some(json!({"marketing": true, "news": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"marketing": true, "news": false}));
    let (_, body) = api
        .call("GET", "/v1/users/user-42/subscriptions", key, None)
        .await;
    assert_eq!(body, json!({"marketing": true, "news": false}));

    // Unregistering keeps the row (history) but no campaign will use it; registering
    // the token again brings it back.
    let (status, _) = api
        .call("DELETE", &format!("/v1/devices/{token}"), key, None)
        .await;
    assert_eq!(status, 204);
    let device = api.shop_device(&token).await;
    assert_eq!(device.state, DeviceState::Invalid);
    assert_eq!(device.invalid_reason.as_deref(), Some("unregistered"));
    let (status, body) = api
        .call(
            "POST",
            "/v1/devices",
            key,
            Some(json!({"platform": "ios", "token": token, "userId": "user-42"})),
        )
        .await;
    assert_eq!((status, body["state"].as_str()), (200, Some("active")));
    let (status, body) = api
        .call(
            "POST",
            "/v1/devices",
            key,
            Some(json!({"platform": "android", "token": "fcm-anon", "installId": "iid-1"})),
        )
        .await;
    assert_eq!(
        (status, body["installId"].as_str()),
        (200, Some("iid-1")),
        "{body}"
    );
}

/// One app's key sees and changes nothing of another app.
async fn an_app_key_sees_only_its_app<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let token = ios_token(9);
    let (status, _) = api
        .call(
            "POST",
            "/v1/devices",
            Some(&api.shop),
            Some(json!({"platform": "ios", "token": token, "userId": "alice"})),
        )
        .await;
    assert_eq!(status, 200);
    let other = Some(api.other.as_str());
    let (status, body) = api
        .call("GET", "/v1/users/alice/subscriptions", other, None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _) = api
        .call(
            "PUT",
            "/v1/users/alice/subscriptions",
            other,
            Some(json!({"marketing": true})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call("DELETE", &format!("/v1/devices/{token}"), other, None)
        .await;
    assert_eq!(status, 404);
    let device = api.shop_device(&token).await;
    assert_eq!(
        device.state,
        DeviceState::Active,
        "untouched by the other app"
    );
    // The same external id in the other app is a different user.
    let (status, _) = api
        .call(
            "PUT",
            "/v1/users/alice",
            other,
            Some(json!({"timezone": "UTC"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = api
        .call("GET", "/v1/users/alice/subscriptions", other, None)
        .await;
    assert_eq!(body, json!({"marketing": false}));
    let (_, body) = api
        .call(
            "GET",
            "/v1/users/alice/subscriptions",
            Some(&api.shop),
            None,
        )
        .await;
    assert_eq!(body, json!({"marketing": false, "news": true}));
}

/// Bad input: 4xx with a JSON body naming the field, and nothing written.
async fn bad_input_is_named_and_changes_nothing<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let key = Some(api.shop.as_str());
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "PUT",
            "/v1/users/u1",
            json!({"timezone": "Mars/Olympus"}),
            400,
            "timezone",
        ),
        ("PUT", "/v1/users/u1", json!({"phone": "12"}), 400, "phone"),
        (
            "PUT",
            "/v1/users/u1",
            json!({"locale": "de DE"}),
            400,
            "locale",
        ),
        (
            "PUT",
            "/v1/users/u1",
            json!({"timezon": "UTC"}),
            400,
            "timezon",
        ),
        (
            "PUT",
            "/v1/users/u1",
            json!({"attributes": [1, 2]}),
            400,
            "attributes",
        ),
        (
            "POST",
            "/v1/devices",
            json!({"platform": "ios", "token": "abc", "userId": "u1"}),
            400,
            "token",
        ),
        (
            "POST",
            "/v1/devices",
            json!({"platform": "windows", "token": "abc", "userId": "u1"}),
            400,
            "platform",
        ),
        (
            "POST",
            "/v1/devices",
            json!({"platform": "android", "token": "t"}),
            400,
            "userId",
        ),
        (
            "POST",
            "/v1/devices",
            json!({"platform": "android", "token": "t", "installId": "i", "primary": true}),
            400,
            "primary",
        ),
        (
            "POST",
            "/v1/devices",
            json!({"platform": 5, "token": "t", "userId": "u1"}),
            400,
            "platform",
        ),
        (
            "PUT",
            "/v1/users/u1/subscriptions",
            json!({"sms": true}),
            400,
            "sms",
        ),
        (
            "PUT",
            "/v1/users/u1/subscriptions",
            json!({"marketing": "yes"}),
            400,
            "marketing",
        ),
    ];
    for (method, path, body, want, field) in cases {
        let (status, answer) = api.call(method, path, key, Some(body.clone())).await;
        assert_eq!(status, want, "{method} {path} {body}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field),
            "{body} → {message:?} should name {field}"
        );
    }
    assert_eq!(
        api.store.subscription_list("shop", "u1").await.unwrap(),
        None,
        "no user written"
    );
    assert_eq!(
        api.store.device_get_by_token("shop", "t").await.unwrap(),
        None,
        "no device written"
    );

    // Not JSON, and too large.
    let res = api
        .http
        .put(format!("{}/v1/users/u1", api.base))
        .bearer_auth(&api.shop)
        .body("timezone=UTC")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_media_type");
    let huge = json!({"attributes": {"blob": "x".repeat(api::BODY_LIMIT + 1)}});
    let (status, body) = api.call("PUT", "/v1/users/u1", key, Some(huge)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let (status, body) = api.call("GET", "/v1/nothing", key, None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

/// A message's history, with receipts from the app moving it forward (and only
/// forward), visible only to its own app.
async fn a_message_shows_its_history_and_takes_receipts<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let shop = Some(api.shop.as_str());
    let token = ios_token(3);
    let (status, _) = api
        .call(
            "POST",
            "/v1/devices",
            shop,
            Some(json!({"platform": "ios", "token": token, "userId": "u1"})),
        )
        .await;
    assert_eq!(status, 200);
    // A delivery as the engine records one sent on its first attempt (id 1 in a fresh database).
    db.raw(&format!(
        "INSERT INTO deliveries (app_id, request_id, user_id, device_id, status, attempts, provider_id, \
           created_at, updated_at, sent_at) \
         SELECT 'shop', 'req-1', user_id, id, 'sent', 1, 'apns-id-1', '2026-11-23T09:00:00+00:00', \
           '2026-11-23T09:00:01+00:00', '2026-11-23T09:00:01+00:00' FROM devices WHERE token = '{token}'"
    ))
    .await
    .unwrap();
    let (status, body) = api.call("GET", "/v1/messages/1", shop, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["userId"].as_str()),
        (Some("sent"), Some("u1"))
    );
    let steps = |body: &Value| -> Vec<String> {
        body["history"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["status"].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(steps(&body), ["queued", "sent"]);
    assert_eq!(body["history"][1]["detail"], "apns-id-1");

    let other = Some(api.other.as_str());
    let (status, _) = api.call("GET", "/v1/messages/1", other, None).await;
    assert_eq!(status, 404, "another app's message");
    let (status, _) = api
        .call(
            "POST",
            "/v1/receipts",
            other,
            Some(json!({"messageId": 1, "status": "opened"})),
        )
        .await;
    assert_eq!(status, 404);

    for (receipt, recorded) in [
        ("delivered", true),
        ("opened", true),
        ("delivered", false),
        ("opened", false),
    ] {
        let (status, body) = api
            .call(
                "POST",
                "/v1/receipts",
                shop,
                Some(json!({"messageId": 1, "status": receipt})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["recorded"], recorded, "{receipt}: {body}");
    }
    let (_, body) = api.call("GET", "/v1/messages/1", shop, None).await;
    assert_eq!(body["status"], "opened");
    assert_eq!(steps(&body), ["queued", "sent", "delivered", "opened"]);

    for bad in [
        json!({"messageId": 1, "status": "read"}),
        json!({"messageId": "x", "status": "opened"}),
        json!({"status": "opened"}),
    ] {
        let (status, body) = api
            .call("POST", "/v1/receipts", shop, Some(bad.clone()))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {body}"
        );
    }
    let (status, body) = api
        .call(
            "POST",
            "/v1/receipts",
            shop,
            Some(json!({"messageId": 99, "status": "opened"})),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = api.call("GET", "/v1/messages/abc", shop, None).await;
    assert_eq!(status, 400, "{body}");
}

/// The message history lists newest first, filters, and pages by cursor.
async fn messages_are_listed_newest_first_by_page<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let shop = Some(api.shop.as_str());
    for (n, user) in [(1u8, "ann"), (2, "bob")] {
        let (status, _) = api
            .call(
                "POST",
                "/v1/devices",
                shop,
                Some(json!({"platform": "ios", "token": ios_token(n), "userId": user})),
            )
            .await;
        assert_eq!(status, 200);
    }
    // ids 1..=3: ann sent, bob failed, ann sent (an hour later).
    for (user, status, hour) in [
        ("ann", "sent", 9),
        ("bob", "failed", 9),
        ("ann", "sent", 10),
    ] {
        db.raw(&format!(
            "INSERT INTO deliveries (app_id, request_id, user_id, device_id, status, attempts, created_at, updated_at) \
             SELECT 'shop', 'req', u.id, v.id, '{status}', 1, '2026-11-23T{hour:02}:00:00+00:00', \
               '2026-11-23T{hour:02}:00:00+00:00' \
             FROM users u JOIN devices v ON v.user_id = u.id WHERE u.external_id = '{user}'"
        ))
        .await
        .unwrap();
    }
    let ids = |body: &Value| -> Vec<i64> {
        body["messages"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["id"].as_i64()).collect())
            .unwrap_or_default()
    };
    let (status, page1) = api.call("GET", "/v1/messages?limit=2", shop, None).await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(ids(&page1), [3, 2]);
    let cursor = page1["nextCursor"].as_str().unwrap().to_owned();
    let (_, page2) = api
        .call(
            "GET",
            &format!("/v1/messages?limit=2&cursor={cursor}"),
            shop,
            None,
        )
        .await;
    assert_eq!(ids(&page2), [1]);
    assert!(page2["nextCursor"].is_null(), "{page2}");
    let (_, body) = api.call("GET", "/v1/messages?user=ann", shop, None).await;
    assert_eq!(ids(&body), [3, 1]);
    let (_, body) = api
        .call("GET", "/v1/messages?status=failed", shop, None)
        .await;
    assert_eq!(ids(&body), [2]);
    assert_eq!(body["messages"][0]["userId"], "bob");
    let (_, body) = api
        .call("GET", "/v1/messages?since=2026-11-23T09:30:00Z", shop, None)
        .await;
    assert_eq!(ids(&body), [3]);
    let (_, body) = api
        .call("GET", "/v1/messages", Some(&api.other), None)
        .await;
    assert_eq!(ids(&body), Vec::<i64>::new(), "another app sees none");
    for (query, field) in [
        ("status=read", "status"),
        ("limit=0", "limit"),
        ("cursor=x", "cursor"),
        ("colour=red", "colour"),
        ("since=yesterday", ""),
    ] {
        api.bad_request("GET", &format!("/v1/messages?{query}"), shop, None, field)
            .await;
    }
}

/// `POST /v1/push` answers in the partner contract's shapes: field errors in Joi's
/// words, the app without providers "unavailable", the 11th request of a minute
/// 429 with Retry-After; nothing is queued by any of them.
async fn push_speaks_the_partner_contract<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let key = Some(api.shop.as_str());
    let msg = json!({"title": "Order shipped", "summary": "On its way"});
    let push = |key: Option<&str>, body: Value| {
        let api = &api;
        let key = key.map(str::to_owned);
        async move {
            api.call("POST", "/v1/push", key.as_deref(), Some(body))
                .await
        }
    };
    let (status, body) = push(key, json!({"userIds": "u1", "message": msg})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "Bad Request", "message": "child \"userIds\" fails because [\"userIds\" must be an array]"})
    );
    let ids: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let (status, body) = push(key, json!({"userIds": ids, "message": msg})).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("less than or equal to 1000 items"),
        "{body}"
    );
    let (status, body) = push(
        key,
        json!({"userIds": ["u1"], "message": msg, "topic": "promo"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("Bad Request")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("[marketing, news]"),
        "{body}"
    );
    let res = api
        .http
        .post(format!("{}/v1/push", api.base))
        .bearer_auth(&api.shop)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"error": "Bad Request", "message": "Invalid request payload JSON format"})
    );
    // Over the body limit, and not JSON at all: refused before anything is read.
    // A fresh connection each: the server closes one after refusing a body unread.
    let raw = |content_type: &'static str, body: Vec<u8>| {
        reqwest::Client::new()
            .post(format!("{}/v1/push", api.base))
            .bearer_auth(&api.shop)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let res = raw("application/json", vec![b' '; 2 * 1024 * 1024])
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "Request Entity Too Large"
    );
    let res = raw("text/plain", b"{}".to_vec()).await.unwrap();
    assert_eq!(res.status().as_u16(), 415);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "Unsupported Media Type"
    );
    // Valid, but the app has no APNs or FCM credentials configured.
    let (status, body) = push(key, json!({"userIds": ["u1"], "message": msg})).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"success": false, "error": "Integration is unavailable"})
        )
    );
    let (status, _) = push(None, json!({"userIds": ["u1"], "message": msg})).await;
    assert_eq!(status, 401);
    // Seven requests so far; three more are allowed this minute, the next is refused.
    for _ in 0..3 {
        let (status, _) = push(key, json!({"userIds": ["u1"], "message": msg})).await;
        assert_eq!(status, 503);
    }
    let refused = api
        .too_many(
            api.http
                .post(format!("{}/v1/push", api.base))
                .bearer_auth(&api.shop)
                .json(&json!({"userIds": ["u1"], "message": msg})),
        )
        .await;
    assert_eq!(
        refused,
        json!({"success": false, "error": "Too Many Requests"})
    );
    // The quota is the key's, not the app's.
    let fresh = key_for(&*api.store, "shop", "second").await;
    let (status, _) = push(Some(&fresh), json!({"userIds": ["u1"], "message": msg})).await;
    assert_eq!(status, 503);
    let (_, listed) = api.call("GET", "/v1/messages", key, None).await;
    assert_eq!(listed["messages"], json!([]), "nothing was queued");
}

/// U+0000 anywhere in a push or a campaign is a 400 naming the field, and `%00`
/// in a path or query a 400 naming which: Postgres takes it in neither text nor
/// jsonb, so it was a 503 there (and stored on SQLite).
async fn nul_characters_are_refused_by_name<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let shop = Some(api.shop.as_str());
    let push = json!({"userIds": ["u1"], "message": {"title": "t", "summary": "s"}, "data": {"k": "\u{0}"}});
    let (status, body) = api.call("POST", "/v1/push", shop, Some(push)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("message.data.k: must not contain the NUL"),
        "{body}"
    );
    let campaign = |name: &str, users: Value| {
        json!({"key": "k", "name": name, "message": {"title": "t", "body": "b"},
               "audience": {"users": users}, "schedule": {"type": "now"}})
    };
    api.bad_request(
        "POST",
        "/v1/campaigns",
        shop,
        Some(campaign("a\u{0}", json!([]))),
        "name: must not contain the NUL",
    )
    .await;
    api.bad_request(
        "POST",
        "/v1/campaigns:preview",
        shop,
        Some(campaign("n", json!(["u\u{0}"]))),
        "audience.users[0]: ",
    )
    .await;
    let (status, made) = api
        .call(
            "POST",
            "/v1/campaigns",
            shop,
            Some(campaign("n", json!([]))),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let path = format!("/v1/campaigns/{}", made["id"]);
    api.bad_request(
        "PATCH",
        &path,
        shop,
        Some(json!({"message": {"title": "\u{0}"}})),
        "message.title: ",
    )
    .await;
    let (_, now) = api.call("GET", &path, shop, None).await;
    assert_eq!(now, made, "a refused patch changes nothing");
    for (method, path, part) in [
        ("GET", "/v1/messages?user=a%00", "query: "),
        ("GET", "/v1/messages?request=%00", "query: "),
        ("GET", "/v1/users/a%00/subscriptions", "path: "),
        ("DELETE", "/v1/devices/a%00", "path: "),
    ] {
        api.bad_request(method, path, shop, None, part).await;
    }
}

storage_tests!(
    nul_characters_are_refused_by_name,
    push_speaks_the_partner_contract,
    messages_are_listed_newest_first_by_page,
    a_message_shows_its_history_and_takes_receipts,
    every_route_needs_a_live_key,
    headers_paths_and_bodies_are_refused_as_json,
    users_devices_and_subscriptions,
    an_app_key_sees_only_its_app,
    bad_input_is_named_and_changes_nothing,
);
