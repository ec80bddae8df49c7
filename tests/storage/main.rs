//! The storage suite: every test runs on SQLite and on Postgres.

#[path = "../common/mod.rs"]
mod common;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::TestDb;
use meridian::config::DatabaseKind;
use meridian::domain::campaign::{AttributeFilter, Audience, DevicePolicy, FilterOp, Platform};
use meridian::domain::planner::{Disposition, ZoneCount};
use meridian::domain::state::{
    CampaignState, ChunkState, DeliveryStatus, DeviceState, FallbackState, OutboxState, SlotState,
    StateMachine,
};
use meridian::store::prelude::*;
use meridian::store::{
    AppRecord, CampaignSave, DeviceUpsert, NewSlot, SaveOutcome, Segment, Store, StoreError,
    TopicRule, UserUpsert,
};
use meridian::store::{Dialect, LeaseTerms, PgDialect, SqliteDialect};
use serde_json::json;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}

async fn app<S: Store>(s: &S, id: &str) {
    s.app_sync(
        &AppRecord {
            id: id.into(),
            name: id.into(),
            default_timezone: "UTC".into(),
        },
        now(),
    )
    .await
    .expect("sync app");
}

fn device<'a>(app: &'a str, user: Option<&'a str>, token: &'a str) -> DeviceUpsert<'a> {
    DeviceUpsert {
        app_id: app,
        user_external_id: user,
        install_id: None,
        platform: Platform::Ios,
        token,
        timezone: None,
        locale: None,
        primary: false,
    }
}

mod audience;
mod campaigns;
mod dispatch;
mod retention;
mod schema;
