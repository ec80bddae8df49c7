//! `meridian apikey`: create, list and revoke an app's API keys.

use anyhow::Context;
use clap::Subcommand;
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::definitions::{self};
use meridian::domain::keys::KeyKind;
use meridian::store::Store;

use super::{check_app, Failure};

#[derive(Subcommand)]
pub enum ApikeyCommand {
    /// Create a key for an app and print its secret (shown only this once).
    Create {
        #[arg(long)]
        app: String,
        #[arg(long)]
        name: String,
        /// `server` (your backend: every route) or `client` (publishable, shipped
        /// in the mobile app: registering its device, subscriptions, receipts).
        #[arg(long, default_value = "server")]
        kind: String,
    },
    /// List an app's keys (prefix, name, created, revoked).
    List {
        #[arg(long)]
        app: String,
    },
    /// Revoke an app's key by name.
    Revoke {
        #[arg(long)]
        app: String,
        #[arg(long)]
        name: String,
    },
}

pub async fn apikey_command<S: Store>(
    store: &S,
    config: &Config,
    cmd: ApikeyCommand,
) -> Result<(), Failure> {
    let clock = SystemClock;
    let app = match &cmd {
        ApikeyCommand::Create { app, .. }
        | ApikeyCommand::List { app }
        | ApikeyCommand::Revoke { app, .. } => app.clone(),
    };
    check_app(config, &app)?;
    store.migrate().await.context("migrating")?;
    definitions::sync_apps(store, config, clock.now()).await?;
    match cmd {
        ApikeyCommand::Create { name, kind, .. } => {
            if name.is_empty() || name.chars().count() > 100 {
                return Err(Failure::Input("--name: must be 1 to 100 characters".into()));
            }
            let kind: KeyKind = kind
                .parse()
                .map_err(|e| Failure::Input(format!("--kind: {e}")))?;
            let key = meridian::api::keys::generate().map_err(|e| Failure::Runtime(e.into()))?;
            let stored = store
                .api_key_create(
                    &meridian::store::NewApiKey {
                        app_id: &app,
                        name: &name,
                        kind,
                        prefix: &key.prefix,
                        hash: &key.hash,
                    },
                    clock.now(),
                )
                .await;
            match stored {
                Ok(_) => {
                    out!("{}", key.secret);
                    eprintln!("{kind} key {name:?} for app {app:?} created; the secret above is not shown again.");
                    Ok(())
                }
                Err(meridian::store::StoreError::Conflict { .. }) => Err(Failure::Input(format!(
                    "--name: app {app:?} already has a key named {name:?} (names are not reused, even once revoked)"
                ))),
                Err(e) => Err(Failure::Runtime(e.into())),
            }
        }
        ApikeyCommand::List { .. } => {
            let keys = store
                .api_key_list(&app)
                .await
                .map_err(|e| Failure::Runtime(e.into()))?;
            out!("PREFIX        NAME                 KIND    CREATED                    REVOKED");
            for k in keys {
                out!(
                    "{:<13} {:<20} {:<7} {:<26} {}",
                    format!("{}…", k.prefix),
                    k.name,
                    k.kind.as_str(),
                    k.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    k.revoked_at.map_or("-".to_owned(), |t| t
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                );
            }
            Ok(())
        }
        ApikeyCommand::Revoke { name, .. } => {
            if store
                .api_key_revoke(&app, &name, clock.now())
                .await
                .map_err(|e| Failure::Runtime(e.into()))?
            {
                out!("API key {name:?} of app {app:?} revoked");
                Ok(())
            } else {
                Err(Failure::Input(format!(
                    "--name: app {app:?} has no live key named {name:?}"
                )))
            }
        }
    }
}
