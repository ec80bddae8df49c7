//! The engine's test rig: a store, the provider simulator over TLS, a manual
//! clock and an app `shop` configured to send to it; a partner's webhook
//! receiver; HTTP helpers for the API. Shared by the engine, wire and push tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use meridian::clock::{Clock, ManualClock};
use meridian::config::Config;
use meridian::definitions;
use meridian::domain::campaign::{parse_toml, Platform};
use meridian::domain::state::CampaignState;
use meridian::engine::{Engine, EngineSettings};
use meridian::provider::jwt::{self, Es256Key, Rs256Key};
use meridian::simulator::{
    ApnsKey, Behaviour, FcmAccount, Simulator, SimulatorConfig, TEST_SERVICE_ACCOUNT_KEY,
};
use meridian::store::{DeviceUpsert, Store};

use super::TestDb;

pub struct Rig<S: Store> {
    pub store: Arc<S>,
    pub sim: Simulator,
    pub clock: ManualClock,
    pub config: Arc<Config>,
    pub _dir: tempfile::TempDir,
}

pub async fn rig<S: Store + Clone>(db: &TestDb<S>, start: DateTime<Utc>) -> Rig<S> {
    rig_with(db, start, "").await
}

/// A rig whose config ends with `extra` (more tables of the shop app); `{dir}` in
/// it is the rig's temporary directory.
pub async fn rig_with<S: Store + Clone>(
    db: &TestDb<S>,
    start: DateTime<Utc>,
    extra: &str,
) -> Rig<S> {
    let clock = ManualClock::new(start);
    let dir = tempfile::tempdir().unwrap();
    let p8 = jwt::generate_p8().unwrap();
    let sim = Simulator::start(SimulatorConfig {
        clock: Some(Arc::new(clock.clone())),
        tls_addr: Some("127.0.0.1:0".parse().unwrap()),
        plain_addr: None,
        apns_keys: vec![ApnsKey {
            key_id: "KEY1234567".into(),
            team_id: "TEAM123456".into(),
            public_key: Es256Key::from_pem(&p8).unwrap().public_key(),
        }],
        apns_topics: vec!["com.example.shop".into()],
        fcm_accounts: vec![FcmAccount {
            client_email: "m@p.iam.gserviceaccount.com".into(),
            project_id: "p".into(),
            public_key: Rs256Key::from_pem(TEST_SERVICE_ACCOUNT_KEY)
                .unwrap()
                .public_key(),
        }],
        behaviour: Behaviour::default(),
    })
    .await
    .unwrap();
    let base = sim.tls_url().unwrap();
    let path = |n: &str| dir.path().join(n);
    std::fs::write(path("key.p8"), &p8).unwrap();
    std::fs::write(path("hook.secret"), HOOK_SECRET).unwrap();
    std::fs::write(path("ca.pem"), &sim.ca_pem).unwrap();
    let sa = serde_json::json!({
        "project_id": "p", "client_email": "m@p.iam.gserviceaccount.com",
        "private_key": TEST_SERVICE_ACCOUNT_KEY, "token_uri": format!("{base}/token"),
    });
    std::fs::write(path("sa.json"), sa.to_string()).unwrap();
    let text = format!(
        r#"
[apps.shop]
default_timezone = "UTC"
[apps.shop.topics]
marketing = {{ default_subscribed = false }}
promo = {{ default_subscribed = true, cap = {{ max = 2, per = "24h" }} }}
[apps.shop.apns]
bundle_id = "com.example.shop"
key_file = "{key}"
key_id = "KEY1234567"
team_id = "TEAM123456"
base_url = "{base}"
ca_file = "{ca}"
[apps.shop.fcm]
service_account_file = "{sa}"
base_url = "{base}"
ca_file = "{ca}"
{extra}
"#,
        extra = extra.replace("{dir}", &dir.path().display().to_string()),
        key = path("key.p8").display(),
        ca = path("ca.pem").display(),
        sa = path("sa.json").display(),
    );
    let config: Config = toml::from_str(&text).unwrap();
    config.validate().unwrap();
    definitions::sync_apps(&db.store, &config, start)
        .await
        .unwrap();
    Rig {
        store: Arc::new(db.store.clone()),
        sim,
        clock,
        config: Arc::new(config),
        _dir: dir,
    }
}

impl<S: Store> Rig<S> {
    pub fn engine(&self, worker: &str, chunk_size: i64) -> Engine<S> {
        self.engine_with(worker, chunk_size, |_| {})
    }

    /// An engine whose settings `tune` adjusts after the rig's own.
    pub fn engine_with(
        &self,
        worker: &str,
        chunk_size: i64,
        tune: impl FnOnce(&mut EngineSettings),
    ) -> Engine<S> {
        let mut settings = EngineSettings {
            worker_id: worker.into(),
            chunk_size,
            retry: meridian::provider::RetryPolicy {
                base: std::time::Duration::from_secs(30),
                max: std::time::Duration::from_secs(600),
                max_attempts: 20,
            },
            ..EngineSettings::default()
        };
        tune(&mut settings);
        Engine::new(
            self.store.clone(),
            self.config.clone(),
            Arc::new(self.clock.clone()),
            settings,
        )
        .unwrap()
    }

    /// Registers a subscribed user with one device; returns the token.
    pub async fn device(&self, n: u32, zone: &str, platform: Platform, dead: bool) -> String {
        let user = format!("user-{n}");
        let token = match (platform, dead) {
            (Platform::Ios, false) => format!("{:064x}", 0x1000_0000 + n),
            (Platform::Ios, true) => format!("dead{:060x}", n),
            (Platform::Android, false) => format!("fcm-token-{n}"),
            (Platform::Android, true) => format!("dead-fcm-{n}"),
        };
        self.register(&user, platform, &token, zone).await;
        self.store
            .subscription_set("shop", &user, &[("marketing", true)], self.clock.now())
            .await
            .unwrap();
        token
    }

    /// A campaign's slot counts summed over its slots, by kind.
    pub async fn counts_by_kind(&self, id: i64) -> BTreeMap<String, i64> {
        let mut counts = BTreeMap::new();
        for (_, kind, n) in self.store.slot_count_by_state(id).await.unwrap() {
            *counts.entry(kind).or_default() += n;
        }
        counts
    }

    /// Registers a user who never opted in to anything, with one Android device.
    pub async fn unsubscribed(&self, user: &str, zone: &str) {
        self.register(user, Platform::Android, &format!("fcm-{user}"), zone)
            .await;
    }

    pub async fn register(&self, user: &str, platform: Platform, token: &str, zone: &str) {
        self.store
            .device_upsert(
                &DeviceUpsert {
                    app_id: "shop",
                    user_external_id: Some(user),
                    install_id: None,
                    platform,
                    token,
                    timezone: Some(zone),
                    locale: None,
                    primary: false,
                },
                self.clock.now(),
            )
            .await
            .unwrap();
    }

    pub async fn schedule(&self, key: &str, schedule: &str) -> i64 {
        self.schedule_for(key, "marketing", schedule).await
    }

    pub async fn schedule_for(&self, key: &str, topic: &str, schedule: &str) -> i64 {
        let text = format!(
            "key = \"{key}\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Hello\"\nbody = \"World\"\n\
             [audience]\ntopics = [\"{topic}\"]\n[schedule]\n{schedule}\n"
        );
        self.save(&text).await
    }

    /// Prepares and saves a campaign definition; returns its id.
    pub async fn save(&self, text: &str) -> i64 {
        let def = parse_toml("t.toml", text).unwrap();
        let prepared = definitions::prepare(&*self.store, &self.config, &def, self.clock.now())
            .await
            .unwrap();
        definitions::save(&*self.store, prepared, self.clock.now())
            .await
            .unwrap()
            .record
            .id
    }

    /// Serves the API on this rig's store, config and clock; returns its base URL
    /// and an API key of the shop.
    pub async fn api(&self, engine: Option<&Engine<S>>) -> (String, String) {
        self.api_probed(engine, None).await
    }

    /// `api`, with `/readyz` asking `scheduler` whether the engine turns.
    pub async fn api_probed(
        &self,
        engine: Option<&Engine<S>>,
        scheduler: Option<Arc<dyn Fn() -> Result<(), String> + Send + Sync>>,
    ) -> (String, String) {
        let k = meridian::api::keys::generate().unwrap();
        self.store
            .api_key_create(
                &meridian::store::NewApiKey {
                    app_id: "shop",
                    name: "backend",
                    kind: meridian::domain::keys::KeyKind::Server,
                    prefix: &k.prefix,
                    hash: &k.hash,
                },
                self.clock.now(),
            )
            .await
            .unwrap();
        let mut state = meridian::api::ApiState::new(
            self.store.clone(),
            self.config.clone(),
            Arc::new(self.clock.clone()),
        );
        if let Some(e) = engine {
            state = state.with_rows_queued(e.rows_queued());
        }
        if let Some(probe) = scheduler {
            state = state.with_scheduler(probe);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = meridian::api::router(state);
        tokio::spawn(async move { axum::serve(listener, router).await });
        (base, k.secret)
    }

    /// Registers (or updates) a user with a phone number.
    pub async fn user(&self, external_id: &str, phone: Option<&str>) {
        self.store
            .user_upsert(
                &meridian::store::UserUpsert {
                    app_id: "shop",
                    external_id,
                    phone,
                    timezone: None,
                    locale: None,
                    attributes: None,
                },
                self.clock.now(),
            )
            .await
            .unwrap();
    }

    pub async fn device_of(
        &self,
        user: Option<&str>,
        install: Option<&str>,
        token: &str,
        primary: bool,
    ) {
        self.store
            .device_upsert(
                &DeviceUpsert {
                    app_id: "shop",
                    user_external_id: user,
                    install_id: install,
                    platform: if token.len() == 64 {
                        Platform::Ios
                    } else {
                        Platform::Android
                    },
                    token,
                    timezone: None,
                    locale: None,
                    primary,
                },
                self.clock.now(),
            )
            .await
            .unwrap();
    }

    pub fn accepted(&self, token: &str) -> u64 {
        self.sim
            .stats()
            .accepted_per_token
            .get(token)
            .copied()
            .unwrap_or(0)
    }

    pub async fn state(&self, key: &str) -> CampaignState {
        self.store
            .campaign_get("shop", key)
            .await
            .unwrap()
            .unwrap()
            .state
    }
}

/// The HMAC key of the rig's hooks (`{dir}/hook.secret`).
pub const HOOK_SECRET: &str = "hook-s3cret";

/// One request to a partner's endpoint: its `Idempotency-Key` and event ids.
pub type Attempt = (String, Vec<i64>);

/// A partner's endpoint: records what it is sent and answers 503 to the next
/// `fail_next` requests.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, serde_json::Value)>>>,
    /// Every request, refused ones too: its `Idempotency-Key` and event ids.
    pub tried: Arc<std::sync::Mutex<Vec<Attempt>>>,
    pub fail_next: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    // A partner's server, not a route of ours: the API's route table does not apply.
    #[allow(clippy::disallowed_methods)]
    pub async fn start() -> (Self, String) {
        use std::sync::atomic::Ordering;
        let r = Self::default();
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let state = state.clone();
                    async move {
                        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                            let key = headers
                                .get("idempotency-key")
                                .and_then(|k| k.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let ids = json["events"]
                                .as_array()
                                .map(|e| e.iter().filter_map(|e| e["id"].as_i64()).collect())
                                .unwrap_or_default();
                            state.tried.lock().unwrap().push((key, ids));
                        }
                        let failing = state
                            .fail_next
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if failing {
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let signature =
                            headers[meridian::hooks::SIGNATURE_HEADER].to_str().unwrap();
                        // Signed at the rig's manual clock: checked against the header's own time.
                        let t: i64 = signature[2..signature.find(',').unwrap()].parse().unwrap();
                        let signed_at = DateTime::from_timestamp(t, 0).unwrap();
                        assert!(meridian::hooks::verify(
                            HOOK_SECRET.as_bytes(),
                            signature,
                            &body,
                            signed_at,
                            std::time::Duration::from_secs(1),
                        ));
                        let json = serde_json::from_slice(&body).unwrap();
                        state.got.lock().unwrap().push((headers, json));
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

pub fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

pub async fn post(
    base: &str,
    key: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

pub async fn get(base: &str, key: &str, path: &str) -> serde_json::Value {
    let res = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.json().await.unwrap()
}

/// Releases one slot as the engine releases a batch of them (the store has no
/// single-slot call): `None` when another worker released it first.
pub async fn release_one<S: Store>(
    store: &S,
    slot: &meridian::store::CampaignSlot,
    segment: &meridian::store::Segment<'_>,
    chunk_size: i64,
    worker: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<meridian::store::Released>, meridian::store::StoreError> {
    let won = store
        .slot_release(
            &meridian::store::SlotRelease {
                slots: std::slice::from_ref(slot),
                segment,
                chunk_size,
                worker,
            },
            now,
        )
        .await?;
    Ok(won.into_iter().next().map(|(_, r)| r))
}
