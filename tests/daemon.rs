//! `meridian serve` as a process: killed mid-dispatch, stopped with SIGTERM, and
//! two instances sharing one Postgres, all sending to `meridian simulate`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian::campaign::Platform;
use meridian::clock::{Clock, SystemClock};
use meridian::config::{Config, DatabaseConfig};
use meridian::definitions;
use meridian::provider::jwt;
use meridian::simulator::TEST_SERVICE_ACCOUNT_KEY;
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
    dir: tempfile::TempDir,
    port: u16,
    _sim: Proc,
    http: reqwest::Client,
}

const DEVICES: u32 = 1000;
/// chunks_in_flight × (sends_per_chunk + flush_every) below: the most a kill can duplicate.
const DUPLICATE_BOUND: u64 = 2 * (16 + 8);

fn path(dir: &Path, n: &str) -> PathBuf {
    dir.join(n)
}

async fn setup(latency_ms: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(path(d, "key.p8"), jwt::generate_p8().unwrap()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sa = serde_json::json!({
        "project_id": "p", "client_email": "m@p.iam.gserviceaccount.com",
        "private_key": TEST_SERVICE_ACCOUNT_KEY, "token_uri": format!("https://127.0.0.1:{port}/token"),
    });
    std::fs::write(path(d, "sa.json"), sa.to_string()).unwrap();
    std::fs::write(path(d, "sim.toml"), apps_toml(d, port, false)).unwrap();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("--config")
        .arg(path(d, "sim.toml"))
        .args([
            "simulate",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--latency-ms",
            &latency_ms.to_string(),
        ])
        .arg("--ca-out")
        .arg(path(d, "ca.pem"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = sim.stdout.take().unwrap();
    assert!(BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.ends_with("ready")));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(path(d, "ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    Setup {
        dir,
        port,
        _sim: Proc(sim),
        http,
    }
}

fn apps_toml(d: &Path, port: u16, with_ca: bool) -> String {
    let ca = if with_ca {
        format!("ca_file = \"{}\"", path(d, "ca.pem").display())
    } else {
        String::new()
    };
    format!(
        r#"
[apps.shop]
default_timezone = "UTC"
[apps.shop.topics]
marketing = {{ default_subscribed = false }}
[apps.shop.apns]
bundle_id = "com.example.shop"
key_file = "{key}"
key_id = "KEY1234567"
team_id = "TEAM123456"
base_url = "https://127.0.0.1:{port}"
{ca}
[apps.shop.fcm]
service_account_file = "{sa}"
base_url = "https://127.0.0.1:{port}"
{ca}
"#,
        key = path(d, "key.p8").display(),
        sa = path(d, "sa.json").display(),
    )
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
            apps = apps_toml(d, self.port, true),
        );
        let file = path(d, &format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        file
    }

    fn serve(&self, config: &Path) -> Proc {
        Proc(
            Command::new(env!("CARGO_BIN_EXE_meridian"))
                .arg("--config")
                .arg(config)
                .arg("serve")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    async fn stats(&self) -> serde_json::Value {
        self.http
            .get(format!("https://127.0.0.1:{}/_sim/stats", self.port))
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

    /// Seeds the audience and writes a "now" campaign file.
    async fn seed(&self, db_url: &str) -> Vec<String> {
        let config: Config = toml::from_str(&apps_toml(self.dir.path(), self.port, true)).unwrap();
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
        s.upsert_device(
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
        s.set_subscriptions("shop", &user, &[("marketing", true)], now)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_dispatch_then_restart_serves_everyone_with_bounded_duplicates() {
    let setup = setup(40).await;
    let db = format!("sqlite://{}", path(setup.dir.path(), "m.db").display());
    let tokens = setup.seed(&db).await;
    let config = setup.serve_config("a", &db);
    let mut first = setup.serve(&config);
    setup
        .wait_for("a quarter sent", Duration::from_secs(60), |m| {
            m.len() >= tokens.len() / 4
        })
        .await;
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let at_kill = setup.accepted().await.len();
    assert!(
        at_kill < tokens.len(),
        "killed after everything was sent; slow the simulator down"
    );
    let _second = setup.serve(&config);
    setup
        .wait_for(
            "everyone served",
            Duration::from_secs(90),
            all_served(&tokens),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = setup.accepted().await;
    let total: u64 = tokens.iter().map(|t| counts[t]).sum();
    let duplicates = total - tokens.len() as u64;
    assert!(
        duplicates <= DUPLICATE_BOUND,
        "{duplicates} duplicates, bound {DUPLICATE_BOUND}"
    );
}

/// `meridian serve` answers the REST API on `server.listen` with a key created by
/// `meridian apikey create`, and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_the_api_with_a_cli_key() {
    let setup = setup(0).await;
    let db = format!("sqlite://{}", path(setup.dir.path(), "api.db").display());
    let config = setup.serve_config("api", &db);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&config, text).unwrap();
    let created = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("--config")
        .arg(&config)
        .args(["apikey", "create", "--app", "shop", "--name", "backend"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let key = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let mut daemon = setup.serve(&config);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the API never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let put = |key: &str| {
        http.put(format!("{base}/v1/users/u-api"))
            .bearer_auth(key)
            .json(&serde_json::json!({"timezone": "Asia/Kathmandu"}))
            .send()
    };
    assert_eq!(put(&key).await.unwrap().status().as_u16(), 200);
    assert_eq!(put("mrd_wrong").await.unwrap().status().as_u16(), 401);
    daemon.signal("-TERM");
    let status = daemon
        .wait_exit(Duration::from_secs(15))
        .expect("exits within the grace period");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_restart_finishes_with_no_duplicates() {
    let setup = setup(40).await;
    let db = format!("sqlite://{}", path(setup.dir.path(), "m.db").display());
    let tokens = setup.seed(&db).await;
    let config = setup.serve_config("a", &db);
    let mut first = setup.serve(&config);
    setup
        .wait_for("a quarter sent", Duration::from_secs(60), |m| {
            m.len() >= tokens.len() / 4
        })
        .await;
    first.signal("-TERM");
    let status = first
        .wait_exit(Duration::from_secs(15))
        .expect("exits within the grace period");
    assert!(status.success(), "{status:?}");
    let after_stop = setup.accepted().await.len();
    assert!(
        after_stop < tokens.len(),
        "stopped after everything was sent; slow the simulator down"
    );
    let _second = setup.serve(&config);
    setup
        .wait_for(
            "everyone served",
            Duration::from_secs(90),
            all_served(&tokens),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = setup.accepted().await;
    assert!(
        tokens.iter().all(|t| counts[t] == 1),
        "a drained stop must not duplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_share_the_work_without_duplicates() {
    let Some(db) = common::postgres().await else {
        return;
    };
    let setup = setup(5).await;
    let tokens = setup.seed(&db.url).await;
    let a = setup.serve(&setup.serve_config("instance-a", &db.url));
    let b = setup.serve(&setup.serve_config("instance-b", &db.url));
    setup
        .wait_for(
            "everyone served",
            Duration::from_secs(90),
            all_served(&tokens),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = setup.accepted().await;
    assert!(
        tokens.iter().all(|t| counts[t] == 1),
        "two instances sent a message twice"
    );
    drop(a);
    drop(b);
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let workers: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT finished_by FROM slot_chunks WHERE finished_by IS NOT NULL ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(
        workers,
        ["instance-a", "instance-b"],
        "both instances did work"
    );
    use sqlx::Connection;
    c.close().await.ok();
    db.finish().await;
}

/// A throwaway Postgres cluster of our own (initdb into a temp dir, its own port),
/// so stopping it never disturbs the shared server the other tests use.
struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl OwnPostgres {
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())?;
        let dir = tempfile::tempdir().ok()?;
        // initdb refuses to run as root; the cluster belongs to the postgres user.
        let as_postgres = running_as_root();
        let chown = |p: &Path| {
            if as_postgres {
                let _ = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(p)
                    .status();
            }
        };
        chown(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let data = dir.path().join("data");
        let ok = run_pg(
            as_postgres,
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str()?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        if !ok {
            return None;
        }
        let pg = Self { dir, bin, port };
        pg.pg_ctl("start").then_some(pg)
    }

    fn pg_ctl(&self, action: &str) -> bool {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut args = vec![
            "-D",
            data.to_str().unwrap_or(""),
            "-l",
            log.to_str().unwrap_or(""),
            "-w",
            "-o",
            &opts,
        ];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        }
        args.push(action);
        run_pg(running_as_root(), &self.bin.join("pg_ctl"), &args)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.pg_ctl("stop");
    }
}

/// Whether this process runs as root (then the cluster runs as `postgres`).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn run_pg(as_postgres: bool, program: &Path, args: &[&str]) -> bool {
    let status = if as_postgres {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .status()
    } else {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .status()
    };
    status.map(|s| s.success()).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_during_dispatch_loses_nothing() {
    let Some(pg) = OwnPostgres::start() else {
        let required = std::env::var("MERIDIAN_REQUIRE_PG").is_ok_and(|v| v == "1" || v == "true");
        assert!(
            !required,
            "Postgres binaries (initdb, pg_ctl) are required for the outage test"
        );
        eprintln!("SKIPPED: no Postgres binaries to start a throwaway cluster");
        return;
    };
    let setup = setup(40).await;
    let tokens = setup.seed(&pg.url()).await;
    let _serve = setup.serve(&setup.serve_config("outage", &pg.url()));
    setup
        .wait_for("a quarter sent", Duration::from_secs(60), |m| {
            m.len() >= tokens.len() / 4
        })
        .await;
    assert!(pg.pg_ctl("stop"), "stopping the throwaway Postgres");
    let during = setup.accepted().await.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pg.pg_ctl("start"), "starting it again");
    assert!(
        during < tokens.len(),
        "the outage came after everything was sent; slow the simulator down"
    );
    setup
        .wait_for(
            "everyone served after the outage",
            Duration::from_secs(120),
            all_served(&tokens),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = setup.accepted().await;
    let total: u64 = tokens.iter().map(|t| counts[t]).sum();
    let duplicates = total - tokens.len() as u64;
    assert!(
        duplicates <= DUPLICATE_BOUND,
        "{duplicates} duplicates, bound {DUPLICATE_BOUND}"
    );
}
