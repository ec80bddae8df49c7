//! Operator accounts as the CLI and the console's admins change them: one set
//! of rules (email, password, role, apps), every change in the audit log.

use chrono::{DateTime, Utc};

use super::auth::{hash_password, HashError};

/// Argon2id takes tens of milliseconds by design: off the runtime's threads.
async fn hashed(password: &str) -> Result<String, AccountError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| AccountError::Hash(HashError::from(e)))?
        .map_err(AccountError::from)
}
use crate::config::Config;
use crate::domain::operator::{check_password, normalize_email, AppGrant, Role};
use crate::store::{AuditEntry, NewOperator, OperatorRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The input is unacceptable; `field` names what.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no operator {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> AccountError {
    AccountError::Invalid {
        field,
        message: message.into(),
    }
}

/// Who made a change, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor<'a> {
    pub operator_id: Option<i64>,
    /// An operator's email, or `cli` for a command run on the server.
    pub name: &'a str,
    pub address: Option<&'a str>,
}

impl Actor<'_> {
    /// The audit line of an action of this actor.
    pub fn entry(
        &self,
        action: &str,
        app: Option<&str>,
        target: Option<&str>,
        now: DateTime<Utc>,
    ) -> AuditEntry {
        AuditEntry {
            at: now,
            operator_id: self.operator_id,
            actor: self.name.to_owned(),
            action: action.to_owned(),
            app_id: app.map(str::to_owned),
            target: target.map(str::to_owned),
            address: self.address.map(str::to_owned),
            detail: None,
        }
    }
}

/// Parses `--apps shop,news` against the configured apps (empty: every app).
pub fn parse_apps(config: &Config, apps: Option<&str>) -> Result<AppGrant, AccountError> {
    let Some(list) = apps else {
        return Ok(AppGrant::All);
    };
    let names: Vec<String> = list
        .split(',')
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    if names.is_empty() {
        return Err(invalid(
            "apps",
            "name at least one app, or leave it out for every app",
        ));
    }
    if let Some(unknown) = names.iter().find(|a| !config.apps.contains_key(a.as_str())) {
        return Err(invalid(
            "apps",
            format!("{unknown:?} is not a configured app"),
        ));
    }
    Ok(AppGrant::Only(names))
}

/// Adds an operator with this password (checked, then hashed).
pub async fn add<S: Store>(
    store: &S,
    email: &str,
    role: Role,
    apps: &AppGrant,
    password: &str,
    actor: &Actor<'_>,
    now: DateTime<Utc>,
) -> Result<String, AccountError> {
    let email = normalize_email(email).map_err(|m| invalid("email", m))?;
    check_password(password, &email).map_err(|m| invalid("password", m))?;
    let hash = hashed(password).await?;
    store
        .operator_create(
            &NewOperator {
                email: &email,
                password_hash: &hash,
                role,
                apps,
            },
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => invalid("email", m),
            other => other.into(),
        })?;
    let mut entry = actor.entry("operator_added", None, Some(&email), now);
    entry.detail = Some(format!("role {role}"));
    store.audit_append(&entry).await?;
    Ok(email)
}

async fn find<S: Store>(store: &S, email: &str) -> Result<OperatorRecord, AccountError> {
    let email = normalize_email(email).map_err(|m| invalid("email", m))?;
    store
        .operator_get_by_email(&email)
        .await?
        .ok_or(AccountError::Unknown(email))
}

/// Sets a new password and ends the operator's sessions.
pub async fn reset_password<S: Store>(
    store: &S,
    email: &str,
    password: &str,
    actor: &Actor<'_>,
    now: DateTime<Utc>,
) -> Result<(), AccountError> {
    let op = find(store, email).await?;
    check_password(password, &op.email).map_err(|m| invalid("password", m))?;
    let hash = hashed(password).await?;
    store.operator_set_password(op.id, &hash, now).await?;
    store
        .audit_append(&actor.entry("operator_password_reset", None, Some(&op.email), now))
        .await?;
    Ok(())
}

/// Disables an operator (ending their sessions) or enables them again.
pub async fn set_disabled<S: Store>(
    store: &S,
    email: &str,
    disabled: bool,
    actor: &Actor<'_>,
    now: DateTime<Utc>,
) -> Result<(), AccountError> {
    let op = find(store, email).await?;
    store.operator_set_disabled(op.id, disabled, now).await?;
    let action = if disabled {
        "operator_disabled"
    } else {
        "operator_enabled"
    };
    store
        .audit_append(&actor.entry(action, None, Some(&op.email), now))
        .await?;
    Ok(())
}
