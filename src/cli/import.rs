//! `meridian import users`: bulk-load users from a CSV or NDJSON file.

use std::path::PathBuf;

use std::io::IsTerminal;

use anyhow::Context;
use clap::Subcommand;
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::definitions::{self};
use meridian::store::Store;

use super::{check_app, Failure};

#[derive(Subcommand)]
pub enum ImportCommand {
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

/// `import users`: reads the file in chunks (a progress bar on a terminal),
/// prints the counts and the first rejected rows.
pub async fn import_users<S: Store>(
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
