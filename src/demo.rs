//! `meridian demo`: a first run with nothing to configure and no network. It
//! starts the provider simulator in-process (TLS, its own CA, a generated APNs
//! key, the bundled test service account), seeds a few thousand users across
//! many time zones into a fresh SQLite database, runs the daemon's own API and
//! engine ([`Service`]), schedules a campaign for one local wall time in every
//! recipient's zone — due `lead` from now where most users are, hours later to
//! the west, tomorrow to the east — and sends a transactional push through
//! `POST /v1/push`, then shows progress until the first zones are delivered and
//! prints what happened and where to look next.

use crate::store::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::api::keys::{self, RandomError};
use crate::campaign::{parse_toml, Platform};
use crate::clock::Clock;
use crate::config::Config;
use crate::definitions::{self, ApplyError};
use crate::provider::jwt::{self, Es256Key, JwtError, Rs256Key};
use crate::service::{Service, ServiceError};
use crate::simulator::{
    ApnsKey, Behaviour, FcmAccount, Simulator, SimulatorConfig, SimulatorError,
    TEST_SERVICE_ACCOUNT_KEY,
};
use crate::state::{DeliveryStatus, SlotState, StateMachine};
use crate::store::{
    DeliveryFilter, DeviceUpsert, NewApiKey, SlotRecord, SqliteStore, Store, StoreError, UserUpsert,
};
use crate::zone::{parse_zone, resolve_local};

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
/// Fixed, so every run seeds the same population and prints comparable numbers.
const SEED: u64 = 2026;
const BUNDLE_ID: &str = "com.example.demo";
const KEY_ID: &str = "DEMOKEY001";
const TEAM_ID: &str = "DEMOTEAM01";
const CLIENT_EMAIL: &str = "meridian-demo@demo-project.iam.gserviceaccount.com";
const PROJECT_ID: &str = "demo-project";
/// The simulator answers tokens starting with this as unregistered.
const DEAD_PREFIX: &str = "dead";

/// The seeded users' zones (users are spread over them evenly) and the locale
/// their devices report. Central Europe is the largest group of one offset, so
/// it is where the campaign comes due first; the list covers every offset from
/// −10:00 to +13:45, including the 30- and 45-minute ones.
const ZONES: &[(&str, &str)] = &[
    ("Europe/Berlin", "de-DE"),
    ("Europe/Paris", "fr-FR"),
    ("Europe/Madrid", "es-ES"),
    ("Europe/Rome", "it-IT"),
    ("Europe/Amsterdam", "nl-NL"),
    ("Europe/Warsaw", "pl-PL"),
    ("Europe/Stockholm", "sv-SE"),
    ("Europe/Vienna", "de-AT"),
    ("Africa/Lagos", "en-NG"),
    ("Europe/London", "en-GB"),
    ("Europe/Lisbon", "pt-PT"),
    ("Europe/Athens", "el-GR"),
    ("Europe/Helsinki", "fi-FI"),
    ("Africa/Johannesburg", "en-ZA"),
    ("Africa/Cairo", "ar-EG"),
    ("Europe/Istanbul", "tr-TR"),
    ("Asia/Riyadh", "ar-SA"),
    ("Asia/Tehran", "fa-IR"),
    ("Asia/Dubai", "ar-AE"),
    ("Asia/Kabul", "fa-AF"),
    ("Asia/Karachi", "ur-PK"),
    ("Asia/Kolkata", "hi-IN"),
    ("Asia/Kathmandu", "ne-NP"),
    ("Asia/Dhaka", "bn-BD"),
    ("Asia/Yangon", "my-MM"),
    ("Asia/Bangkok", "th-TH"),
    ("Asia/Jakarta", "id-ID"),
    ("Asia/Shanghai", "zh-CN"),
    ("Asia/Singapore", "en-SG"),
    ("Asia/Tokyo", "ja-JP"),
    ("Asia/Seoul", "ko-KR"),
    ("Australia/Adelaide", "en-AU"),
    ("Australia/Sydney", "en-AU"),
    ("Pacific/Auckland", "en-NZ"),
    ("Pacific/Chatham", "en-NZ"),
    ("America/Sao_Paulo", "pt-BR"),
    ("America/Argentina/Buenos_Aires", "es-AR"),
    ("America/St_Johns", "en-CA"),
    ("America/New_York", "en-US"),
    ("America/Toronto", "en-CA"),
    ("America/Bogota", "es-CO"),
    ("America/Chicago", "en-US"),
    ("America/Mexico_City", "es-MX"),
    ("America/Denver", "en-US"),
    ("America/Phoenix", "en-US"),
    ("America/Los_Angeles", "en-US"),
    ("America/Anchorage", "en-US"),
    ("Pacific/Honolulu", "en-US"),
];

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

/// When the demo campaign comes due. `at` is the wall time that the zones
/// sharing the most users' offset read `lead` from now (to the second); those
/// zones (`first`) get it at `due`, every other zone at the same wall time in
/// its own zone: later today to the west, tomorrow to the east.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub at: NaiveDateTime,
    pub due: DateTime<Utc>,
    pub first: Vec<Tz>,
}

/// Picks the local time of the demo campaign from the zones and their number of
/// users. Pure. `None` when no zone is given.
pub fn pick(zones: &[(Tz, u64)], now: DateTime<Utc>, lead: Duration) -> Option<Pick> {
    let ahead = now + TimeDelta::from_std(lead).ok()?;
    let second = TimeDelta::seconds(1);
    let due = match ahead.duration_trunc(second) {
        Ok(t) if t == ahead => t,
        Ok(t) => t + second,
        Err(_) => ahead,
    };
    // Zones with the same wall time at `due` share its offset.
    let mut groups: Vec<(NaiveDateTime, u64, Vec<Tz>)> = Vec::new();
    for &(tz, users) in zones {
        let wall = due.with_timezone(&tz).naive_local();
        // In an autumn overlap the wall time fires at its first occurrence, not `due`.
        if resolve_local(tz, wall).0 != due {
            continue;
        }
        match groups.iter_mut().find(|g| g.0 == wall) {
            Some(g) => {
                g.1 += users;
                g.2.push(tz);
            }
            None => groups.push((wall, users, vec![tz])),
        }
    }
    // The first of the largest groups.
    let (at, _, first) = groups.into_iter().rev().max_by_key(|g| g.1)?;
    Some(Pick { at, due, first })
}

/// One seeded user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedUser {
    pub external_id: String,
    pub zone: &'static str,
    pub locale: &'static str,
    pub devices: Vec<(Platform, String)>,
    /// Explicit marketing choice; `None` leaves the topic's default (off).
    pub marketing: Option<bool>,
}

/// The demo's users, the same for the same `n`: 2% without a device, 15% with
/// both an iPhone and an Android phone, 3% of tokens dead, 85% opted in to
/// marketing and 4% opted out.
pub fn population(n: u32) -> Vec<SeedUser> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    (0..n)
        .map(|i| {
            let (zone, locale) = ZONES[i as usize % ZONES.len()];
            let mut devices = Vec::new();
            if rng.f64() >= 0.02 {
                let first = if rng.bool() {
                    Platform::Ios
                } else {
                    Platform::Android
                };
                devices.push((first, token(&mut rng, first)));
                if rng.f64() < 0.15 {
                    let other = match first {
                        Platform::Ios => Platform::Android,
                        Platform::Android => Platform::Ios,
                    };
                    devices.push((other, token(&mut rng, other)));
                }
            }
            let choice = rng.f64();
            let marketing = if choice < 0.85 {
                Some(true)
            } else if choice < 0.89 {
                Some(false)
            } else {
                None
            };
            SeedUser {
                external_id: format!("demo-user-{i:05}"),
                zone,
                locale,
                devices,
                marketing,
            }
        })
        .collect()
}

/// A token in the platform's format; 3% start with the simulator's dead prefix.
fn token(rng: &mut fastrand::Rng, platform: Platform) -> String {
    let hex = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rng.u64(..),
        rng.u64(..),
        rng.u64(..),
        rng.u64(..)
    );
    let dead = rng.f64() < 0.03;
    match (platform, dead) {
        (Platform::Ios, false) => hex,
        (Platform::Ios, true) => format!("{DEAD_PREFIX}{}", &hex[DEAD_PREFIX.len()..]),
        (Platform::Android, false) => format!("f{}:APA91b{}", &hex[..21], &hex[21..]),
        (Platform::Android, true) => format!("{DEAD_PREFIX}-f{}", &hex[..40]),
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

/// Starts the simulator trusting a freshly generated APNs key and the bundled
/// test service account, writes the key files and its CA into `dir`, and
/// returns it with the demo's configuration (TOML) pointing at it.
async fn start_simulator(dir: &Path, listen: SocketAddr) -> Result<(Simulator, String), DemoError> {
    let p8 = jwt::generate_p8()?;
    let simulator = Simulator::start(SimulatorConfig {
        clock: None,
        tls_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        plain_addr: None,
        apns_keys: vec![ApnsKey {
            key_id: KEY_ID.into(),
            team_id: TEAM_ID.into(),
            public_key: Es256Key::from_pem(&p8)?.public_key(),
        }],
        apns_topics: vec![BUNDLE_ID.into()],
        fcm_accounts: vec![FcmAccount {
            client_email: CLIENT_EMAIL.into(),
            project_id: PROJECT_ID.into(),
            public_key: Rs256Key::from_pem(TEST_SERVICE_ACCOUNT_KEY)?.public_key(),
        }],
        behaviour: Behaviour {
            unregistered_prefix: Some(DEAD_PREFIX.into()),
            ..Behaviour::default()
        },
    })
    .await?;
    let base = simulator
        .tls_url()
        .ok_or_else(|| DemoError::Config("the simulator has no TLS listener".into()))?;
    let (key, sa, ca) = (
        dir.join("apns-key.p8"),
        dir.join("fcm-service-account.json"),
        dir.join("simulator-ca.pem"),
    );
    write(&key, &p8)?;
    write(&ca, &simulator.ca_pem)?;
    let account = serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT_ID,
        "client_email": CLIENT_EMAIL,
        "private_key": TEST_SERVICE_ACCOUNT_KEY,
        "token_uri": format!("{base}/token"),
    });
    write(&sa, &account.to_string())?;
    let text = format!(
        r#"# Written by `meridian demo`: the configuration it ran with. The provider
# simulator it points at runs only while the demo does.

[database]
url = {db}

[server]
listen = "{listen}"

[campaigns]
dir = {campaigns}

[log]
level = "warn"

[apps.{APP}]
name = "Meridian demo"
default_timezone = "UTC"

[apps.{APP}.topics]
marketing = {{ default_subscribed = false }}
transactional = {{ default_subscribed = true }}

[apps.{APP}.apns]
bundle_id = "{BUNDLE_ID}"
key_file = {key}
key_id = "{KEY_ID}"
team_id = "{TEAM_ID}"
base_url = "{base}"
ca_file = {ca}

[apps.{APP}.fcm]
service_account_file = {sa}
base_url = "{base}"
ca_file = {ca}
"#,
        db = toml::Value::String(format!("sqlite://{}", dir.join(DATABASE_FILE).display())),
        campaigns = quoted(&dir.join("campaigns")),
        key = quoted(&key),
        ca = quoted(&ca),
        sa = quoted(&sa),
    );
    Ok((simulator, text))
}

/// Counts of the seeded population.
#[derive(Debug, Default)]
struct SeedStats {
    /// Users per zone, in `ZONES` order.
    zones: Vec<(Tz, u64)>,
    ios: u64,
    android: u64,
    dead: u64,
    opted_in: u64,
}

impl SeedStats {
    fn of(people: &[SeedUser]) -> Self {
        let mut s = Self::default();
        for p in people {
            if let Some(tz) = parse_zone(p.zone) {
                match s.zones.iter_mut().find(|z| z.0 == tz) {
                    Some(z) => z.1 += 1,
                    None => s.zones.push((tz, 1)),
                }
            }
            for (platform, token) in &p.devices {
                match platform {
                    Platform::Ios => s.ios += 1,
                    Platform::Android => s.android += 1,
                }
                s.dead += u64::from(token.starts_with(DEAD_PREFIX));
            }
            s.opted_in += u64::from(p.marketing == Some(true));
        }
        s
    }
}

/// Writes the users in batches, then their devices and marketing choices.
async fn seed<S: Store>(
    store: &S,
    people: &[SeedUser],
    console: &Console,
    clock: &dyn Clock,
) -> Result<(), StoreError> {
    let bar = console.bar(people.len() as u64, "seeding users");
    for batch in people.chunks(500) {
        let rows: Vec<UserUpsert<'_>> = batch
            .iter()
            .map(|p| UserUpsert {
                app_id: APP,
                external_id: &p.external_id,
                timezone: Some(p.zone),
                locale: Some(p.locale),
                ..UserUpsert::default()
            })
            .collect();
        store.user_upsert_many(&rows, clock.now()).await?;
    }
    for (n, p) in people.iter().enumerate() {
        for (i, (platform, token)) in p.devices.iter().enumerate() {
            store
                .device_upsert(
                    &DeviceUpsert {
                        app_id: APP,
                        user_external_id: Some(&p.external_id),
                        install_id: None,
                        platform: *platform,
                        token,
                        timezone: None,
                        locale: Some(p.locale),
                        primary: i == 0,
                    },
                    clock.now(),
                )
                .await?;
        }
        if let Some(choice) = p.marketing {
            store
                .subscription_set(APP, &p.external_id, &[("marketing", choice)], clock.now())
                .await?;
        }
        bar.set_position(n as u64 + 1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// The demo campaign as a campaign file, written beside the database.
fn campaign_toml(picked: &Pick) -> String {
    let hhmm = picked.at.format("%H:%M");
    format!(
        r#"# Written by `meridian demo`: one local wall time in every recipient's zone.
key = "{CAMPAIGN_KEY}"
name = "Demo: {hhmm} in every recipient's zone"
app = "{APP}"
status = "scheduled"

[message]
title = "It is {hhmm} where you are"
body = "Everyone gets this at {hhmm} on their own clock, zone by zone."
deeplink = "demo://today"
collapse_key = "{CAMPAIGN_KEY}"

[message.locales.de]
title = "Bei dir ist es {hhmm}"
body = "Alle bekommen das um {hhmm} ihrer eigenen Uhrzeit, Zone für Zone."

[message.locales.fr]
title = "Il est {hhmm} chez vous"
body = "Chacun le reçoit à {hhmm} à son heure, fuseau par fuseau."

[message.locales.es]
title = "Son las {hhmm} donde estás"
body = "Todos lo reciben a las {hhmm} en su propia hora, zona por zona."

[audience]
topics = ["marketing"]

[schedule]
type = "local"
at = "{at}"
missed = "next_day"
"#,
        at = picked.at.format("%Y-%m-%dT%H:%M:%S"),
    )
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

/// Statuses a delivery can still leave on its own.
fn in_progress(status: &str) -> bool {
    matches!(
        DeliveryStatus::parse(status),
        Ok(DeliveryStatus::Queued | DeliveryStatus::Leased | DeliveryStatus::Retry)
    )
}

/// Statuses that mean the provider accepted the message.
fn accepted(status: &str) -> bool {
    matches!(
        DeliveryStatus::parse(status),
        Ok(DeliveryStatus::Sent
            | DeliveryStatus::Delivered
            | DeliveryStatus::Opened
            | DeliveryStatus::Dismissed)
    )
}

/// Where the first zones and the push are.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Progress {
    zones: usize,
    released: usize,
    completed: usize,
    recipients: i64,
    recorded: i64,
    sent: i64,
    invalid: i64,
    push_total: usize,
    push_sent: usize,
    push_settled: usize,
}

impl Progress {
    fn done(&self) -> bool {
        self.zones > 0 && self.completed == self.zones && self.push_settled == self.push_total
    }

    /// Short enough for an 80-column terminal beside the bar.
    fn describe(&self, until_due: i64) -> String {
        let push = format!("push {}/{}", self.push_sent, self.push_total);
        if self.released == 0 && self.recorded == 0 && until_due > 0 {
            return format!("{} zones due in {until_due} s, {push}", self.zones);
        }
        format!(
            "{}/{} zones done, {} sent, {} invalid, {push}",
            self.completed, self.zones, self.sent, self.invalid
        )
    }
}

/// The slots due at the picked instant that have recipients: the first zones.
fn first_zones<'a>(slots: &'a [SlotRecord], picked: &Pick) -> Vec<&'a SlotRecord> {
    slots
        .iter()
        .filter(|s| s.fire_at <= picked.due && s.planned_count > 0)
        .collect()
}

async fn progress<S: Store>(
    store: &S,
    campaign_id: i64,
    picked: &Pick,
    request_id: &str,
) -> Result<Progress, StoreError> {
    let slots = store.slot_list(campaign_id).await?;
    let first = first_zones(&slots, picked);
    let ids: HashSet<i64> = first.iter().map(|s| s.id).collect();
    let mut p = Progress {
        zones: first.len(),
        released: first
            .iter()
            .filter(|s| s.state != SlotState::Pending)
            .count(),
        completed: first
            .iter()
            .filter(|s| s.state == SlotState::Completed)
            .count(),
        recipients: first.iter().map(|s| s.planned_count).sum(),
        ..Progress::default()
    };
    for (slot, status, n) in store.delivery_count_by_slot(campaign_id).await? {
        if !ids.contains(&slot) {
            continue;
        }
        if !in_progress(&status) {
            p.recorded += n;
        }
        if accepted(&status) {
            p.sent += n;
        } else if status == DeliveryStatus::TokenInvalid.as_str() {
            p.invalid += n;
        }
    }
    let messages = store.message_list(APP, &push_filter(request_id)).await?;
    p.push_total = messages.len();
    p.push_sent = messages.iter().filter(|m| accepted(&m.status)).count();
    p.push_settled = messages.iter().filter(|m| !in_progress(&m.status)).count();
    Ok(p)
}

fn push_filter(request_id: &str) -> DeliveryFilter<'_> {
    DeliveryFilter {
        request_id: Some(request_id),
        limit: 1000,
        ..DeliveryFilter::default()
    }
}

/// Shows progress until the first zones are completed and the push settled, or
/// until `deadline`. Returns whether they were.
async fn watch<S: Store>(
    store: &S,
    campaign_id: i64,
    picked: &Pick,
    request_id: &str,
    deadline: DateTime<Utc>,
    console: &Console,
    clock: &dyn Clock,
) -> Result<bool, StoreError> {
    let mut bar: Option<Bar> = None;
    let mut last_line: Option<(DateTime<Utc>, String)> = None;
    loop {
        let p = progress(store, campaign_id, picked, request_id).await?;
        let now = clock.now();
        let until_due = (picked.due - now).num_seconds() + 1;
        let text = p.describe(until_due.max(0));
        let bar = bar.get_or_insert_with(|| console.bar(p.recipients.max(1) as u64, ""));
        bar.set_position(p.recorded as u64);
        bar.set_message(&text);
        if !console.terminal {
            // Off a terminal: a plain line when something changed, at most every 5 s.
            let due = last_line
                .as_ref()
                .is_none_or(|(at, said)| *said != text && now - *at >= TimeDelta::seconds(5));
            if due || p.done() {
                console.line(&format!("  {text}"));
                last_line = Some((now, text));
            }
        }
        if p.done() || now >= deadline {
            bar.finish_and_clear();
            return Ok(p.done());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The per-zone table, the counts by status and who was left out.
async fn summary<S: Store>(
    store: &S,
    campaign_id: i64,
    push: &PushSent,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let slots = store.slot_list(campaign_id).await?;
    let mut delivered: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    for (slot, status, n) in store.delivery_count_by_slot(campaign_id).await? {
        *delivered
            .entry(slot)
            .or_default()
            .entry(status)
            .or_default() += n;
    }
    let mut recipients: BTreeMap<i64, i64> = BTreeMap::new();
    let mut excluded: BTreeMap<String, i64> = BTreeMap::new();
    for (slot, kind, n) in store.slot_count_by_state(campaign_id).await? {
        match kind.strip_prefix("excluded:") {
            Some(reason) if n > 0 => *excluded.entry(reason.to_owned()).or_default() += n,
            Some(_) => {}
            None if kind == "recipients" => *recipients.entry(slot).or_default() += n,
            None => {}
        }
    }
    let mut shown: Vec<&SlotRecord> = slots.iter().filter(|s| s.planned_count > 0).collect();
    shown.sort_by(|a, b| (a.fire_at, &a.zone).cmp(&(b.fire_at, &b.zone)));
    let mut out = vec![
        String::new(),
        format!(
            "{:<31} {:<20} {:<20} {:>10} {:>6} {:>8} {:>6}",
            "ZONE", "LOCAL DUE", "STATE", "RECIPIENTS", "SENT", "INVALID", "FAILED"
        ),
    ];
    for s in shown {
        let local = parse_zone(&s.zone).map_or_else(
            || s.fire_at.format("%a %H:%M:%S UTC").to_string(),
            |tz| {
                s.fire_at
                    .with_timezone(&tz)
                    .format("%a %H:%M:%S %Z")
                    .to_string()
            },
        );
        let state = if s.state == SlotState::Pending {
            format!("pending, in {}", span(s.fire_at - now))
        } else {
            s.state.to_string()
        };
        let counts = delivered.get(&s.id);
        let sum = |f: &dyn Fn(&str) -> bool| -> i64 {
            counts.map_or(0, |c| c.iter().filter(|(k, _)| f(k)).map(|(_, n)| n).sum())
        };
        let sent = sum(&accepted);
        let invalid = sum(&|k| k == DeliveryStatus::TokenInvalid.as_str());
        // Final without reaching the device for another reason (failed, expired).
        let failed =
            sum(&|k| !accepted(k) && !in_progress(k) && k != DeliveryStatus::TokenInvalid.as_str());
        let (sent, invalid, failed) = if s.state == SlotState::Pending {
            ("-".to_owned(), "-".to_owned(), "-".to_owned())
        } else {
            (sent.to_string(), invalid.to_string(), failed.to_string())
        };
        out.push(format!(
            "{:<31} {:<20} {:<20} {:>10} {:>6} {:>8} {:>6}",
            s.zone,
            local,
            state,
            recipients.get(&s.id).copied().unwrap_or(s.planned_count),
            sent,
            invalid,
            failed
        ));
    }
    out.push(String::new());
    let by_status = store.delivery_count_by_status(campaign_id).await?;
    out.push(format!(
        "Campaign deliveries by status: {}",
        counts_line(by_status.iter().map(|(k, n)| (k.as_str(), *n)))
    ));
    if !excluded.is_empty() {
        out.push(format!(
            "Left out when the zones were released: {}",
            counts_line(excluded.iter().map(|(k, n)| (k.as_str(), *n)))
        ));
    }
    let messages = store
        .message_list(APP, &push_filter(&push.request_id))
        .await?;
    let mut push_counts: BTreeMap<&str, i64> = BTreeMap::new();
    for m in &messages {
        *push_counts.entry(m.status.as_str()).or_default() += 1;
    }
    let unknown = if push.unknown.is_empty() {
        String::new()
    } else {
        format!("; unknown ids: {}", push.unknown.join(", "))
    };
    out.push(format!(
        "Transactional push {} by status: {}{unknown}",
        push.request_id,
        counts_line(push_counts.into_iter())
    ));
    Ok(out)
}

fn counts_line<'a>(counts: impl Iterator<Item = (&'a str, i64)>) -> String {
    let parts: Vec<String> = counts.map(|(k, n)| format!("{k} {n}")).collect();
    if parts.is_empty() {
        "none yet".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `45 s`, `59 min`, `2h 05m`.
fn span(d: TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Where to look next: the API with the demo's key, and the CLI on its database.
fn next_steps(
    options: &Options,
    api: &str,
    key: &str,
    campaign_id: i64,
    request_id: &str,
) -> Vec<String> {
    let program = &options.program;
    let config = options.dir.join(CONFIG_FILE);
    let running = if options.keep_running {
        "The API and the simulator keep running until Ctrl-C.".to_owned()
    } else {
        format!("The API and the simulator stop with the demo; `{program} demo --keep-running` keeps them up until Ctrl-C.")
    };
    vec![
        String::new(),
        "Where to look next".to_owned(),
        format!("  {running}"),
        format!("  KEY={key}"),
        format!("  curl \"{api}/v1/messages?campaign={campaign_id}&status=token_invalid&limit=5\" -H \"Authorization: Bearer $KEY\""),
        format!("  curl \"{api}/v1/messages?request={request_id}\" -H \"Authorization: Bearer $KEY\""),
        format!("  curl {api}/v1/campaigns/{campaign_id}/slots -H \"Authorization: Bearer $KEY\""),
        format!("  curl {api}/health"),
        format!("  curl {api}/metrics"),
        format!(
            "  {program} --config {} campaign show {CAMPAIGN_KEY}   (the demo database, any time)",
            config.display()
        ),
    ]
}

/// Lines on stdout, and progress bars on stderr when it is a terminal.
struct Console {
    terminal: bool,
}

/// A progress bar, or nothing off a terminal.
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn set_position(&self, n: u64) {
        self.0.set_position(n);
    }

    fn set_message(&self, text: &str) {
        self.0.set_message(text.to_owned());
    }

    fn finish_and_clear(&self) {
        self.0.finish_and_clear();
    }
}

impl Console {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn bar(&self, len: u64, message: &str) -> Bar {
        if !self.terminal {
            return Bar(indicatif::ProgressBar::hidden());
        }
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:14} {pos}/{len} {wide_msg}")
        {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        Bar(bar)
    }

    /// A line on stdout; a closed stdout is not the demo's failure.
    fn line(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn zones(names: &[&str]) -> Vec<(Tz, u64)> {
        names.iter().map(|n| (parse_zone(n).unwrap(), 10)).collect()
    }

    fn demo_zones() -> Vec<(Tz, u64)> {
        ZONES
            .iter()
            .map(|(n, _)| (parse_zone(n).unwrap(), 10))
            .collect()
    }

    #[test]
    fn every_listed_zone_is_known() {
        for (zone, locale) in ZONES {
            assert!(parse_zone(zone).is_some(), "{zone}");
            assert!(!locale.is_empty());
        }
    }

    #[test]
    fn the_largest_offset_group_comes_due_after_the_lead() {
        // 23 November: central Europe is on UTC+1 and shares it with Lagos.
        let now =
            Utc.with_ymd_and_hms(2026, 11, 23, 18, 6, 11).unwrap() + TimeDelta::milliseconds(400);
        let p = pick(&demo_zones(), now, Duration::from_secs(60)).unwrap();
        assert_eq!(
            p.due,
            Utc.with_ymd_and_hms(2026, 11, 23, 18, 7, 12).unwrap()
        );
        assert_eq!(p.at.to_string(), "2026-11-23 19:07:12");
        let names: Vec<&str> = p.first.iter().map(|z| z.name()).collect();
        assert_eq!(
            names,
            [
                "Europe/Berlin",
                "Europe/Paris",
                "Europe/Madrid",
                "Europe/Rome",
                "Europe/Amsterdam",
                "Europe/Warsaw",
                "Europe/Stockholm",
                "Europe/Vienna",
                "Africa/Lagos"
            ]
        );
        // Every first zone reads `at` at `due`; every other zone reads it at
        // least 15 minutes earlier or later (the demo ends before then).
        for (tz, _) in demo_zones() {
            let fires = resolve_local(tz, p.at).0;
            if p.first.contains(&tz) {
                assert_eq!(fires, p.due, "{tz}");
            } else {
                assert!((fires - p.due).abs() >= TimeDelta::minutes(15), "{tz}");
            }
        }
        // London (UTC+0) gets it an hour later, Tokyo's 19:07 is already past.
        let london = resolve_local(parse_zone("Europe/London").unwrap(), p.at).0;
        assert_eq!(london - p.due, TimeDelta::hours(1));
        let tokyo = resolve_local(parse_zone("Asia/Tokyo").unwrap(), p.at).0;
        assert!(tokyo < now);
    }

    #[test]
    fn in_summer_the_group_follows_the_offsets() {
        // 1 July: central Europe is on UTC+2, with Johannesburg; Lagos stays at +1.
        let now = Utc.with_ymd_and_hms(2026, 7, 1, 6, 0, 0).unwrap();
        let p = pick(&demo_zones(), now, Duration::from_secs(3)).unwrap();
        assert_eq!(p.due, now + TimeDelta::seconds(3));
        assert_eq!(p.at.to_string(), "2026-07-01 08:00:03");
        let names: Vec<&str> = p.first.iter().map(|z| z.name()).collect();
        assert!(names.contains(&"Africa/Johannesburg"));
        assert!(!names.contains(&"Africa/Lagos"));
        assert_eq!(names[0], "Europe/Berlin");
    }

    #[test]
    fn users_decide_the_group_and_ties_go_to_the_first() {
        let now = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
        let mut z = zones(&["Asia/Tokyo", "Europe/Berlin", "Asia/Seoul"]);
        let p = pick(&z, now, Duration::from_secs(5)).unwrap();
        let names: Vec<&str> = p.first.iter().map(|z| z.name()).collect();
        assert_eq!(names, ["Asia/Tokyo", "Asia/Seoul"]);
        z[1].1 = 25;
        let p = pick(&z, now, Duration::from_secs(5)).unwrap();
        assert_eq!(p.first, [chrono_tz::Europe::Berlin]);
        let p = pick(
            &zones(&["Asia/Kolkata", "Asia/Kathmandu"]),
            now,
            Duration::ZERO,
        );
        assert_eq!(p.unwrap().first, [chrono_tz::Asia::Kolkata]);
        assert_eq!(pick(&[], now, Duration::from_secs(5)), None);
    }

    #[test]
    fn a_wall_time_that_happens_twice_is_not_picked() {
        // 25 October 2026: at 01:00 UTC Berlin went from 03:00 CEST back to
        // 02:00 CET, so at 01:30 UTC it reads 02:30 for the second time.
        let now = Utc.with_ymd_and_hms(2026, 10, 25, 1, 29, 0).unwrap();
        let z = zones(&["Europe/Berlin", "Africa/Lagos"]);
        let p = pick(&z, now, Duration::from_secs(60)).unwrap();
        // Berlin's 02:30 would fire at its first occurrence, an hour ago: only Lagos.
        assert_eq!(p.first, [chrono_tz::Africa::Lagos]);
        assert_eq!(p.at.to_string(), "2026-10-25 02:30:00");
    }

    #[test]
    fn the_population_is_the_same_every_run_and_mixed() {
        let a = population(3000);
        assert_eq!(a, population(3000));
        let s = SeedStats::of(&a);
        assert_eq!(s.zones.len(), ZONES.len());
        assert!(s.zones.iter().all(|(_, n)| *n >= 3000 / ZONES.len() as u64));
        let devices = s.ios + s.android;
        assert!((3300..3600).contains(&devices), "{devices}");
        assert!(s.ios > 1000 && s.android > 1000);
        assert!((40..200).contains(&s.dead), "{}", s.dead);
        assert!((2400..2700).contains(&s.opted_in), "{}", s.opted_in);
        assert!(a.iter().any(|p| p.devices.is_empty()));
        for p in &a {
            for (platform, token) in &p.devices {
                if *platform == Platform::Ios {
                    assert_eq!(token.len(), 64);
                    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
                }
                crate::audience::check_token(*platform, token).unwrap();
            }
        }
    }

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

    #[test]
    fn spans_read_as_hours_and_minutes() {
        assert_eq!(span(TimeDelta::seconds(42)), "42 s");
        assert_eq!(span(TimeDelta::seconds(3599)), "59 min");
        assert_eq!(span(TimeDelta::minutes(61)), "1h 01m");
        assert_eq!(span(TimeDelta::hours(23)), "23h 00m");
        assert_eq!(span(TimeDelta::seconds(-3)), "0 s");
    }
}
