//! `meridian check-config`: the configuration as it will be used;
//! `meridian check-providers`: whether each app's provider credentials work.

use std::sync::Arc;

use meridian::clock::{Clock, SystemClock};
use meridian::config::{redact_url, Config};
use meridian::provider::app::AppProviders;

use super::Failure;

pub fn check_config(config: &Config) {
    out!("database: {}", redact_url(&config.database.url));
    out!("  max_connections: {}", config.database.max_connections);
    out!("  migrate_on_start: {}", config.database.migrate_on_start);
    out!("server.listen: {}", config.server.listen);
    out!("campaigns.dir: {}", config.campaigns.dir.display());
    out!(
        "log: level {} format {:?}",
        config.log.level,
        config.log.format
    );
    if config.apps.is_empty() {
        out!("apps: none configured");
    }
    for (id, app) in &config.apps {
        let topics: Vec<String> = app
            .topics
            .iter()
            .map(|(t, c)| {
                format!(
                    "{t}{}",
                    if c.default_subscribed {
                        " (default on)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        out!(
            "app {id}: default zone {}, topics [{}]",
            app.default_timezone,
            topics.join(", ")
        );
        match &app.apns {
            Some(a) => out!(
                "  apns: {} via {} ({})",
                a.bundle_id,
                a.base_url,
                if a.key_file.is_some() {
                    "token auth"
                } else {
                    "certificate auth"
                }
            ),
            None => out!("  apns: not configured"),
        }
        match &app.fcm {
            Some(f) => out!(
                "  fcm: {} via {}",
                f.service_account_file.display(),
                f.base_url
            ),
            None => out!("  fcm: not configured"),
        }
    }
    out!("configuration OK");
}

/// `meridian check-providers`: each app's APNs and FCM credentials proven by
/// one request each, a line per provider. Fails (exit 1) when any does not work.
pub async fn check_providers(config: &Config, only: Option<&str>) -> Result<(), Failure> {
    if let Some(app) = only {
        super::check_app(config, app)?;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (mut checked, mut failed) = (0, 0);
    for (id, app) in &config.apps {
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let providers = match AppProviders::from_config(id, app, clock.clone()) {
            Ok(p) => p,
            Err(e) => {
                checked += 1;
                failed += 1;
                out!("{id}: FAILED: {e}");
                continue;
            }
        };
        let found = providers.check().await;
        if found.is_empty() {
            out!("{id}: no provider configured");
        }
        for c in found {
            checked += 1;
            if c.works {
                out!("{id} {}: ok: {}", c.provider, c.detail);
            } else {
                failed += 1;
                out!("{id} {}: FAILED: {}", c.provider, c.detail);
            }
        }
    }
    if failed > 0 {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{failed} of {checked} provider checks failed"
        )));
    }
    Ok(())
}
