//! As systemd runs it: sd_notify readiness, status and watchdog, SIGHUP
//! reloads, and what the logs show.

use super::*;

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
    // With several instances, the start line says which one this journal is.
    assert!(
        running["fields"]["worker_id"]
            .as_str()
            .is_some_and(|w| !w.is_empty()),
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
