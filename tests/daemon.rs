//! `meridian serve` as a process: killed mid-dispatch, stopped with SIGTERM, and
//! two instances sharing one Postgres, all sending to `meridian simulate`.

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
    let port = common::free_port();
    listen_on(&config, port, "");
    let key = create_api_key(&config);
    let mut daemon = setup.serve(&config);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, Duration::from_secs(30)).await;
    let put = |key: &str| {
        http.put(format!("{base}/v1/users/u-api"))
            .bearer_auth(key)
            .json(&serde_json::json!({"timezone": "Asia/Kathmandu"}))
            .send()
    };
    assert_eq!(put(&key).await.unwrap().status().as_u16(), 200);
    assert_eq!(put("mrd_wrong").await.unwrap().status().as_u16(), 401);
    daemon.terminate();
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
    first.terminate();
    let after_stop = setup.accepted().await.len();
    assert!(
        after_stop < tokens.len(),
        "stopped after everything was sent; slow the simulator down"
    );
    let _second = setup.serve(&config);
    setup
        .assert_each_served_once(&tokens, "a drained stop must not duplicate")
        .await;
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
        .assert_each_served_once(&tokens, "two instances sent a message twice")
        .await;
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

/// A config with no apps: the API and the engine's loops, nothing to send;
/// `engine` adds lines to its `[engine]` table.
fn bare_config(dir: &Path, port: u16, engine: &str) -> PathBuf {
    std::fs::create_dir_all(path(dir, "campaigns")).unwrap();
    let file = path(dir, "bare.toml");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [campaigns]\ndir = \"{campaigns}\"\n[engine]\ntick = \"100ms\"\n{engine}",
            db = path(dir, "bare.db").display(),
            campaigns = path(dir, "campaigns").display(),
        ),
    )
    .unwrap();
    file
}

/// What the daemon sent to its `NOTIFY_SOCKET`, as a service manager would read it.
struct NotifyListener {
    messages: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl NotifyListener {
    fn bind(socket: &Path) -> Self {
        let sock = std::os::unix::net::UnixDatagram::bind(socket).unwrap();
        let (tx, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        Self {
            messages,
            seen: Vec::new(),
        }
    }

    /// Waits for a message with the line `line`; returns it.
    fn wait_for(&mut self, line: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(m) => {
                    self.seen.push(m.clone());
                    if m.lines().any(|l| l == line) {
                        return m;
                    }
                }
                Err(_) => panic!("no {line} within {within:?}; got {:?}", self.seen),
            }
        }
    }

    /// Every message that arrives within `span`.
    fn collect(&mut self, span: Duration) -> Vec<String> {
        let deadline = Instant::now() + span;
        let mut got = Vec::new();
        while let Ok(m) = self
            .messages
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(m.clone());
            got.push(m);
        }
        got
    }
}

/// `serve` on a bare config under a stand-in service manager: `NOTIFY_SOCKET` in
/// a temp dir and a 400 ms watchdog (a ping every 200 ms; the loop's tick is
/// 100 ms), up to its READY=1, with the API checked to answer at that moment.
struct Notified {
    _dir: tempfile::TempDir,
    manager: NotifyListener,
    port: u16,
    daemon: Proc,
    ready: String,
}

impl Notified {
    async fn start(engine: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = path(dir.path(), "notify.sock");
        let mut manager = NotifyListener::bind(&socket);
        let port = common::free_port();
        let config = bare_config(dir.path(), port, engine);
        let mut cmd = serve_command(&config);
        cmd.env("RUST_LOG", "warn")
            .env("NOTIFY_SOCKET", &socket)
            .env("WATCHDOG_USEC", "400000");
        let daemon = Proc(cmd.spawn().unwrap());
        let ready = manager.wait_for("READY=1", Duration::from_secs(30));
        let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .expect("the API answers once READY=1 is sent");
        assert_eq!(health.status().as_u16(), 200);
        Self {
            _dir: dir,
            manager,
            port,
            daemon,
            ready,
        }
    }

    /// How many WATCHDOG=1 arrive within `span`.
    fn pings(&mut self, span: Duration) -> usize {
        let got = self.manager.collect(span);
        got.iter().filter(|m| m.as_str() == "WATCHDOG=1").count()
    }

    /// SIGTERM; returns the STOPPING=1 message once the process exited cleanly.
    fn stop(&mut self) -> String {
        self.daemon.terminate();
        self.manager.wait_for("STOPPING=1", Duration::from_secs(1))
    }
}

/// Under a service manager (`NOTIFY_SOCKET`, `WATCHDOG_USEC`): STATUS lines while
/// starting, READY=1 once the API answers, WATCHDOG=1 while the release loop
/// turns, STOPPING=1 on SIGTERM, then a clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_socket_gets_status_ready_watchdog_and_stopping() {
    let mut n = Notified::start("").await;
    let expected = format!("STATUS=Running: API on 127.0.0.1:{}, engine on", n.port);
    assert!(n.ready.lines().any(|l| l == expected), "{:?}", n.ready);
    let before_ready = &n.manager.seen[..n.manager.seen.len() - 1];
    for status in [
        "STATUS=Applying database migrations",
        "STATUS=Applying campaign files",
        "STATUS=Starting the scheduler",
    ] {
        assert!(before_ready.iter().any(|m| m == status), "{before_ready:?}");
    }
    let pings = n.pings(Duration::from_millis(1500));
    assert!(pings >= 4, "{pings} WATCHDOG=1 in 1.5 s");
    let stopping = n.stop();
    assert!(stopping.contains("STATUS=Stopping"), "{stopping:?}");
}

/// With the engine off, READY=1 comes once the API listens and the watchdog is
/// still fed (by a timer on the runtime that serves the API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_off_is_ready_with_the_api_and_still_feeds_the_watchdog() {
    let mut n = Notified::start("enabled = false\n").await;
    assert!(n.ready.contains("engine off"), "{:?}", n.ready);
    let pings = n.pings(Duration::from_millis(1000));
    assert!(pings >= 3, "{pings} WATCHDOG=1 in 1 s");
    n.stop();
}

/// Waits until the log file has a line containing `needle`.
fn wait_log(file: &Path, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the logs within {within:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGHUP while a campaign is being sent: a new campaign file is applied and the
/// new log level (warn → info) takes effect, the sends go on (everyone served
/// once); a broken configuration on the next SIGHUP is logged and the running
/// one kept (still at info), and the process keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_campaign_files_and_log_level_without_dropping_work() {
    let setup = setup(40).await;
    let d = setup.dir.path();
    let db = format!("sqlite://{}", path(d, "m.db").display());
    let tokens = setup.seed(&db).await;
    let config = setup.serve_config("hup", &db);
    let port = common::free_port();
    listen_on(&config, port, "[log]\nlevel = \"warn\"\n");
    let logs = path(d, "hup.log");
    let mut cmd = serve_command(&config);
    logs_to(&mut cmd, &logs);
    let mut daemon = Proc(cmd.spawn().unwrap());
    setup
        .wait_for("a quarter sent", Duration::from_secs(60), |m| {
            m.len() >= tokens.len() / 4
        })
        .await;

    std::fs::write(
        path(d, "campaigns/later.toml"),
        "key = \"later\"\napp = \"shop\"\nstatus = \"draft\"\n[message]\ntitle = \"Later\"\n\
         body = \"Soon\"\n[audience]\ntopics = [\"marketing\"]\n[schedule]\ntype = \"now\"\n",
    )
    .unwrap();
    let info = std::fs::read_to_string(&config)
        .unwrap()
        .replace("level = \"warn\"", "level = \"info\"");
    std::fs::write(&config, &info).unwrap();
    let at_reload = setup.accepted().await.len();
    daemon.signal("-HUP");
    assert!(
        at_reload < tokens.len(),
        "reloaded after everything was sent; slow the simulator down"
    );
    let text = wait_log(&logs, "\"key\":\"later\"", Duration::from_secs(30));
    assert!(
        !text.contains("Meridian is running."),
        "info lines before the reload, at warn:\n{text}"
    );
    assert!(text.contains("Log level set."), "{text}");
    let store = AnyStore::connect(&DatabaseConfig {
        url: db.clone(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    let later = with_store!(&store, s => s.campaign_get("shop", "later").await.unwrap());
    assert_eq!(later.map(|c| c.state), Some(CampaignState::Draft));
    with_store!(&store, s => s.close().await);

    setup
        .assert_each_served_once(&tokens, "a reload must neither drop nor repeat sends")
        .await;

    // Both files were applied by the first reload; a second reload applies them
    // again, at the level kept (info), although its configuration is broken.
    let applied = || {
        std::fs::read_to_string(&logs)
            .unwrap()
            .matches("Campaign file applied.")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied() < 2 {
        assert!(
            Instant::now() < deadline,
            "the first reload applied fewer than 2 files"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&config, format!("{info}\n[nonsense\n")).unwrap();
    daemon.signal("-HUP");
    wait_log(
        &logs,
        "Configuration not reloaded; the running one is kept.",
        Duration::from_secs(30),
    );
    while applied() < 4 {
        assert!(
            Instant::now() < deadline,
            "the campaign files were not applied again at info"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon exited");
    wait_healthy(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5)).await;
    daemon.terminate();
}

/// What `serve` logs at debug (JSON, since stderr is a file)
/// while it migrates a Postgres database reached with a password, sends a campaign
/// and a personal push through APNs and FCM (provider JWTs, an OAuth access token)
/// and answers API calls with a right and a wrong key: none of the secrets, and
/// the spans around releases and chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_show_no_secret_and_carry_release_and_chunk_spans() {
    let Some(db) = common::postgres().await else {
        return;
    };
    const PASSWORD: &str = "pw-7c1e9b3a-not-for-logs";
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    let url = url.to_string();
    let setup = setup(0).await;
    let d = setup.dir.path();
    let tokens = setup.seed(&url).await;
    let config = setup.serve_config("secrets", &url);
    let port = common::free_port();
    // Every statement of ours; the libraries at debug (at trace, h2 alone writes
    // 25 MB here, and held no secret either when tried).
    let level = "debug,meridian=trace";
    listen_on(&config, port, &format!("[log]\nlevel = \"{level}\"\n"));
    let key = create_api_key(&config);
    let logs = path(d, "secrets.log");
    let mut cmd = serve_command(&config);
    logs_to(&mut cmd, &logs);
    let mut daemon = Proc(cmd.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, Duration::from_secs(30)).await;
    setup
        .wait_for(
            "the campaign sent",
            Duration::from_secs(60),
            all_served(&tokens),
        )
        .await;
    let http = reqwest::Client::new();
    let push = |key: &str| {
        http.post(format!("{base}/v1/push"))
            .bearer_auth(key)
            .json(&serde_json::json!({
                "userIds": ["u0", "u1"],
                "message": {"title": "Order shipped", "summary": "On its way"},
            }))
            .send()
    };
    let wrong = format!("mrd_{}", "x".repeat(43));
    assert_eq!(push(&wrong).await.unwrap().status().as_u16(), 401);
    assert_eq!(push(&key).await.unwrap().status().as_u16(), 200);
    setup
        .wait_for("the push sent", Duration::from_secs(30), |m| {
            m.get(&tokens[0]) == Some(&2) && m.get(&tokens[1]) == Some(&2)
        })
        .await;
    daemon.terminate();

    let text = std::fs::read_to_string(&logs).unwrap();
    let secret_part = &key[key.len() - 20..];
    for (what, secret) in [
        ("the database password", PASSWORD),
        ("the API key", key.as_str()),
        ("the API key's secret part", secret_part),
        ("a wrong API key", wrong.as_str()),
        ("a JWT (APNs provider token, FCM assertion)", "eyJ"),
        ("a private key", "PRIVATE KEY"),
    ] {
        if let Some(line) = text.lines().find(|l| l.contains(secret)) {
            panic!("{what} is in the logs: {line}");
        }
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let running = lines
        .iter()
        .find(|l| l["fields"]["message"] == "Meridian is running.")
        .expect("the start is logged");
    assert!(
        running["fields"]["database"]
            .as_str()
            .is_some_and(|u| u.contains(":***@")),
        "{running}"
    );
    let released = lines
        .iter()
        .find(|l| l["fields"]["message"] == "Slot released.")
        .expect("a release is logged");
    assert_eq!(released["span"]["name"], "release", "{released}");
    assert!(released["span"]["campaign_id"].is_i64(), "{released}");
    let chunk = lines
        .iter()
        .find(|l| l["fields"]["message"] == "Chunk done.")
        .expect("a chunk is logged at debug");
    assert_eq!(chunk["span"]["name"], "chunk", "{chunk}");
    assert!(chunk["span"]["chunk_id"].is_i64(), "{chunk}");

    // A connection refused for the role: the error names the URL, redacted.
    let mut refused = url::Url::parse(&url).unwrap();
    refused.set_username("no_such_role").unwrap();
    let out = serve_command(&config)
        .env("MERIDIAN_DATABASE__URL", refused.as_str())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no_such_role:***@") && !stderr.contains(PASSWORD),
        "{stderr}"
    );
    db.finish().await;
}
