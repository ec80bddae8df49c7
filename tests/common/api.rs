//! The REST API served on 127.0.0.1:0 over a test database, and an outside HTTP
//! client with one API key per app.

use std::sync::Arc;

use meridian::api::keys;
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::definitions;
use meridian::store::{NewApiKey, Store};
use serde_json::Value;

use super::TestDb;

/// Two apps, so that every test can check that one key sees only its app.
pub const CONFIG: &str = r#"
[apps.shop]
default_timezone = "UTC"
[apps.shop.topics]
marketing = { default_subscribed = false }
news = { default_subscribed = true }
[apps.other]
default_timezone = "UTC"
[apps.other.topics]
marketing = { default_subscribed = false }
"#;

pub struct Api<S> {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<S>,
    /// The key of app `shop`.
    pub shop: String,
    /// The key of app `other`.
    pub other: String,
}

impl<S: Store> Api<S> {
    /// A device of app `shop` as stored.
    pub async fn shop_device(&self, token: &str) -> meridian::store::DeviceRecord {
        self.store
            .device_get_by_token("shop", token)
            .await
            .unwrap()
            .expect("the device is stored")
    }

    /// Sends a request that must be answered 429 with a `Retry-After` of 1 to
    /// 60 seconds; the answer's JSON body.
    pub async fn too_many(&self, req: reqwest::RequestBuilder) -> Value {
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), 429);
        let wait: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        res.json().await.unwrap()
    }
    /// A request to the API, with the key if one is given.
    pub fn request(&self, method: &str, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let req = self.http.request(method, format!("{}{path}", self.base));
        match key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    /// One request; the answer's status and its body as JSON (or as a string).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.request(method, path, key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends a request that must be refused as a 400 `bad_request` whose message
    /// contains `names`; returns the message.
    pub async fn bad_request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        names: &str,
    ) -> String {
        let (status, answer) = self.call(method, path, key, body.clone()).await;
        let context = format!("{method} {path} {}: {answer}", body.unwrap_or_default());
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("bad_request")),
            "{context}"
        );
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{context} should name {names:?}");
        message.to_owned()
    }
}

pub async fn key_for<S: Store>(store: &S, app: &str, name: &str) -> String {
    key_of_kind(store, app, name, meridian::domain::keys::KeyKind::Server).await
}

/// A new key of `kind` for `app`; its secret.
pub async fn key_of_kind<S: Store>(
    store: &S,
    app: &str,
    name: &str,
    kind: meridian::domain::keys::KeyKind,
) -> String {
    let k = keys::generate().unwrap();
    store
        .api_key_create(
            &NewApiKey {
                app_id: app,
                name,
                kind,
                prefix: &k.prefix,
                hash: &k.hash,
            },
            SystemClock.now(),
        )
        .await
        .unwrap();
    k.secret
}

/// Serves the API with [`CONFIG`].
pub async fn start<S: Store + Clone>(db: &TestDb<S>) -> Api<S> {
    start_with(db, CONFIG).await
}

/// Serves the API with a configuration of apps `shop` and `other`.
pub async fn start_with<S: Store + Clone>(db: &TestDb<S>, config: &str) -> Api<S> {
    let config: Config = toml::from_str(config).unwrap();
    config.validate().unwrap();
    definitions::sync_apps(&db.store, &config, SystemClock.now())
        .await
        .unwrap();
    let store = Arc::new(db.store.clone());
    let base = super::serve_api(store.clone(), config).await;
    Api {
        base,
        http: reqwest::Client::new(),
        shop: key_for(&*store, "shop", "backend").await,
        other: key_for(&*store, "other", "backend").await,
        store,
    }
}
