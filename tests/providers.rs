//! The APNs and FCM clients against the provider simulator, over TLS HTTP/2.

use meridian::store::prelude::*;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use meridian::clock::{Clock, ManualClock, SystemClock};
use meridian::domain::campaign::{Message, Platform};
use meridian::domain::ids::DeliveryId;
use meridian::domain::message::payload::{self, Envelope, FcmTarget};
use meridian::provider::apns::{
    ApnsClient, ApnsCredentials, ApnsNotification, ApnsPriority, ApnsSettings,
};
use meridian::provider::fcm::{FcmClient, FcmSettings, ServiceAccount};
use meridian::provider::jwt::{self, Es256Key, Rs256Key};
use meridian::provider::{apns_id_for, HttpSettings, Outcome, RetryPolicy};
use meridian::simulator::{
    ApnsKey, Behaviour, FcmAccount, Simulator, SimulatorConfig, TEST_SERVICE_ACCOUNT_KEY,
};
use serde_json::json;

const KEY_ID: &str = "KEY1234567";
const TEAM_ID: &str = "TEAM123456";
const BUNDLE: &str = "com.example.shop";
const PROJECT: &str = "sim-project";
const EMAIL: &str = "meridian@sim-project.iam.gserviceaccount.com";

struct Rig {
    sim: Simulator,
    p8: String,
    ca_file: tempfile::NamedTempFile,
}

async fn rig() -> Rig {
    rig_with_clock(None).await
}

async fn rig_with_clock(clock: Option<Arc<dyn Clock>>) -> Rig {
    let p8 = jwt::generate_p8().unwrap();
    let apns_public = Es256Key::from_pem(&p8).unwrap().public_key();
    let fcm_public = Rs256Key::from_pem(TEST_SERVICE_ACCOUNT_KEY)
        .unwrap()
        .public_key();
    let sim = Simulator::start(SimulatorConfig {
        clock,
        tls_addr: Some("127.0.0.1:0".parse().unwrap()),
        plain_addr: Some("127.0.0.1:0".parse().unwrap()),
        apns_keys: vec![ApnsKey {
            key_id: KEY_ID.into(),
            team_id: TEAM_ID.into(),
            public_key: apns_public,
        }],
        apns_topics: vec![BUNDLE.into()],
        fcm_accounts: vec![FcmAccount {
            client_email: EMAIL.into(),
            project_id: PROJECT.into(),
            public_key: fcm_public,
        }],
        behaviour: Behaviour::default(),
    })
    .await
    .unwrap();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &sim.ca_pem).unwrap();
    Rig { sim, p8, ca_file }
}

impl Rig {
    fn http(&self) -> HttpSettings {
        HttpSettings {
            ca_file: Some(self.ca_file.path().to_owned()),
            timeout: Duration::from_secs(10),
            connections: 1,
        }
    }

    fn apns(&self, clock: Arc<dyn Clock>) -> ApnsClient {
        ApnsClient::new(
            ApnsSettings {
                base_url: self.sim.tls_url().unwrap(),
                bundle_id: BUNDLE.into(),
                credentials: ApnsCredentials::Token {
                    key_pem: self.p8.clone(),
                    key_id: KEY_ID.into(),
                    team_id: TEAM_ID.into(),
                },
                http: self.http(),
                concurrency: 256,
            },
            clock,
        )
        .unwrap()
    }

    fn fcm(&self, clock: Arc<dyn Clock>) -> FcmClient {
        let base = self.sim.tls_url().unwrap();
        FcmClient::new(
            FcmSettings {
                base_url: base.clone(),
                account: ServiceAccount {
                    project_id: PROJECT.into(),
                    client_email: EMAIL.into(),
                    private_key: TEST_SERVICE_ACCOUNT_KEY.into(),
                    token_uri: format!("{base}/token"),
                },
                http: self.http(),
                concurrency: 256,
            },
            clock,
        )
        .unwrap()
    }

    fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        let mut b = self.sim.behaviour();
        f(&mut b);
        self.sim.set_behaviour(b);
    }
}

/// What the clients log, captured for one test (a thread-local subscriber: the
/// test's current-thread runtime runs every task on this thread).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The captured lines containing `needle`, and everything captured (for
    /// the assertion's message).
    fn lines_with(&self, needle: &str) -> (Vec<String>, String) {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        let lines = text
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect();
        (lines, text)
    }
}

/// Captures warnings and above until the guard is dropped.
fn capture_warnings() -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// An APNs client of `r`'s simulator signing with `key_pem`, trusting what
/// `http` names.
fn apns_client(r: &Rig, key_pem: String, http: HttpSettings) -> ApnsClient {
    ApnsClient::new(
        ApnsSettings {
            base_url: r.sim.tls_url().unwrap(),
            bundle_id: BUNDLE.into(),
            credentials: ApnsCredentials::Token {
                key_pem,
                key_id: KEY_ID.into(),
                team_id: TEAM_ID.into(),
            },
            http,
            concurrency: 256,
        },
        Arc::new(SystemClock),
    )
    .unwrap()
}

/// A provider whose certificate this machine does not trust (another CA than
/// the one named in `ca_file`): the send is retried, its reason says why in
/// plain words, and the failure is logged as one warning however often it
/// repeats within the minute.
#[tokio::test]
async fn an_untrusted_provider_certificate_is_explained_and_logged_once() {
    let r = rig().await;
    let other = rig().await;
    let (logs, _guard) = capture_warnings();
    let client = apns_client(&r, r.p8.clone(), other.http());
    for n in 0..3 {
        let outcome = send_apns(&client, &hex_token(n), 1 + n as i64).await;
        let Outcome::Retry { reason, .. } = &outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            reason.contains("certificate is not signed by a CA this machine trusts"),
            "{reason}"
        );
        // rustls's own words stay, after the plain ones.
        assert!(reason.contains("(invalid peer certificate"), "{reason}");
        // Past the reconnect backoff, so each send tries to connect again.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let (warnings, text) = logs.lines_with("Cannot connect to the push provider");
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("WARN"), "{text}");
    assert!(warnings[0].contains("not signed by a CA"), "{text}");
    assert_eq!(r.sim.stats().apns_accepted, 0);
}

/// An APNs key the provider does not know: every send is `AuthFailed`
/// (after the one re-sign), logged as one warning a minute, not one a send.
#[tokio::test]
async fn refused_credentials_are_logged_once_a_minute() {
    let r = rig().await;
    let (logs, _guard) = capture_warnings();
    let client = apns_client(&r, jwt::generate_p8().unwrap(), r.http());
    for n in 0..3 {
        let outcome = send_apns(&client, &hex_token(n), 1 + n as i64).await;
        assert!(
            matches!(&outcome, Outcome::AuthFailed { reason } if reason.starts_with("InvalidProviderToken")),
            "{outcome:?}"
        );
    }
    let (warnings, text) = logs.lines_with("refused our credentials");
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("InvalidProviderToken"), "{text}");
    assert!(warnings[0].contains("provider=\"apns\""), "{text}");
}

fn hex_token(n: u64) -> String {
    format!("{n:064x}")
}

fn message() -> Message {
    Message {
        title: "Order shipped".into(),
        body: "Your order 1234 is on its way".into(),
        deeplink: Some("shop://orders/1234".into()),
        ..Message::default()
    }
}

fn apns_payload(id: &str) -> Vec<u8> {
    serde_json::to_vec(&payload::apns_payload(
        &message(),
        None,
        Envelope {
            message_id: id,
            receipt: None,
        },
    ))
    .unwrap()
}

async fn send_apns(client: &ApnsClient, token: &str, delivery: i64) -> Outcome {
    let id = apns_id_for(DeliveryId::new(delivery));
    let body = apns_payload(&id);
    client
        .send(&ApnsNotification {
            device_token: token,
            apns_id: &id,
            payload: &body,
            priority: ApnsPriority::Immediate,
            expiration: None,
            collapse_id: Some("campaign-7"),
        })
        .await
}

fn fcm_body(token: &str) -> serde_json::Value {
    payload::fcm_message(
        &message(),
        FcmTarget {
            token,
            locale: None,
            ios: false,
            collapse_key: Some("campaign-7"),
        },
        Envelope {
            message_id: "00000000-0000-4000-8000-000000000001",
            receipt: None,
        },
    )
}

#[tokio::test]
async fn apns_accepts_and_echoes_our_id() {
    let rig = rig().await;
    let client = rig.apns(Arc::new(SystemClock));
    let outcome = send_apns(&client, &hex_token(1), 42).await;
    assert_eq!(
        outcome,
        Outcome::Accepted {
            provider_id: Some(apns_id_for(DeliveryId::new(42)))
        }
    );
    let stats = rig.sim.stats();
    assert_eq!(stats.accepted_per_token[&hex_token(1)], 1);
    assert_eq!(stats.apns_accepted, 1);
}

#[tokio::test]
async fn apns_many_concurrent_streams_each_device_once() {
    let rig = rig().await;
    let client = Arc::new(rig.apns(Arc::new(SystemClock)));
    let sends = (0..500u64).map(|i| {
        let client = client.clone();
        async move { send_apns(&client, &hex_token(1000 + i), i as i64).await }
    });
    let outcomes = futures::future::join_all(sends).await;
    assert!(
        outcomes.iter().all(Outcome::is_accepted),
        "{:?}",
        outcomes.iter().find(|o| !o.is_accepted())
    );
    let stats = rig.sim.stats();
    assert_eq!(stats.apns_accepted, 500);
    assert!(stats.accepted_per_token.values().all(|n| *n == 1));
    assert_eq!(
        stats.apns_token_iats.len(),
        1,
        "one provider token shared by every send"
    );
}

#[tokio::test]
async fn apns_dead_token_is_token_invalid_and_the_device_is_marked() {
    use meridian::config::DatabaseConfig;
    use meridian::domain::state::DeviceState;
    use meridian::store::{AppRecord, DeviceUpsert, SqliteStore, Store};
    let rig = rig().await;
    let client = rig.apns(Arc::new(SystemClock));
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&DatabaseConfig {
        url: format!("sqlite://{}/m.db", dir.path().display()),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let now = SystemClock.now();
    store
        .app_sync(
            &AppRecord {
                id: "shop".into(),
                name: "Shop".into(),
                default_timezone: "UTC".into(),
            },
            now,
        )
        .await
        .unwrap();
    let dead = format!("dead{}", &hex_token(7)[4..]);
    let device = store
        .device_upsert(
            &DeviceUpsert {
                app_id: "shop",
                user_external_id: Some("u1"),
                install_id: None,
                platform: Platform::Ios,
                token: &dead,
                timezone: None,
                locale: None,
                primary: false,
            },
            now,
        )
        .await
        .unwrap();
    let outcome = send_apns(&client, &dead, 1).await;
    let Outcome::TokenInvalid { reason } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(reason, "Unregistered");
    assert!(store
        .device_invalidate(device.id, reason, now)
        .await
        .unwrap());
    assert_eq!(
        store
            .device_get_by_token("shop", &dead)
            .await
            .unwrap()
            .unwrap()
            .state,
        DeviceState::Invalid
    );
    // A token that is not hex never leaves the process.
    assert!(matches!(
        send_apns(&client, "not-a-token", 2).await,
        Outcome::TokenInvalid { .. }
    ));
    assert_eq!(rig.sim.stats().responses_by_status.values().sum::<u64>(), 1);
}

#[tokio::test]
async fn apns_429_retry_after_is_honoured() {
    let rig = rig().await;
    let client = rig.apns(Arc::new(SystemClock));
    rig.set(|b| {
        b.fail_next = 1;
        b.fail_status = 429;
        b.retry_after_secs = Some(1);
    });
    let token = hex_token(3);
    let first = send_apns(&client, &token, 1).await;
    let Outcome::Retry { reason, after } = &first else {
        panic!("{first:?}")
    };
    assert_eq!(reason, "TooManyRequests");
    assert_eq!(*after, Some(Duration::from_secs(1)));
    let policy = RetryPolicy {
        base: Duration::from_millis(10),
        ..RetryPolicy::default()
    };
    let wait = policy.delay(1, *after, fastrand::f64()).unwrap();
    assert!(
        wait >= Duration::from_secs(1),
        "waits at least Retry-After: {wait:?}"
    );
    tokio::time::sleep(wait).await;
    assert!(send_apns(&client, &token, 1).await.is_accepted());
    let stats = rig.sim.stats();
    assert_eq!(stats.responses_by_status.get(&429), Some(&1));
    assert_eq!(stats.accepted_per_token[&token], 1);
}

#[tokio::test]
async fn apns_503_is_retried_then_accepted() {
    let rig = rig().await;
    let client = rig.apns(Arc::new(SystemClock));
    rig.set(|b| {
        b.fail_next = 2;
        b.fail_status = 503;
    });
    let policy = RetryPolicy {
        base: Duration::from_millis(5),
        ..RetryPolicy::default()
    };
    let token = hex_token(4);
    let mut attempt = 1;
    let outcome = loop {
        let o = send_apns(&client, &token, 9).await;
        match &o {
            Outcome::Retry { after, .. } => {
                tokio::time::sleep(policy.delay(attempt, *after, 0.5).unwrap()).await;
                attempt += 1;
            }
            _ => break o,
        }
    };
    assert!(outcome.is_accepted(), "{outcome:?}");
    assert_eq!(attempt, 3);
    let stats = rig.sim.stats();
    assert_eq!(stats.errors_by_reason.get("ServiceUnavailable"), Some(&2));
    assert_eq!(stats.accepted_per_token[&token], 1);
}

#[tokio::test]
async fn apns_oversized_payload_is_refused_before_sending() {
    let rig = rig().await;
    let client = rig.apns(Arc::new(SystemClock));
    let mut m = message();
    m.body = "x".repeat(5000);
    let body = serde_json::to_vec(&payload::apns_payload(
        &m,
        None,
        Envelope {
            message_id: "x",
            receipt: None,
        },
    ))
    .unwrap();
    let token = hex_token(5);
    let outcome = client
        .send(&ApnsNotification {
            device_token: &token,
            apns_id: &apns_id_for(DeliveryId::new(1)),
            payload: &body,
            priority: ApnsPriority::Normal,
            expiration: None,
            collapse_id: None,
        })
        .await;
    assert!(
        matches!(&outcome, Outcome::Rejected { reason } if reason.starts_with("PayloadTooLarge")),
        "{outcome:?}"
    );
    assert!(
        rig.sim.stats().responses_by_status.is_empty(),
        "nothing reached the wire"
    );
}

#[tokio::test]
async fn apns_jwt_is_resigned_on_schedule() {
    let rig = rig().await;
    let clock = ManualClock::new(SystemClock.now());
    let client = rig.apns(Arc::new(clock.clone()));
    let first = client.provider_token().unwrap();
    assert!(send_apns(&client, &hex_token(6), 1).await.is_accepted());
    clock.advance(TimeDelta::minutes(30));
    assert_eq!(
        client.provider_token().unwrap(),
        first,
        "kept while younger than 45 minutes"
    );
    clock.advance(TimeDelta::minutes(16));
    assert!(send_apns(&client, &hex_token(6), 2).await.is_accepted());
    let second = client.provider_token().unwrap();
    assert_ne!(second, first);
    assert_eq!(
        rig.sim.stats().apns_token_iats,
        vec![first.issued_at.timestamp(), second.issued_at.timestamp()]
    );
}

#[tokio::test]
async fn apns_jwt_is_resigned_once_on_expired_provider_token() {
    let rig = rig().await;
    let clock = ManualClock::new(SystemClock.now());
    let client = rig.apns(Arc::new(clock.clone()));
    let first = client.provider_token().unwrap();
    // Apple says the token expired while it is only 5 minutes old: re-signing so soon
    // would be refused (TooManyProviderTokenUpdates), so the failure is reported.
    clock.advance(TimeDelta::minutes(5));
    rig.set(|b| b.expire_tokens_issued_before = Some(first.issued_at.timestamp() + 1));
    let loud = send_apns(&client, &hex_token(8), 1).await;
    assert!(
        matches!(&loud, Outcome::AuthFailed { reason } if reason == "ExpiredProviderToken"),
        "{loud:?}"
    );
    assert_eq!(client.provider_token().unwrap(), first);
    // 25 minutes old: re-signed once and the send goes through.
    clock.advance(TimeDelta::minutes(20));
    assert!(send_apns(&client, &hex_token(8), 1).await.is_accepted());
    let second = client.provider_token().unwrap();
    assert!(second.issued_at > first.issued_at);
    let stats = rig.sim.stats();
    assert_eq!(stats.errors_by_reason.get("ExpiredProviderToken"), Some(&2));
    assert_eq!(stats.accepted_per_token[&hex_token(8)], 1);
}

#[tokio::test]
async fn apns_bad_topic_is_a_permanent_rejection_and_h2c_works() {
    let rig = rig().await;
    let client = ApnsClient::new(
        ApnsSettings {
            base_url: rig.sim.plain_url().unwrap(),
            bundle_id: "com.example.other".into(),
            credentials: ApnsCredentials::Token {
                key_pem: rig.p8.clone(),
                key_id: KEY_ID.into(),
                team_id: TEAM_ID.into(),
            },
            http: HttpSettings {
                ca_file: None,
                timeout: Duration::from_secs(5),
                connections: 2,
            },
            concurrency: 8,
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    assert_eq!(
        send_apns(&client, &hex_token(9), 1).await,
        Outcome::Rejected {
            reason: "BadTopic".into()
        }
    );
}

#[tokio::test]
async fn fcm_accepts_with_a_message_name() {
    let rig = rig().await;
    let client = rig.fcm(Arc::new(SystemClock));
    let outcome = client.send(&fcm_body("android-token-1")).await;
    let Outcome::Accepted {
        provider_id: Some(name),
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(
        name.starts_with(&format!("projects/{PROJECT}/messages/")),
        "{name}"
    );
    assert_eq!(rig.sim.stats().accepted_per_token["android-token-1"], 1);
}

#[tokio::test]
async fn fcm_errors_are_classified() {
    let rig = rig().await;
    let client = rig.fcm(Arc::new(SystemClock));
    let dead = client.send(&fcm_body("dead-token")).await;
    assert!(
        matches!(&dead, Outcome::TokenInvalid { reason } if reason.starts_with("UNREGISTERED")),
        "{dead:?}"
    );
    rig.set(|b| {
        b.fail_next = 1;
        b.fail_status = 429;
        b.retry_after_secs = Some(60);
    });
    let quota = client.send(&fcm_body("t-2")).await;
    assert!(
        matches!(&quota, Outcome::Retry { reason, after: Some(a) } if reason.starts_with("QUOTA_EXCEEDED") && *a == Duration::from_secs(60)),
        "{quota:?}"
    );
    rig.set(|b| {
        b.fail_next = 1;
        b.fail_status = 503;
        b.retry_after_secs = None;
    });
    assert!(matches!(
        client.send(&fcm_body("t-3")).await,
        Outcome::Retry { after: None, .. }
    ));
    assert!(client.send(&fcm_body("t-3")).await.is_accepted());
    let mut bad = fcm_body("t-4");
    bad["message"]["data"]["count"] = json!(3);
    let rejected = client.send(&bad).await;
    assert!(
        matches!(&rejected, Outcome::Rejected { reason } if reason.starts_with("INVALID_ARGUMENT")),
        "{rejected:?}"
    );
}

#[tokio::test]
async fn fcm_oauth_token_is_fetched_once_for_many_concurrent_sends() {
    let rig = rig().await;
    let client = Arc::new(rig.fcm(Arc::new(SystemClock)));
    let sends = (0..300).map(|i| {
        let client = client.clone();
        async move { client.send(&fcm_body(&format!("device-{i}"))).await }
    });
    let outcomes = futures::future::join_all(sends).await;
    assert!(
        outcomes.iter().all(Outcome::is_accepted),
        "{:?}",
        outcomes.iter().find(|o| !o.is_accepted())
    );
    let stats = rig.sim.stats();
    assert_eq!(stats.oauth_grants, 1);
    assert_eq!(stats.fcm_accepted, 300);
}

#[tokio::test]
async fn fcm_oauth_token_is_refreshed_ahead_of_expiry_and_after_401() {
    let clock = ManualClock::new(SystemClock.now());
    let rig = rig_with_clock(Some(Arc::new(clock.clone()))).await;
    let client = rig.fcm(Arc::new(clock.clone()));
    assert!(client.send(&fcm_body("d-1")).await.is_accepted());
    clock.advance(TimeDelta::minutes(50));
    assert!(client.send(&fcm_body("d-1")).await.is_accepted());
    assert_eq!(rig.sim.stats().oauth_grants, 1, "still fresh at 50 minutes");
    clock.advance(TimeDelta::minutes(6));
    assert!(client.send(&fcm_body("d-1")).await.is_accepted());
    assert_eq!(
        rig.sim.stats().oauth_grants,
        2,
        "refreshed within 5 minutes of expiry"
    );
    // Google stops accepting the token: one 401, one new grant, and the send goes through.
    rig.sim.revoke_access_tokens();
    assert!(client.send(&fcm_body("d-1")).await.is_accepted());
    let stats = rig.sim.stats();
    assert_eq!(stats.oauth_grants, 3);
    assert_eq!(stats.responses_by_status.get(&401), Some(&1));
    assert_eq!(stats.accepted_per_token["d-1"], 4);
}

#[tokio::test]
async fn apns_certificate_auth_needs_no_provider_token() {
    let rig = rig().await;
    let identity = rig.sim.issue_client_certificate(BUNDLE).unwrap();
    let client = ApnsClient::new(
        ApnsSettings {
            base_url: rig.sim.tls_url().unwrap(),
            bundle_id: BUNDLE.into(),
            credentials: ApnsCredentials::Certificate {
                pem: identity.into_bytes(),
            },
            http: rig.http(),
            concurrency: 8,
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    assert!(client.provider_token().is_none());
    assert!(send_apns(&client, &hex_token(11), 1).await.is_accepted());
    // Neither a certificate nor a token: refused, as Apple does.
    let ca = reqwest::Certificate::from_pem(rig.sim.ca_pem.as_bytes()).unwrap();
    let bare = reqwest::Client::builder()
        .use_rustls_tls()
        .http2_prior_knowledge()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let resp = bare
        .post(format!(
            "{}/3/device/{}",
            rig.sim.tls_url().unwrap(),
            hex_token(12)
        ))
        .header("apns-topic", BUNDLE)
        .header("apns-push-type", "alert")
        .body(apns_payload("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["reason"], "MissingProviderToken");
    assert_eq!(rig.sim.stats().apns_accepted, 1);
}

#[tokio::test]
async fn pacing_keeps_every_second_at_or_under_the_app_rate() {
    use meridian::config::Config;
    use meridian::provider::app::{AppProviders, Push};
    let rig = rig().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("AuthKey.p8");
    std::fs::write(&key, &rig.p8).unwrap();
    let text = format!(
        "[apps.shop.apns]\nbundle_id = \"{BUNDLE}\"\nkey_file = \"{}\"\nkey_id = \"{KEY_ID}\"\nteam_id = \"{TEAM_ID}\"\n\
         base_url = \"{}\"\nca_file = \"{}\"\n[apps.shop.apns.connection]\nrate_per_second = 100\n",
        key.display(),
        rig.sim.tls_url().unwrap(),
        rig.ca_file.path().display()
    );
    let config: Config = toml::from_str(&text).unwrap();
    config.validate().unwrap();
    let providers = Arc::new(
        AppProviders::from_config("shop", &config.apps["shop"], Arc::new(SystemClock)).unwrap(),
    );
    let m = message();
    let tokens: Vec<String> = (0..250u64).map(|i| hex_token(5000 + i)).collect();
    let sends = tokens.iter().enumerate().map(|(i, t)| {
        let providers = providers.clone();
        let m = &m;
        async move {
            providers
                .send(&Push {
                    delivery_id: DeliveryId::new(i as i64),
                    platform: Platform::Ios,
                    token: t,
                    locale: None,
                    message: m,
                    collapse_key: None,
                    expires_at: None,
                })
                .await
        }
    });
    let outcomes = futures::future::join_all(sends).await;
    assert!(outcomes.iter().all(Outcome::is_accepted));
    let per_second = rig.sim.stats().accepted_per_second;
    assert!(per_second.values().all(|n| *n <= 100), "{per_second:?}");
    assert!(
        per_second.len() >= 3,
        "250 sends at 100/s span three seconds: {per_second:?}"
    );
}
