//! Killed, stopped, doubled and cut off from Postgres: every device is served,
//! duplicates stay within their bound.

use super::*;

/// Killed mid-send with the default one-minute lease, a restarted instance on
/// SQLite takes its predecessor's leases back at start (it is the only one:
/// a second `serve` on the same database is refused) and finishes within
/// seconds, not after the lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_dispatch_then_restart_serves_everyone_with_bounded_duplicates() {
    let setup = setup(40).await;
    let db = format!("sqlite://{}", path(setup.dir.path(), "m.db").display());
    let tokens = setup.seed(&db).await;
    let config = setup.serve_config("a", &db);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("lease = \"2s\"", "lease = \"60s\"")).unwrap();
    let mut first = setup.serve(&config);
    setup
        .wait_for("a quarter sent", Duration::from_secs(60), |m| {
            m.len() >= tokens.len() / 4
        })
        .await;
    // A second instance on the same SQLite database is refused, saying why.
    let second = serve_command(&config)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another meridian instance"), "{said}");
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let at_kill = setup.accepted().await.len();
    assert!(
        at_kill < tokens.len(),
        "killed after everything was sent; slow the simulator down"
    );
    let restarted = Instant::now();
    // At info, to see the takeovers logged.
    let log = path(setup.dir.path(), "restarted.log");
    let _second = Proc(
        serve_command(&config)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    setup
        .wait_for(
            "everyone served",
            Duration::from_secs(90),
            all_served(&tokens),
        )
        .await;
    // The rest (three quarters at 40 ms a send, 16 at once) takes a few
    // seconds; waiting out the 60 s lease would take a minute.
    assert!(
        restarted.elapsed() < Duration::from_secs(30),
        "resumed {:?} after the restart",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = setup.accepted().await;
    let total: u64 = tokens.iter().map(|t| counts[t]).sum();
    let duplicates = total - tokens.len() as u64;
    assert!(
        duplicates <= DUPLICATE_BOUND,
        "{duplicates} duplicates, bound {DUPLICATE_BOUND}"
    );
    // Each chunk taken back is logged with its campaign and who held it
    // (stderr is not a terminal: JSON lines).
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let logged = |message: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("{message:?} not logged:\n{text}"))
    };
    assert_eq!(logged("Meridian is running.")["fields"]["worker_id"], "a");
    logged("Leases of a previous run taken back.");
    let takeover = &logged("Chunk taken over.")["fields"];
    assert!(takeover["campaign_id"].is_i64(), "{takeover}");
    assert!(takeover["chunk_id"].is_i64(), "{takeover}");
    assert!(takeover["attempt"].as_i64() >= Some(2), "{takeover}");
    assert_eq!(takeover["previous_owner"], "a", "{takeover}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_during_dispatch_loses_nothing() {
    let Some(pg) = OwnPostgres::start(&[], &[]) else {
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
