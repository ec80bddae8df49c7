//! The daemon's lifecycle (`meridian serve`): signals, the service manager
//! (sd_notify: ready, status, watchdog), reload on SIGHUP, and an orderly stop
//! through the service's one shutdown token.

use std::path::PathBuf;

use crate::clock::{Clock, SystemClock};
use crate::config::{redact_url, Config};
use crate::definitions;
use crate::logging::{LevelChange, LogHandle};
use crate::notify::Notifier;
use crate::service::{Service, ServiceError};
use crate::store::{Store, StoreError};

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("migrating: {0}")]
    Migrate(#[source] StoreError),
    #[error("syncing the configured apps: {0}")]
    Apps(#[source] StoreError),
    #[error("reading {}: {source}", dir.display())]
    CampaignDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The engine or the API could not start (the configuration's fault, or
    /// the listen address's).
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What `serve` holds besides the store and config: how it was started (to reload
/// the same file), the log filter, its signals and the service manager, if any.
pub struct Daemon {
    config_path: Option<PathBuf>,
    log: LogHandle,
    signals: Signals,
    notifier: Option<std::sync::Arc<Notifier>>,
}

impl Daemon {
    /// Installs the signal handlers first: until then SIGHUP's default action
    /// would end the process.
    pub fn start(config_path: Option<PathBuf>, log: LogHandle) -> Result<Self, DaemonError> {
        let signals = Signals::install().map_err(DaemonError::Signals)?;
        let notifier = match Notifier::from_env() {
            Ok(n) => n.map(std::sync::Arc::new),
            Err(error) => {
                tracing::warn!(message = "Not notifying the service manager.", %error);
                None
            }
        };
        Ok(Self {
            config_path,
            log,
            signals,
            notifier,
        })
    }

    /// Tells the service manager, when there is one; failing to is logged, never fatal.
    fn notify(&self, state: &str) {
        if let Some(n) = &self.notifier {
            if let Err(error) = n.notify(state) {
                tracing::warn!(message = "Cannot notify the service manager.", %error);
            }
        }
    }

    fn status(&self, what: &str) {
        self.notify(&format!("STATUS={what}"));
    }
}

/// What a signal asks of the daemon.
enum Signalled {
    Stop,
    Reload,
}

/// SIGTERM and SIGINT stop, SIGHUP reloads.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) -> Signalled {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Signalled::Stop,
                _ = tokio::signal::ctrl_c() => Signalled::Stop,
                _ = self.hup.recv() => Signalled::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signalled::Stop
        }
    }
}

/// Runs the API and the engine until SIGTERM; tells a service manager what it is
/// doing (sd_notify): `READY=1` once migrations are applied, the API listens and
/// the release loop has turned once; `WATCHDOG=1` while that loop keeps turning.
pub async fn serve<S: Store + Clone>(
    store: S,
    config: Config,
    mut daemon: Daemon,
) -> Result<(), DaemonError> {
    use std::sync::Arc;
    let clock = SystemClock;
    // Before anything is recorded: the engine's first outcomes count too.
    crate::metrics::install();
    if config.database.migrate_on_start {
        daemon.status("Applying database migrations");
        store.migrate().await.map_err(DaemonError::Migrate)?;
    }
    daemon.status("Applying campaign files");
    definitions::sync_apps(&store, &config, clock.now())
        .await
        .map_err(DaemonError::Apps)?;
    apply_campaign_files(&store, &config).await?;
    let config = Arc::new(config);
    let store = Arc::new(store);
    let mut service = Service::start(store.clone(), config.clone(), Arc::new(SystemClock)).await?;
    let api_addr = service.api_addr.to_string();
    let mut first_turn = service.take_first_turn();
    let watchdog = start_watchdog(&daemon, &config, service.engine());
    // The worker id names this instance in leases and takeover lines: with
    // several instances, the start line says which one a journal belongs to.
    let worker_id = service
        .engine()
        .map_or_else(String::new, |e| e.settings().worker_id.clone());
    tracing::info!(
        message = "Meridian is running.",
        database = %redact_url(&config.database.url),
        engine = config.engine.enabled,
        worker_id = %worker_id,
        api = %api_addr,
    );
    let running = format!(
        "Running: API on {api_addr}, engine {}",
        if config.engine.enabled { "on" } else { "off" }
    );
    if first_turn.is_none() {
        daemon.notify(&format!("READY=1\nSTATUS={running}"));
    } else {
        daemon.status("Starting the scheduler");
    }
    loop {
        let turned = async {
            match first_turn.as_mut() {
                Some(rx) => {
                    let _ = rx.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = turned => {
                first_turn = None;
                daemon.notify(&format!("READY=1\nSTATUS={running}"));
            }
            signal = daemon.signals.next() => match signal {
                Signalled::Stop => break,
                Signalled::Reload => {
                    reload(store.as_ref(), &config, &daemon).await;
                    let ready = if first_turn.is_none() { "READY=1\n" } else { "" };
                    daemon.notify(&format!("{ready}STATUS={running}"));
                }
            },
        }
    }
    tracing::info!(message = "Shutting down: finishing sends in flight.", grace = ?config.engine.shutdown_grace);
    daemon.notify("STOPPING=1\nSTATUS=Stopping: finishing sends in flight");
    if let Some(w) = watchdog {
        w.abort();
    }
    service.stop(config.engine.shutdown_grace).await;
    store.close().await;
    tracing::info!(message = "Stopped.");
    Ok(())
}

/// Feeds the service manager's watchdog when it asked for one (`WATCHDOG_USEC`):
/// from the engine's release loop, so a stuck loop stops the pings and gets the
/// service restarted; with the engine off, from a timer on the runtime that
/// serves the API (a wedged runtime is caught, a stuck request is not).
fn start_watchdog<S: Store>(
    daemon: &Daemon,
    config: &Config,
    engine: Option<&crate::engine::Engine<S>>,
) -> Option<tokio::task::JoinHandle<()>> {
    let notifier = daemon.notifier.clone()?;
    let timeout = crate::notify::watchdog_timeout()?;
    if engine.is_some() && config.engine.tick >= timeout / 2 {
        tracing::warn!(
            message = "engine.tick is too long for the watchdog: an idle release loop may look stuck.",
            tick = ?config.engine.tick,
            watchdog = ?timeout,
        );
    }
    let beats = engine.map(|e| e.heartbeat());
    Some(tokio::spawn(crate::notify::feed_watchdog(
        timeout / 2,
        beats,
        move || {
            if let Err(error) = notifier.notify("WATCHDOG=1") {
                tracing::warn!(message = "Cannot notify the service manager.", %error);
            }
        },
    )))
}

/// SIGHUP: the log level from the configuration file read again, and the campaign
/// files applied again, while the API and the engine go on. A configuration that
/// no longer loads is logged and the running one kept; other settings than
/// `log.level` take effect at the next start (the engine and API hold them).
async fn reload<S: Store>(store: &S, running: &Config, daemon: &Daemon) {
    daemon.notify("RELOADING=1\nSTATUS=Reloading the log level and campaign files");
    tracing::info!(message = "Reloading (SIGHUP).");
    match Config::load(daemon.config_path.as_deref()) {
        Ok(new) => {
            match daemon.log.set_level(&new.log.level) {
                Ok(LevelChange::Applied) => {
                    tracing::info!(message = "Log level set.", level = %new.log.level)
                }
                Ok(LevelChange::KeptRustLog) => {
                    tracing::info!(message = "Log level unchanged: RUST_LOG is set and wins.")
                }
                Err(error) => tracing::error!(message = "Log level not changed.", %error),
            }
            let mut unchanged = new.clone();
            unchanged.log = running.log.clone();
            if serde_json::to_value(&unchanged).ok() != serde_json::to_value(running).ok() {
                tracing::warn!(message = "Settings other than log.level changed; they take effect at the next start.");
            }
        }
        Err(error) => {
            tracing::error!(message = "Configuration not reloaded; the running one is kept.", %error)
        }
    }
    if let Err(error) = apply_campaign_files(store, running).await {
        tracing::error!(message = "Campaign files not reloaded.", %error);
    }
}

/// Applies every campaign file of `campaigns.dir`; a file that fails is logged
/// and the others applied. Only an unreadable directory is an error.
pub async fn apply_campaign_files<S: Store>(store: &S, config: &Config) -> Result<(), DaemonError> {
    let clock = SystemClock;
    let files = definitions::files_in(&config.campaigns.dir).map_err(|source| {
        DaemonError::CampaignDir {
            dir: config.campaigns.dir.clone(),
            source,
        }
    })?;
    for file in files {
        let result = async {
            let def = definitions::read_file(&file)?;
            let prepared = definitions::prepare(store, config, &def, clock.now()).await?;
            definitions::save(store, prepared, clock.now()).await
        }
        .await;
        match result {
            Ok(applied) => tracing::info!(
                message = "Campaign file applied.",
                file = %file.display(),
                key = %applied.record.key,
                state = %applied.record.state,
                outcome = ?applied.outcome,
            ),
            Err(error) => {
                tracing::error!(message = "Campaign file not applied.", file = %file.display(), %error)
            }
        }
    }
    Ok(())
}
