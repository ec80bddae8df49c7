//! Random JSON to `POST /v1/push`, `POST /v1/campaigns`, `POST
//! /v1/campaigns:preview` and `PATCH /v1/campaigns/{id}` through real HTTP, on
//! SQLite and on Postgres: arbitrary values, and valid bodies with members
//! dropped, retyped, added, oversized or given wrong enum values. Never a 5xx
//! (but `/v1/push`'s documented 503 for an app without providers), every status
//! one that `/openapi.json` lists for the route, every refusal JSON in its
//! documented shape, and a refusal writes nothing.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use common::api::{start, start_with, Api};
use common::TestDb;
use meridian::api::{push, BODY_LIMIT};
use meridian::store::{CampaignFilter, Store};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::{json, Value};

/// The seed of every route's cases; `MERIDIAN_FUZZ_SEED` picks other ones.
fn seed(route: u8) -> [u8; 32] {
    let other: u64 = std::env::var("MERIDIAN_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut seed = [route; 32];
    seed[..8].copy_from_slice(&other.to_le_bytes());
    seed
}

/// Cases per route and backend; `MERIDIAN_FUZZ_CASES` asks for more.
fn cases() -> u32 {
    std::env::var("MERIDIAN_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(96)
}

/// Member names the routes know, so that random objects often hit a real one.
fn names() -> Vec<&'static str> {
    #[rustfmt::skip]
    const CAMPAIGN: &[&str] = &[
        "key", "name", "app", "status", "message", "title", "body", "buttons", "id", "label",
        "url", "sound", "badge", "priority", "locales", "data", "ttl", "audience", "topics",
        "platforms", "attributes", "attribute", "op", "value", "users", "devices", "schedule",
        "type", "at", "cron", "zone", "until", "missed", "grace", "quiet_hours", "start", "end",
        "throttle_per_minute",
    ];
    let push = push::FIELDS.iter().chain(&push::MESSAGE_FIELDS);
    CAMPAIGN.iter().chain(push).copied().collect()
}

/// Strings the routes give meaning to, right in one place and wrong in another.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "", " ", "\u{0}", "primary", "all", "ios", "android", "now", "at", "local", "cron",
    "skip", "next_day", "send_now", "draft", "scheduled", "high", "normal", "eq", "in",
    "exists", "marketing", "news", "shop", "other", "u1", "iid-1", "79990001122", "6h",
    "-1s", "0s", "30m", "2030-12-01T09:00", "2030-12-01T09:00:00Z", "1999-01-01T00:00:00Z",
    "25:99", "22:00", "* * * * *", "61 * * * *", "Europe/Berlin", "Mars/Olympus",
    "https://example.com/a.png", "ftp://example.com/a", "shop://orders/1", "not a uri",
];

/// Wrong values for members that take one of a few words.
#[rustfmt::skip]
const WRONG: &[&str] = &["PRIMARY", "some", "Ios", "weekly", "later", "paused", "urgent", "bogus"];

/// Lengths of oversized strings: past 256-character ids, past the 4 KB APNs
/// payload, and (a few) past the 1 MiB body limit.
const OVERSIZE: &[usize] = &[257, 1025, 4097, 70_000, 1_100_000];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,12}",
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => (0usize..3000).prop_map(|n| "x".repeat(n)),
        1 => "[\\x00-\\x1f\\x7f]{1,4}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..5000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ]
}

/// Any JSON value, up to four levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        3 => prop::sample::select(names()).prop_map(str::to_owned),
        1 => ".{0,8}",
    ];
    leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(name.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One change to a valid body, at a place chosen among all its members.
#[derive(Debug, Clone)]
enum Mutation {
    Drop(Index),
    Retype(Index, Value),
    AddUnknown(Index, String, Value),
    Oversize(Index, usize),
    WrongEnum(Index, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Drop),
        (any::<Index>(), any_json()).prop_map(|(i, v)| Mutation::Retype(i, v)),
        (any::<Index>(), "[a-zA-Z_]{1,10}", leaf())
            .prop_map(|(i, k, v)| Mutation::AddUnknown(i, k, v)),
        (any::<Index>(), prop::sample::select(OVERSIZE))
            .prop_map(|(i, n)| Mutation::Oversize(i, n)),
        (any::<Index>(), prop::sample::select(WRONG)).prop_map(|(i, w)| Mutation::WrongEnum(i, w)),
    ]
}

/// JSON pointers to every member and element below `at`.
fn places(v: &Value, at: &str, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (step, child) in children {
        let here = format!("{at}/{step}");
        out.push(here.clone());
        places(child, &here, out);
    }
}

fn apply(body: &mut Value, m: Mutation) {
    let mut all = Vec::new();
    places(body, "", &mut all);
    let pick = |i: &Index| (!all.is_empty()).then(|| all[i.index(all.len())].clone());
    match m {
        Mutation::Drop(i) => {
            let Some(at) = pick(&i) else { return };
            let (parent, last) = at.rsplit_once('/').unwrap_or_default();
            let last = last.replace("~1", "/").replace("~0", "~");
            match body.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&last);
                }
                Some(Value::Array(items)) => {
                    if let Ok(n) = last.parse::<usize>() {
                        items.remove(n);
                    }
                }
                _ => {}
            }
        }
        Mutation::Retype(i, v) => set(body, pick(&i), v),
        Mutation::Oversize(i, n) => set(body, pick(&i), Value::String("x".repeat(n))),
        Mutation::WrongEnum(i, w) => set(body, pick(&i), Value::String(w.to_owned())),
        Mutation::AddUnknown(i, k, v) => {
            let objects: Vec<String> = std::iter::once(String::new())
                .chain(
                    all.iter()
                        .filter(|p| body.pointer(p).is_some_and(Value::is_object))
                        .cloned(),
                )
                .collect();
            let at = &objects[i.index(objects.len())];
            if let Some(Value::Object(m)) = body.pointer_mut(at) {
                m.insert(k, v);
            }
        }
    }
}

fn set(body: &mut Value, at: Option<String>, v: Value) {
    if let Some(slot) = at.and_then(|p| body.pointer_mut(&p)) {
        *slot = v;
    }
}

/// A valid body changed one to three times.
fn mutated(valid: Value) -> impl Strategy<Value = Value> {
    prop::collection::vec(mutation(), 1..4).prop_map(move |ms| {
        let mut body = valid.clone();
        for m in ms {
            apply(&mut body, m);
        }
        body
    })
}

/// Mostly changed valid bodies, some arbitrary values, a few valid ones.
fn bodies(valid: Value) -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => mutated(valid.clone()),
        3 => any_json(),
        1 => Just(valid),
    ]
}

/// How often each answer came, so that a run shows it reached both sides.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, u32>>);

impl Tally {
    fn count(&self, outcome: String) {
        if let Ok(mut seen) = self.0.lock() {
            *seen.entry(outcome).or_default() += 1;
        }
    }

    /// Prints the tally; panics unless some cases were accepted and some refused.
    fn check(&self, route: &str) {
        let seen = self.0.lock().unwrap().clone();
        eprintln!("{route}: {seen:?}");
        let some = |class: char| seen.keys().any(|s| s.starts_with(class));
        assert!(
            some('2') && some('4'),
            "{route} was not fuzzed on both sides: {seen:?}"
        );
    }
}

/// Runs `case` on [`cases`] bodies from a fixed seed; a failure is shrunk to a
/// small body. The test's runtime keeps serving while a case blocks on it.
fn run(
    route: u8,
    strategy: impl Strategy<Value = Value>,
    case: impl Fn(Value) -> Result<(), TestCaseError>,
) {
    let config = Config {
        cases: cases(),
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed(route));
    let mut runner = TestRunner::new_with_rng(config, rng);
    match tokio::task::block_in_place(|| runner.run(&strategy, case)) {
        Ok(()) => {}
        Err(TestError::Fail(why, body)) => {
            let text = body.to_string();
            let mut shown: String = text.chars().take(2000).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            panic!("{why}\nsmallest failing body: {shown}")
        }
        Err(TestError::Abort(why)) => panic!("{why}"),
    }
}

/// The answer to one request with a JSON body, or `None` when the connection
/// closed first, which only a body over the limit may see: the server answers
/// 413 without reading the rest and closes while the client still sends. Such a
/// body goes on a connection of its own, which no later request reuses.
async fn send<S: Store>(
    api: &Api<S>,
    method: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> Result<Option<(u16, Value)>, TestCaseError> {
    let bytes = body.to_string().into_bytes();
    let over = bytes.len() > BODY_LIMIT;
    let client = if over {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?
    } else {
        api.http.clone()
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let sent = client
        .request(method, format!("{}{path}", api.base))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await;
    let answer = match sent {
        Ok(res) => {
            let status = res.status().as_u16();
            res.text().await.map(|text| (status, text))
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok((status, text)) => {
            let json = serde_json::from_str(&text);
            let json =
                json.map_err(|_| TestCaseError::fail(format!("{status}: not JSON: {text}")))?;
            Ok(Some((status, json)))
        }
        Err(_) if over => Ok(None),
        Err(e) => Err(TestCaseError::fail(format!("no answer: {e}"))),
    }
}

/// The statuses `/openapi.json` lists for an operation.
async fn documented<S: Store>(api: &Api<S>, method: &str, path: &str) -> Vec<u16> {
    let (status, doc) = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let responses = doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not documented"));
    responses.keys().map(|s| s.parse().unwrap()).collect()
}

/// A refusal in the common shape: exactly `error` (a code) and `message`.
fn is_api_error(answer: &Value) -> bool {
    answer.as_object().is_some_and(|m| {
        m.len() == 2
            && m.get("error")
                .and_then(Value::as_str)
                .is_some_and(|e| !e.is_empty())
            && m.get("message").is_some_and(Value::is_string)
    })
}

/// The id of the app's newest message (0 for none): a write makes a newer one.
async fn newest_message<S: Store>(api: &Api<S>, key: &str) -> i64 {
    let (status, page) = api
        .call("GET", "/v1/messages?limit=1", Some(key), None)
        .await;
    assert_eq!(status, 200, "{page}");
    page["messages"][0]["id"].as_i64().unwrap_or(0)
}

async fn campaigns<S: Store>(api: &Api<S>) -> usize {
    let filter = CampaignFilter {
        state: None,
        search: None,
        before_id: None,
        limit: 500,
    };
    api.store
        .campaign_list_page("shop", &filter)
        .await
        .unwrap()
        .len()
}

/// `shop` has an FCM account (so a valid push is queued), `other` none (so a
/// valid push is the contract's 503); the push quota is out of the way.
fn push_config(service_account: &std::path::Path) -> String {
    format!(
        r#"
[server.push]
requests_per_minute = 1000000
[apps.shop]
default_timezone = "UTC"
[apps.shop.topics]
marketing = {{ default_subscribed = false }}
news = {{ default_subscribed = true }}
[apps.shop.fcm]
service_account_file = {:?}
[apps.other]
default_timezone = "UTC"
[apps.other.topics]
news = {{ default_subscribed = true }}
"#,
        service_account.display().to_string()
    )
}

fn valid_push() -> Value {
    json!({
        "userIds": ["u1", "79990001122"], "installIds": ["iid-1"],
        "message": {"title": "Order shipped", "summary": "On its way", "image": "https://cdn.example.com/a.png"},
        "deeplink": "shop://orders/1", "topic": "news", "devices": "all", "ttl": 3600,
        "data": {"order": "1"}, "collapseKey": "orders",
    })
}

/// `POST /v1/push`: queued, with as many messages written as it says, or
/// refused in the contract's shapes with nothing written; 503 only for the app
/// without providers, and only with the contract's body.
async fn push_never_fails_and_a_refusal_writes_nothing<S: Store + Clone>(db: &TestDb<S>) {
    let dir = tempfile::tempdir().unwrap();
    let sa = dir.path().join("sa.json");
    std::fs::write(&sa, "{}").unwrap();
    let api = start_with(db, &push_config(&sa)).await;
    for (token, field, id) in [
        ("fcm-u1", "userId", "u1"),
        ("fcm-iid-1", "installId", "iid-1"),
    ] {
        let device = json!({"platform": "android", "token": token, field: id});
        let (status, body) = api
            .call("POST", "/v1/devices", Some(&api.shop), Some(device))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let listed = documented(&api, "post", "/v1/push").await;
    let tally = Tally::default();
    let handle = tokio::runtime::Handle::current();
    run(1, bodies(valid_push()), |body| {
        handle.block_on(async {
            for (key, served) in [(&api.shop, true), (&api.other, false)] {
                let before = newest_message(&api, key).await;
                let answer = send(&api, "POST", "/v1/push", key, &body).await?;
                let after = newest_message(&api, key).await;
                let Some((status, answer)) = answer else {
                    tally.count("closed".into());
                    prop_assert_eq!(after, before, "closed, yet written");
                    continue;
                };
                tally.count(format!(
                    "{status} {}",
                    if served { "shop" } else { "other" }
                ));
                let context = format!("{status} {answer} (served: {served})");
                prop_assert!(listed.contains(&status), "undocumented: {context}");
                if status == 200 {
                    prop_assert!(served, "{context}");
                    let mut members: Vec<&str> = answer
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k.as_str())
                        .collect();
                    members.sort_unstable();
                    prop_assert_eq!(members, ["accepted", "requestId", "success", "unknown"]);
                    prop_assert_eq!(&answer["success"], &json!(true));
                    prop_assert!(
                        answer["unknown"]
                            .as_array()
                            .is_some_and(|u| u.iter().all(Value::is_string)),
                        "{context}"
                    );
                    let request = answer["requestId"].as_str().unwrap_or_default();
                    prop_assert!(request.starts_with("req_"), "{context}");
                    let path = format!("/v1/messages?request={request}&limit=500");
                    let (_, queued) = api.call("GET", &path, Some(key), None).await;
                    let queued = queued["messages"].as_array().map(Vec::len);
                    prop_assert_eq!(
                        queued.map(|n| n as u64),
                        answer["accepted"].as_u64(),
                        "{}",
                        context
                    );
                    continue;
                }
                prop_assert_eq!(after, before, "refused, yet written: {}", context);
                match status {
                    503 => {
                        prop_assert!(!served, "{context}");
                        let unavailable =
                            json!({"success": false, "error": "Integration is unavailable"});
                        prop_assert_eq!(&answer, &unavailable);
                    }
                    400 | 413 | 415 => {
                        let error = match status {
                            400 => "Bad Request",
                            413 => "Request Entity Too Large",
                            _ => "Unsupported Media Type",
                        };
                        prop_assert_eq!(
                            answer.as_object().map(|m| m.len()),
                            Some(2),
                            "{}",
                            context
                        );
                        prop_assert_eq!(answer["error"].as_str(), Some(error), "{}", context);
                        prop_assert!(answer["message"].is_string(), "{context}");
                    }
                    _ => prop_assert!(false, "unexpected: {context}"),
                }
            }
            Ok(())
        })
    });
    tally.check("POST /v1/push");
}

fn valid_campaign(key: &str) -> Value {
    json!({
        "key": key, "name": "Fuzz", "status": "draft",
        "message": {"title": "Hi", "body": "There", "ttl": "6h", "priority": "normal",
                    "buttons": [{"id": "open", "label": "Open", "url": "https://example.com"}],
                    "data": {"k": "v"}, "locales": {"de": {"title": "Hallo", "body": "Da"}}},
        "audience": {"topics": ["marketing"], "platforms": ["android"], "devices": "primary",
                     "attributes": [{"attribute": "tier", "op": "eq", "value": "gold"}]},
        "schedule": {"type": "local", "at": "2030-12-01T09:00", "missed": "skip", "grace": "30m"},
        "quiet_hours": {"start": "22:00", "end": "07:00"},
        "throttle_per_minute": 100,
    })
}

/// Checks a campaign route's answer (documented, never a 5xx, a refusal in the
/// common shape) and counts it. True when it was accepted.
fn accepted(
    listed: &[u16],
    tally: &Tally,
    answer: &Option<(u16, Value)>,
) -> Result<bool, TestCaseError> {
    let Some((status, answer)) = answer else {
        tally.count("closed".into());
        return Ok(false);
    };
    tally.count(status.to_string());
    prop_assert!(listed.contains(status), "undocumented: {status} {answer}");
    prop_assert!(*status < 500, "{status} {answer}");
    if (200..300).contains(status) {
        prop_assert!(answer.is_object(), "{status} {answer}");
        return Ok(true);
    }
    prop_assert!(is_api_error(answer), "{status} {answer}");
    Ok(false)
}

/// `POST /v1/campaigns`: 201 writes one campaign; 200 (the same definition
/// again) and every refusal write none.
async fn create_never_fails_and_a_refusal_writes_nothing<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let listed = documented(&api, "post", "/v1/campaigns").await;
    let tally = Tally::default();
    let handle = tokio::runtime::Handle::current();
    let fresh = any::<u32>().prop_flat_map(|n| bodies(valid_campaign(&format!("fuzz-{n}"))));
    run(2, fresh, |body| {
        handle.block_on(async {
            let before = campaigns(&api).await;
            let answer = send(&api, "POST", "/v1/campaigns", &api.shop, &body).await?;
            let after = campaigns(&api).await;
            let made = answer.as_ref().is_some_and(|(status, _)| *status == 201);
            if accepted(&listed, &tally, &answer)? {
                prop_assert!(
                    answer.as_ref().is_some_and(|(_, a)| a["id"].is_i64()),
                    "{answer:?}"
                );
            }
            prop_assert_eq!(after, before + usize::from(made), "{:?}", answer);
            Ok(())
        })
    });
    tally.check("POST /v1/campaigns");
}

/// `POST /v1/campaigns:preview` writes nothing, whatever it is sent.
async fn preview_never_fails_and_writes_nothing<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let listed = documented(&api, "post", "/v1/campaigns:preview").await;
    let tally = Tally::default();
    let handle = tokio::runtime::Handle::current();
    run(3, bodies(valid_campaign("preview")), |body| {
        handle.block_on(async {
            let before = (campaigns(&api).await, newest_message(&api, &api.shop).await);
            let answer = send(&api, "POST", "/v1/campaigns:preview", &api.shop, &body).await?;
            let after = (campaigns(&api).await, newest_message(&api, &api.shop).await);
            if accepted(&listed, &tally, &answer)? {
                prop_assert!(
                    answer.as_ref().is_some_and(|(_, a)| a["slots"].is_array()),
                    "{answer:?}"
                );
            }
            prop_assert_eq!(after, before, "{:?}", answer);
            Ok(())
        })
    });
    tally.check("POST /v1/campaigns:preview");
}

/// `PATCH /v1/campaigns/{id}`: a refused patch leaves the campaign as it was
/// (definition, revision, state, slots, times) and creates nothing.
async fn edit_never_fails_and_a_refusal_changes_nothing<S: Store + Clone>(db: &TestDb<S>) {
    let api = start(db).await;
    let target = Some(valid_campaign("target"));
    let (status, made) = api
        .call("POST", "/v1/campaigns", Some(&api.shop), target)
        .await;
    assert_eq!(status, 201, "{made}");
    let path = format!("/v1/campaigns/{}", made["id"]);
    let listed = documented(&api, "patch", "/v1/campaigns/{id}").await;
    let tally = Tally::default();
    let handle = tokio::runtime::Handle::current();
    let patch = json!({"name": "Renamed", "message": {"title": "New title", "ttl": "2h"},
                       "schedule": {"at": "2030-12-02T09:00"}, "throttle_per_minute": null});
    run(4, bodies(patch), |body| {
        handle.block_on(async {
            let count = campaigns(&api).await;
            let (_, before) = api.call("GET", &path, Some(&api.shop), None).await;
            let answer = send(&api, "PATCH", &path, &api.shop, &body).await?;
            let (_, after) = api.call("GET", &path, Some(&api.shop), None).await;
            if accepted(&listed, &tally, &answer)? {
                prop_assert!(
                    answer.as_ref().is_some_and(|(_, a)| a["id"] == made["id"]),
                    "{answer:?}"
                );
            } else {
                prop_assert_eq!(&after, &before, "{:?}", answer);
            }
            prop_assert_eq!(campaigns(&api).await, count);
            Ok(())
        })
    });
    tally.check("PATCH /v1/campaigns/{id}");
}

/// A push reaches only the key's app: another app's users and installs, even with
/// the same ids, are `unknown` to it and get nothing.
async fn a_push_reaches_only_its_apps_users<S: Store + Clone>(db: &TestDb<S>) {
    let dir = tempfile::tempdir().unwrap();
    let sa = dir.path().join("sa.json");
    std::fs::write(&sa, "{}").unwrap();
    let config = format!(
        "{}[apps.other.fcm]\nservice_account_file = {:?}\n",
        push_config(&sa),
        sa.display().to_string()
    );
    let api = start_with(db, &config).await;
    for (token, field, id) in [("fcm-o1", "userId", "o1"), ("fcm-oi", "installId", "iid-o")] {
        let device = json!({"platform": "android", "token": token, field: id});
        let (status, body) = api
            .call("POST", "/v1/devices", Some(&api.other), Some(device))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let push = json!({"userIds": ["o1"], "installIds": ["iid-o"], "message": {"title": "t", "summary": "s"}});
    let (status, body) = api
        .call("POST", "/v1/push", Some(&api.shop), Some(push.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 0, "{body}");
    assert_eq!(body["unknown"], json!(["o1", "iid-o"]));
    let (status, body) = api
        .call("POST", "/v1/push", Some(&api.other), Some(push))
        .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(2)),
        "{body}"
    );
}

storage_tests!(
    a_push_reaches_only_its_apps_users,
    push_never_fails_and_a_refusal_writes_nothing,
    create_never_fails_and_a_refusal_writes_nothing,
    preview_never_fails_and_writes_nothing,
    edit_never_fails_and_a_refusal_changes_nothing,
);
