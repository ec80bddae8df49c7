//! What the demo sets up: the simulator in-process, the seeded store, the campaign file.

use super::population::{Pick, SeedUser, DEAD_PREFIX};
use super::report::Console;
use super::{quoted, write, DemoError, APP, CAMPAIGN_KEY, DATABASE_FILE};
use crate::clock::Clock;
use crate::domain::campaign::Platform;
use crate::domain::zone::parse_zone;
use crate::provider::jwt::{self, Es256Key, Rs256Key};
use crate::simulator::{
    ApnsKey, Behaviour, FcmAccount, Simulator, SimulatorConfig, TEST_SERVICE_ACCOUNT_KEY,
};
use crate::store::{DeviceUpsert, Store, StoreError, UserUpsert};
use chrono_tz::Tz;
use std::net::SocketAddr;
use std::path::Path;

pub(super) const BUNDLE_ID: &str = "com.example.demo";

pub(super) const KEY_ID: &str = "DEMOKEY001";

pub(super) const TEAM_ID: &str = "DEMOTEAM01";

pub(super) const CLIENT_EMAIL: &str = "meridian-demo@demo-project.iam.gserviceaccount.com";

pub(super) const PROJECT_ID: &str = "demo-project";

/// Starts the simulator trusting a freshly generated APNs key and the bundled
/// test service account, writes the key files and its CA into `dir`, and
/// returns it with the demo's configuration (TOML) pointing at it.
pub(super) async fn start_simulator(
    dir: &Path,
    listen: SocketAddr,
) -> Result<(Simulator, String), DemoError> {
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
pub(super) struct SeedStats {
    /// Users per zone, in `ZONES` order.
    pub(super) zones: Vec<(Tz, u64)>,
    pub(super) ios: u64,
    pub(super) android: u64,
    pub(super) dead: u64,
    pub(super) opted_in: u64,
}

impl SeedStats {
    pub(super) fn of(people: &[SeedUser]) -> Self {
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
pub(super) async fn seed<S: Store>(
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
pub(super) fn campaign_toml(picked: &Pick) -> String {
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
