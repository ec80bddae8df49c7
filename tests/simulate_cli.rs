//! `meridian simulate` as ops run it, and one app's providers built from the
//! same config file sending through it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use meridian::clock::SystemClock;
use meridian::config::Config;
use meridian::domain::campaign::{Message, Platform};
use meridian::provider::app::{AppProviders, Push};
use meridian::provider::{jwt, Outcome};
use meridian::simulator::TEST_SERVICE_ACCOUNT_KEY;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn simulate_trusts_the_configured_keys_and_providers_send_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("AuthKey.p8"), jwt::generate_p8().unwrap()).unwrap();
    let port = common::free_port();
    let base = format!("https://127.0.0.1:{port}");
    let account = serde_json::json!({
        "type": "service_account",
        "project_id": "demo-project",
        "client_email": "meridian@demo-project.iam.gserviceaccount.com",
        "private_key": TEST_SERVICE_ACCOUNT_KEY,
        "token_uri": format!("{base}/token"),
    });
    std::fs::write(p("sa.json"), account.to_string()).unwrap();
    let config_text = |ca: &str| {
        format!(
            r#"
[apps.shop.apns]
bundle_id = "com.example.shop"
key_file = "{key}"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
base_url = "{base}"
{ca}
[apps.shop.fcm]
service_account_file = "{sa}"
base_url = "{base}"
{ca}
"#,
            key = p("AuthKey.p8").display(),
            sa = p("sa.json").display(),
        )
    };
    std::fs::write(p("sim.toml"), config_text("")).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "--config",
            p("sim.toml").to_str().unwrap(),
            "simulate",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--ca-out")
        .arg(p("ca.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.ends_with("ready"));
    assert!(ready, "simulator did not start");

    let ca_line = format!("ca_file = \"{}\"", p("ca.pem").display());
    let config: Config = toml::from_str(&config_text(&ca_line)).unwrap();
    config.validate().unwrap();
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

    let ca = reqwest::Certificate::from_pem(&std::fs::read(p("ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .unwrap();
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
    drop(child);
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
