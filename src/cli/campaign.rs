//! `meridian campaign`: apply, list, show and act on campaigns.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::definitions::{self, ApplyError};
use meridian::domain::state::{CampaignState, SlotState, StateMachine};
use meridian::store::{SaveOutcome, Store};

use super::Failure;

#[derive(Subcommand)]
pub enum CampaignCommand {
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

pub async fn campaign_command<S: Store>(
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
            def.status = meridian::domain::campaign::DesiredStatus::Scheduled;
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

pub fn lifecycle_failure(e: meridian::store::StoreError) -> Failure {
    use meridian::store::StoreError;
    match e {
        StoreError::State(s) => Failure::Input(s.to_string()),
        StoreError::Conflict { .. } => Failure::Input(e.to_string()),
        other => Failure::Runtime(other.into()),
    }
}

pub async fn find_campaign<S: Store>(
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

pub fn apply_failure(file: &std::path::Path, e: ApplyError) -> Failure {
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

pub async fn print_campaign<S: Store>(
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
