//! `meridian demo`: a first run with nothing to configure and no network. It
//! starts the provider simulator in-process (TLS, its own CA, a generated APNs
//! key, the bundled test service account), seeds a few thousand users across
//! many time zones into a fresh SQLite database, runs the daemon's own API and
//! engine ([`Service`]), schedules a campaign for one local wall time in every
//! recipient's zone — due `lead` from now where most users are, hours later to
//! the west, tomorrow to the east — and sends a transactional push through
//! `POST /v1/push`, then shows progress until the first zones are delivered and
//! prints what happened and where to look next.

mod population;
mod report;
mod setup;

use crate::api::keys::{self, RandomError};
use crate::clock::Clock;
use crate::config::Config;
use crate::definitions::{self, ApplyError};
use crate::domain::campaign::parse_toml;
use crate::provider::jwt::JwtError;
use crate::service::{Service, ServiceError};
use crate::simulator::{Simulator, SimulatorError};
use crate::store::prelude::*;
use crate::store::{NewApiKey, SqliteStore, Store, StoreError};
use chrono::TimeDelta;
pub use population::{pick, population, Pick, SeedUser};
use report::{next_steps, summary, watch, Console};
use setup::{campaign_toml, seed, start_simulator, SeedStats};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The console account the demo creates (an admin, password printed once).
pub const DEMO_OPERATOR: &str = "demo@example.com";
pub const APP: &str = "demo";

pub const CAMPAIGN_KEY: &str = "demo-local-time";

/// The demo's database, in its directory.
pub const DATABASE_FILE: &str = "demo.db";

/// The configuration the demo ran with, written out for `campaign show`.
pub const CONFIG_FILE: &str = "meridian.toml";

/// How long past the first zones' due time the demo waits for them.
const FIRST_ZONES_WAIT: Duration = Duration::from_secs(60);

/// Time for sends in flight when the demo stops.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A bad option (exit code 2 on the CLI).
    #[error("{0}")]
    Option(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating the demo's APNs key: {0}")]
    Key(#[from] JwtError),
    #[error("generating the demo's API key: {0}")]
    Random(#[from] RandomError),
    #[error("simulator: {0}")]
    Simulator(#[from] SimulatorError),
    #[error("the demo's configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("the demo campaign: {0}")]
    Campaign(#[from] ApplyError),
    #[error("the demo's console operator: {0}")]
    Operator(#[from] crate::console::accounts::AccountError),
    #[error("POST /v1/push: {0}")]
    Push(String),
}

/// What `meridian demo` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Database, generated keys, config and campaign file; the previous run's are replaced.
    pub dir: PathBuf,
    pub users: u32,
    /// How long after the start the first zones are due.
    pub lead: Duration,
    /// The API's address; port 0 takes a free one.
    pub listen: SocketAddr,
    /// The API and simulator keep running after the summary (the caller waits).
    pub keep_running: bool,
    /// How to run this binary again, for the hints at the end.
    pub program: String,
}

impl Options {
    pub fn check(&self) -> Result<(), DemoError> {
        if self.lead < Duration::from_secs(1) || self.lead > Duration::from_secs(3600) {
            return Err(DemoError::Option(
                "--lead: must be between 1s and 1h".into(),
            ));
        }
        if !(100..=100_000).contains(&self.users) {
            return Err(DemoError::Option(
                "--users: must be between 100 and 100000".into(),
            ));
        }
        Ok(())
    }
}

/// A running demo: stop it with [`Demo::stop`] once the caller is done with it.
pub struct Demo {
    service: Service<SqliteStore>,
    store: Arc<SqliteStore>,
    simulator: Simulator,
    /// The first zones were delivered (and the push settled) within the wait.
    pub delivered: bool,
}

impl Demo {
    /// Stops the API and the engine (sends in flight are recorded), then the simulator.
    pub async fn stop(self) {
        self.service.stop(STOP_GRACE).await;
        self.store.close().await;
        drop(self.simulator);
    }
}

/// Runs the demo up to its summary; the API, engine and simulator are still
/// running when it returns.
pub async fn run(options: &Options, clock: Arc<dyn Clock>) -> Result<Demo, DemoError> {
    options.check()?;
    let console = Console::new();
    let dir = prepare_dir(&options.dir)?;
    let (simulator, config_text) = start_simulator(&dir, options.listen).await?;
    let config: Config =
        toml::from_str(&config_text).map_err(|e| DemoError::Config(e.to_string()))?;
    config
        .validate()
        .map_err(|e| DemoError::Config(e.to_string()))?;
    write(&dir.join(CONFIG_FILE), &config_text)?;
    let shown = |name: &str| options.dir.join(name).display().to_string();
    console.line(&format!(
        "Meridian demo in {} (a fresh database and keys each run)",
        options.dir.display()
    ));
    if let Some(url) = simulator.tls_url() {
        console.line(&format!(
            "  provider simulator: APNs and FCM over TLS HTTP/2 at {url} (CA {})",
            shown("simulator-ca.pem")
        ));
    }
    let store = Arc::new(SqliteStore::connect(&config.database).await?);
    store.migrate().await?;
    definitions::sync_apps(store.as_ref(), &config, clock.now()).await?;
    console.line(&format!(
        "  database: SQLite {}; configuration {}",
        shown(DATABASE_FILE),
        shown(CONFIG_FILE)
    ));

    let started = clock.now();
    let people = population(options.users);
    seed(store.as_ref(), &people, &console, clock.as_ref()).await?;
    let stats = SeedStats::of(&people);
    console.line(&format!(
        "  seeded {} users in {} zones: {} devices ({} iOS, {} Android, {} with a dead token), {} opted in to marketing ({:.1} s)",
        people.len(),
        stats.zones.len(),
        stats.ios + stats.android,
        stats.ios,
        stats.android,
        stats.dead,
        stats.opted_in,
        (clock.now() - started).num_milliseconds() as f64 / 1000.0
    ));

    let config = Arc::new(config);
    let service = Service::start(store.clone(), config.clone(), clock.clone()).await?;
    let api = format!("http://{}", service.api_addr);
    let key = keys::generate()?;
    store
        .api_key_create(
            &NewApiKey {
                app_id: APP,
                name: "demo",
                kind: crate::domain::keys::KeyKind::Server,
                prefix: &key.prefix,
                hash: &key.hash,
            },
            clock.now(),
        )
        .await?;
    console.line(&format!(
        "  REST API at {api}, API key {} (app {APP:?})",
        key.secret
    ));
    let password =
        crate::console::auth::random_password().map_err(|e| DemoError::Config(e.to_string()))?;
    crate::console::accounts::add(
        store.as_ref(),
        DEMO_OPERATOR,
        crate::domain::operator::Role::Admin,
        &crate::domain::operator::AppGrant::All,
        &password,
        &crate::console::accounts::Actor {
            operator_id: None,
            name: "demo",
            address: None,
        },
        clock.now(),
    )
    .await?;
    console.line(&format!(
        "  Console at {api}/console: sign in as {DEMO_OPERATOR}, password {password}"
    ));

    let lead = options.lead;
    let Some(picked) = pick(&stats.zones, clock.now(), lead) else {
        return Err(DemoError::Option("--users: no zone has users".into()));
    };
    let campaign_text = campaign_toml(&picked);
    let campaign_file = dir.join("campaigns").join(format!("{CAMPAIGN_KEY}.toml"));
    write(&campaign_file, &campaign_text)?;
    let def = parse_toml(&campaign_file.display().to_string(), &campaign_text)
        .map_err(ApplyError::from)?;
    let prepared = definitions::prepare(store.as_ref(), &config, &def, clock.now()).await?;
    let campaign = definitions::save(store.as_ref(), prepared, clock.now())
        .await?
        .record;
    let names: Vec<&str> = picked.first.iter().map(|z| z.name()).collect();
    console.line(&format!(
        "Campaign {CAMPAIGN_KEY} (#{}): type = \"local\" at {} in each recipient's zone, missed = \"next_day\" ({})",
        campaign.id,
        picked.at.format("%Y-%m-%dT%H:%M:%S"),
        shown(&format!("campaigns/{CAMPAIGN_KEY}.toml"))
    ));
    console.line(&format!(
        "  due first in {} ({} UTC, in {} s); later today to the west, tomorrow to the east",
        names.join(", "),
        picked.due.format("%H:%M:%S"),
        (picked.due - clock.now()).num_seconds().max(0)
    ));

    let push = send_push(&api, &key.secret, &people).await?;
    console.line(&format!(
        "Transactional push: POST {api}/v1/push for {} user ids → requestId {}, {} messages queued, unknown {:?}",
        push.user_ids,
        push.request_id,
        push.accepted,
        push.unknown
    ));

    let deadline = picked.due + TimeDelta::from_std(FIRST_ZONES_WAIT).unwrap_or(TimeDelta::MAX);
    let delivered = watch(
        store.as_ref(),
        campaign.id,
        &picked,
        &push.request_id,
        deadline,
        &console,
        clock.as_ref(),
    )
    .await?;

    let report = summary(store.as_ref(), campaign.id, &push, clock.now()).await?;
    for line in report {
        console.line(&line);
    }
    if !delivered {
        console.line(&format!(
            "The first zones were not all delivered by {} UTC; the table shows how far they got.",
            deadline.format("%H:%M:%S")
        ));
    }
    for line in next_steps(options, &api, &key.secret, campaign.id, &push.request_id) {
        console.line(&line);
    }
    Ok(Demo {
        service,
        store,
        simulator,
        delivered,
    })
}

/// Creates the directory and removes the previous run's database, so each run
/// starts from nothing. Returns the directory as an absolute path, so the
/// written configuration works from anywhere.
fn prepare_dir(dir: &Path) -> Result<PathBuf, DemoError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DemoError::File { path, source }
    };
    std::fs::create_dir_all(dir.join("campaigns")).map_err(io(dir))?;
    let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
    for name in ["", "-wal", "-shm"] {
        let file = dir.join(format!("{DATABASE_FILE}{name}"));
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&file)(e)),
            _ => {}
        }
    }
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| DemoError::File {
        path: path.to_owned(),
        source,
    })
}

/// A path as a TOML string.
fn quoted(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// What `POST /v1/push` answered.
#[derive(Debug, Clone)]
struct PushSent {
    user_ids: usize,
    request_id: String,
    accepted: u64,
    unknown: Vec<String>,
}

/// Sends an order-shipped push to a few users (and one id nobody has) through
/// the REST API, as a partner's backend would.
async fn send_push(api: &str, key: &str, people: &[SeedUser]) -> Result<PushSent, DemoError> {
    let mut ids: Vec<&str> = people
        .iter()
        .filter(|p| !p.devices.is_empty())
        .take(12)
        .map(|p| p.external_id.as_str())
        .collect();
    ids.push("no-such-user");
    let body = serde_json::json!({
        "userIds": ids,
        "message": {"title": "Your order has shipped", "summary": "Order 1042 is on its way."},
        "deeplink": "demo://orders/1042",
        "topic": "transactional",
    });
    let push_error = |e: reqwest::Error| DemoError::Push(e.to_string());
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(push_error)?;
    let response = client
        .post(format!("{api}/v1/push"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .map_err(push_error)?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.map_err(push_error)?;
    let request_id = answer["requestId"].as_str().filter(|_| status.is_success());
    let Some(request_id) = request_id else {
        return Err(DemoError::Push(format!("answered {status}: {answer}")));
    };
    Ok(PushSent {
        user_ids: ids.len(),
        request_id: request_id.to_owned(),
        accepted: answer["accepted"].as_u64().unwrap_or(0),
        unknown: answer["unknown"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::report::Progress;

    #[test]
    fn progress_fits_an_80_column_terminal_beside_the_bar() {
        let mut p = Progress {
            zones: 12,
            recipients: 9_999,
            push_total: 12,
            ..Progress::default()
        };
        assert_eq!(p.describe(61), "12 zones due in 61 s, push 0/12");
        (p.released, p.completed, p.recorded) = (12, 11, 9_999);
        (p.sent, p.invalid, p.push_sent) = (9_000, 999, 12);
        let text = p.describe(0);
        assert_eq!(text, "11/12 zones done, 9000 sent, 999 invalid, push 12/12");
        // "{bar:14} {pos}/{len} {wide_msg}"
        assert!(14 + " 9999/9999 ".len() + text.chars().count() <= 80);
    }
}
