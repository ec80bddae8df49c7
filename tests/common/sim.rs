//! The provider simulator in its own process (`meridian simulate`), as a user
//! runs it beside the daemon, and the config of app `shop` sending to it. One
//! helper for the tests and the benchmarks (`benches/common` includes this file).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use meridian::config::Config;
use meridian::provider::jwt;
use meridian::simulator::TEST_SERVICE_ACCOUNT_KEY;

/// A running `meridian simulate`, killed on drop, and the key files it trusts.
pub struct SimProcess {
    child: Child,
    pub port: u16,
    /// Holds the key files, the simulator's config and its CA (`ca.pem`).
    pub dir: tempfile::TempDir,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SimProcess {
    /// Starts the simulator, answering each request after `latency_ms`, and
    /// waits until it is ready. It trusts the APNs key and the FCM service
    /// account of app `shop` as [`SimProcess::app_toml`] configures it.
    pub fn start(latency_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.p8"), jwt::generate_p8().unwrap()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let account = serde_json::json!({
            "type": "service_account", "project_id": "p",
            "client_email": "m@p.iam.gserviceaccount.com",
            "private_key": TEST_SERVICE_ACCOUNT_KEY,
            "token_uri": format!("https://127.0.0.1:{port}/token"),
        });
        std::fs::write(dir.path().join("sa.json"), account.to_string()).unwrap();
        std::fs::write(
            dir.path().join("sim.toml"),
            apps_toml(dir.path(), port, "", "", false),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("--config")
            .arg(dir.path().join("sim.toml"))
            .args(["simulate", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--latency-ms", &latency_ms.to_string()])
            .arg("--ca-out")
            .arg(dir.path().join("ca.pem"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        // Killed on drop from here on, even if it never becomes ready.
        let sim = SimProcess { child, port, dir };
        let ready = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.ends_with("ready"));
        assert!(ready, "the simulator did not start");
        sim
    }

    /// `https://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The simulator's process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// App `shop` with APNs and FCM pointed at the simulator, trusting its CA:
    /// `app` lines end the `[apps.shop]` table (a default zone, topics), and
    /// `connection` lines fill each provider's `connection` table.
    pub fn app_toml(&self, app: &str, connection: &str) -> String {
        apps_toml(self.dir.path(), self.port, app, connection, true)
    }

    /// [`SimProcess::app_toml`] with `extra` tables after it, parsed and validated.
    pub fn config(&self, app: &str, connection: &str, extra: &str) -> Config {
        let text = format!("{}\n{extra}", self.app_toml(app, connection));
        let config: Config = toml::from_str(&text).unwrap();
        config.validate().unwrap();
        config
    }

    /// What the simulator has counted (`/_sim/stats`).
    pub async fn stats(&self) -> serde_json::Value {
        self.http()
            .get(format!("{}/_sim/stats", self.base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// An HTTP client that trusts the simulator (for `/_sim/stats`).
    pub fn http(&self) -> reqwest::Client {
        let pem = std::fs::read(self.path("ca.pem")).unwrap();
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }
}

fn apps_toml(dir: &Path, port: u16, app: &str, connection: &str, with_ca: bool) -> String {
    let base = format!("https://127.0.0.1:{port}");
    let ca = if with_ca {
        format!("ca_file = \"{}\"", dir.join("ca.pem").display())
    } else {
        String::new()
    };
    format!(
        r#"
[apps.shop]
{app}
[apps.shop.apns]
bundle_id = "com.example.shop"
key_file = "{key}"
key_id = "KEY1234567"
team_id = "TEAM123456"
base_url = "{base}"
{ca}
[apps.shop.apns.connection]
{connection}
[apps.shop.fcm]
service_account_file = "{sa}"
base_url = "{base}"
{ca}
[apps.shop.fcm.connection]
{connection}
"#,
        key = dir.join("key.p8").display(),
        sa = dir.join("sa.json").display(),
    )
}
