//! The `meridian` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian::clock::{Clock, SystemClock};
use meridian::config::{redact_url, Config};
use meridian::definitions::{self, ApplyError};
use meridian::logging::{LevelChange, LogHandle};
use meridian::notify::Notifier;
use meridian::service::{Service, ServiceError};
use meridian::state::{CampaignState, SlotState, StateMachine};
use meridian::store::{AnyStore, SaveOutcome, Store};
use meridian::with_store;

/// Prints a line of the command's output. A reader that went away
/// (`meridian campaign list | head -1`) ends the command quietly with success,
/// as it does any Unix tool; `println!` would panic there.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: writing the output: {e}");
            std::process::exit(1);
        }
    }};
}

/// glibc malloc spends a fifth of the send path in contention and consolidation.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Self-hosted push-notification campaign engine"
)]
struct Cli {
    /// Configuration file [default: config/meridian.toml if present]
    #[arg(long, global = true, env = "MERIDIAN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: migrate, load campaign files, schedule and send.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print what will be used.
    CheckConfig,
    /// Manage campaign definitions.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Run the provider simulator (APNs, FCM, OAuth) trusting the configured apps' keys.
    Simulate(SimulateArgs),
    /// Manage API keys (one app each; the secret is printed once).
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Bulk-load data into an app.
    #[command(subcommand)]
    Import(ImportCommand),
    /// A first run with nothing to set up: the provider simulator, a few thousand
    /// users across many zones, a campaign at one local time in every zone and a
    /// transactional push, on a fresh SQLite database in --dir. Ignores --config.
    Demo(DemoArgs),
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Where the demo's database, generated keys and configuration go; the
    /// previous run's database is replaced.
    #[arg(long, default_value = "demo-data")]
    dir: PathBuf,
    /// Users to seed.
    #[arg(long, default_value_t = 3000)]
    users: u32,
    /// How long after the start the first zones are due (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    lead: std::time::Duration,
    /// The REST API's address; port 0 takes a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Keep the API and the simulator running after the summary, until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Create or update users from an NDJSON or CSV file, row by row as `POST
    /// /v1/users:import` does. Exits 0 when every row was accepted, 1 when some
    /// were rejected (or the database failed), 2 when the file, its CSV header or
    /// the app cannot be used.
    Users {
        file: PathBuf,
        /// The users' app [default: the only configured app]
        #[arg(long)]
        app: Option<String>,
        /// ndjson or csv [default: from the extension: .ndjson, .jsonl, .csv]
        #[arg(long)]
        format: Option<meridian::import::Format>,
    },
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Create a key for an app and print its secret (shown only this once).
    Create {
        #[arg(long)]
        app: String,
        #[arg(long)]
        name: String,
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

#[derive(clap::Args)]
struct SimulateArgs {
    /// TLS (HTTP/2 and HTTP/1.1) listener.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// Plaintext listener (h2c with prior knowledge, and HTTP/1.1).
    #[arg(long)]
    listen_h2c: Option<std::net::SocketAddr>,
    /// Where to write the CA certificate that clients should trust (`ca_file`).
    #[arg(long, default_value = "data/simulator-ca.pem")]
    ca_out: PathBuf,
    /// Device tokens starting with this are unregistered.
    #[arg(long, default_value = "dead")]
    unregistered_prefix: String,
    /// Fraction of sends answered 503 (0..1).
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Added latency per send, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[derive(Subcommand)]
enum CampaignCommand {
    /// Validate definition files and create or update them (by app and key).
    /// Nothing is written unless every file is valid.
    Apply {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List campaigns with state and slots.
    List {
        #[arg(long)]
        app: Option<String>,
    },
    /// Show one campaign with its slot plan and delivery counts.
    Show {
        key: String,
        #[arg(long)]
        app: Option<String>,
    },
    /// Dry run: validate a file and print the slot plan it would get, writing nothing.
    Plan { file: PathBuf },
    /// Pause a campaign: nothing new is released or sent until it resumes.
    Pause {
        key: String,
        #[arg(long)]
        app: Option<String>,
    },
    /// Resume a paused campaign where it stopped.
    Resume {
        key: String,
        #[arg(long)]
        app: Option<String>,
    },
    /// Cancel a campaign: pending deliveries are cancelled, sends in flight finish.
    Cancel {
        key: String,
        #[arg(long)]
        app: Option<String>,
    },
}

/// Input errors exit with 2, everything else with 1.
enum Failure {
    Input(String),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Runtime(e.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // The demo builds its own configuration; a config file does not concern it.
    if let Command::Demo(args) = &cli.command {
        return demo(args).await;
    }
    let config = Config::load(cli.config.as_deref()).map_err(|e| Failure::Input(e.to_string()))?;
    match cli.command {
        Command::Demo(args) => demo(&args).await,
        Command::CheckConfig => {
            check_config(&config);
            Ok(())
        }
        Command::Serve => {
            let log = meridian::logging::init(&config.log).context("setting up logging")?;
            let daemon = Daemon::start(cli.config, log)?;
            let store = connect(&config).await?;
            with_store!(store, s => serve(s, config, daemon).await)
        }
        Command::Migrate => {
            let store = connect(&config).await?;
            with_store!(&store, s => {
                s.migrate().await.context("migrating")?;
                s.close().await;
            });
            out!("migrations applied to {}", redact_url(&config.database.url));
            Ok(())
        }
        Command::Simulate(args) => simulate(&config, args).await,
        Command::Apikey(cmd) => {
            let store = connect(&config).await?;
            let result = with_store!(&store, s => {
                let r = apikey_command(s, &config, cmd).await;
                s.close().await;
                r
            });
            result
        }
        Command::Import(ImportCommand::Users { file, app, format }) => {
            let store = connect(&config).await?;
            let result = with_store!(&store, s => {
                let r = import_users(s, &config, &file, app, format).await;
                s.close().await;
                r
            });
            result
        }
        Command::Campaign(cmd) => {
            let store = connect(&config).await?;
            let result = with_store!(&store, s => {
                let r = campaign_command(s, &config, cmd).await;
                s.close().await;
                r
            });
            result
        }
    }
}

async fn apikey_command<S: Store>(
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
        ApikeyCommand::Create { name, .. } => {
            if name.is_empty() || name.chars().count() > 100 {
                return Err(Failure::Input("--name: must be 1 to 100 characters".into()));
            }
            let key = meridian::api::keys::generate().map_err(|e| Failure::Runtime(e.into()))?;
            let stored = store
                .api_key_create(
                    &meridian::store::NewApiKey {
                        app_id: &app,
                        name: &name,
                        prefix: &key.prefix,
                        hash: &key.hash,
                    },
                    clock.now(),
                )
                .await;
            match stored {
                Ok(_) => {
                    out!("{}", key.secret);
                    eprintln!("API key {name:?} for app {app:?} created; the secret above is not shown again.");
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
            out!("PREFIX        NAME                 CREATED                    REVOKED");
            for k in keys {
                out!(
                    "{:<13} {:<20} {:<26} {}",
                    format!("{}…", k.prefix),
                    k.name,
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

fn check_app(config: &Config, app: &str) -> Result<(), Failure> {
    if config.apps.contains_key(app) {
        return Ok(());
    }
    let known: Vec<&String> = config.apps.keys().collect();
    Err(Failure::Input(format!(
        "--app: {app:?} is not a configured app (configured: {known:?})"
    )))
}

/// `import users`: reads the file in chunks (a progress bar on a terminal),
/// prints the counts and the first rejected rows.
async fn import_users<S: Store>(
    store: &S,
    config: &Config,
    file: &std::path::Path,
    app: Option<String>,
    format: Option<meridian::import::Format>,
) -> Result<(), Failure> {
    use meridian::import::{self, ImportError};
    use tokio::io::AsyncReadExt;
    let only = config.apps.keys().next().filter(|_| config.apps.len() == 1);
    let app = match (app, only) {
        (Some(app), _) => app,
        (None, Some(only)) => only.clone(),
        (None, None) => {
            let known: Vec<&String> = config.apps.keys().collect();
            return Err(Failure::Input(format!(
                "--app: required, several apps are configured ({known:?})"
            )));
        }
    };
    check_app(config, &app)?;
    let name = file.display();
    let format = format
        .or_else(|| import::Format::from_path(file))
        .ok_or_else(|| {
            Failure::Input(format!(
            "--format: the extension of {name} names no format; add --format ndjson or --format csv"
        ))
        })?;
    let input = tokio::fs::File::open(file)
        .await
        .map_err(|e| Failure::Input(format!("{name}: {e}")))?;
    let size = input.metadata().await.map_or(0, |m| m.len());
    store.migrate().await.context("migrating")?;
    definitions::sync_apps(store, config, SystemClock.now()).await?;
    let chunks = futures::stream::unfold(Some(input), |input| async move {
        let mut input = input?;
        let mut buf = vec![0; 256 * 1024];
        match input.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(input)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let result = import::run(store, &app, format, &SystemClock, chunks, |read, done| {
        bar.set_position(read);
        bar.set_message(format!(
            "{} accepted, {} rejected",
            done.accepted, done.rejected
        ));
    })
    .await;
    bar.finish_and_clear();
    let report = |s: &import::Summary| {
        out!("{name}: {} accepted, {} rejected", s.accepted, s.rejected);
        for e in &s.errors {
            eprintln!("line {}: {}", e.line, e.message);
        }
        let unlisted = s.rejected.saturating_sub(s.errors.len() as u64);
        if unlisted > 0 {
            eprintln!("… and {unlisted} more rejected rows");
        }
    };
    match result {
        Ok(summary) if summary.rejected == 0 => {
            report(&summary);
            Ok(())
        }
        Ok(summary) => {
            report(&summary);
            Err(Failure::Runtime(anyhow::anyhow!(
                "{} of {} rows rejected",
                summary.rejected,
                summary.rejected + summary.accepted
            )))
        }
        Err(e @ ImportError::Header(_)) => Err(Failure::Input(format!("{name}: {e}"))),
        Err(ImportError::Read { source, done }) => {
            report(&done);
            Err(Failure::Input(format!("{name}: reading failed: {source}")))
        }
        Err(ImportError::Store { source, done }) => {
            report(&done);
            Err(Failure::Runtime(
                anyhow::Error::new(source).context("writing users"),
            ))
        }
    }
}

async fn connect(config: &Config) -> Result<AnyStore, Failure> {
    AnyStore::connect(&config.database)
        .await
        .with_context(|| format!("connecting to {}", redact_url(&config.database.url)))
        .map_err(Failure::Runtime)
}

fn check_config(config: &Config) {
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

/// What `serve` holds besides the store and config: how it was started (to reload
/// the same file), the log filter, its signals and the service manager, if any.
struct Daemon {
    config_path: Option<PathBuf>,
    log: LogHandle,
    signals: Signals,
    notifier: Option<std::sync::Arc<Notifier>>,
}

impl Daemon {
    /// Installs the signal handlers first: until then SIGHUP's default action
    /// would end the process.
    fn start(config_path: Option<PathBuf>, log: LogHandle) -> Result<Self, Failure> {
        let signals = Signals::install().context("installing signal handlers")?;
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
async fn serve<S: Store + Clone>(
    store: S,
    config: Config,
    mut daemon: Daemon,
) -> Result<(), Failure> {
    use std::sync::Arc;
    let clock = SystemClock;
    // Before anything is recorded: the engine's first outcomes count too.
    meridian::metrics::install();
    if config.database.migrate_on_start {
        daemon.status("Applying database migrations");
        store.migrate().await.context("migrating")?;
    }
    daemon.status("Applying campaign files");
    definitions::sync_apps(&store, &config, clock.now()).await?;
    apply_campaign_files(&store, &config).await?;
    let config = Arc::new(config);
    let store = Arc::new(store);
    let mut service = Service::start(store.clone(), config.clone(), Arc::new(SystemClock))
        .await
        .map_err(|e| match e {
            ServiceError::Engine(e) => Failure::Input(e.to_string()),
            listen @ ServiceError::Listen { .. } => Failure::Runtime(listen.into()),
        })?;
    let api_addr = service.api_addr.to_string();
    let mut first_turn = service.take_first_turn();
    let watchdog = start_watchdog(&daemon, &config, service.engine());
    tracing::info!(
        message = "Meridian is running.",
        database = %redact_url(&config.database.url),
        engine = config.engine.enabled,
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
    engine: Option<&meridian::engine::Engine<S>>,
) -> Option<tokio::task::JoinHandle<()>> {
    let notifier = daemon.notifier.clone()?;
    let timeout = meridian::notify::watchdog_timeout()?;
    if engine.is_some() && config.engine.tick >= timeout / 2 {
        tracing::warn!(
            message = "engine.tick is too long for the watchdog: an idle release loop may look stuck.",
            tick = ?config.engine.tick,
            watchdog = ?timeout,
        );
    }
    let beats = engine.map(|e| e.heartbeat());
    Some(tokio::spawn(meridian::notify::feed_watchdog(
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
        tracing::error!(message = "Campaign files not reloaded.", error = %format!("{error:#}"));
    }
}

async fn apply_campaign_files<S: Store>(store: &S, config: &Config) -> anyhow::Result<()> {
    let clock = SystemClock;
    let files = definitions::files_in(&config.campaigns.dir)
        .with_context(|| format!("reading {}", config.campaigns.dir.display()))?;
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

async fn simulate(config: &Config, args: SimulateArgs) -> Result<(), Failure> {
    use meridian::simulator::{Behaviour, Simulator, SimulatorConfig};
    if !(0.0..=1.0).contains(&args.fail_rate) {
        return Err(Failure::Input(
            "--fail-rate: must be between 0 and 1".to_owned(),
        ));
    }
    let mut sim_config =
        SimulatorConfig::trusting(config).map_err(|e| Failure::Input(e.to_string()))?;
    sim_config.tls_addr = Some(args.listen);
    sim_config.plain_addr = args.listen_h2c;
    sim_config.behaviour = Behaviour {
        unregistered_prefix: Some(args.unregistered_prefix).filter(|p| !p.is_empty()),
        fail_rate: args.fail_rate,
        latency_ms: args.latency_ms,
        ..Behaviour::default()
    };
    let sim = Simulator::start(sim_config).await?;
    if let Some(dir) = args.ca_out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.ca_out, &sim.ca_pem)
        .with_context(|| format!("writing {}", args.ca_out.display()))?;
    if let Some(url) = sim.tls_url() {
        out!(
            "simulator: APNs and FCM at {url} (trust {}), OAuth token endpoint {url}/token",
            args.ca_out.display()
        );
    }
    if let Some(url) = sim.plain_url() {
        out!("simulator: plaintext (h2c) at {url}");
    }
    out!("simulator: stats at GET /_sim/stats, behaviour at PUT /_sim/behaviour; ready");
    shutdown_signal().await;
    Ok(())
}

/// `demo`: runs it to its summary, keeps it up until Ctrl-C when asked, then
/// stops; exit 1 when the first zones were not delivered in time.
async fn demo(args: &DemoArgs) -> Result<(), Failure> {
    use meridian::demo::{self, DemoError};
    let log = meridian::config::LogConfig {
        level: "warn".to_owned(),
        ..Default::default()
    };
    meridian::logging::init(&log).context("setting up logging")?;
    let options = demo::Options {
        dir: args.dir.clone(),
        users: args.users,
        lead: args.lead,
        listen: args.listen,
        keep_running: args.keep_running,
        program: std::env::args()
            .next()
            .unwrap_or_else(|| "meridian".to_owned()),
    };
    let running = demo::run(&options, std::sync::Arc::new(SystemClock))
        .await
        .map_err(|e| match e {
            DemoError::Option(message) => Failure::Input(message),
            other => Failure::Runtime(other.into()),
        })?;
    if options.keep_running {
        shutdown_signal().await;
    }
    let delivered = running.delivered;
    running.stop().await;
    if delivered {
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow::anyhow!(
            "the demo's first zones were not delivered in time"
        )))
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn campaign_command<S: Store>(
    store: &S,
    config: &Config,
    cmd: CampaignCommand,
) -> Result<(), Failure> {
    let clock = SystemClock;
    store.migrate().await.context("migrating")?;
    definitions::sync_apps(store, config, clock.now()).await?;
    match cmd {
        CampaignCommand::Apply { files } => {
            // Check every file first: a broken one means nothing is written.
            let mut prepared = Vec::new();
            for file in &files {
                let result = async {
                    let def = definitions::read_file(file)?;
                    definitions::prepare(store, config, &def, clock.now()).await
                }
                .await;
                match result {
                    Ok(p) => prepared.push((file, p)),
                    Err(e) => return Err(apply_failure(file, e)),
                }
            }
            for (file, p) in prepared {
                let applied = definitions::save(store, p, clock.now())
                    .await
                    .map_err(|e| apply_failure(file, e))?;
                let outcome = match applied.outcome {
                    SaveOutcome::Created => "created",
                    SaveOutcome::Updated => "updated",
                    SaveOutcome::Unchanged => "unchanged",
                };
                let planned = applied
                    .plan
                    .as_ref()
                    .filter(|_| applied.outcome != SaveOutcome::Unchanged);
                let slots = planned.map_or(String::new(), |p| {
                    let firing = p.firing().filter(|s| s.recipients > 0).count();
                    let span = p.span().map_or(String::new(), |(a, b)| {
                        format!(
                            ", first {} last {} UTC",
                            a.format("%Y-%m-%d %H:%M"),
                            b.format("%Y-%m-%d %H:%M")
                        )
                    });
                    format!(
                        " with {firing} slots over {} instants{span}",
                        p.by_instant().len()
                    )
                });
                out!(
                    "{}: {} {}/{} ({}){}",
                    file.display(),
                    outcome,
                    applied.record.app_id,
                    applied.record.key,
                    applied.record.state,
                    slots
                );
            }
            Ok(())
        }
        CampaignCommand::List { app } => {
            let campaigns = store.campaign_list(app.as_deref()).await?;
            if campaigns.is_empty() {
                out!("no campaigns");
                return Ok(());
            }
            out!(
                "{:<12} {:<28} {:<10} {:>7} {:>8}  NEXT SEND (UTC)",
                "APP",
                "KEY",
                "STATE",
                "SLOTS",
                "PENDING"
            );
            for c in campaigns {
                let slots = store.slot_list(c.id).await?;
                let pending: Vec<_> = slots
                    .iter()
                    .filter(|s| s.state == SlotState::Pending)
                    .collect();
                let next = pending
                    .iter()
                    .map(|s| s.fire_at)
                    .min()
                    .map_or("-".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string());
                out!(
                    "{:<12} {:<28} {:<10} {:>7} {:>8}  {}",
                    c.app_id,
                    c.key,
                    c.state.as_str(),
                    slots.len(),
                    pending.len(),
                    next
                );
            }
            Ok(())
        }
        CampaignCommand::Show { key, app } => {
            let c = find_campaign(store, &key, app.as_deref()).await?;
            print_campaign(store, &c).await
        }
        CampaignCommand::Plan { file } => {
            let mut def =
                definitions::read_file(&file).map_err(|e| Failure::Input(e.to_string()))?;
            def.status = meridian::campaign::DesiredStatus::Scheduled;
            let prepared = definitions::prepare(store, config, &def, clock.now())
                .await
                .map_err(|e| apply_failure(&file, e))?;
            let Some(plan) = prepared.plan else {
                return Ok(());
            };
            out!(
                "{}: {} slots over {} instants, tzdata {}",
                file.display(),
                plan.firing().count(),
                plan.by_instant().len(),
                plan.tzdata_version
            );
            if let Some((a, b)) = plan.span() {
                out!(
                    "  sends from {} to {} UTC",
                    a.format("%Y-%m-%d %H:%M"),
                    b.format("%Y-%m-%d %H:%M")
                );
            }
            for (d, n) in plan.recipients_by_disposition() {
                out!("  {:<14} {n} recipients", d.as_str());
            }
            if plan.defaulted_recipients > 0 {
                out!(
                    "  {} recipients have no known zone and use the app's default",
                    plan.defaulted_recipients
                );
            }
            out!(
                "    {:<17} {:<14} {:>10}  ZONE",
                "FIRE AT (UTC)",
                "DISPOSITION",
                "RECIPIENTS"
            );
            for s in plan.slots.iter().filter(|s| s.recipients > 0) {
                out!(
                    "    {:<17} {:<14} {:>10}  {}",
                    s.fire_at.format("%Y-%m-%d %H:%M"),
                    s.disposition.as_str(),
                    s.recipients,
                    s.zone
                );
            }
            Ok(())
        }
        CampaignCommand::Pause { key, app } => {
            let c = find_campaign(store, &key, app.as_deref()).await?;
            definitions::pause(store, &c, clock.now())
                .await
                .map_err(lifecycle_failure)?;
            out!("{}/{}: paused", c.app_id, c.key);
            Ok(())
        }
        CampaignCommand::Resume { key, app } => {
            let c = find_campaign(store, &key, app.as_deref()).await?;
            let state = definitions::resume(store, &c, clock.now())
                .await
                .map_err(lifecycle_failure)?;
            out!("{}/{}: {state}", c.app_id, c.key);
            Ok(())
        }
        CampaignCommand::Cancel { key, app } => {
            let c = find_campaign(store, &key, app.as_deref()).await?;
            let n = definitions::cancel(store, &c, clock.now())
                .await
                .map_err(lifecycle_failure)?;
            out!(
                "{}/{}: cancelled ({n} pending deliveries cancelled)",
                c.app_id,
                c.key
            );
            Ok(())
        }
    }
}

fn lifecycle_failure(e: meridian::store::StoreError) -> Failure {
    use meridian::store::StoreError;
    match e {
        StoreError::State(s) => Failure::Input(s.to_string()),
        StoreError::Conflict { .. } => Failure::Input(e.to_string()),
        other => Failure::Runtime(other.into()),
    }
}

async fn find_campaign<S: Store>(
    store: &S,
    key: &str,
    app: Option<&str>,
) -> Result<meridian::store::CampaignRecord, Failure> {
    let found = match app {
        Some(app) => store.campaign_get(app, key).await?.into_iter().collect(),
        None => store.campaign_list_by_key(key).await?,
    };
    match found.len() {
        0 => Err(Failure::Input(format!("no campaign with key {key:?}"))),
        1 => Ok(found
            .into_iter()
            .next()
            .ok_or_else(|| Failure::Input(format!("no campaign with key {key:?}")))?),
        _ => {
            let apps: Vec<&str> = found.iter().map(|c| c.app_id.as_str()).collect();
            Err(Failure::Input(format!(
                "key {key:?} exists in several apps ({}): add --app",
                apps.join(", ")
            )))
        }
    }
}

fn apply_failure(file: &std::path::Path, e: ApplyError) -> Failure {
    if e.is_input() {
        match e {
            // Parse errors already name the file.
            ApplyError::Definition(d) => Failure::Input(d.to_string()),
            other => Failure::Input(format!("{}: {other}", file.display())),
        }
    } else {
        Failure::Runtime(anyhow::Error::new(e).context(format!("applying {}", file.display())))
    }
}

async fn print_campaign<S: Store>(
    store: &S,
    c: &meridian::store::CampaignRecord,
) -> Result<(), Failure> {
    out!("campaign {}/{} (#{})", c.app_id, c.key, c.id);
    out!("  name: {}", c.name);
    out!("  state: {}  revision: {}", c.state, c.revision);
    if let Some(v) = &c.tzdata_version {
        out!("  planned with tzdata {v}");
    }
    if let Some(t) = c.scheduled_at {
        out!("  scheduled at {}", t.to_rfc3339());
    }
    let def = &c.definition.0;
    out!(
        "  message: {} — {}",
        def["message"]["title"].as_str().unwrap_or(""),
        def["message"]["body"].as_str().unwrap_or("")
    );
    out!("  schedule: {}", def["schedule"]);
    let counts = store.delivery_count_by_status(c.id).await?;
    if !counts.is_empty() {
        let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
        out!("  deliveries: {}", parts.join(", "));
    }
    let mut totals: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for (_, kind, n) in store.slot_count_by_state(c.id).await? {
        *totals.entry(kind).or_default() += n;
    }
    if !totals.is_empty() {
        let parts: Vec<String> = totals.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out!("  released so far: {}", parts.join(", "));
    }
    let slots = store.slot_list(c.id).await?;
    if slots.is_empty() {
        if c.state == CampaignState::Draft {
            out!("  slots: none (draft)");
        } else {
            out!("  slots: none (no recipients when planned)");
        }
        return Ok(());
    }
    let total: i64 = slots.iter().map(|s| s.planned_count).sum();
    let (shown, empty): (Vec<_>, Vec<_>) = slots
        .iter()
        .partition(|s| s.planned_count > 0 || s.state != SlotState::Pending);
    out!("  slots: {} for {} recipients", shown.len(), total);
    if !empty.is_empty() {
        out!(
            "  (and {} zones with no recipients yet, planned for anyone who registers there)",
            empty.len()
        );
    }
    let firing: Vec<_> = slots
        .iter()
        .filter(|s| s.state != SlotState::Skipped)
        .map(|s| s.fire_at)
        .collect();
    if let (Some(first), Some(last)) = (firing.iter().min(), firing.iter().max()) {
        let instants: std::collections::BTreeSet<_> = firing.iter().collect();
        out!(
            "  sends from {} to {} UTC ({} h, {} distinct instants)",
            first.format("%Y-%m-%d %H:%M"),
            last.format("%Y-%m-%d %H:%M"),
            (*last - *first).num_minutes() as f64 / 60.0,
            instants.len()
        );
    }
    out!(
        "    {:<17} {:<9} {:<14} {:>10} {:>9}  ZONE",
        "FIRE AT (UTC)",
        "STATE",
        "DISPOSITION",
        "RECIPIENTS",
        "LAG"
    );
    for s in &shown {
        // How long after its due time the slot's first send left.
        let lag = s.first_sent_at.map_or("-".to_owned(), |t| {
            format!("{:.1}s", (t - s.fire_at).num_milliseconds() as f64 / 1000.0)
        });
        out!(
            "    {:<17} {:<9} {:<14} {:>10} {:>9}  {}",
            s.fire_at.format("%Y-%m-%d %H:%M"),
            s.state.as_str(),
            s.disposition,
            s.planned_count,
            lag,
            if s.zone.is_empty() {
                "(default zone)"
            } else {
                &s.zone
            }
        );
    }
    Ok(())
}
