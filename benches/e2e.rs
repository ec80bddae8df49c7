//! End-to-end benchmark: a campaign over N devices in every IANA zone, all due at
//! once, from release to the last recorded outcome, sent over TLS HTTP/2 to the
//! provider simulator (its own process) and recorded in the database.
//!
//!     cargo bench --bench e2e -- [--devices N] [--backend sqlite|postgres]
//!                                [--layout skewed|uniform|multi] [--rate R] [--android]
//!                                [--chunk N] [--chunks N] [--sends N] [--flush N]
//!                                [--old-deliveries N] [--no-prune] [--prune-only]
//!                                [--instances N] [--bulk-seed]
//!
//! The engine runs as the daemon runs it (`Engine::run`: release and dispatch
//! loops) with the engine's default settings; `--chunk`, `--chunks`, `--sends` and
//! `--flush` override them, and the run then says it used explicit settings.
//! `--layout` picks the audience (see `common::Layout`; `skewed` by default):
//! the campaigns (one per app) come due a few seconds after the engine starts, so
//! "due → first send" is the scheduler's own lag. `--old-deliveries N` seeds N
//! finished messages past the default retention, which the engine prunes while
//! it sends (`--no-prune` turns retention off, for the A/B); the run reports how
//! much the database grew per million messages. Reports messages per second, this process's peak RSS (VmHWM), the
//! scheduler lag of every slot (first send − due time), the lag of a small campaign
//! that comes due while the large one is being sent, and the most sends the
//! simulator accepted in any one second. Where `h2load` (nghttp2-client) is
//! installed, it first measures the wire ceiling in the same run: APNs-style posts
//! over TLS HTTP/2 straight to the same simulator, with a valid provider token. `--rate R` sets each provider's
//! `rate_per_second`; `--android` gives every device an FCM token (one provider,
//! so the per-second figure is that provider's). `MERIDIAN_E2E_KEEP=1` keeps the
//! database afterwards (Postgres: `meridian_e2e`; SQLite: the printed directory).
//! `--instances N` (Postgres) sends with N `meridian serve` processes (the
//! release binary, `engine.worker_id` bench-0 …) instead of the engine in this
//! process; CPU and peak RSS are then theirs. `--bulk-seed` (always past
//! 2,000,000 devices) seeds with the users', devices' and subscriptions'
//! secondary indexes dropped and builds them after the load.
//!

mod common;

use common::arg;

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use meridian::clock::{Clock, SystemClock};
use meridian::config::{Config, DatabaseConfig};
use meridian::definitions;
use meridian::domain::campaign::parse_toml;
use meridian::engine::{Engine, EngineSettings};
use meridian::provider::jwt;
use meridian::store::{SqliteStore, Store};

/// glibc malloc spends a fifth of the send path in contention and consolidation.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mb() -> f64 {
    peak_rss_mb_of("self")
}

fn peak_rss_mb_of(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let devices: i64 = arg("--devices")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // RUST_LOG=sqlx=debug shows every statement with its elapsed time.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let backend = arg("--backend").unwrap_or_else(|| "sqlite".to_owned());
    let android = std::env::args().any(|a| a == "--android");
    let layout = match arg("--layout") {
        None => common::Layout::Skewed,
        Some(l) => common::Layout::parse(&l).expect("--layout skewed|uniform|multi"),
    };
    // `--android` (one provider, for the pacing figure) seeds the uniform layout.
    let layout = if android {
        common::Layout::Uniform
    } else {
        layout
    };
    // `--bulk-seed` (on by itself past 2M devices): the seeded tables' indexes
    // are built after the load, not entry by entry (common::seed_indexes_drop).
    let bulk = devices > 2_000_000 || std::env::args().any(|a| a == "--bulk-seed");
    let rate = arg("--rate").map_or(String::new(), |r| format!("\nrate_per_second = {r}"));
    let mut sim = common::sim::SimProcess::start(0);
    // Every app of the layout is `shop`'s configuration under its own name.
    let shop = sim.app_toml(
        common::BENCH_APP,
        &format!("{}{rate}", common::BENCH_CONNECTION),
    );
    let text: String = layout
        .apps()
        .iter()
        .map(|app| shop.replace("[apps.shop", &format!("[apps.{app}")))
        .collect();
    let mut config: Config = toml::from_str(&text).unwrap();
    if std::env::args().any(|a| a == "--no-prune") {
        let r = &mut config.retention;
        for keep in [
            &mut r.deliveries,
            &mut r.history,
            &mut r.webhooks,
            &mut r.fallbacks,
            &mut r.idempotency_keys,
            &mut r.chunks,
        ] {
            *keep = std::time::Duration::ZERO;
        }
    }
    config.validate().unwrap();
    let (base, dir, pid) = (sim.base(), sim.dir.path().to_owned(), sim.pid());
    let dir = dir.as_path();
    let p = |n: &str| dir.join(n);
    assert!(
        arg("--instances").is_none() || backend == "postgres",
        "--instances needs --backend postgres: SQLite runs one instance"
    );
    println!("meridian e2e bench: {devices} devices, layout {layout:?}, backend {backend}");
    let ceiling = wire_ceiling(&base, dir);
    match ceiling {
        Some(c) => {
            println!("wire ceiling (h2load -c 4 -m 100 against the simulator): {c:.0} req/s")
        }
        None => println!("h2load not installed: no wire ceiling measured"),
    }
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .post(format!("{base}/_sim/reset"))
        .send()
        .await
        .unwrap();
    let rate;
    match backend.as_str() {
        "postgres" => {
            let (mut c, url) = common::fresh_pg_database("meridian_e2e").await;
            let store = common::pg_store(&url).await;
            let url_text = url.to_string();
            rate = run(
                store,
                (&config, &text),
                devices,
                layout,
                (&base, pid),
                &url_text,
                |s| async move {
                    if android {
                        common::seed_postgres(url.as_str().to_owned(), s, true).await
                    } else {
                        common::seed_layout(url.as_str(), layout, s, bulk).await
                    }
                },
            )
            .await;
            // MERIDIAN_E2E_KEEP=1 keeps the database for a look at what was written.
            if std::env::var_os("MERIDIAN_E2E_KEEP").is_none() {
                common::drop_pg_database(&mut c, "meridian_e2e").await;
            }
        }
        _ => {
            let url = format!("sqlite://{}", p("e2e.db").display());
            let store = SqliteStore::connect(&DatabaseConfig {
                url: url.clone(),
                ..DatabaseConfig::default()
            })
            .await
            .unwrap();
            rate = run(
                store,
                (&config, &text),
                devices,
                layout,
                (&base, pid),
                &url.clone(),
                |s| async move {
                    if android {
                        common::seed_sqlite(url.clone(), s, true).await
                    } else {
                        common::seed_layout(&url, layout, s, bulk).await
                    }
                },
            )
            .await;
        }
    }
    if let Some(c) = ceiling {
        println!("end to end / wire ceiling: {:.0}%", 100.0 * rate / c);
    }
    if std::env::var_os("MERIDIAN_E2E_KEEP").is_some() && backend != "postgres" {
        let kept = std::mem::replace(&mut sim.dir, tempfile::tempdir().unwrap());
        println!("kept {}", kept.keep().display());
    }
}

/// Starts `meridian serve` number `i` on the bench's apps and database with the
/// run's engine settings; the bench's own process only watches.
fn serve_process(
    dir: &std::path::Path,
    i: usize,
    apps: &str,
    url: &str,
    s: &EngineSettings,
) -> std::process::Child {
    let campaigns = dir.join("campaigns");
    std::fs::create_dir_all(&campaigns).unwrap();
    let text = format!(
        "[database]\nurl = \"{url}\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         [campaigns]\ndir = \"{}\"\n[log]\nlevel = \"warn\"\nformat = \"text\"\n\
         [engine]\nworker_id = \"bench-{i}\"\nchunk_size = {}\nchunks_in_flight = {}\n\
         sends_per_chunk = {}\nflush_every = {}\n{apps}",
        campaigns.display(),
        s.chunk_size,
        s.chunks_in_flight,
        s.sends_per_chunk,
        s.flush_every
    );
    let path = dir.join(format!("serve-{i}.toml"));
    std::fs::write(&path, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Requests per second h2load gets from the simulator: the most any sender could
/// reach on this machine with the simulator as the peer.
fn wire_ceiling(base: &str, dir: &std::path::Path) -> Option<f64> {
    let p8 = std::fs::read_to_string(dir.join("key.p8")).ok()?;
    let jwt = jwt::Es256Key::from_pem(&p8)
        .ok()?
        .sign(
            &serde_json::json!({"alg": "ES256", "kid": "KEY1234567"}),
            &serde_json::json!({"iss": "TEAM123456", "iat": SystemClock.now().timestamp()}),
        )
        .ok()?;
    let body = dir.join("payload.json");
    std::fs::write(
        &body,
        r#"{"aps":{"alert":{"title":"Hello","body":"A benchmark message of ordinary length."}}}"#,
    )
    .ok()?;
    let out = Command::new("h2load")
        .args(["-n", "200000", "-c", "4", "-m", "100", "-d"])
        .arg(&body)
        .args(["-H", &format!("authorization: bearer {jwt}")])
        .args([
            "-H",
            "apns-topic: com.example.shop",
            "-H",
            "apns-push-type: alert",
        ])
        .arg(format!("{base}/3/device/{}", "ab".repeat(32)))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("200000 succeeded") || !text.contains("200000 2xx") {
        println!("h2load did not get 200000 accepted sends:\n{text}");
        return None;
    }
    // "finished in 2.57s, 77777.67 req/s, …"
    text.lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.trim_end_matches(" req/s").parse().ok())
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`
/// (fields 14 and 15, in the kernel's fixed 100 ticks a second).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields are counted after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// CPU seconds used so far by every process named `postgres` (the shared
/// server: its other databases are idle during a run).
fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| cpu_secs(&pid))
        .sum()
}

/// The database's size in bytes (SQLite: its pages, the WAL's included).
async fn db_bytes(url: &str) -> i64 {
    use sqlx::Connection;
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&mut c)
            .await
            .unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&mut c)
        .await
        .unwrap()
    }
}

/// `n` sent deliveries of a campaign finished 100 days ago (id 999999, no
/// row of its own: deliveries carry no foreign keys), before the bench's own.
async fn seed_old_deliveries(url: &str, n: i64, devices: i64) {
    use sqlx::Connection;
    let then = SystemClock.now() - chrono::TimeDelta::days(100);
    let rows =
        "SELECT 'shop', 999999, 0, 'old-' || (g / $2), 1 + g % $2, 'sent', 1, $3, $3, $3, $3 FROM ";
    let insert = "INSERT INTO deliveries (app_id, campaign_id, slot_id, occurrence, device_id, status, attempts, \
                  next_attempt_at, sent_at, created_at, updated_at) ";
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(&format!("{insert}{rows}generate_series(1, $1) g"))
            .bind(n)
            .bind(devices)
            .bind(then)
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("VACUUM ANALYZE deliveries")
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(&format!(
            "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $1) {insert}{rows}s"
        ))
        .bind(n)
        .bind(devices)
        .bind(then)
        .execute(&mut c)
        .await
        .unwrap();
    }
}

/// How many of the old deliveries are left.
async fn old_left(url: &str) -> i64 {
    use sqlx::Connection;
    let sql = "SELECT COUNT(*) FROM deliveries WHERE campaign_id = 999999";
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
    }
}

/// Returns messages per second.
async fn run<S, F, Fut>(
    store: S,
    (config, config_text): (&Config, &str),
    devices: i64,
    layout: common::Layout,
    (sim, sim_pid): (&str, u32),
    url: &str,
    seed: F,
) -> f64
where
    S: Store + Clone,
    F: FnOnce(i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    store.migrate().await.unwrap();
    definitions::sync_apps(&store, config, SystemClock.now())
        .await
        .unwrap();
    let t = Instant::now();
    seed(devices).await;
    println!("seeded in {:.1} s", t.elapsed().as_secs_f64());
    // The peak RSS reported is the engine's: on SQLite the seed runs in this
    // process (a bulk seed builds its indexes with a 1 GB page cache), so the
    // peak is reset once it is done ("5" resets VmHWM, Linux 4.0+).
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        println!("peak RSS not reset after seeding: it includes the seed's");
    }
    // `--old-deliveries N`: N finished messages of an earlier campaign, past the
    // default retention (100 days old), for the engine to prune while it sends.
    let old: i64 = arg("--old-deliveries").map_or(0, |v| v.parse().unwrap());
    if old > 0 {
        let t = Instant::now();
        seed_old_deliveries(url, old, devices).await;
        println!(
            "{old} old deliveries seeded in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    // `--prune-only`: the raw cost of retention's batches, nothing sending.
    if std::env::args().any(|a| a == "--prune-only") {
        use meridian::store::RetentionKind;
        let before = SystemClock.now() - chrono::TimeDelta::days(90);
        let t = Instant::now();
        let mut gone = 0;
        let mut batches = 0;
        while t.elapsed().as_secs() < 20 {
            let n = store
                .retention_prune(RetentionKind::Deliveries, before, config.retention.batch)
                .await
                .unwrap();
            gone += n;
            batches += 1;
            if n == 0 {
                break;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "pruned {gone} old deliveries in {batches} batches in {secs:.1} s: {:.0} rows/s, {:.1} ms a batch",
            gone as f64 / secs,
            1e3 * secs / batches as f64
        );
        return 0.0;
    }
    let bytes_before = db_bytes(url).await;
    // One campaign per app, all due together a little after they are saved and
    // the engine has started (saving dry-runs each one: seconds at 1M).
    let due = SystemClock.now() + chrono::TimeDelta::milliseconds(8_000 + devices / 125);
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let primary = if layout == common::Layout::Multi {
        "devices = \"primary\"\n"
    } else {
        ""
    };
    let t = Instant::now();
    let mut big = Vec::new();
    for app in layout.apps() {
        let text = format!(
            "key = \"e2e\"\napp = \"{app}\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Hello\"\n\
             body = \"A benchmark message of ordinary length.\"\n[audience]\ntopics = [\"marketing\"]\n{primary}\
             [schedule]\ntype = \"at\"\nat = \"{}\"\n",
            at(due)
        );
        let def = parse_toml("e2e.toml", &text).unwrap();
        let prepared = definitions::prepare(&store, config, &def, SystemClock.now())
            .await
            .unwrap();
        let applied = definitions::save(&store, prepared, SystemClock.now())
            .await
            .unwrap();
        big.push((*app, applied.record.id));
    }
    println!("scheduled in {:.1} s", t.elapsed().as_secs_f64());
    let explicit = ["--chunk", "--chunks", "--sends", "--flush"]
        .iter()
        .any(|a| arg(a).is_some());
    let defaults = EngineSettings::default();
    let settings = EngineSettings {
        worker_id: "bench".into(),
        chunk_size: arg("--chunk").map_or(defaults.chunk_size, |v| v.parse().unwrap()),
        chunks_in_flight: arg("--chunks").map_or(defaults.chunks_in_flight, |v| v.parse().unwrap()),
        sends_per_chunk: arg("--sends").map_or(defaults.sends_per_chunk, |v| v.parse().unwrap()),
        flush_every: arg("--flush").map_or(defaults.flush_every, |v| v.parse().unwrap()),
        ..defaults
    };
    println!(
        "engine settings ({}): chunk {}, {} chunks x {} sends, flush {}",
        if explicit {
            "EXPLICIT, not the defaults"
        } else {
            "the defaults"
        },
        settings.chunk_size,
        settings.chunks_in_flight,
        settings.sends_per_chunk,
        settings.flush_every
    );
    // `--instances N` (Postgres): N `meridian serve` processes share the
    // database, as a deployment runs them, instead of the engine in this process.
    let instances: usize = arg("--instances").map_or(0, |v| v.parse().unwrap());
    let engine = if instances == 0 {
        Some(Arc::new(
            Engine::new(
                Arc::new(store.clone()),
                Arc::new(config.clone()),
                Arc::new(SystemClock),
                settings.clone(),
            )
            .unwrap(),
        ))
    } else {
        println!("{instances} `meridian serve` processes on one database");
        None
    };
    // While the large campaigns are being sent, a small one to ten users comes due:
    // its lag is the scheduler's lag under load.
    let small_due = due + chrono::TimeDelta::milliseconds(4_000 + devices / 40);
    let users: Vec<String> = (1..=10).map(|n| format!("\"u{n}\"")).collect();
    let small = format!(
        "key = \"small\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Now\"\nbody = \"Small\"\n\
         [audience]\ntopics = [\"marketing\"]\nusers = [{}]\n[schedule]\ntype = \"at\"\nat = \"{}\"\n",
        users.join(", "),
        at(small_due)
    );
    let small = parse_toml("small.toml", &small).unwrap();
    let prepared = definitions::prepare(&store, config, &small, SystemClock.now())
        .await
        .unwrap();
    let small = definitions::save(&store, prepared, SystemClock.now())
        .await
        .unwrap()
        .record
        .id;
    let running = engine
        .clone()
        .map(|engine| tokio::spawn(async move { engine.run().await }));
    let dir = tempfile::tempdir().unwrap();
    let mut children: Vec<std::process::Child> = (0..instances)
        .map(|i| serve_process(dir.path(), i, config_text, url, &settings))
        .collect();
    let child_pids: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();
    let instances_cpu = || child_pids.iter().map(|p| cpu_secs(p)).sum::<f64>();
    let early = (due - SystemClock.now()).to_std().unwrap_or_default();
    assert!(
        early > std::time::Duration::from_millis(500),
        "the campaigns were saved too close to their due time"
    );
    tokio::time::sleep(early).await;
    let sim_pid = sim_pid.to_string();
    let cpu_before = (
        cpu_secs("self") + instances_cpu(),
        cpu_secs(&sim_pid),
        postgres_cpu_secs(),
    );
    let start = Instant::now();
    let completed = |app: &'static str, id: i64| {
        let store = store.clone();
        async move {
            loop {
                let c = store.campaign_get_by_id(app, id).await.unwrap();
                if c.is_some_and(|c| c.state == meridian::domain::state::CampaignState::Completed) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    for (app, id) in &big {
        completed(app, *id).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (
        cpu_secs("self") + instances_cpu() - cpu_before.0,
        cpu_secs(&sim_pid) - cpu_before.1,
        postgres_cpu_secs() - cpu_before.2,
    );
    completed("shop", small).await;
    let instances_rss: Vec<String> = child_pids
        .iter()
        .map(|p| format!("{:.0}", peak_rss_mb_of(p)))
        .collect();
    if let (Some(engine), Some(running)) = (engine, running) {
        engine.stop();
        let _ = running.await;
    }
    for child in &mut children {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    if instances > 0 {
        println!(
            "peak RSS of each serve process: {} MB",
            instances_rss.join(", ")
        );
    }
    let mut counts = std::collections::BTreeMap::<String, i64>::new();
    for (_, id) in &big {
        for (status, n) in store.delivery_count_by_status(*id).await.unwrap() {
            *counts.entry(status.to_string()).or_default() += n;
        }
    }
    let sent = counts.get("sent").copied().unwrap_or(0);
    let written = db_bytes(url).await - bytes_before;
    println!(
        "database grew by {:.0} MB during the run: {:.0} MB per million messages (everything written: deliveries, indexes, tallies, chunks)",
        written as f64 / 1e6,
        written as f64 / sent.max(1) as f64
    );
    if old > 0 {
        let left = old_left(url).await;
        println!(
            "old deliveries pruned during the run: {} of {old}",
            old - left
        );
    }
    println!(
        "{sent} sent to {devices} devices in {secs:.1} s from due = {:.0} msgs/s; statuses {counts:?}; peak RSS {:.0} MB",
        sent as f64 / secs,
        peak_rss_mb()
    );
    // CPU per message is steadier than the rate on a machine whose speed moves
    // from run to run: it counts work, not waiting.
    let per = |s: f64| 1e6 * s / sent.max(1) as f64;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "CPU during the run: engine process(es) {:.1} s ({:.1} µs/msg), simulator {:.1} s ({:.1} µs/msg), \
         postgres processes {:.1} s ({:.1} µs/msg); together {:.0}% of {cores} cores",
        cpu.0,
        per(cpu.0),
        cpu.1,
        per(cpu.1),
        cpu.2,
        per(cpu.2),
        100.0 * (cpu.0 + cpu.1 + cpu.2) / (cores as f64 * secs)
    );
    let lag = |id: i64| {
        let store = store.clone();
        async move {
            let mut ms: Vec<i64> = store
                .slot_list(id)
                .await
                .unwrap()
                .iter()
                .filter_map(|s| s.first_sent_at.map(|t| (t - s.fire_at).num_milliseconds()))
                .collect();
            ms.sort_unstable();
            ms
        }
    };
    let mut firsts = Vec::new();
    for (_, id) in &big {
        firsts.extend(lag(*id).await);
    }
    println!("due → first send of each large campaign: {firsts:?} ms");
    // Split into due → released (the release loop) and released → first send
    // (leasing and reading the chunk).
    let parts: Vec<(i64, i64)> = store
        .slot_list(small)
        .await
        .unwrap()
        .iter()
        .filter_map(|s| {
            let released = s.released_at?;
            let sent = s.first_sent_at?;
            Some((
                (released - s.fire_at).num_milliseconds(),
                (sent - released).num_milliseconds(),
            ))
        })
        .collect();
    println!(
        "scheduler lag of a slot due while sending: {:?} ms (due → released, released → first send: {parts:?} ms)",
        lag(small).await
    );
    let stats: serde_json::Value = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("{sim}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let busiest = stats["accepted_per_second"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).max().unwrap_or(0))
        .unwrap_or(0);
    println!("most sends accepted by the simulator in one second: {busiest}");
    // Seconds in order, in thousands: stalls show as dips.
    let timeline: Vec<String> = stats["accepted_per_second"]
        .as_object()
        .map(|m| {
            let mut secs: Vec<(i64, u64)> = m
                .iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_u64()?)))
                .collect();
            secs.sort_unstable();
            secs.iter().map(|(_, n)| format!("{}", n / 1000)).collect()
        })
        .unwrap_or_default();
    println!("sends per second (thousands): {}", timeline.join(" "));
    store.close().await;
    sent as f64 / secs
}
