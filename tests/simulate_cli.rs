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
    let base = sim.base();
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

    let http = sim.http();
    let stats: serde_json::Value = http
        .get(format!("{base}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
