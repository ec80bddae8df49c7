//! The `meridian` command line: parses the arguments and hands each command
//! to `cli/` (or `serve` to the library's `daemon`).

#[macro_use]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meridian::config::{redact_url, Config};
use meridian::daemon::{self, Daemon};
use meridian::store::Store;
use meridian::with_store;

use cli::apikey::ApikeyCommand;
use cli::campaign::CampaignCommand;
use cli::demo::DemoArgs;
use cli::import::ImportCommand;
use cli::operator::OperatorCommand;
use cli::simulate::SimulateArgs;
use cli::{connect, daemon_failure, Failure};

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
    /// Prove each app's APNs and FCM credentials with one request each
    /// (APNs: a made-up token; FCM: a validate-only message). Exit 1 if any fails.
    CheckProviders {
        /// Only this app.
        #[arg(long)]
        app: Option<String>,
    },
    /// Manage campaign definitions.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Run the provider simulator (APNs, FCM, OAuth) trusting the configured apps' keys.
    Simulate(SimulateArgs),
    /// Manage API keys (one app each; the secret is printed once).
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Manage the console's operators (accounts with a role, not push users).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Bulk-load data into an app.
    #[command(subcommand)]
    Import(ImportCommand),
    /// A first run with nothing to set up: the provider simulator, a few thousand
    /// users across many zones, a campaign at one local time in every zone and a
    /// transactional push, on a fresh SQLite database in --dir. Ignores --config.
    Demo(DemoArgs),
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
        return cli::demo::demo(args).await;
    }
    let config = Config::load(cli.config.as_deref()).map_err(|e| Failure::Input(e.to_string()))?;
    match cli.command {
        Command::Demo(args) => cli::demo::demo(&args).await,
        Command::CheckConfig => {
            cli::check::check_config(&config);
            Ok(())
        }
        Command::CheckProviders { app } => {
            cli::check::check_providers(&config, app.as_deref()).await
        }
        Command::Serve => {
            let log = meridian::logging::init(&config.log).context("setting up logging")?;
            let daemon = Daemon::start(cli.config, log).map_err(daemon_failure)?;
            let store = connect(&config).await?;
            with_store!(store, s => daemon::serve(s, config, daemon).await.map_err(daemon_failure))
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
        Command::Simulate(args) => cli::simulate::simulate(&config, args).await,
        Command::Apikey(cmd) => {
            let store = connect(&config).await?;
            let result = with_store!(&store, s => {
                let r = cli::apikey::apikey_command(s, &config, cmd).await;
                s.close().await;
                r
            });
            result
        }
        Command::Operator(cmd) => {
            let store = connect(&config).await?;
            let result = with_store!(&store, s => {
                let r = cli::operator::operator_command(s, &config, cmd).await;
                s.close().await;
                r
            });
            result
        }
        Command::Import(ImportCommand::Users { file, app, format }) => {
            let store = connect(&config).await?;
            let result = with_store!(&store, s => {
                let r = cli::import::import_users(s, &config, &file, app, format).await;
                s.close().await;
                r
            });
            result
        }
        Command::Campaign(cmd) => {
            let store = connect(&config).await?;
            let result = with_store!(&store, s => {
                let r = cli::campaign::campaign_command(s, &config, cmd).await;
                s.close().await;
                r
            });
            result
        }
    }
}
