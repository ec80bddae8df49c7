//! The provider simulator in its own process (`meridian simulate`), as a user
//! would run it beside the daemon, and the config of app `shop` sending to it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use meridian::config::Config;
use meridian::provider::jwt;
use meridian::simulator::TEST_SERVICE_ACCOUNT_KEY;

/// A running simulator and the app config that trusts it.
pub struct Sim {
    pub child: Child,
    /// `https://127.0.0.1:PORT`.
    pub base: String,
    pub dir: tempfile::TempDir,
    /// App `shop` with APNs and FCM pointed at the simulator; `extra` appended.
    pub config: Config,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the simulator and waits until it is ready. `connection` is added to
/// each provider's `connection` table (e.g. `rate_per_second = 10000`); `extra`
/// ends the config (other tables, such as `[server.push]`).
pub fn start(connection: &str, extra: &str) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("key.p8"), jwt::generate_p8().unwrap()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("https://127.0.0.1:{port}");
    let sa = serde_json::json!({"project_id": "p", "client_email": "m@p.iam.gserviceaccount.com",
        "private_key": TEST_SERVICE_ACCOUNT_KEY, "token_uri": format!("{base}/token")});
    std::fs::write(p("sa.json"), sa.to_string()).unwrap();
    let apps = |ca: &str| {
        format!(
            "[apps.shop]\n[apps.shop.topics]\nmarketing = {{ default_subscribed = false }}\n\
             [apps.shop.apns]\nbundle_id = \"com.example.shop\"\nkey_file = \"{}\"\nkey_id = \"K\"\nteam_id = \"T\"\nbase_url = \"{base}\"\n{ca}\n\
             [apps.shop.apns.connection]\nconnections = 2\nconcurrency = 1024\n{connection}\
             [apps.shop.fcm]\nservice_account_file = \"{}\"\nbase_url = \"{base}\"\n{ca}\n\
             [apps.shop.fcm.connection]\nconnections = 2\nconcurrency = 1024\n{connection}",
            p("key.p8").display(),
            p("sa.json").display()
        )
    };
    std::fs::write(p("sim.toml"), apps("")).unwrap();
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
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    assert!(BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.ends_with("ready")));
    let text = format!(
        "{}\n{extra}",
        apps(&format!("ca_file = \"{}\"", p("ca.pem").display()))
    );
    let config: Config = toml::from_str(&text).unwrap();
    config.validate().unwrap();
    Sim {
        child,
        base,
        dir,
        config,
    }
}
