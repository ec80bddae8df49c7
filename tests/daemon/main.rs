//! `meridian serve` as a process: killed mid-dispatch, stopped with SIGTERM, and
//! two instances sharing one Postgres, all sending to `meridian simulate`.

#[path = "../common/mod.rs"]
mod common;

use meridian::store::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::sim::SimProcess;
use meridian::clock::{Clock, SystemClock};
use meridian::config::{Config, DatabaseConfig};
use meridian::definitions;
use meridian::domain::campaign::Platform;
use meridian::domain::state::CampaignState;
use meridian::store::{AnyStore, DeviceUpsert, Store};
use meridian::with_store;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then a clean exit within the grace period (10 s in these configs).
    fn terminate(&mut self) {
        self.signal("-TERM");
        let status = self
            .wait_exit(Duration::from_secs(15))
            .expect("exits within the grace period");
        assert!(status.success(), "{status:?}");
    }

    /// Waits for the process to exit by itself.
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

struct Setup {
    /// The daemons' configs, databases and campaigns.
    dir: tempfile::TempDir,
    sim: SimProcess,
    http: reqwest::Client,
}

/// App `shop` as the daemons run it (its providers come from the simulator helper).
const SHOP: &str =
    "default_timezone = \"UTC\"\n[apps.shop.topics]\nmarketing = { default_subscribed = false }";

const DEVICES: u32 = 1000;
/// chunks_in_flight × (sends_per_chunk + flush_every) below: the most a kill can duplicate.
const DUPLICATE_BOUND: u64 = 2 * (16 + 8);

fn path(dir: &Path, n: &str) -> PathBuf {
    dir.join(n)
}

async fn setup(latency_ms: u64) -> Setup {
    let sim = SimProcess::start(latency_ms);
    Setup {
        dir: tempfile::tempdir().unwrap(),
        http: sim.http(),
        sim,
    }
}

impl Setup {
    fn serve_config(&self, name: &str, db_url: &str) -> PathBuf {
        let d = self.dir.path();
        std::fs::create_dir_all(path(d, "campaigns")).unwrap();
        let text = format!(
            r#"
[database]
url = "{db_url}"
[server]
listen = "127.0.0.1:0"
[campaigns]
dir = "{campaigns}"
[engine]
worker_id = "{name}"
chunk_size = 50
lease = "2s"
chunks_in_flight = 2
sends_per_chunk = 16
flush_every = 8
tick = "100ms"
shutdown_grace = "10s"
{apps}
"#,
            campaigns = path(d, "campaigns").display(),
            apps = self.sim.app_toml(SHOP, ""),
        );
        let file = path(d, &format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        file
    }

    fn serve(&self, config: &Path) -> Proc {
        let mut cmd = serve_command(config);
        Proc(cmd.env("RUST_LOG", "warn").spawn().unwrap())
    }

    async fn stats(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/_sim/stats", self.sim.base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn accepted(&self) -> HashMap<String, u64> {
        serde_json::from_value(self.stats().await["accepted_per_token"].clone()).unwrap()
    }

    /// Waits until `pred` holds on the per-token counts.
    async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&HashMap<String, u64>) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            if pred(&self.accepted().await) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every token was sent to, then checks none was sent to twice.
    async fn assert_each_served_once(&self, tokens: &[String], why: &str) {
        self.wait_for(
            "everyone served",
            Duration::from_secs(90),
            all_served(tokens),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let counts = self.accepted().await;
        assert!(tokens.iter().all(|t| counts[t] == 1), "{why}");
    }

    /// Seeds the audience and writes a "now" campaign file.
    async fn seed(&self, db_url: &str) -> Vec<String> {
        let config: Config = self.sim.config(SHOP, "", "");
        let store = AnyStore::connect(&DatabaseConfig {
            url: db_url.into(),
            ..DatabaseConfig::default()
        })
        .await
        .unwrap();
        let tokens = with_store!(&store, s => seed_store(s, &config).await);
        std::fs::create_dir_all(path(self.dir.path(), "campaigns")).unwrap();
        std::fs::write(
            path(self.dir.path(), "campaigns/now.toml"),
            "key = \"now\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Hi\"\nbody = \"There\"\n\
             [audience]\ntopics = [\"marketing\"]\n[schedule]\ntype = \"now\"\n",
        )
        .unwrap();
        tokens
    }
}

/// `meridian --config CONFIG serve` with stdout discarded and no `RUST_LOG` (so
/// `log.level` decides) nor service manager variables from the test's environment.
fn serve_command(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    cmd.arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null());
    for var in [
        "RUST_LOG",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Sets `server.listen` to `port` and appends `tables` to the config file.
fn listen_on(config: &Path, port: u16, tables: &str) {
    let text = std::fs::read_to_string(config).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(config, format!("{text}\n{tables}")).unwrap();
}

/// `meridian apikey create` for the app `shop`; returns the secret.
fn create_api_key(config: &Path) -> String {
    let created = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("--config")
        .arg(config)
        .args(["apikey", "create", "--app", "shop", "--name", "backend"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    String::from_utf8_lossy(&created.stdout).trim().to_owned()
}

/// The process's stderr (its logs) goes to `file`.
fn logs_to(cmd: &mut Command, file: &Path) {
    cmd.stderr(std::fs::File::create(file).unwrap());
}

/// Waits until `GET {base}/health` answers 200.
async fn wait_healthy(base: &str, within: Duration) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the API never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn seed_store<S: Store>(s: &S, config: &Config) -> Vec<String> {
    let now = SystemClock.now();
    s.migrate().await.unwrap();
    definitions::sync_apps(s, config, now).await.unwrap();
    let mut tokens = Vec::new();
    for n in 0..DEVICES {
        let user = format!("u{n}");
        let (platform, token) = if n % 2 == 0 {
            (
                Platform::Ios,
                format!("{:064x}", 0xabc0_0000u64 + u64::from(n)),
            )
        } else {
            (Platform::Android, format!("fcm-{n}"))
        };
        s.device_upsert(
            &DeviceUpsert {
                app_id: "shop",
                user_external_id: Some(&user),
                install_id: None,
                platform,
                token: &token,
                timezone: Some("UTC"),
                locale: None,
                primary: false,
            },
            now,
        )
        .await
        .unwrap();
        s.subscription_set("shop", &user, &[("marketing", true)], now)
            .await
            .unwrap();
        tokens.push(token);
    }
    s.close().await;
    tokens
}

fn all_served(tokens: &[String]) -> impl Fn(&HashMap<String, u64>) -> bool + '_ {
    move |m| tokens.iter().all(|t| m.get(t).copied().unwrap_or(0) >= 1)
}

mod cluster;
mod crash;
mod systemd;
mod tls;

use cluster::OwnPostgres;
