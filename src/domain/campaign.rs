//! The campaign definition: one serde model written as TOML in `campaigns/*.toml`
//! and as JSON over the API, and its validation into the typed form the planner uses.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::domain::locale::Locale;
use crate::domain::message::{check_nul, valid_key};
pub use crate::domain::message::{
    nul_at, Button, FieldError, LocalizedText, Message, Priority, ValidationErrors, MAX_BUTTONS,
    NUL_REFUSED,
};
use crate::domain::zone::parse_zone;

pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// The longest `schedule.grace`: past a week, "late" is no longer the same message.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignDefinition {
    /// Stable identifier, unique per app; `campaign apply` upserts by it.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub app: String,
    /// What `apply` should leave the campaign as: a draft, or scheduled (slots planned).
    #[serde(default)]
    pub status: DesiredStatus,
    pub message: Message,
    pub audience: Audience,
    pub schedule: Schedule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Messages per minute for the whole campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredStatus {
    #[default]
    Draft,
    Scheduled,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    #[default]
    Ios,
    Android,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ios => "ios",
            Self::Android => "android",
        }
    }
}

/// A platform name that is neither `ios` nor `android`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform {0:?}")]
pub struct UnknownPlatform(pub String);

/// Parses a stored platform (the schema allows only these two).
impl TryFrom<String> for Platform {
    type Error = UnknownPlatform;
    fn try_from(s: String) -> Result<Self, UnknownPlatform> {
        match s.as_str() {
            "ios" => Ok(Self::Ios),
            "android" => Ok(Self::Android),
            _ => Err(UnknownPlatform(s)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// Topics the user must be subscribed to (all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Platform>,
    /// Device locales to include; `de` matches `de` and `de-*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locales: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeFilter>,
    /// An explicit list of users (external ids); empty means every user that matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default)]
    pub devices: DevicePolicy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DevicePolicy {
    /// Every active device of the user.
    #[default]
    All,
    /// The user's primary device, or the most recently registered one when none is marked.
    Primary,
}

/// A condition on a user attribute. Values are compared as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeFilter {
    pub attribute: String,
    pub op: FilterOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    Ne,
    In,
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(rename = "type")]
    pub kind: ScheduleKind,
    /// `at`: an RFC 3339 instant. `local`: a local date-time such as `2026-12-01T09:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// `cron`: a 5-field (or 6-field, with seconds) cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// `cron`: evaluate in this zone for everyone instead of in each recipient's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// `cron`: no occurrence at or after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default)]
    pub missed: Missed,
    /// How late a zone may still be sent at once under `missed = "skip"`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub grace: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Now,
    At,
    Local,
    Cron,
}

/// What to do for zones where a `local` time has already passed when the campaign is scheduled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Skip the zone, unless it is late by less than the grace period (then send at once).
    #[default]
    Skip,
    /// Send at the same local time one day later.
    NextDay,
    /// Send at once.
    SendNow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Local time the window opens, `HH:MM`.
    pub start: String,
    /// Local time the window closes, `HH:MM`; may be earlier than `start` (overnight).
    pub end: String,
}

/// What validation needs to know about the campaign's app.
#[derive(Debug, Clone)]
pub struct AppContext<'a> {
    pub app_id: &'a str,
    pub topics: BTreeSet<&'a str>,
}

/// The schedule in typed form, ready for the planner.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanSchedule {
    Now,
    At(DateTime<Utc>),
    Local {
        at: NaiveDateTime,
        missed: Missed,
        grace: Duration,
    },
    Cron {
        cron: Box<croner::Cron>,
        zone: Option<Tz>,
        until: Option<DateTime<Utc>>,
    },
}

/// A local daily window in which nothing is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietWindow {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietWindow {
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// A definition that passed validation, with its typed schedule.
#[derive(Debug, Clone)]
pub struct ValidCampaign {
    pub definition: CampaignDefinition,
    pub schedule: PlanSchedule,
    pub quiet_hours: Option<QuietWindow>,
}

fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

/// Parses `2026-12-01T09:00` (seconds optional).
pub fn parse_local_datetime(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .ok()
}

fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl CampaignDefinition {
    /// Checks every field and returns the typed campaign, or every problem at once.
    pub fn validate(&self, app: &AppContext<'_>) -> Result<ValidCampaign, ValidationErrors> {
        let mut errs = ValidationErrors(Vec::new());
        check_nul(self, "", &mut errs);
        if !valid_key(&self.key) {
            errs.push(
                "key",
                "must be 1-100 characters of letters, digits, '-', '_' or '.'",
            );
        }
        if self.app != app.app_id {
            errs.push("app", format!("unknown app {:?}", self.app));
        }
        if self.name.as_deref().is_some_and(|n| n.len() > 200) {
            errs.push("name", "must be at most 200 characters");
        }
        if self.throttle_per_minute == Some(0) {
            errs.push("throttle_per_minute", "must be at least 1");
        }
        self.message.check(&mut errs);
        self.audience.check(app, &mut errs);
        let quiet_hours = self.quiet_hours.as_ref().and_then(|q| q.check(&mut errs));
        let schedule = self.schedule.check(&mut errs);
        match schedule {
            Some(schedule) if errs.0.is_empty() => Ok(ValidCampaign {
                definition: self.clone(),
                schedule,
                quiet_hours,
            }),
            _ => Err(errs),
        }
    }

    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.key)
    }
}

impl Audience {
    fn check(&self, app: &AppContext<'_>, errs: &mut ValidationErrors) {
        for (i, t) in self.topics.iter().enumerate() {
            if !app.topics.contains(t.as_str()) {
                let known: Vec<&str> = app.topics.iter().copied().collect();
                errs.push(
                    format!("audience.topics[{i}]"),
                    format!(
                        "unknown topic {t:?} (app {:?} declares: {})",
                        app.app_id,
                        known.join(", ")
                    ),
                );
            }
        }
        for (i, l) in self.locales.iter().enumerate() {
            if !Locale::is_valid(l) {
                errs.push(
                    format!("audience.locales[{i}]"),
                    "is not a locale such as \"de\" or \"pt-BR\"",
                );
            }
        }
        for (i, f) in self.attributes.iter().enumerate() {
            let field = format!("audience.attributes[{i}]");
            if !valid_key(&f.attribute) {
                errs.push(
                    format!("{field}.attribute"),
                    "must be 1-100 characters of letters, digits, '-', '_' or '.'",
                );
            }
            match (f.op, &f.value) {
                (FilterOp::Exists | FilterOp::NotExists, Some(_)) => errs.push(
                    format!("{field}.value"),
                    "takes no value with exists / not_exists",
                ),
                (FilterOp::Eq | FilterOp::Ne, None) => {
                    errs.push(format!("{field}.value"), "is required")
                }
                (FilterOp::Eq | FilterOp::Ne, Some(v)) if !is_scalar(v) => errs.push(
                    format!("{field}.value"),
                    "must be a string, number or boolean",
                ),
                (FilterOp::In, Some(serde_json::Value::Array(items)))
                    if !items.is_empty() && items.iter().all(is_scalar) => {}
                (FilterOp::In, _) => errs.push(
                    format!("{field}.value"),
                    "must be a non-empty list of strings, numbers or booleans",
                ),
                _ => {}
            }
        }
        for (i, u) in self.users.iter().enumerate() {
            if u.is_empty() || u.len() > 256 {
                errs.push(format!("audience.users[{i}]"), "must be 1-256 characters");
            }
        }
    }
}

fn is_scalar(v: &serde_json::Value) -> bool {
    matches!(
        v,
        serde_json::Value::String(_) | serde_json::Value::Number(_) | serde_json::Value::Bool(_)
    )
}

/// The text form in which attribute values are compared in SQL.
pub fn scalar_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl QuietHours {
    fn check(&self, errs: &mut ValidationErrors) -> Option<QuietWindow> {
        let start = parse_hhmm(&self.start);
        let end = parse_hhmm(&self.end);
        if start.is_none() {
            errs.push(
                "quiet_hours.start",
                format!("{:?} is not a time of day HH:MM", self.start),
            );
        }
        if end.is_none() {
            errs.push(
                "quiet_hours.end",
                format!("{:?} is not a time of day HH:MM", self.end),
            );
        }
        let (start, end) = (start?, end?);
        if start == end {
            errs.push("quiet_hours.end", "must differ from start");
            return None;
        }
        Some(QuietWindow { start, end })
    }
}

impl Schedule {
    fn check(&self, errs: &mut ValidationErrors) -> Option<PlanSchedule> {
        let before = errs.0.len();
        let unexpected = |errs: &mut ValidationErrors, field: &str, present: bool| {
            if present {
                errs.push(
                    format!("schedule.{field}"),
                    format!("does not apply to type = {:?}", self.kind_name()),
                );
            }
        };
        let schedule = match self.kind {
            ScheduleKind::Now => {
                unexpected(errs, "at", self.at.is_some());
                unexpected(errs, "cron", self.cron.is_some());
                unexpected(errs, "zone", self.zone.is_some());
                unexpected(errs, "until", self.until.is_some());
                Some(PlanSchedule::Now)
            }
            ScheduleKind::At => {
                unexpected(errs, "cron", self.cron.is_some());
                unexpected(errs, "zone", self.zone.is_some());
                unexpected(errs, "until", self.until.is_some());
                match self.at.as_deref() {
                    None => {
                        errs.push(
                            "schedule.at",
                            "is required for type = \"at\" (an RFC 3339 instant)",
                        );
                        None
                    }
                    Some(at) => match parse_instant(at) {
                        Some(t) => Some(PlanSchedule::At(t)),
                        None => {
                            errs.push("schedule.at", format!("{at:?} is not an RFC 3339 instant such as 2026-12-01T09:00:00Z"));
                            None
                        }
                    },
                }
            }
            ScheduleKind::Local => {
                unexpected(errs, "cron", self.cron.is_some());
                unexpected(errs, "zone", self.zone.is_some());
                unexpected(errs, "until", self.until.is_some());
                match self.at.as_deref() {
                    None => {
                        errs.push("schedule.at", "is required for type = \"local\" (a local date and time such as 2026-12-01T09:00)");
                        None
                    }
                    Some(at) => match parse_local_datetime(at) {
                        Some(t) => Some(PlanSchedule::Local {
                            at: t,
                            missed: self.missed,
                            grace: self.grace.unwrap_or(DEFAULT_GRACE),
                        }),
                        None => {
                            errs.push("schedule.at", format!("{at:?} is not a local date and time such as 2026-12-01T09:00 (no offset: it is read in each recipient's zone)"));
                            None
                        }
                    },
                }
            }
            ScheduleKind::Cron => {
                unexpected(errs, "at", self.at.is_some());
                let cron = match self.cron.as_deref() {
                    None => {
                        errs.push("schedule.cron", "is required for type = \"cron\"");
                        None
                    }
                    Some(expr) => match croner::parser::CronParser::builder()
                        .seconds(croner::parser::Seconds::Optional)
                        .build()
                        .parse(expr)
                    {
                        Ok(c) => Some(c),
                        Err(e) => {
                            errs.push(
                                "schedule.cron",
                                format!("{expr:?} is not a cron expression: {e}"),
                            );
                            None
                        }
                    },
                };
                let zone = match self.zone.as_deref() {
                    None => Some(None),
                    Some(z) => match parse_zone(z) {
                        Some(tz) => Some(Some(tz)),
                        None => {
                            errs.push("schedule.zone", format!("unknown IANA time zone {z:?}"));
                            None
                        }
                    },
                };
                let until = match self.until.as_deref() {
                    None => Some(None),
                    Some(u) => {
                        match parse_instant(u) {
                            Some(t) => Some(Some(t)),
                            None => {
                                errs.push("schedule.until", format!("{u:?} is not an RFC 3339 instant such as 2027-01-01T00:00:00Z"));
                                None
                            }
                        }
                    }
                };
                match (cron, zone, until) {
                    (Some(cron), Some(zone), Some(until)) => Some(PlanSchedule::Cron {
                        cron: Box::new(cron),
                        zone,
                        until,
                    }),
                    _ => None,
                }
            }
        };
        if self.grace.is_some_and(|g| g > MAX_GRACE) {
            errs.push(
                "schedule.grace",
                format!(
                    "{} is longer than the most, {}",
                    humantime::format_duration(self.grace.unwrap_or_default()),
                    humantime::format_duration(MAX_GRACE)
                ),
            );
        }
        if self.grace.is_some()
            && !(self.kind == ScheduleKind::Local && self.missed == Missed::Skip)
        {
            errs.push(
                "schedule.grace",
                "applies only to type = \"local\" with missed = \"skip\"",
            );
        }
        if self.missed != Missed::Skip
            && self.kind != ScheduleKind::Local
            && self.kind != ScheduleKind::Cron
        {
            errs.push(
                "schedule.missed",
                "applies only to local and cron schedules",
            );
        }
        if errs.0.len() == before {
            schedule
        } else {
            None
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            ScheduleKind::Now => "now",
            ScheduleKind::At => "at",
            ScheduleKind::Local => "local",
            ScheduleKind::Cron => "cron",
        }
    }
}

/// Errors reading a definition file.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

/// Parses a TOML campaign file.
pub fn parse_toml(path: &str, text: &str) -> Result<CampaignDefinition, DefinitionError> {
    toml::from_str(text).map_err(|e| DefinitionError::Parse {
        path: path.to_owned(),
        message: one_line(&e.to_string()),
    })
}

/// Reads the JSON form of a definition (the API's). A problem names its field
/// the way validation does (`message.buttons[0].id`), so every 400 reads alike.
pub fn from_json(value: serde_json::Value) -> Result<CampaignDefinition, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let problem = e.inner().to_string();
        let parent = (path != ".").then_some(path.as_str());
        // serde reports a missing field at its parent: name the field itself.
        match problem
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            Some(name) => FieldError {
                field: parent.map_or(name.to_owned(), |p| format!("{p}.{name}")),
                message: "is required".to_owned(),
            },
            None => FieldError {
                field: parent.unwrap_or("body").to_owned(),
                message: problem,
            },
        }
    })
}

/// Folds a multi-line parser message (toml prints a source excerpt) into one line.
fn one_line(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let excerpt = line
            .split_once('|')
            .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
        if excerpt || line.chars().all(|c| c == '|' || c == '^' || c == ' ') {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> AppContext<'static> {
        AppContext {
            app_id: "shop",
            topics: ["marketing", "transactional"].into_iter().collect(),
        }
    }

    fn base() -> CampaignDefinition {
        CampaignDefinition {
            key: "morning".into(),
            name: None,
            app: "shop".into(),
            status: DesiredStatus::Scheduled,
            message: Message {
                title: "Hello".into(),
                body: "World".into(),
                ..Message::default()
            },
            audience: Audience {
                topics: vec!["marketing".into()],
                ..Audience::default()
            },
            schedule: Schedule {
                kind: ScheduleKind::Local,
                at: Some("2026-12-01T09:00".into()),
                cron: None,
                zone: None,
                until: None,
                missed: Missed::Skip,
                grace: None,
            },
            quiet_hours: None,
            throttle_per_minute: None,
        }
    }

    fn fields(def: &CampaignDefinition) -> Vec<String> {
        match def.validate(&ctx()) {
            Ok(_) => vec![],
            Err(e) => e.0.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn valid_definition_passes() {
        let v = base().validate(&ctx()).expect("valid");
        assert!(matches!(v.schedule, PlanSchedule::Local { grace, .. } if grace == DEFAULT_GRACE));
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut d = base();
        d.message.title = " ".into();
        d.message.image = Some("ftp://x/y.png".into());
        d.message.buttons = (0..4)
            .map(|i| Button {
                id: format!("b{i}"),
                label: "x".into(),
                url: None,
            })
            .collect();
        d.audience.topics.push("news".into());
        d.schedule.at = Some("2026-13-01T09:00".into());
        assert_eq!(
            fields(&d),
            [
                "message.title",
                "message.image",
                "message.buttons",
                "audience.topics[1]",
                "schedule.at"
            ]
        );
    }

    #[test]
    fn unknown_zone_is_named() {
        let mut d = base();
        d.schedule = Schedule {
            kind: ScheduleKind::Cron,
            at: None,
            cron: Some("0 9 * * MON".into()),
            zone: Some("Mars/Olympus".into()),
            until: None,
            missed: Missed::Skip,
            grace: None,
        };
        assert_eq!(fields(&d), ["schedule.zone"]);
    }

    #[test]
    fn bad_cron_is_named() {
        let mut d = base();
        d.schedule.kind = ScheduleKind::Cron;
        d.schedule.at = None;
        d.schedule.cron = Some("61 * * * *".into());
        assert_eq!(fields(&d), ["schedule.cron"]);
    }

    #[test]
    fn a_grace_past_a_week_is_named() {
        let mut d = base();
        d.schedule.kind = ScheduleKind::Local;
        d.schedule.missed = Missed::Skip;
        d.schedule.grace = Some(MAX_GRACE);
        assert!(fields(&d).is_empty(), "{:?}", fields(&d));
        d.schedule.grace = Some(MAX_GRACE + Duration::from_secs(1));
        assert_eq!(fields(&d), ["schedule.grace"]);
    }

    #[test]
    fn oversized_payload_is_refused() {
        let mut d = base();
        d.message.body = "x".repeat(5000);
        assert_eq!(fields(&d), ["message"]);
        let mut d = base();
        d.message.locales.insert(
            "de".into(),
            LocalizedText {
                title: "Hallo".into(),
                body: "ü".repeat(3000),
            },
        );
        assert_eq!(fields(&d), ["message.locales.de"]);
    }

    #[test]
    fn quiet_hours_window_overnight() {
        let w = QuietWindow {
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        };
        assert!(w.contains(NaiveTime::from_hms_opt(23, 0, 0).unwrap()));
        assert!(w.contains(NaiveTime::from_hms_opt(7, 59, 0).unwrap()));
        assert!(!w.contains(NaiveTime::from_hms_opt(8, 0, 0).unwrap()));
        assert!(!w.contains(NaiveTime::from_hms_opt(12, 0, 0).unwrap()));
    }

    #[test]
    fn nul_characters_are_refused_naming_the_field() {
        let mut d = base();
        d.message
            .data
            .insert("k".into(), serde_json::json!(["ok", "a\u{0}"]));
        let e = d.validate(&ctx()).unwrap_err();
        assert_eq!(
            e.0[0].to_string(),
            format!("message.data.k[1]: {NUL_REFUSED}")
        );
        let mut d = base();
        d.audience.users = vec!["\u{0}".into()];
        let e = d.validate(&ctx()).unwrap_err();
        assert_eq!(e.0[0].field, "audience.users[0]");
        let mut m = base().message;
        m.title = "t\u{0}".into();
        assert_eq!(m.validate().unwrap_err().0[0].field, "message.title");
        let key = serde_json::json!({"a": {"b\u{0}": 1}});
        assert_eq!(nul_at(&key, "").as_deref(), Some("a.b\u{0}"));
        assert_eq!(nul_at(&serde_json::json!({"a": [1, "x"]}), ""), None);
    }

    #[test]
    fn json_errors_name_the_field() {
        let ok = serde_json::json!({"key": "k", "app": "shop", "message": {"title": "t", "body": "b", "ttl": "1h"},
                                    "audience": {}, "schedule": {"type": "now"}});
        assert_eq!(
            from_json(ok.clone()).map(|d| d.message.ttl),
            Ok(Some(Duration::from_secs(3600)))
        );
        let field = |patch: serde_json::Value| {
            let mut v = ok.clone();
            for (k, x) in patch.as_object().into_iter().flatten() {
                v[k] = x.clone();
            }
            from_json(v).map(|_| ()).map_err(|e| e.to_string())
        };
        let missing = field(serde_json::json!({"message": {"body": "b"}}));
        assert_eq!(missing, Err("message.title: is required".to_owned()));
        let unknown = field(serde_json::json!({"colour": "red"})).unwrap_err();
        assert!(unknown.contains("colour"), "{unknown}");
        let typed = field(serde_json::json!({"throttle_per_minute": "fast"})).unwrap_err();
        assert!(typed.starts_with("throttle_per_minute: "), "{typed}");
        let nested = field(
            serde_json::json!({"message": {"title": "t", "body": "b", "buttons": [{"id": 1, "label": "x"}]}}),
        );
        assert!(nested.unwrap_err().starts_with("message.buttons[0].id: "));
        assert_eq!(from_json(serde_json::json!("x")).unwrap_err().field, "body");
    }

    #[test]
    fn toml_round_trip_and_unknown_field() {
        let text = r#"
            key = "k"
            app = "shop"
            [message]
            title = "t"
            body = "b"
            ttl = "1h"
            [audience]
            [schedule]
            type = "now"
        "#;
        let d = parse_toml("x.toml", text).expect("parses");
        assert_eq!(d.message.ttl, Some(Duration::from_secs(3600)));
        let bad = text.replace("title = \"t\"", "title = \"t\"\ntitel = \"t\"");
        let err = parse_toml("x.toml", &bad).unwrap_err().to_string();
        assert!(err.contains("titel"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
