//! The app side (issue 20), through real HTTP on SQLite and on Postgres: what a
//! client key may call, identity proofs, receipt tokens in real pushes, the
//! limits of mobile callers, and the devices a user may keep.

mod common;

use common::api::{key_of_kind, start, start_with, CONFIG};
use common::rig::{at, rig_with};
use common::TestDb;
use meridian::api::identity::hmac_proof;
use meridian::domain::campaign::Platform;
use meridian::domain::keys::KeyKind;
use meridian::domain::state::DeviceState;
use meridian::store::Store;
use serde_json::{json, Value};

const SECRET: &str = "shop's identity secret, known to its backend only";

fn ios_token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// An anonymous iOS install to register.
fn install(n: u8) -> Value {
    json!({"platform": "ios", "token": ios_token(n), "installId": format!("i{n}")})
}

/// `CONFIG` with shop's identity in `mode` checked with a secret in `dir`.
fn identity_config(dir: &std::path::Path, mode: &str) -> String {
    let file = dir.join("identity.secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    CONFIG.replace(
        "[apps.shop.topics]",
        &format!(
            "[apps.shop.identity]\nmode = \"{mode}\"\nsecret_file = \"{}\"\n[apps.shop.topics]",
            file.display()
        ),
    )
}

/// The OpenAPI document says of every route that takes a key which kinds it
/// takes, and the server does exactly that: a client key gets 403
/// `forbidden_key_kind` wherever `client` is not listed and never where it is;
/// a server key is never refused for its kind.
async fn every_route_takes_the_kinds_of_key_it_documents<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let client = key_of_kind(&*api.store, "shop", "ios-app", KeyKind::Client).await;
    let (_, doc) = api.call("GET", "/openapi.json", None, None).await;
    let mut client_routes = Vec::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let keyless = op["security"] == json!([{}]);
            let kinds = &op["x-meridian-key-kinds"];
            if keyless {
                assert!(kinds.is_null(), "{method} {path} takes no key: {kinds}");
                continue;
            }
            let kinds: Vec<&str> = kinds
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} does not say which keys it takes"))
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect();
            assert!(kinds.contains(&"server"), "{method} {path}: {kinds:?}");
            let concrete = path
                .replace("{action}", "pause")
                .replace("{id}", "1")
                .replace("{external_id}", "u1")
                .replace("{token}", "t1");
            let body = matches!(method.as_str(), "post" | "put" | "patch").then(|| json!({}));
            let m = method.to_uppercase();
            let (status, answer) = api.call(&m, &concrete, Some(&client), body.clone()).await;
            let refused = status == 403 && answer["error"] == "forbidden_key_kind";
            if kinds.contains(&"client") {
                client_routes.push(format!("{m} {path}"));
                assert!(
                    !refused,
                    "{m} {path} refused a client key it documents: {answer}"
                );
            } else {
                assert!(
                    refused,
                    "{m} {path} let a client key through: {status} {answer}"
                );
                let message = answer["message"].as_str().unwrap();
                assert!(message.contains("client key"), "{message}");
            }
            let (_, answer) = api.call(&m, &concrete, Some(&api.shop), body).await;
            assert_ne!(answer["error"], "forbidden_key_kind", "{m} {path}");
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} routes checked");
    client_routes.sort();
    assert_eq!(
        client_routes,
        [
            "DELETE /v1/devices/{token}",
            "GET /v1/users/{external_id}/subscriptions",
            "POST /v1/devices",
            "POST /v1/receipts",
            "PUT /v1/users/{external_id}/subscriptions",
        ]
    );
}

/// With `identity = "required"` a client key ties a device to a user, and reads
/// or sets that user's subscriptions, only with a valid proof; without one it
/// registers anonymous installs, which a later call with a proof attaches. A
/// server key needs no proof. Bad proofs are 401 with a message saying why.
async fn identity_proofs_tie_devices_to_users<S: Store + Clone>(db: &TestDb<S>) {
    let dir = tempfile::tempdir().unwrap();
    let api = start_with(db, &identity_config(dir.path(), "required")).await;
    let client = key_of_kind(&*api.store, "shop", "ios-app", KeyKind::Client).await;
    let register = |token: String, user: Option<&str>, proof: Option<String>| {
        let mut body = json!({"platform": "ios", "token": token, "installId": "install-1"});
        if let Some(u) = user {
            body["userId"] = json!(u);
        }
        let mut req = api
            .request("POST", "/v1/devices", Some(&client))
            .json(&body);
        if let Some(p) = proof {
            req = req.header("X-Meridian-Identity", p);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    // No proof: refused for a user, fine for an anonymous install.
    let (status, answer) = register(ios_token(1), Some("user-1"), None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("identity_required")),
        "{answer}"
    );
    assert!(answer["message"].as_str().unwrap().contains("installId"));
    let (status, _) = register(ios_token(1), None, None).await;
    assert_eq!(status, 200);
    let stored = api
        .store
        .device_get_by_token("shop", &ios_token(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.user_id, None);
    // Forged, another user's, another app's secret, an expired JWT: 401, nothing tied.
    let jwt = |sub: &str, exp: i64| {
        use base64::Engine as _;
        let b = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!(
            "{}.{}",
            b(json!({"alg": "HS256"})),
            b(json!({"sub": sub, "exp": exp}))
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = ring::hmac::sign(&key, input.as_bytes());
        format!(
            "{input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    };
    let now = meridian::clock::Clock::now(&meridian::clock::SystemClock).timestamp();
    for (proof, says) in [
        ("0".repeat(64), "does not match"),
        (hmac_proof(SECRET.as_bytes(), "user-2"), "does not match"),
        (
            hmac_proof(b"the other app's secret", "user-1"),
            "does not match",
        ),
        (jwt("user-1", now - 3600), "expired"),
        (jwt("user-2", now + 300), "another user"),
        ("not a proof".to_owned(), "neither"),
    ] {
        let (status, answer) = register(ios_token(1), Some("user-1"), Some(proof.clone())).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("identity_invalid")),
            "{proof}: {answer}"
        );
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{proof}: {answer}"
        );
    }
    let stored = api
        .store
        .device_get_by_token("shop", &ios_token(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.user_id, None, "a refused proof tied nothing");
    // A valid HMAC proof attaches the install to its user; so does a valid JWT.
    let (status, answer) = register(
        ios_token(1),
        Some("user-1"),
        Some(hmac_proof(SECRET.as_bytes(), "user-1")),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(api
        .store
        .device_get_by_token("shop", &ios_token(1))
        .await
        .unwrap()
        .unwrap()
        .user_id
        .is_some());
    let (status, _) = register(ios_token(2), Some("user-9"), Some(jwt("user-9", now + 300))).await;
    assert_eq!(status, 200);
    // Subscriptions: the user's proof opens them, nothing else does.
    let subs = |user: &str, proof: Option<String>, put: bool| {
        let path = format!("/v1/users/{user}/subscriptions");
        let mut req = if put {
            api.request("PUT", &path, Some(&client))
                .json(&json!({"marketing": true}))
        } else {
            api.request("GET", &path, Some(&client))
        };
        if let Some(p) = proof {
            req = req.header("X-Meridian-Identity", p);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(subs("user-1", None, false).await.0, 401);
    assert_eq!(
        subs(
            "user-1",
            Some(hmac_proof(SECRET.as_bytes(), "user-9")),
            true
        )
        .await
        .0,
        401
    );
    let (status, answer) = subs(
        "user-1",
        Some(hmac_proof(SECRET.as_bytes(), "user-1")),
        true,
    )
    .await;
    assert_eq!(
        (status, answer["marketing"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    // The server key acts for any user without a proof.
    let (status, _) = api
        .call(
            "POST",
            "/v1/devices",
            Some(&api.shop),
            Some(json!({"platform": "ios", "token": ios_token(3), "userId": "user-5"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            "GET",
            "/v1/users/user-1/subscriptions",
            Some(&api.shop),
            None,
        )
        .await;
    assert_eq!(status, 200);
    // A client key of another app opens nothing of this one.
    let other_client = key_of_kind(&*api.store, "other", "ios-app", KeyKind::Client).await;
    let req = api
        .request("GET", "/v1/users/user-1/subscriptions", Some(&other_client))
        .header(
            "X-Meridian-Identity",
            hmac_proof(SECRET.as_bytes(), "user-1"),
        );
    let status = req.send().await.unwrap().status().as_u16();
    assert_eq!(
        status, 401,
        "the other app has no identity secret to check a proof with"
    );
}

/// An install a client key registered anonymously (no proof) is attached to
/// its user by the partner's server key, by `PUT /v1/users/{id}` or a bulk
/// import naming its install id; the device then takes the user's zone.
async fn anonymous_installs_are_attached_by_the_backend<S: Store + Clone>(db: &TestDb<S>) {
    let dir = tempfile::tempdir().unwrap();
    let api = start_with(db, &identity_config(dir.path(), "required")).await;
    let client = key_of_kind(&*api.store, "shop", "ios-app", KeyKind::Client).await;
    for n in [7, 8] {
        let (status, _) = api
            .call("POST", "/v1/devices", Some(&client), Some(install(n)))
            .await;
        assert_eq!(status, 200);
    }
    let api = &api;
    let user_of = |n: u8| async move { api.shop_device(&ios_token(n)).await.user_id };
    assert_eq!(user_of(7).await, None);
    let (status, answer) = api
        .call(
            "PUT",
            "/v1/users/user-7",
            Some(&api.shop),
            Some(json!({"timezone": "Asia/Tokyo", "installIds": ["i7"]})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(user_of(7).await.is_some());
    let zone = db
        .raw_texts(&format!(
            "SELECT zone FROM devices WHERE token = '{}'",
            ios_token(7)
        ))
        .await
        .unwrap();
    assert_eq!(
        zone,
        ["Asia/Tokyo"],
        "the attached device takes its user's zone"
    );
    // A client key cannot name installs for a user: it has no such route.
    let (status, _) = api
        .call(
            "PUT",
            "/v1/users/user-8",
            Some(&client),
            Some(json!({"installIds": ["i8"]})),
        )
        .await;
    assert_eq!(status, 403);
    let res = api
        .request("POST", "/v1/users:import", Some(&api.shop))
        .header("content-type", "application/x-ndjson")
        .body("{\"externalId\": \"user-8\", \"installIds\": [\"i8\"]}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
    assert!(user_of(8).await.is_some());
    let too_many: Vec<String> = (0..21).map(|n| format!("i{n}")).collect();
    let (status, answer) = api
        .call(
            "PUT",
            "/v1/users/user-9",
            Some(&api.shop),
            Some(json!({"installIds": too_many})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("installIds"));
}

/// With `identity = "optional"` a client names a user without proof, and a
/// proof it gives is still checked.
async fn optional_identity_trusts_the_app_but_checks_a_proof<S: Store + Clone>(db: &TestDb<S>) {
    let dir = tempfile::tempdir().unwrap();
    let api = start_with(db, &identity_config(dir.path(), "optional")).await;
    let client = key_of_kind(&*api.store, "shop", "ios-app", KeyKind::Client).await;
    let body = json!({"platform": "ios", "token": ios_token(1), "userId": "user-1"});
    let (status, answer) = api
        .call("POST", "/v1/devices", Some(&client), Some(body.clone()))
        .await;
    assert_eq!(status, 200, "{answer}");
    let res = api
        .request("POST", "/v1/devices", Some(&client))
        .header("X-Meridian-Identity", hmac_proof(b"wrong", "user-1"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
}

/// Every push carries a receipt token; the app posts it with a client key or
/// none. A forged token, or one of another app's key, is 403; a replay changes
/// nothing; `opened` after `delivered` and the button tapped are in the
/// history. A message id alone is taken from a server key only.
async fn receipt_tokens_travel_with_every_push<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig_with(
        db,
        at(2026, 11, 23, 10, 0),
        "[apps.other]\ndefault_timezone = \"UTC\"\n",
    )
    .await;
    let ios = rig.device(1, "UTC", Platform::Ios, false).await;
    let android = rig.device(2, "UTC", Platform::Android, false).await;
    rig.sim.record_sends(true);
    rig.save(
        "key = \"a\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Sale\"\nbody = \"Now\"\n\
         [[message.buttons]]\nid = \"buy\"\nlabel = \"Buy\"\n\
         [audience]\ntopics = [\"marketing\"]\n[schedule]\ntype = \"now\"\n",
    )
    .await;
    let engine = rig.engine("worker-a", 10);
    assert_eq!(engine.run_until_idle().await.unwrap().sent, 2);
    let (base, server) = rig.api(Some(&engine)).await;
    let client = key_of_kind(&*rig.store, "shop", "ios-app", KeyKind::Client).await;
    let other_client = key_of_kind(&*rig.store, "other", "ios-app", KeyKind::Client).await;
    let http = reqwest::Client::new();
    let post = |key: Option<&str>, body: Value| {
        let mut req = http.post(format!("{base}/v1/receipts")).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let mut tokens = Vec::new();
    for send in rig.sim.recorded_sends() {
        let (id, receipt) = if send.token() == Some(ios.as_str()) {
            (
                &send.body["meridian"]["id"],
                &send.body["meridian"]["receipt"],
            )
        } else {
            assert_eq!(send.token(), Some(android.as_str()));
            (
                &send.body["message"]["data"]["meridian_id"],
                &send.body["message"]["data"]["meridian_receipt"],
            )
        };
        let receipt = receipt
            .as_str()
            .unwrap_or_else(|| panic!("no receipt token in {send:?}"));
        assert_eq!(receipt.len(), 32);
        tokens.push((
            id.as_str().unwrap().parse::<i64>().unwrap(),
            receipt.to_owned(),
        ));
    }
    assert_eq!(tokens.len(), 2);
    let (id, token) = tokens[0].clone();
    // Forged (one character changed), or posted with another app's key: 403.
    let mut forged: Vec<char> = token.chars().collect();
    forged[20] = if forged[20] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    for (key, body) in [
        (None, json!({"receipt": forged, "status": "delivered"})),
        (
            Some(client.as_str()),
            json!({"receipt": forged, "status": "delivered"}),
        ),
        (
            Some(other_client.as_str()),
            json!({"receipt": token, "status": "delivered"}),
        ),
        (None, json!({"receipt": "too short", "status": "delivered"})),
    ] {
        let (status, answer) = post(key, body.clone()).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (403, Some("receipt_forged")),
            "{body}: {answer}"
        );
    }
    // A message id alone: a server key's form only.
    for key in [None, Some(client.as_str())] {
        let (status, answer) = post(key, json!({"messageId": id, "status": "delivered"})).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (403, Some("forbidden_key_kind")),
            "{answer}"
        );
    }
    // Keyless, then replayed, then opened by a button with the client key.
    let (status, answer) = post(None, json!({"receipt": token, "status": "delivered"})).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"messageId": id, "recorded": true}))
    );
    let (status, answer) = post(None, json!({"receipt": token, "status": "delivered"})).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"messageId": id, "recorded": false}))
    );
    let (status, answer) = post(
        Some(&client),
        json!({"receipt": token, "status": "opened", "action": "buy"}),
    )
    .await;
    assert_eq!(
        (status, answer["recorded"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    let (status, answer) = post(
        Some(&client),
        json!({"receipt": token, "status": "opened", "action": "<b>"}),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("bad_request")),
        "{answer}"
    );
    let message = common::rig::get(&base, &server, &format!("/v1/messages/{id}")).await;
    assert_eq!(message["status"], "opened");
    let steps: Vec<(String, String)> = message["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["status"].as_str().unwrap().to_owned(),
                s["detail"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        steps.contains(&("delivered".to_owned(), "receipt".to_owned())),
        "{steps:?}"
    );
    assert!(
        steps.contains(&("opened".to_owned(), "receipt: button buy".to_owned())),
        "{steps:?}"
    );
    // The server key's forms keep working: by id, and by token.
    let (other_id, other_token) = tokens[1].clone();
    let (status, _) = post(
        Some(&server),
        json!({"messageId": other_id, "status": "delivered"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, answer) = post(
        Some(&server),
        json!({"receipt": other_token, "status": "opened"}),
    )
    .await;
    assert_eq!(
        (status, answer["recorded"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
}

/// Registrations and receipts from mobile apps are limited per address: past
/// the limit, 429 with `Retry-After` and a JSON body. Server keys are not
/// limited here.
async fn client_calls_are_limited_per_address<S: Store + Clone>(db: &TestDb<S>) {
    let config = format!(
        "[server.client]\nregistrations_per_address = 3\nregistrations_per_key = 1000\nreceipts_per_address = 2\n{CONFIG}"
    );
    let api = start_with(db, &config).await;
    let client = key_of_kind(&*api.store, "shop", "ios-app", KeyKind::Client).await;
    let device = install;
    for n in 0..3 {
        let (status, _) = api
            .call("POST", "/v1/devices", Some(&client), Some(device(n)))
            .await;
        assert_eq!(status, 200);
    }
    let body = api
        .too_many(
            api.request("POST", "/v1/devices", Some(&client))
                .json(&device(9)),
        )
        .await;
    assert_eq!(body["error"], "rate_limited");
    // The server key is not held back by the client's limit.
    for n in 10..15 {
        let (status, _) = api
            .call("POST", "/v1/devices", Some(&api.shop), Some(device(n)))
            .await;
        assert_eq!(status, 200);
    }
    // Keyless receipts count per address, forged or not.
    let receipt = json!({"receipt": "A".repeat(32), "status": "delivered"});
    for _ in 0..2 {
        assert_eq!(
            api.call("POST", "/v1/receipts", None, Some(receipt.clone()))
                .await
                .0,
            403
        );
    }
    let (status, answer) = api.call("POST", "/v1/receipts", None, Some(receipt)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (429, Some("rate_limited"))
    );
}

/// A client key's own limit holds for all its installs together (here with
/// the per-address limit off, as behind a proxy); another key has its own.
async fn a_client_key_is_limited_as_a_whole<S: Store + Clone>(db: &TestDb<S>) {
    let config = format!(
        "[server.client]\nregistrations_per_key = 2\nregistrations_per_address = 0\n{CONFIG}"
    );
    let api = start_with(db, &config).await;
    let client = key_of_kind(&*api.store, "shop", "android-app", KeyKind::Client).await;
    let device = install;
    for n in 20..22 {
        assert_eq!(
            api.call("POST", "/v1/devices", Some(&client), Some(device(n)))
                .await
                .0,
            200
        );
    }
    let (status, answer) = api
        .call("POST", "/v1/devices", Some(&client), Some(device(22)))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (429, Some("rate_limited"))
    );
    let second = key_of_kind(&*api.store, "shop", "ios-app", KeyKind::Client).await;
    assert_eq!(
        api.call("POST", "/v1/devices", Some(&second), Some(device(23)))
            .await
            .0,
        200
    );
}

/// A user keeps at most `max_devices_per_user` active devices: registering one
/// more deactivates the least recently registered, with the reason kept.
async fn a_user_keeps_at_most_the_configured_devices<S: Store + Clone>(db: &TestDb<S>) {
    let config = CONFIG.replace(
        "[apps.shop]\ndefault_timezone = \"UTC\"",
        "[apps.shop]\ndefault_timezone = \"UTC\"\nmax_devices_per_user = 2",
    );
    assert_ne!(config, CONFIG);
    let api = start_with(db, &config).await;
    for n in 1..=3 {
        let body = json!({"platform": "ios", "token": ios_token(n), "userId": "user-1"});
        assert_eq!(
            api.call("POST", "/v1/devices", Some(&api.shop), Some(body))
                .await
                .0,
            200
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let api = &api;
    let state = |n: u8| async move { api.shop_device(&ios_token(n)).await };
    let oldest = state(1).await;
    assert_eq!(oldest.state, DeviceState::Invalid);
    assert_eq!(oldest.invalid_reason.as_deref(), Some("device_limit"));
    assert_eq!(state(2).await.state, DeviceState::Active);
    assert_eq!(state(3).await.state, DeviceState::Active);
    // Registering the oldest again brings it back and retires the next oldest.
    let body = json!({"platform": "ios", "token": ios_token(1), "userId": "user-1"});
    assert_eq!(
        api.call("POST", "/v1/devices", Some(&api.shop), Some(body))
            .await
            .0,
        200
    );
    assert_eq!(state(1).await.state, DeviceState::Active);
    assert_eq!(state(2).await.state, DeviceState::Invalid);
}

storage_tests!(
    every_route_takes_the_kinds_of_key_it_documents,
    identity_proofs_tie_devices_to_users,
    optional_identity_trusts_the_app_but_checks_a_proof,
    anonymous_installs_are_attached_by_the_backend,
    receipt_tokens_travel_with_every_push,
    client_calls_are_limited_per_address,
    a_client_key_is_limited_as_a_whole,
    a_user_keeps_at_most_the_configured_devices,
);
