//! Applying campaign definitions: validate, plan against the audience's zones,
//! and save definition and slots together; and the lifecycle actions. Used by
//! `campaign apply`, by `serve` for the files in `campaigns/`, and by the API.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::config::{AppConfig, Config};
use crate::domain::campaign::{
    from_json, parse_toml, AppContext, CampaignDefinition, DefinitionError, DesiredStatus,
    FieldError, ValidCampaign, ValidationErrors,
};
use crate::domain::planner::{self, Plan, PlanError, PlanRequest};
use crate::domain::state::{CampaignState, StateError, StateMachine};
use crate::domain::zone::TZDATA_VERSION;
use crate::store::{
    AppRecord, CampaignRecord, CampaignSave, NewSlot, SaveOutcome, Segment, Store, StoreError,
    TopicRule,
};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The definition itself is wrong (exit code 2 on the CLI).
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("app: unknown app {0:?} (not in the config's [apps])")]
    UnknownApp(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The planner's thread panicked or was cancelled: a bug, never the input's fault.
    #[error("planning stopped: {0}")]
    Planner(#[from] tokio::task::JoinError),
    /// The action does not apply to the campaign's state (`cannot pause a draft campaign`).
    #[error("cannot {action} a {state} campaign")]
    Transition {
        action: &'static str,
        state: CampaignState,
    },
    /// Creating a key that exists with another definition (edits go by id).
    #[error("key: campaign {key:?} already exists (id {id}) with a different definition")]
    Exists { key: String, id: i64 },
}

impl ApplyError {
    /// Whether the caller's input is at fault (as opposed to the database).
    pub fn is_input(&self) -> bool {
        match self {
            Self::Invalid(_)
            | Self::Definition(_)
            | Self::UnknownApp(_)
            | Self::Plan(_)
            | Self::Transition { .. }
            | Self::Exists { .. } => true,
            Self::Store(e) => matches!(e, StoreError::NotEditable { .. } | StoreError::State(_)),
            Self::Planner(_) => false,
        }
    }
}

/// A definition checked and planned, not yet written.
#[derive(Debug)]
pub struct Prepared {
    pub campaign: ValidCampaign,
    pub plan: Option<Plan>,
}

#[derive(Debug)]
pub struct Applied {
    pub record: CampaignRecord,
    pub outcome: SaveOutcome,
    pub plan: Option<Plan>,
}

/// Creates or updates the configured apps.
pub async fn sync_apps<S: Store>(
    store: &S,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for (id, app) in &config.apps {
        store
            .app_sync(
                &AppRecord {
                    id: id.clone(),
                    name: app.name.clone().unwrap_or_else(|| id.clone()),
                    default_timezone: app.default_timezone.clone(),
                },
                now,
            )
            .await?;
    }
    Ok(())
}

/// The topics an audience requires, with each topic's default from the config.
pub fn topic_rules<'a>(app: &'a AppConfig, topics: &'a [String]) -> Vec<TopicRule<'a>> {
    topics
        .iter()
        .map(|t| TopicRule {
            name: t,
            default_subscribed: app.topics.get(t).is_some_and(|c| c.default_subscribed),
            cap: app.topics.get(t).and_then(|c| c.cap),
        })
        .collect()
}

fn app_of<'c>(config: &'c Config, def: &CampaignDefinition) -> Result<&'c AppConfig, ApplyError> {
    config
        .app(&def.app)
        .ok_or_else(|| ApplyError::UnknownApp(def.app.clone()))
}

/// Checks a definition against its app's configuration. No I/O.
fn validate<'c>(
    config: &'c Config,
    def: &CampaignDefinition,
) -> Result<(&'c AppConfig, ValidCampaign), ApplyError> {
    let app = app_of(config, def)?;
    let campaign = def.validate(&AppContext {
        app_id: &def.app,
        topics: app.topic_names(),
    })?;
    Ok((app, campaign))
}

/// Whether a stored campaign already has exactly this definition.
fn unchanged(def: &CampaignDefinition, existing: &CampaignRecord) -> bool {
    serde_json::to_value(def).ok().as_ref() == Some(&existing.definition.0)
}

/// Validates a definition and, when it is to be scheduled, plans its slots. Reads only.
pub async fn prepare<S: Store>(
    store: &S,
    config: &Config,
    def: &CampaignDefinition,
    now: DateTime<Utc>,
) -> Result<Prepared, ApplyError> {
    let (app, campaign) = validate(config, def)?;
    if let Some(existing) = store.campaign_get(&def.app, &def.key).await? {
        if !existing.state.is_editable() && !unchanged(def, &existing) {
            return Err(StoreError::NotEditable {
                key: def.key.clone(),
                state: existing.state,
            }
            .into());
        }
    }
    // A draft is planned too, so a schedule that can never be planned (a cron
    // that never fires, a year 9999) is refused as a draft already; that its
    // time has passed is not held against a draft, which is scheduled later.
    // Only a scheduled campaign keeps its slots.
    let plan = match (def.status, plan_campaign(store, app, &campaign, now).await) {
        (DesiredStatus::Scheduled, plan) => Some(plan?),
        (
            DesiredStatus::Draft,
            Ok(_)
            | Err(ApplyError::Plan(
                PlanError::AtInThePast { .. } | PlanError::PassedEverywhere { .. },
            )),
        ) => None,
        (DesiredStatus::Draft, Err(e)) => return Err(e),
    };
    Ok(Prepared { campaign, plan })
}

/// Plans a valid campaign against the zones its audience has now.
pub async fn plan_campaign<S: Store>(
    store: &S,
    app: &AppConfig,
    campaign: &ValidCampaign,
    now: DateTime<Utc>,
) -> Result<Plan, ApplyError> {
    let def = &campaign.definition;
    let mut zones = store
        .audience_count_by_zone(&Segment {
            app_id: &def.app,
            audience: &def.audience,
            topics: topic_rules(app, &def.audience.topics),
        })
        .await?;
    if per_zone(campaign) {
        // Every zone gets its slot, so a recipient who registers after scheduling
        // is sent to at their own local time too.
        let present: std::collections::HashSet<String> =
            zones.iter().map(|z| z.zone.clone()).collect();
        for tz in crate::domain::zone::canonical_zones() {
            if !present.contains(tz.name()) {
                zones.push(crate::domain::planner::ZoneCount {
                    zone: tz.name().to_owned(),
                    recipients: 0,
                });
            }
        }
    }
    // Planning is CPU work that grows with the zones (every zone for a per-zone
    // schedule): it runs on a blocking thread, never on the runtime's workers
    // that serve the API and drive the engine's loops.
    let schedule = campaign.schedule.clone();
    let quiet_hours = campaign.quiet_hours;
    let default_zone = app.timezone();
    let plan = tokio::task::spawn_blocking(move || {
        planner::plan(&PlanRequest {
            schedule: &schedule,
            quiet_hours,
            zones: &zones,
            default_zone,
            now,
        })
    })
    .await??;
    Ok(plan)
}

/// Whether the campaign's slots depend on the recipient's zone.
fn per_zone(c: &ValidCampaign) -> bool {
    use crate::domain::campaign::PlanSchedule;
    c.quiet_hours.is_some()
        || matches!(
            c.schedule,
            PlanSchedule::Local { .. } | PlanSchedule::Cron { zone: None, .. }
        )
}

/// Writes a prepared definition and its plan.
pub async fn save<S: Store>(
    store: &S,
    prepared: Prepared,
    now: DateTime<Utc>,
) -> Result<Applied, ApplyError> {
    let def = &prepared.campaign.definition;
    let json = serde_json::to_value(def).map_err(|e| {
        StoreError::Invariant(format!("campaign {:?} does not serialize: {e}", def.key))
    })?;
    let slots: Vec<NewSlot> = prepared
        .plan
        .iter()
        .flat_map(|p| &p.slots)
        .map(|s| NewSlot {
            occurrence: s.occurrence.clone(),
            zone: s.zone.clone(),
            fire_at: s.fire_at,
            disposition: s.disposition,
            planned_count: s.recipients,
        })
        .collect();
    let state = match def.status {
        DesiredStatus::Draft => CampaignState::Draft,
        DesiredStatus::Scheduled => CampaignState::Scheduled,
    };
    let (record, outcome) = store
        .campaign_save(
            &CampaignSave {
                app_id: &def.app,
                key: &def.key,
                name: def.display_name(),
                definition: &json,
                state,
                slots: &slots,
                tzdata_version: prepared.plan.as_ref().map(|_| TZDATA_VERSION),
            },
            now,
        )
        .await?;
    Ok(Applied {
        record,
        outcome,
        plan: prepared.plan,
    })
}

/// Reads a definition file.
pub fn read_file(path: &Path) -> Result<CampaignDefinition, DefinitionError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DefinitionError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_toml(&shown, &text)
}

/// The `*.toml` files of a directory, sorted; none if it does not exist.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Pauses a campaign: nothing new is released or leased until it resumes.
pub async fn pause<S: Store>(
    store: &S,
    c: &CampaignRecord,
    now: DateTime<Utc>,
) -> Result<CampaignState, StoreError> {
    store
        .campaign_set_state(c.id, c.state, CampaignState::Paused, now)
        .await?;
    Ok(CampaignState::Paused)
}

/// Resumes a paused campaign where it stopped: running if a slot was released, else scheduled.
pub async fn resume<S: Store>(
    store: &S,
    c: &CampaignRecord,
    now: DateTime<Utc>,
) -> Result<CampaignState, StoreError> {
    use crate::domain::state::SlotState;
    let started = store
        .slot_list(c.id)
        .await?
        .iter()
        .any(|s| matches!(s.state, SlotState::Released | SlotState::Completed));
    let to = if started {
        CampaignState::Running
    } else {
        CampaignState::Scheduled
    };
    // The table lets a draft become scheduled too; that is scheduling (with a
    // plan), not resuming.
    if c.state != CampaignState::Paused {
        return Err(StateError::NotAllowed {
            machine: CampaignState::MACHINE,
            from: c.state.as_str(),
            to: to.as_str(),
        }
        .into());
    }
    store.campaign_set_state(c.id, c.state, to, now).await?;
    Ok(to)
}

/// Cancels a campaign; returns how many pending deliveries were cancelled.
pub async fn cancel<S: Store>(
    store: &S,
    c: &CampaignRecord,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    store.campaign_cancel(c.id, c.state, now).await
}

/// Creates a campaign from its definition (the API's create). The same key with
/// the same definition is left as it is (`Unchanged`, like re-applying a file);
/// with another definition it is refused: edits go through [`edit`], by id.
pub async fn create<S: Store>(
    store: &S,
    config: &Config,
    def: &CampaignDefinition,
    now: DateTime<Utc>,
) -> Result<Applied, ApplyError> {
    match store.campaign_get(&def.app, &def.key).await? {
        Some(existing) if unchanged(def, &existing) => Ok(Applied {
            record: existing,
            outcome: SaveOutcome::Unchanged,
            plan: None,
        }),
        Some(existing) => {
            // A bad definition is a 400 whether or not its key is taken.
            validate(config, def)?;
            Err(ApplyError::Exists {
                key: def.key.clone(),
                id: existing.id,
            })
        }
        None => {
            let prepared = prepare(store, config, def, now).await?;
            save(store, prepared, now).await
        }
    }
}

/// The definition a campaign was stored with.
pub fn stored_definition(c: &CampaignRecord) -> Result<CampaignDefinition, ApplyError> {
    from_json(c.definition.0.clone()).map_err(|e| {
        ApplyError::Store(StoreError::Invariant(format!(
            "campaign {}: its stored definition no longer reads ({e})",
            c.id
        )))
    })
}

/// Edits a campaign by a JSON merge patch (RFC 7396) of its definition and
/// re-plans its slots, while it is editable. Key and app cannot change: the key
/// is what `save` finds the campaign by, and the app is the caller's.
pub async fn edit<S: Store>(
    store: &S,
    config: &Config,
    c: &CampaignRecord,
    patch: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Applied, ApplyError> {
    editable(c)?;
    let mut doc = c.definition.0.clone();
    merge_patch(&mut doc, patch);
    let def = from_json(doc).map_err(|e| ValidationErrors(vec![e]))?;
    replace(store, config, c, &def, now).await
}

/// Refuses a campaign that is no longer a draft or scheduled.
fn editable(c: &CampaignRecord) -> Result<(), ApplyError> {
    if c.state.is_editable() {
        Ok(())
    } else {
        Err(StoreError::NotEditable {
            key: c.key.clone(),
            state: c.state,
        }
        .into())
    }
}

/// Replaces an editable campaign's definition with a whole new one (the
/// console's composer) and re-plans its slots. Key and app cannot change.
pub async fn replace<S: Store>(
    store: &S,
    config: &Config,
    c: &CampaignRecord,
    def: &CampaignDefinition,
    now: DateTime<Utc>,
) -> Result<Applied, ApplyError> {
    editable(c)?;
    let fixed = [
        (
            "key",
            def.key != c.key,
            "cannot change (create a new campaign instead)",
        ),
        ("app", def.app != c.app_id, "cannot change"),
    ];
    let errors: Vec<FieldError> = fixed
        .into_iter()
        .filter(|(_, changed, _)| *changed)
        .map(|(field, _, message)| FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        })
        .collect();
    if !errors.is_empty() {
        return Err(ValidationErrors(errors).into());
    }
    let prepared = prepare(store, config, def, now).await?;
    save(store, prepared, now).await
}

/// RFC 7396: objects merge member by member, `null` removes a member, anything
/// else replaces what was there.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    if let serde_json::Value::Object(doc) = target {
        for (name, value) in members {
            if value.is_null() {
                doc.remove(name);
            } else {
                merge_patch(
                    doc.entry(name.clone()).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
    }
}

/// A lifecycle request on a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Schedule,
    Pause,
    Resume,
    Cancel,
}

impl Action {
    pub const ALL: [Self; 4] = [Self::Schedule, Self::Pause, Self::Resume, Self::Cancel];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether a campaign in `from` admits the action. The moves are the state
    /// table's; this adds what each verb means: scheduling plans an editable
    /// campaign, resuming continues a paused one only.
    pub fn admits(self, from: CampaignState) -> bool {
        match self {
            Self::Schedule => from.is_editable() && from.can_become(CampaignState::Scheduled),
            Self::Pause => from.can_become(CampaignState::Paused),
            Self::Resume => from == CampaignState::Paused,
            Self::Cancel => from.can_become(CampaignState::Cancelled),
        }
    }
}

/// Applies a lifecycle action; returns the state the campaign is in after it.
/// Scheduling plans the slots against the audience as it is `now`.
pub async fn act<S: Store>(
    store: &S,
    config: &Config,
    c: &CampaignRecord,
    action: Action,
    now: DateTime<Utc>,
) -> Result<CampaignState, ApplyError> {
    if !action.admits(c.state) {
        return Err(ApplyError::Transition {
            action: action.as_str(),
            state: c.state,
        });
    }
    match action {
        Action::Schedule => {
            let mut def = stored_definition(c)?;
            def.status = DesiredStatus::Scheduled;
            let prepared = prepare(store, config, &def, now).await?;
            Ok(save(store, prepared, now).await?.record.state)
        }
        Action::Pause => Ok(pause(store, c, now).await?),
        Action::Resume => Ok(resume(store, c, now).await?),
        Action::Cancel => {
            cancel(store, c, now).await?;
            Ok(CampaignState::Cancelled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null, "h": 1}, "list": [3], "new": {"x": 1}}),
        );
        assert_eq!(
            doc,
            json!({"a": "z", "c": {"d": "e", "h": 1}, "list": [3], "new": {"x": 1}})
        );
        merge_patch(&mut doc, &json!("whole"));
        assert_eq!(doc, json!("whole"));
    }

    #[test]
    fn actions_follow_the_state_table() {
        use CampaignState::*;
        let admitted = |a: Action| -> Vec<CampaignState> {
            CampaignState::ALL
                .iter()
                .copied()
                .filter(|s| a.admits(*s))
                .collect()
        };
        assert_eq!(admitted(Action::Schedule), [Draft]);
        assert_eq!(admitted(Action::Pause), [Scheduled, Running]);
        assert_eq!(admitted(Action::Resume), [Paused]);
        assert_eq!(
            admitted(Action::Cancel),
            [Draft, Scheduled, Running, Paused]
        );
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
    }
}
