//! `meridian check-config`: the configuration as it will be used.

use meridian::config::{redact_url, Config};

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
