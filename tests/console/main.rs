//! The console over HTTP as a browser uses it, on both backends: `sessions`
//! (accounts, CSRF, throttle, roles, escaping, headers), `composing` (composer,
//! plan, confirmations, list), `watching` (live region, funnel, CSV, overview)
//! and `admin` (keys, operators, test pushes). Helpers shared by them here.

#[path = "../common/mod.rs"]
mod common;

use std::sync::Arc;

use common::console::{operator, serve_console, Client, PASSWORD};
use common::TestDb;
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::definitions;
use meridian::domain::campaign::parse_toml;
use meridian::domain::operator::{AppGrant, Role};
use meridian::domain::state::CampaignState;
use meridian::store::prelude::*;

struct Console<S> {
    base: String,
    store: Arc<S>,
    config: Config,
}

async fn console<S: Store + Clone>(db: &TestDb<S>) -> Console<S> {
    let config: Config = toml::from_str(common::api::CONFIG).unwrap();
    let store = Arc::new(db.store.clone());
    definitions::sync_apps(&*store, &config, SystemClock.now())
        .await
        .unwrap();
    let base = serve_console(store.clone(), config.clone()).await;
    Console {
        base,
        store,
        config,
    }
}

impl<S: Store> Console<S> {
    /// Saves a draft campaign of app `shop`; its id.
    async fn draft(&self, key: &str, title: &str) -> i64 {
        let text = format!(
            "key = \"{key}\"\napp = \"shop\"\nname = {title:?}\nstatus = \"draft\"\n[message]\ntitle = {title:?}\nbody = \"World\"\n\
             [audience]\ntopics = [\"marketing\"]\n[schedule]\ntype = \"local\"\nat = \"2030-12-01T09:00\"\n"
        );
        let def = parse_toml("t.toml", &text).unwrap();
        let prepared = definitions::prepare(&*self.store, &self.config, &def, SystemClock.now())
            .await
            .unwrap();
        definitions::save(&*self.store, prepared, SystemClock.now())
            .await
            .unwrap()
            .record
            .id
    }

    async fn state(&self, id: i64) -> CampaignState {
        self.store
            .campaign_get_by_id("shop", id)
            .await
            .unwrap()
            .unwrap()
            .state
    }

    async fn actions(&self) -> Vec<(String, String)> {
        self.store
            .audit_list(100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.actor, e.action))
            .collect()
    }
}

mod admin;
mod composing;
mod sessions;
mod watching;
