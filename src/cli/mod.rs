//! The commands besides `serve` (which is `meridian::daemon`), one file per
//! group, and what they share: the exit codes and printing a line.

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

pub mod apikey;
pub mod campaign;
pub mod check;
pub mod demo;
pub mod import;
pub mod operator;
pub mod simulate;

use anyhow::Context;
use meridian::config::{redact_url, Config};
use meridian::daemon::DaemonError;
use meridian::service::ServiceError;
use meridian::store::AnyStore;

/// Input errors exit with 2, everything else with 1.
pub enum Failure {
    Input(String),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Runtime(e.into())
    }
}

/// A configuration the engine refuses is the input's fault (exit 2).
pub fn daemon_failure(e: DaemonError) -> Failure {
    match e {
        DaemonError::Service(ServiceError::Engine(e)) => Failure::Input(e.to_string()),
        other => Failure::Runtime(other.into()),
    }
}

pub async fn connect(config: &Config) -> Result<AnyStore, Failure> {
    AnyStore::connect(&config.database)
        .await
        .with_context(|| format!("connecting to {}", redact_url(&config.database.url)))
        .map_err(Failure::Runtime)
}

pub fn check_app(config: &Config, app: &str) -> Result<(), Failure> {
    if config.apps.contains_key(app) {
        return Ok(());
    }
    let known: Vec<&String> = config.apps.keys().collect();
    Err(Failure::Input(format!(
        "--app: {app:?} is not a configured app (configured: {known:?})"
    )))
}
