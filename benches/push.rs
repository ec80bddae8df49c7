//! Transactional pushes at scale: `POST /v1/push` over HTTP to `meridian`'s API
//! with the engine running as the daemon runs it (default settings), on an app
//! of N users with one device each, the provider simulator in its own process.
//!
//!     cargo bench --bench push -- [--users N] [--backend sqlite|postgres]
//!                                 [--pushes N] [--large N]
//!
//! Reports, idle: the answer time (p50/p99) of pushes to 1 id and to 1,000 ids
//! (sequential requests), pushes per second to 1 id from 8 concurrent clients,
//! and the time from the API's answer to the message recorded `sent` (the
//! provider accepted it; the row is written just after). Then the same 1-id
//! pushes while a campaign to every device is being sent: their answer time and
//! accept-to-sent time, which is what a partner's one-time code waits. The
//! quota is raised (`server.push.requests_per_minute`) so that it is not what
//! is measured.

mod common;

use common::arg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meridian::clock::{Clock, SystemClock};
use meridian::config::{Config, DatabaseConfig};
use meridian::definitions;
use meridian::domain::campaign::parse_toml;
use meridian::domain::state::CampaignState;
use meridian::engine::{Engine, EngineSettings};
use meridian::store::{DeliveryFilter, SqliteStore, Store};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let users: i64 = arg("--users")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let backend = arg("--backend").unwrap_or_else(|| "sqlite".to_owned());
    let sim = common::sim::SimProcess::start(0);
    let config = sim.config(
        common::BENCH_APP,
        common::BENCH_CONNECTION,
        "[server.push]\nrequests_per_minute = 100000000\nmax_ids = 1000\n",
    );
    println!("meridian push bench: {users} users with one device each, backend {backend}");
    match backend.as_str() {
        "postgres" => {
            let (mut c, url) = common::fresh_pg_database("meridian_push").await;
            let store = common::pg_store(&url).await;
            run(store, &config, users, |n| {
                common::seed_postgres(url.as_str().to_owned(), n, false)
            })
            .await;
            common::drop_pg_database(&mut c, "meridian_push").await;
        }
        _ => {
            let url = format!("sqlite://{}", sim.dir.path().join("push.db").display());
            let store = SqliteStore::connect(&DatabaseConfig {
                url: url.clone(),
                ..DatabaseConfig::default()
            })
            .await
            .unwrap();
            run(store, &config, users, |n| {
                common::seed_sqlite(url.clone(), n, false)
            })
            .await;
        }
    }
}

/// One push answered: how long the answer took, its request id, and when.
struct Answered {
    took: Duration,
    request: String,
    at: DateTime<Utc>,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{what}: n {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        quantile(&ms, 0.5),
        quantile(&ms, 0.99),
        quantile(&ms, 1.0)
    );
}

struct Client {
    http: reqwest::Client,
    url: String,
    key: String,
    users: i64,
}

impl Client {
    /// One push to `ids` users drawn at random; panics unless it is accepted.
    async fn push(&self, ids: usize) -> Answered {
        let user_ids: Vec<String> = (0..ids)
            .map(|_| format!("u{}", fastrand::i64(1..=self.users)))
            .collect();
        let body = serde_json::json!({
            "userIds": user_ids,
            "message": {"title": "Your code", "summary": "123456"},
            "topic": "marketing",
        });
        let started = Instant::now();
        let res = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        let status = res.status();
        let answer: serde_json::Value = res.json().await.unwrap();
        assert!(status.is_success(), "{status}: {answer}");
        Answered {
            took,
            request: answer["requestId"].as_str().unwrap().to_owned(),
            at: SystemClock.now(),
        }
    }
}

/// Milliseconds from each answer to its message recorded `sent`, waiting up to
/// a minute for the last ones.
async fn accept_to_sent<S: Store>(store: &S, answered: &[Answered]) -> Vec<f64> {
    let mut out = Vec::with_capacity(answered.len());
    for a in answered {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let filter = DeliveryFilter {
                user_external_id: None,
                campaign_id: None,
                request_id: Some(&a.request),
                status: None,
                since: None,
                before_id: None,
                limit: 10,
            };
            let rows = store.message_list("shop", &filter).await.unwrap();
            if let Some(sent) = rows.iter().filter_map(|m| m.sent_at).max() {
                out.push((sent - a.at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                break;
            }
            assert!(Instant::now() < deadline, "push {} never sent", a.request);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    out
}

fn ms(answered: &[Answered]) -> Vec<f64> {
    answered
        .iter()
        .map(|a| a.took.as_secs_f64() * 1000.0)
        .collect()
}

async fn run<S, F, Fut>(store: S, config: &Config, users: i64, seed: F)
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
    seed(users).await;
    println!("seeded in {:.1} s", t.elapsed().as_secs_f64());
    let store = Arc::new(store);
    let config = Arc::new(config.clone());
    let engine = Arc::new(
        Engine::new(
            store.clone(),
            config.clone(),
            Arc::new(SystemClock),
            EngineSettings {
                worker_id: "bench".into(),
                ..EngineSettings::default()
            },
        )
        .unwrap(),
    );
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    let k = meridian::api::keys::generate().unwrap();
    store
        .api_key_create(
            &meridian::store::NewApiKey {
                app_id: "shop",
                name: "bench",
                kind: meridian::domain::keys::KeyKind::Server,
                prefix: &k.prefix,
                hash: &k.hash,
            },
            SystemClock.now(),
        )
        .await
        .unwrap();
    let state = meridian::api::ApiState::new(store.clone(), config.clone(), Arc::new(SystemClock))
        .with_rows_queued(engine.rows_queued());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/push", listener.local_addr().unwrap());
    let router = meridian::api::router(state);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = Arc::new(Client {
        http: reqwest::Client::new(),
        url,
        key: k.secret,
        users,
    });
    let pushes: usize = arg("--pushes").and_then(|v| v.parse().ok()).unwrap_or(300);
    let large: usize = arg("--large").and_then(|v| v.parse().ok()).unwrap_or(30);

    // Idle: one request at a time.
    let mut one = Vec::with_capacity(pushes);
    for _ in 0..pushes {
        one.push(client.push(1).await);
    }
    report("idle, 1 id: answer", ms(&one));
    report(
        "idle, 1 id: answer → sent",
        accept_to_sent(&*store, &one).await,
    );
    let mut many = Vec::with_capacity(large);
    for _ in 0..large {
        many.push(client.push(1000).await);
    }
    report("idle, 1,000 ids: answer", ms(&many));

    // Throughput: 8 clients pushing to 1 id for 5 seconds.
    let until = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    client.push(1).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    println!(
        "idle, 1 id, 8 clients: {total} pushes in {:.1} s = {:.0} pushes/s",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64()
    );
    // Let the engine drain what the clients queued.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // While a campaign to every device is being sent.
    let text = "key = \"all\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Hello\"\n\
                body = \"A campaign message of ordinary length.\"\n[audience]\ntopics = [\"marketing\"]\n\
                [schedule]\ntype = \"now\"\n";
    let def = parse_toml("all.toml", text).unwrap();
    let prepared = definitions::prepare(&*store, &config, &def, SystemClock.now())
        .await
        .unwrap();
    let campaign = definitions::save(&*store, prepared, SystemClock.now())
        .await
        .unwrap()
        .record
        .id;
    let started = Instant::now();
    let mut busy = Vec::new();
    let sending = |s: &Arc<S>| {
        let s = s.clone();
        async move {
            s.campaign_get_by_id("shop", campaign)
                .await
                .unwrap()
                .is_some_and(|c| c.state != CampaignState::Completed)
        }
    };
    // Give the release a moment to start the sends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while busy.len() < pushes && sending(&store).await {
        busy.push(client.push(1).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let still_sending = sending(&store).await;
    report("while a campaign sends, 1 id: answer", ms(&busy));
    report(
        "while a campaign sends, 1 id: answer → sent",
        accept_to_sent(&*store, &busy).await,
    );
    println!(
        "(pushes measured over the first {:.1} s of the campaign; still sending at the last: {still_sending})",
        started.elapsed().as_secs_f64()
    );
    engine.stop();
    let _ = running.await;
}
