//! `meridian operator`: the console's accounts (not push users).

use std::io::Read as _;

use anyhow::Context;
use clap::Subcommand;
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::console::accounts::{self, AccountError, Actor};
use meridian::console::auth::random_password;
use meridian::domain::operator::{AppGrant, Role};
use meridian::store::Store;

use super::Failure;

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Add an operator; prints a generated password once, unless one is read
    /// from standard input with --password-stdin.
    Add {
        email: String,
        /// admin (keys, operators, audit log), editor (campaigns, test pushes) or viewer.
        #[arg(long)]
        role: Role,
        /// The apps granted, comma-separated (default: every app).
        #[arg(long)]
        apps: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List operators: email, role, apps, state.
    List,
    /// Disable an operator and end their sessions.
    Disable { email: String },
    /// Enable a disabled operator.
    Enable { email: String },
    /// Set a new password (generated and printed once, or --password-stdin) and
    /// end the operator's sessions.
    ResetPassword {
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

fn failure(e: AccountError) -> Failure {
    match e {
        AccountError::Invalid { .. } | AccountError::Unknown(_) => Failure::Input(e.to_string()),
        other => Failure::Runtime(other.into()),
    }
}

/// The password from standard input (one line), or a generated one to print.
fn password(from_stdin: bool) -> Result<(String, bool), Failure> {
    if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        Ok((text.trim_end_matches(['\r', '\n']).to_owned(), false))
    } else {
        Ok((
            random_password().map_err(|e| Failure::Runtime(e.into()))?,
            true,
        ))
    }
}

pub async fn operator_command<S: Store>(
    store: &S,
    config: &Config,
    cmd: OperatorCommand,
) -> Result<(), Failure> {
    let clock = SystemClock;
    store.migrate().await.context("migrating")?;
    let actor = Actor {
        operator_id: None,
        name: "cli",
        address: None,
    };
    match cmd {
        OperatorCommand::Add {
            email,
            role,
            apps,
            password_stdin,
        } => {
            let apps = accounts::parse_apps(config, apps.as_deref()).map_err(failure)?;
            let (pw, generated) = password(password_stdin)?;
            let email = accounts::add(store, &email, role, &apps, &pw, &actor, clock.now())
                .await
                .map_err(failure)?;
            if generated {
                out!("{pw}");
                eprintln!(
                    "Operator {email} ({role}) added; the password above is not shown again."
                );
            } else {
                eprintln!("Operator {email} ({role}) added.");
            }
            Ok(())
        }
        OperatorCommand::List => {
            let ops = store
                .operator_list()
                .await
                .map_err(|e| Failure::Runtime(e.into()))?;
            out!("EMAIL                          ROLE    APPS                 STATE");
            for o in ops {
                let apps = match &o.apps {
                    AppGrant::All => "*".to_owned(),
                    AppGrant::Only(a) => a.join(","),
                };
                let state = if o.disabled_at.is_some() {
                    "disabled"
                } else {
                    "active"
                };
                out!("{:<30} {:<7} {:<20} {state}", o.email, o.role, apps);
            }
            Ok(())
        }
        OperatorCommand::Disable { email } => {
            accounts::set_disabled(store, &email, true, &actor, clock.now())
                .await
                .map_err(failure)?;
            out!("operator {email} disabled; their sessions have ended");
            Ok(())
        }
        OperatorCommand::Enable { email } => {
            accounts::set_disabled(store, &email, false, &actor, clock.now())
                .await
                .map_err(failure)?;
            out!("operator {email} enabled");
            Ok(())
        }
        OperatorCommand::ResetPassword {
            email,
            password_stdin,
        } => {
            let (pw, generated) = password(password_stdin)?;
            accounts::reset_password(store, &email, &pw, &actor, clock.now())
                .await
                .map_err(failure)?;
            if generated {
                out!("{pw}");
                eprintln!(
                    "New password for {email}; it is not shown again. Their sessions have ended."
                );
            } else {
                eprintln!("Password of {email} reset; their sessions have ended.");
            }
            Ok(())
        }
    }
}
