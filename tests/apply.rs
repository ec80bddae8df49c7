//! Scheduling a definition end to end on both backends: the audience's zones
//! are read, planned, and written as slots with the definition.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::TestDb;
use meridian::config::Config;
use meridian::definitions::{self, ApplyError};
use meridian::domain::campaign::{parse_toml, Platform};
use meridian::domain::planner::PlanError;
use meridian::domain::state::{CampaignState, SlotState};
use meridian::store::{DeviceUpsert, SaveOutcome, Store, StoreError};

fn config() -> Config {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/meridian.toml"))
            .unwrap();
    let config: Config = toml::from_str(&text).unwrap();
    config.validate().unwrap();
    config
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

const MORNING: &str = r#"
key = "morning"
app = "shop"
status = "scheduled"
[message]
title = "Good morning"
body = "Hello"
[audience]
topics = ["marketing"]
[schedule]
type = "local"
at = "2026-12-01T09:00"
"#;

async fn seed<S: Store>(s: &S, zones: &[(&str, usize)], now: DateTime<Utc>) {
    let mut n = 0;
    for (zone, count) in zones {
        for _ in 0..*count {
            n += 1;
            let user = format!("user-{n}");
            let token = format!("token-{n}");
            s.device_upsert(
                &DeviceUpsert {
                    app_id: "shop",
                    user_external_id: Some(&user),
                    install_id: None,
                    platform: if n % 2 == 0 {
                        Platform::Ios
                    } else {
                        Platform::Android
                    },
                    token: &token,
                    timezone: Some(zone),
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
        }
    }
}

async fn local_campaign_gets_one_slot_per_zone<S: Store>(db: &TestDb<S>) {
    let s = &db.store;
    let config = config();
    let now = at(2026, 11, 23, 10, 0);
    definitions::sync_apps(s, &config, now).await.unwrap();
    seed(
        s,
        &[
            ("Asia/Kathmandu", 3),
            ("America/St_Johns", 2),
            ("Pacific/Chatham", 1),
            ("Europe/Berlin", 4),
        ],
        now,
    )
    .await;

    let def = parse_toml("morning.toml", MORNING).unwrap();
    let prepared = definitions::prepare(s, &config, &def, now).await.unwrap();
    let applied = definitions::save(s, prepared, now).await.unwrap();
    assert_eq!(applied.outcome, SaveOutcome::Created);
    assert_eq!(applied.record.state, CampaignState::Scheduled);
    let slots = s.slot_list(applied.record.id).await.unwrap();
    let got: Vec<(&str, DateTime<Utc>, i64)> = slots
        .iter()
        .filter(|s| s.planned_count > 0)
        .map(|s| (s.zone.as_str(), s.fire_at, s.planned_count))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Pacific/Chatham", at(2026, 11, 30, 19, 15), 1),
            ("Asia/Kathmandu", at(2026, 12, 1, 3, 15), 3),
            ("Europe/Berlin", at(2026, 12, 1, 8, 0), 4),
            ("America/St_Johns", at(2026, 12, 1, 12, 30), 2),
        ]
    );
    assert!(slots
        .iter()
        .all(|s| s.state == SlotState::Pending && s.occurrence == "2026-12-01T09:00"));
}

async fn late_zones_are_recorded_as_skipped<S: Store>(db: &TestDb<S>) {
    let s = &db.store;
    let config = config();
    // 09:00 has passed in Kathmandu (03:15Z) by hours, in Berlin (08:00Z) by 30 minutes.
    let now = at(2026, 12, 1, 8, 30);
    definitions::sync_apps(s, &config, now).await.unwrap();
    seed(
        s,
        &[
            ("Asia/Kathmandu", 2),
            ("Europe/Berlin", 1),
            ("America/New_York", 1),
        ],
        now,
    )
    .await;
    let def = parse_toml("morning.toml", MORNING).unwrap();
    let applied = definitions::save(
        s,
        definitions::prepare(s, &config, &def, now).await.unwrap(),
        now,
    )
    .await
    .unwrap();
    let slots = s.slot_list(applied.record.id).await.unwrap();
    let by_zone = |z: &str| slots.iter().find(|s| s.zone == z).unwrap();
    assert_eq!(by_zone("Asia/Kathmandu").state, SlotState::Skipped);
    assert_eq!(by_zone("Asia/Kathmandu").planned_count, 2);
    assert_eq!(by_zone("Europe/Berlin").disposition, "late_send_now");
    assert_eq!(by_zone("Europe/Berlin").fire_at, now);
    assert_eq!(by_zone("America/New_York").fire_at, at(2026, 12, 1, 14, 0));
}

async fn passed_everywhere_writes_nothing<S: Store>(db: &TestDb<S>) {
    let s = &db.store;
    let config = config();
    let now = at(2026, 12, 3, 0, 0);
    definitions::sync_apps(s, &config, now).await.unwrap();
    seed(s, &[("Europe/Berlin", 1)], now).await;
    let def = parse_toml("morning.toml", MORNING).unwrap();
    let err = definitions::prepare(s, &config, &def, now)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::Plan(PlanError::PassedEverywhere { .. })),
        "{err:?}"
    );
    assert!(err.is_input());
    assert!(s.campaign_list(None).await.unwrap().is_empty());
}

async fn running_campaign_refuses_a_new_definition<S: Store>(db: &TestDb<S>) {
    let s = &db.store;
    let config = config();
    let now = at(2026, 11, 23, 10, 0);
    definitions::sync_apps(s, &config, now).await.unwrap();
    let def = parse_toml("morning.toml", MORNING).unwrap();
    let applied = definitions::save(
        s,
        definitions::prepare(s, &config, &def, now).await.unwrap(),
        now,
    )
    .await
    .unwrap();
    s.campaign_set_state(
        applied.record.id,
        CampaignState::Scheduled,
        CampaignState::Running,
        now,
    )
    .await
    .unwrap();
    let edited = parse_toml("morning.toml", &MORNING.replace("Good morning", "Morning!")).unwrap();
    let err = definitions::prepare(s, &config, &edited, now)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::Store(StoreError::NotEditable {
                state: CampaignState::Running,
                ..
            })
        ),
        "{err:?}"
    );
    // The unchanged definition is still accepted (applying the same files is idempotent).
    let same = definitions::prepare(s, &config, &def, now).await.unwrap();
    let again = definitions::save(s, same, now).await.unwrap();
    assert_eq!(again.outcome, SaveOutcome::Unchanged);
    assert_eq!(again.record.state, CampaignState::Running);
}

storage_tests!(
    local_campaign_gets_one_slot_per_zone,
    late_zones_are_recorded_as_skipped,
    passed_everywhere_writes_nothing,
    running_campaign_refuses_a_new_definition,
);
