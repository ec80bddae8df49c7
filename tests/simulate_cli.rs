//! `meridian simulate` as ops run it, and one app's providers built from the
//! same config file sending through it.

mod common;

use std::process::Command;
use std::sync::Arc;

use meridian::clock::SystemClock;
use meridian::domain::campaign::{Message, Platform};
use meridian::provider::app::{AppProviders, Push};
use meridian::provider::Outcome;

use common::sim::SimProcess;

#[tokio::test]
async fn simulate_trusts_the_configured_keys_and_providers_send_through_it() {
    // The shared helper runs `meridian simulate --config … --ca-out …` and
    // waits for its "ready" line; the providers read the same config file's keys.
    let sim = SimProcess::start(0);
    let config = sim.config("", "", "");
    let providers =
        AppProviders::from_config("shop", &config.apps["shop"], Arc::new(SystemClock)).unwrap();
    let message = Message {
        title: "Hi".into(),
        body: "There".into(),
        ..Message::default()
    };
    let ios_token = format!("{:064x}", 77);
    for (i, (platform, token)) in [
        (Platform::Ios, ios_token.as_str()),
        (Platform::Android, "android-77"),
    ]
    .into_iter()
    .enumerate()
    {
        let outcome = providers
            .send(&Push {
                delivery_id: meridian::domain::ids::DeliveryId::new(i as i64 + 1),
                platform,
                token,
                locale: None,
                message: &message,
                collapse_key: Some("campaign-1"),
                expires_at: None,
            })
            .await;
        assert!(
            matches!(outcome, Outcome::Accepted { .. }),
            "{platform:?}: {outcome:?}"
        );
    }

    let stats = sim.stats().await;
    assert_eq!(stats["apns_accepted"], 1);
    assert_eq!(stats["fcm_accepted"], 1);
    assert_eq!(stats["accepted_per_token"][&ios_token], 1);
    assert_eq!(stats["oauth_grants"], 1);
}

#[test]
fn simulate_refuses_a_bad_key_file_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("AuthKey.p8");
    std::fs::write(&key, "not a key").unwrap();
    let cfg = dir.path().join("sim.toml");
    std::fs::write(
        &cfg,
        format!("[apps.shop.apns]\nbundle_id = \"b\"\nkey_file = \"{}\"\nkey_id = \"K\"\nteam_id = \"T\"\n", key.display()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "simulate",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("key"), "{err}");
}

/// `meridian check-providers` proves each app's credentials with one request
/// per provider and says in a line each what works; a key the provider does
/// not know, or a service account it does not know, fails with its reason and
/// exit 1. FCM's check is `validate_only`: nothing is delivered or counted.
#[tokio::test]
async fn check_providers_says_which_credentials_work() {
    let sim = SimProcess::start(0);
    let dir = tempfile::tempdir().unwrap();
    let run = |toml: &str, args: &[&str]| {
        let cfg = dir.path().join("m.toml");
        std::fs::write(&cfg, toml).unwrap();
        Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("--config")
            .arg(&cfg)
            .arg("check-providers")
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let good = sim.app_toml("", "");
    let out = run(&good, &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("shop apns: ok: credentials accepted"),
        "{text}"
    );
    assert!(
        text.contains("shop fcm: ok: credentials accepted"),
        "{text}"
    );
    let stats = sim.stats().await;
    assert_eq!(stats["fcm_accepted"], 0, "validate_only counted as a send");
    assert_eq!(stats["oauth_grants"], 1);

    // Another APNs key under the same id, and a service account Google does
    // not know: both named, exit 1.
    let other_key = dir.path().join("other.p8");
    std::fs::write(&other_key, meridian::provider::jwt::generate_p8().unwrap()).unwrap();
    let sa: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sim.path("sa.json")).unwrap()).unwrap();
    let mut unknown = sa.clone();
    unknown["client_email"] = "someone-else@p.iam.gserviceaccount.com".into();
    let other_sa = dir.path().join("other-sa.json");
    std::fs::write(&other_sa, unknown.to_string()).unwrap();
    let bad = good
        .replace(
            &sim.path("key.p8").display().to_string(),
            &other_key.display().to_string(),
        )
        .replace(
            &sim.path("sa.json").display().to_string(),
            &other_sa.display().to_string(),
        );
    let out = run(&bad, &["--app", "shop"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("shop apns: FAILED: credentials refused: InvalidProviderToken"),
        "{text}"
    );
    assert!(text.contains("shop fcm: FAILED:"), "{text}");
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 of 2 provider checks failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An app that is not configured is an input error (exit 2).
    let out = run(&good, &["--app", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}
