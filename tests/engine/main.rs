//! The engine end to end on both backends, driven step by step with a manual
//! clock, sending over TLS HTTP/2 to the provider simulator.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use common::rig::{at, get, post, release_one, rig};
use common::TestDb;
use meridian::clock::Clock;
use meridian::config::Config;
use meridian::definitions;
use meridian::domain::campaign::Platform;
use meridian::domain::state::{CampaignState, DeviceState};
use meridian::simulator::Behaviour;
use meridian::store::{DeviceUpsert, Store, StoreError};
use meridian::store::{LeaseTerms, RetentionKind};

/// The stored definition of a due slot's campaign.
fn definition_of(
    slot: &meridian::store::CampaignSlot,
) -> meridian::domain::campaign::CampaignDefinition {
    slot.definition.0.clone().unwrap()
}

/// The segment a campaign of the shop app sends to, as the engine builds it.
fn segment_of<'a>(
    config: &'a Config,
    def: &'a meridian::domain::campaign::CampaignDefinition,
) -> meridian::store::Segment<'a> {
    meridian::store::Segment {
        app_id: "shop",
        audience: &def.audience,
        topics: definitions::topic_rules(&config.apps["shop"], &def.audience.topics),
    }
}

/// Releases every due slot into chunks of 5, as the engine's release stage does.
async fn release_all<S: Store>(s: &S, config: &Config, now: DateTime<Utc>) {
    for slot in s.slot_list_due(now, 10).await.unwrap() {
        let def = definition_of(&slot);
        let segment = segment_of(config, &def);
        release_one(s, &slot, &segment, 5, "a", now).await.unwrap();
    }
}

mod audience;
mod ops;
mod schedule;
mod sending;
