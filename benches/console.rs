//! The console's heaviest pages on an app of N devices (1,000,000 by default)
//! after a `local` campaign to all of them has been sent in every zone (489
//! slots): the campaign page, its live region and its plan, a draft's plan
//! (planned against the whole audience on each request), a message lookup by
//! user, a message's page and the app's overview. Each request is timed over
//! HTTP as a browser makes it, with a signed-in session, one at a time, and
//! **uncached**: the live snapshot is dropped before each request (what one
//! viewer polling every 2 s gets) and overviews are counted on every request.
//!
//!     cargo bench --bench console -- [--users N] [--backend sqlite|postgres]
//!                                    [--requests N]

mod common;

use common::arg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian::clock::{Clock, SystemClock};
use meridian::config::{Config, DatabaseConfig};
use meridian::console::accounts::{self, Actor};
use meridian::definitions;
use meridian::domain::campaign::parse_toml;
use meridian::domain::operator::{AppGrant, Role};
use meridian::domain::state::CampaignState;
use meridian::engine::{Engine, EngineSettings};
use meridian::store::{DeliveryFilter, SqliteStore, Store};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSWORD: &str = "quiet-harbor-lantern-42";

#[tokio::main]
async fn main() {
    let users: i64 = arg("--users")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let backend = arg("--backend").unwrap_or_else(|| "sqlite".to_owned());
    let sim = common::sim::SimProcess::start(0);
    let config = sim.config(common::BENCH_APP, common::BENCH_CONNECTION, "");
    println!("meridian console bench: {users} devices, backend {backend}");
    match backend.as_str() {
        "postgres" => {
            let (mut c, url) = common::fresh_pg_database("meridian_console").await;
            let store = common::pg_store(&url).await;
            run(store, &config, users, |n| {
                common::seed_postgres(url.as_str().to_owned(), n, false)
            })
            .await;
            common::drop_pg_database(&mut c, "meridian_console").await;
        }
        _ => {
            let url = format!("sqlite://{}", sim.dir.path().join("console.db").display());
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

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{what}: n {}, p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        ms.len(),
        quantile(&ms, 0.5),
        quantile(&ms, 0.95),
        quantile(&ms, 1.0)
    );
}

/// The value of cookie `name` among a response's `Set-Cookie` headers.
fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

struct Session {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Session {
    async fn sign_in(base: &str, email: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let form = http
            .get(format!("{base}/console/login"))
            .send()
            .await
            .unwrap();
        let login = set_cookie(&form, "meridian_login").unwrap();
        let body = form.text().await.unwrap();
        let marker = "name=\"csrf\" value=\"";
        let start = body.find(marker).unwrap() + marker.len();
        let csrf = &body[start..start + body[start..].find('"').unwrap()];
        let res = http
            .post(format!("{base}/console/login"))
            .header("cookie", format!("meridian_login={login}"))
            .form(&[("email", email), ("password", PASSWORD), ("csrf", csrf)])
            .send()
            .await
            .unwrap();
        let session = set_cookie(&res, "meridian_session").expect("signed in");
        Self {
            http,
            base: base.to_owned(),
            cookie: format!("meridian_session={session}"),
        }
    }

    /// One page; its time in ms. Panics unless it is a 200 with `expect` in it.
    async fn page(&self, path: &str, expect: &str) -> f64 {
        let started = Instant::now();
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        let took = started.elapsed().as_secs_f64() * 1000.0;
        assert!(
            status == 200 && body.contains(expect),
            "{path}: {status}, {expect:?} not in {} bytes",
            body.len()
        );
        took
    }
}

async fn run<S, F, Fut>(store: S, config: &Config, users: i64, seed: F)
where
    S: Store + Clone,
    F: FnOnce(i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    store.migrate().await.unwrap();
    let now = SystemClock.now();
    definitions::sync_apps(&store, config, now).await.unwrap();
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
    tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    // Midnight yesterday has passed in every zone: with `send_now`, each of
    // the 489 zones' slots is released at once.
    let yesterday = (now - chrono::TimeDelta::days(1)).format("%Y-%m-%dT00:00");
    let text = format!(
        "key = \"everyone\"\napp = \"shop\"\nstatus = \"scheduled\"\n\
         [message]\ntitle = \"Hello\"\nbody = \"World\"\n\
         [audience]\ntopics = [\"marketing\"]\n\
         [schedule]\ntype = \"local\"\nat = \"{yesterday}\"\nmissed = \"send_now\"\n"
    );
    let def = parse_toml("everyone.toml", &text).unwrap();
    let prepared = definitions::prepare(&*store, &config, &def, now)
        .await
        .unwrap();
    let slots = prepared.plan.as_ref().map_or(0, |p| p.slots.len());
    let id = definitions::save(&*store, prepared, now)
        .await
        .unwrap()
        .record
        .id;
    let t = Instant::now();
    loop {
        let c = store.campaign_get_by_id("shop", id).await.unwrap().unwrap();
        if c.state == CampaignState::Completed {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "not sent in 30 min"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "campaign of {slots} slots sent in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // A draft: its plan page plans it against the whole audience each time.
    let draft = parse_toml(
        "draft.toml",
        &text
            .replace("everyone", "draft")
            .replace("scheduled", "draft")
            .replace(
                &yesterday.to_string(),
                &(now + chrono::TimeDelta::days(2))
                    .format("%Y-%m-%dT09:00")
                    .to_string(),
            ),
    )
    .unwrap();
    let prepared = definitions::prepare(&*store, &config, &draft, now)
        .await
        .unwrap();
    let draft_id = definitions::save(&*store, prepared, now)
        .await
        .unwrap()
        .record
        .id;

    accounts::add(
        &*store,
        "bench@example.com",
        Role::Viewer,
        &AppGrant::All,
        PASSWORD,
        &Actor {
            operator_id: None,
            name: "bench",
            address: None,
        },
        SystemClock.now(),
    )
    .await
    .unwrap();
    let live = Arc::new(meridian::console::live::LiveCache::default());
    let api = meridian::api::ApiState::new(store.clone(), config.clone(), Arc::new(SystemClock));
    let state = meridian::console::ConsoleState::new(api.clone(), live.clone())
        .overviews_fresh_for(Duration::ZERO);
    let router = meridian::console::beside_with(meridian::api::router(api), state)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let s = Session::sign_in(&base, "bench@example.com").await;
    let n: usize = arg("--requests").and_then(|v| v.parse().ok()).unwrap_or(40);

    let campaign = format!("/console/apps/shop/campaigns/{id}");
    let mut times = Vec::new();
    for _ in 0..n {
        live.forget(id);
        times.push(s.page(&campaign, "id=\"live\"").await);
    }
    report("campaign page (489 slots, uncached)", times);
    // As served: every watcher shares the snapshot, read again after 1 s while
    // the campaign sends and after 15 s once it is completed (this one is).
    let mut times = Vec::new();
    for _ in 0..n {
        times.push(s.page(&campaign, "id=\"live\"").await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report(
        "campaign page (489 slots, as served, a request every 0.5 s)",
        times,
    );
    let mut times = Vec::new();
    for _ in 0..n {
        live.forget(id);
        times.push(s.page(&format!("{campaign}/live"), "id=\"live\"").await);
    }
    report("live region (uncached)", times);
    let mut times = Vec::new();
    for _ in 0..n {
        live.forget(id);
        times.push(s.page(&format!("{campaign}/plan"), "plan-zones").await);
    }
    report("plan of the sent campaign (uncached)", times);
    let mut times = Vec::new();
    for _ in 0..n {
        times.push(
            s.page(
                &format!("/console/apps/shop/campaigns/{draft_id}/plan"),
                "would get if scheduled now",
            )
            .await,
        );
    }
    report("plan of a draft (planned on each request)", times);
    let mut times = Vec::new();
    for _ in 0..n {
        let user = fastrand::i64(1..=users);
        times.push(
            s.page(
                &format!("/console/apps/shop/messages?by=user&q=u{user}"),
                "\">#",
            )
            .await,
        );
    }
    report("message lookup by user", times);
    let sample = store
        .message_list(
            "shop",
            &DeliveryFilter {
                campaign_id: Some(id),
                limit: 1000,
                ..DeliveryFilter::default()
            },
        )
        .await
        .unwrap();
    let mut times = Vec::new();
    for _ in 0..n {
        let m = &sample[fastrand::usize(..sample.len())];
        times.push(
            s.page(
                &format!("/console/apps/shop/messages/{}", m.id),
                "id=\"history\"",
            )
            .await,
        );
    }
    report("message page", times);
    let mut times = Vec::new();
    for _ in 0..n.min(10) {
        times.push(s.page("/console/apps/shop", "sends-24h").await);
    }
    report("overview (counted on each request)", times);
}
