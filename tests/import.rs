//! Bulk user import through real HTTP (`POST /v1/users:import`) and the batched
//! store write under it, on SQLite and on Postgres.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::TestDb;
use meridian::api::{self, keys};
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::definitions;
use meridian::domain::campaign::Platform;
use meridian::store::{DeviceUpsert, NewApiKey, Store, UserUpsert};
use serde_json::{json, Value};
use sqlx::Connection;

const CONFIG: &str = r#"
[apps.shop]
default_timezone = "UTC"
[apps.other]
default_timezone = "UTC"
"#;

const NDJSON: &str = "application/x-ndjson";
const CSV: &str = "text/csv";

/// The API on a free port, with one live key per app.
struct Server {
    url: String,
    http: reqwest::Client,
    keys: BTreeMap<&'static str, String>,
}

impl Server {
    async fn new<S: Store + Clone>(db: &TestDb<S>) -> Self {
        let config: Config = toml::from_str(CONFIG).unwrap();
        let now = SystemClock.now();
        definitions::sync_apps(&db.store, &config, now)
            .await
            .unwrap();
        let mut keys = BTreeMap::new();
        for app in ["shop", "other"] {
            let k = keys::generate().unwrap();
            let stored = NewApiKey {
                app_id: app,
                name: "import",
                kind: meridian::domain::keys::KeyKind::Server,
                prefix: &k.prefix,
                hash: &k.hash,
            };
            db.store.api_key_create(&stored, now).await.unwrap();
            keys.insert(app, k.secret);
        }
        let base = common::serve_api(Arc::new(db.store.clone()), config).await;
        let url = format!("{base}/v1/users:import");
        Self {
            url,
            http: reqwest::Client::new(),
            keys,
        }
    }

    /// Posts `body` as `app` (no key for `None`) with `content_type`.
    async fn import(
        &self,
        app: Option<&str>,
        content_type: &str,
        body: impl Into<String>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", content_type)
            .body(body.into());
        if let Some(app) = app {
            req = req.bearer_auth(&self.keys[app]);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap())
    }
}

/// Rows read straight from the database, bypassing the store.
async fn select<S, R>(db: &TestDb<S>, sql: &str, app: &str) -> Vec<R>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin,
{
    // The same calls on either connection type.
    macro_rules! fetch {
        ($connection:ty) => {{
            let mut c = <$connection>::connect(&db.url).await.unwrap();
            let rows = sqlx::query_as(sql).bind(app).fetch_all(&mut c).await;
            rows.unwrap()
        }};
    }
    if db.url.starts_with("sqlite:") {
        fetch!(sqlx::SqliteConnection)
    } else {
        fetch!(sqlx::PgConnection)
    }
}

/// An app's users as `{external id: {phone, timezone, locale, attributes}}`.
async fn users_of<S>(db: &TestDb<S>, app: &str) -> BTreeMap<String, Value> {
    type Row = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );
    let rows: Vec<Row> = select(
        db,
        "SELECT external_id, phone, timezone, locale, CAST(attributes AS TEXT) FROM users WHERE app_id = $1",
        app,
    )
    .await;
    rows.into_iter()
        .map(|(id, phone, timezone, locale, attributes)| {
            let attributes: Value = serde_json::from_str(&attributes).unwrap();
            (id, json!({"phone": phone, "timezone": timezone, "locale": locale, "attributes": attributes}))
        })
        .collect()
}

/// An import's answer: 200, `accepted`, and every rejected row as the line and
/// the field its error names, `"2 phone, 4 timezone"`.
fn assert_outcome(status: u16, answer: &Value, accepted: u64, rejected: &str) {
    assert_eq!(status, 200, "{answer}");
    let errors = answer["errors"].as_array().unwrap();
    let listed: Vec<String> = errors
        .iter()
        .map(|e| {
            let message = e["message"].as_str().unwrap();
            let field = message.split_once(": ").map_or(message, |(f, _)| f);
            format!("{} {field}", e["line"])
        })
        .collect();
    assert_eq!(listed.join(", "), rejected, "{answer}");
    assert_eq!(answer["accepted"], accepted, "{answer}");
    assert_eq!(answer["rejected"], errors.len(), "{answer}");
}

/// An error answer: its status, code, and a message starting with `message`.
fn assert_error(got: &(u16, Value), status: u16, code: &str, message: &str) {
    let (got_status, answer) = (got.0, &got.1);
    assert_eq!(
        (got_status, answer["error"].as_str()),
        (status, Some(code)),
        "{answer}"
    );
    let text = answer["message"].as_str().unwrap_or_default();
    assert!(text.starts_with(message), "{answer} should say {message:?}");
}

/// NDJSON: the good rows are stored, each bad one is counted and named by line
/// and field, and writes nothing.
async fn ndjson_keeps_the_good_rows_and_names_the_bad<S: Store + Clone>(db: &TestDb<S>) {
    let server = Server::new(db).await;
    let body = [
        r#"{"externalId": "u1", "phone": "+49 151 1234-5678", "timezone": "Europe/Berlin", "locale": "de-DE", "attributes": {"tier": "gold"}}"#,
        r#"{"externalId": "u2", "phone": "12"}"#,
        "",
        r#"{"externalId": "u3", "timezone": "Mars/Olympus"}"#,
        r#"{"phone": "+4915112345678"}"#,
        r#"{"externalId": "u5", "nickname": "x"}"#,
        r#"{"externalId": "u6", "#,
        r#"{"externalId": "u7"}"#,
    ]
    .join("\n");
    let (status, answer) = server.import(Some("shop"), NDJSON, body).await;
    let rejected = "2 phone, 4 timezone, 5 externalId, 6 nickname, 7 json";
    assert_outcome(status, &answer, 2, rejected);
    let users = users_of(db, "shop").await;
    assert_eq!(users.keys().collect::<Vec<_>>(), ["u1", "u7"]);
    assert_eq!(
        users["u1"],
        json!({"phone": "+4915112345678", "timezone": "Europe/Berlin", "locale": "de-DE", "attributes": {"tier": "gold"}})
    );
    assert_eq!(
        users["u7"],
        json!({"phone": null, "timezone": null, "locale": null, "attributes": {}})
    );
}

/// CSV: named columns, other columns as string attributes, quoted fields; bad
/// rows named by line and column.
async fn csv_keeps_the_good_rows_and_names_the_bad<S: Store + Clone>(db: &TestDb<S>) {
    let server = Server::new(db).await;
    let body = "external_id,phone,timezone,locale,tier\r\n\
                u1,+1 415 555 0100,America/New_York,en-US,gold\r\n\
                \"u,2\",,,,\"says \"\"hi\"\"\nand more\"\r\n\
                u3,12,,,\r\n\
                u4,,Mars/Olympus,,\r\n\
                ,+14155550100,,,\r\n\
                u6,,,\r\n\
                u7,,,de DE,\r\n\
                u8,,UTC,,\r\n";
    let (status, answer) = server
        .import(Some("shop"), "text/csv; charset=utf-8", body)
        .await;
    // The quoted newline in row 3 makes every later row start a line further.
    let rejected = "5 phone, 6 timezone, 7 external_id, 8 record, 9 locale";
    assert_outcome(status, &answer, 3, rejected);
    let users = users_of(db, "shop").await;
    assert_eq!(users.keys().collect::<Vec<_>>(), ["u,2", "u1", "u8"]);
    assert_eq!(
        users["u1"],
        json!({"phone": "+14155550100", "timezone": "America/New_York", "locale": "en-US", "attributes": {"tier": "gold"}})
    );
    assert_eq!(
        users["u,2"]["attributes"],
        json!({"tier": "says \"hi\"\nand more"})
    );
    assert_eq!(
        users["u8"]["attributes"],
        json!({}),
        "attribute columns replace, empty cells are absent"
    );

    // A header no row can be read with: 400 naming it, nothing written.
    let got = server
        .import(Some("shop"), CSV, "id,phone\nu9,+14155550100\n")
        .await;
    assert_error(&got, 400, "bad_request", "header: no external_id column");
    assert!(!users_of(db, "shop").await.contains_key("u9"));
}

/// A second import updates: given fields replace, absent ones stay, and a new
/// zone reaches the user's devices that report none of their own.
async fn a_second_import_updates_existing_users<S: Store + Clone>(db: &TestDb<S>) {
    let server = Server::new(db).await;
    let first = r#"{"externalId": "u1", "phone": "+4915112345678", "timezone": "Europe/Berlin", "locale": "de-DE", "attributes": {"tier": "gold"}}
{"externalId": "u2", "locale": "en", "attributes": {"tier": "silver"}}"#;
    let (status, answer) = server.import(Some("shop"), NDJSON, first).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    let token = "cd".repeat(32);
    let device = DeviceUpsert {
        app_id: "shop",
        user_external_id: Some("u1"),
        install_id: None,
        platform: Platform::Ios,
        token: &token,
        timezone: None,
        locale: None,
        primary: false,
    };
    db.store
        .device_upsert(&device, SystemClock.now())
        .await
        .unwrap();

    let second =
        "external_id,phone,timezone,tier\nu1,,Asia/Tokyo,platinum\nu2,+14155550100,,\nu3,,,new\n";
    let (status, answer) = server.import(Some("shop"), CSV, second).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"accepted": 3, "rejected": 0, "errors": []}));
    let users = users_of(db, "shop").await;
    assert_eq!(
        users["u1"],
        json!({"phone": "+4915112345678", "timezone": "Asia/Tokyo", "locale": "de-DE", "attributes": {"tier": "platinum"}})
    );
    assert_eq!(
        users["u2"],
        json!({"phone": "+14155550100", "timezone": null, "locale": "en", "attributes": {}})
    );
    assert_eq!(users["u3"]["attributes"], json!({"tier": "new"}));
    let zones: Vec<(String,)> =
        select(db, "SELECT zone FROM devices WHERE app_id = $1", "shop").await;
    assert_eq!(zones, [("Asia/Tokyo".to_owned(),)]);
}

/// Only the two formats are read, only with a live key, and only into the key's app.
async fn imports_need_a_format_a_key_and_stay_in_the_keys_app<S: Store + Clone>(db: &TestDb<S>) {
    let server = Server::new(db).await;
    for content_type in ["application/json", "text/plain", ""] {
        let got = server
            .import(Some("shop"), content_type, "{\"externalId\": \"u1\"}")
            .await;
        assert_error(&got, 415, "unsupported_media_type", "content-type: ");
    }
    let got = server
        .import(None, NDJSON, "{\"externalId\": \"u1\"}")
        .await;
    assert_error(&got, 401, "unauthorized", "missing Authorization");
    assert!(
        users_of(db, "shop").await.is_empty(),
        "nothing written without a format or a key"
    );

    let (status, _) = server
        .import(
            Some("other"),
            NDJSON,
            r#"{"externalId": "u1", "phone": "+4915112345678", "attributes": {"app": "other"}}"#,
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = server
        .import(
            Some("shop"),
            CSV,
            "external_id,phone,app\nu1,+14155550100,shop\nu2,,shop\n",
        )
        .await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    let other = users_of(db, "other").await;
    assert_eq!(other.keys().collect::<Vec<_>>(), ["u1"]);
    assert_eq!(
        other["u1"]["phone"], "+4915112345678",
        "the other app's u1 is untouched"
    );
    assert_eq!(other["u1"]["attributes"], json!({"app": "other"}));
    assert_eq!(users_of(db, "shop").await["u1"]["phone"], "+14155550100");
}

/// 20,000 rows (a body well over the API's 1 MiB limit) in one import, with the
/// line numbers still right at the end.
async fn twenty_thousand_rows_in_one_import<S: Store + Clone>(db: &TestDb<S>) {
    let server = Server::new(db).await;
    let mut body: String = (0..20_000)
        .map(|i| format!("{{\"externalId\": \"user-{i:05}\", \"timezone\": \"Europe/Berlin\", \"attributes\": {{\"n\": {i}}}}}\n"))
        .collect();
    body.push_str("{\"externalId\": \"last\", \"phone\": \"x\"}\n");
    assert!(body.len() > api::BODY_LIMIT);
    let (status, answer) = server.import(Some("shop"), NDJSON, body).await;
    assert_outcome(status, &answer, 20_000, "20001 phone");
    let users = users_of(db, "shop").await;
    assert_eq!(users.len(), 20_000);
    assert_eq!(users["user-19999"]["attributes"], json!({"n": 19999}));
}

/// A body declared larger than the import limit is refused before any of it is
/// read (a raw request: no client sends 256 MiB in a test).
async fn an_oversized_body_is_refused_up_front<S: Store + Clone>(db: &TestDb<S>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::new(db).await;
    let addr = server
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/users:import HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: text/csv\r\ncontent-length: {}\r\nconnection: close\r\n\r\nexternal_id\n",
        server.keys["shop"],
        api::import::IMPORT_BODY_LIMIT + 1
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let read = conn.read_to_string(&mut answer);
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(r#""error":"payload_too_large""#),
        "{answer}"
    );
    assert!(answer.contains("body: larger than 256 MiB"), "{answer}");
}

/// The batched write does what one upsert per row would, in order: a user
/// listed twice gets the later row's fields over the earlier one's.
async fn a_batch_writes_like_one_upsert_per_row<S: Store + Clone>(db: &TestDb<S>) {
    let config: Config = toml::from_str(CONFIG).unwrap();
    let now = SystemClock.now();
    definitions::sync_apps(&db.store, &config, now)
        .await
        .unwrap();
    let gold = json!({"tier": "gold"});
    let empty = json!({});
    let single = UserUpsert {
        app_id: "shop",
        external_id: "kept",
        phone: Some("+4915112345678"),
        attributes: Some(&gold),
        ..UserUpsert::default()
    };
    db.store.user_upsert(&single, now).await.unwrap();
    let user = |app_id, external_id| UserUpsert {
        app_id,
        external_id,
        ..UserUpsert::default()
    };
    let batch = [
        UserUpsert {
            locale: Some("de"),
            ..single.clone()
        },
        UserUpsert {
            timezone: Some("UTC"),
            attributes: Some(&gold),
            ..user("shop", "twice")
        },
        UserUpsert {
            phone: Some("+14155550100"),
            ..user("shop", "twice")
        },
        UserUpsert {
            attributes: Some(&empty),
            ..user("shop", "twice")
        },
        UserUpsert {
            locale: Some("fr"),
            ..user("other", "twice")
        },
    ];
    assert_eq!(db.store.user_upsert_many(&batch, now).await.unwrap(), 5);
    assert_eq!(db.store.user_upsert_many(&[], now).await.unwrap(), 0);
    let shop = users_of(db, "shop").await;
    assert_eq!(
        shop["kept"],
        json!({"phone": "+4915112345678", "timezone": null, "locale": "de", "attributes": {"tier": "gold"}})
    );
    assert_eq!(
        shop["twice"],
        json!({"phone": "+14155550100", "timezone": "UTC", "locale": null, "attributes": {}})
    );
    assert_eq!(users_of(db, "other").await["twice"]["locale"], "fr");
}

storage_tests!(
    ndjson_keeps_the_good_rows_and_names_the_bad,
    csv_keeps_the_good_rows_and_names_the_bad,
    a_second_import_updates_existing_users,
    imports_need_a_format_a_key_and_stay_in_the_keys_app,
    twenty_thousand_rows_in_one_import,
    an_oversized_body_is_refused_up_front,
    a_batch_writes_like_one_upsert_per_row,
);
