//! `meridian demo`: a first run with nothing to set up.

use std::path::PathBuf;

use anyhow::Context;
use meridian::clock::SystemClock;

use super::Failure;

#[derive(clap::Args)]
pub struct DemoArgs {
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

/// `demo`: runs it to its summary, keeps it up until Ctrl-C when asked, then
/// stops; exit 1 when the first zones were not delivered in time.
pub async fn demo(args: &DemoArgs) -> Result<(), Failure> {
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

pub async fn shutdown_signal() {
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
