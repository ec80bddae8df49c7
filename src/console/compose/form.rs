//! The composer's fields as the browser sends them, read into a definition,
//! and a stored definition written back into them for editing.

use std::collections::{BTreeMap, HashMap};

use crate::domain::campaign::{
    AttributeFilter, Audience, CampaignDefinition, DesiredStatus, DevicePolicy, FieldError,
    FilterOp, Missed, Platform, QuietHours, Schedule, ScheduleKind,
};
use crate::domain::message::{Button, LocalizedText, Message, Priority, MAX_BUTTONS};

/// Form rows for per-locale texts and for attribute filters: an edit shows the
/// definition's rows and a few empty ones, never more than these (a page, and
/// what one form post can carry, stay bounded).
pub const LOCALE_ROWS: usize = 12;
pub const FILTER_ROWS: usize = 8;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ButtonRow {
    pub id: String,
    pub label: String,
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocaleRow {
    pub tag: String,
    pub title: String,
    pub body: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterRow {
    pub attribute: String,
    /// `eq`, `ne`, `in`, `exists` or `not_exists`.
    pub op: String,
    /// One value; for `in`, values separated by commas.
    pub value: String,
}

/// The composer's fields as typed: text, as the browser sends it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComposeForm {
    pub key: String,
    pub name: String,
    pub title: String,
    pub body: String,
    pub image: String,
    /// `none`, `deeplink` or `url`: what `link` is.
    pub link_kind: String,
    pub link: String,
    pub sound: String,
    pub badge: String,
    pub ttl: String,
    pub collapse_key: String,
    pub priority: String,
    pub thread_id: String,
    pub channel_id: String,
    /// `message.data` as a JSON object.
    pub data: String,
    pub buttons: Vec<ButtonRow>,
    pub locales: Vec<LocaleRow>,
    pub topics: Vec<String>,
    pub platforms: Vec<String>,
    /// Device locales, separated by commas.
    pub audience_locales: String,
    /// External ids, one per line.
    pub users: String,
    pub devices: String,
    pub filters: Vec<FilterRow>,
    pub schedule_type: String,
    /// `at`: an RFC 3339 instant.
    pub at_instant: String,
    /// `local`: a local date and time (the browser's `datetime-local`).
    pub at_local: String,
    pub missed: String,
    pub grace: String,
    pub cron: String,
    pub zone: String,
    pub until: String,
    pub quiet_start: String,
    pub quiet_end: String,
    pub throttle: String,
    /// Which text the preview shows: empty for the default, else a locale row's tag.
    pub preview_locale: String,
}

/// Where each list entry of a definition came from in the form, so that an
/// error about `message.buttons[0]` lands beside the row the operator filled.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub(super) buttons: Vec<usize>,
    pub(super) locales: HashMap<String, usize>,
    pub(super) filters: Vec<usize>,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// `button2_label` → (`button`, 2, `label`).
fn indexed(name: &str) -> Option<(&str, usize, &str)> {
    let (head, field) = name.split_once('_')?;
    let digits = head.find(|c: char| c.is_ascii_digit())?;
    let (kind, n) = head.split_at(digits);
    Some((kind, n.parse().ok()?, field))
}

impl ComposeForm {
    /// An empty form for a new campaign of an app.
    pub fn blank() -> Self {
        Self {
            link_kind: "none".to_owned(),
            priority: "high".to_owned(),
            devices: "all".to_owned(),
            schedule_type: "local".to_owned(),
            missed: "skip".to_owned(),
            ..Self::default()
        }
        .padded()
    }

    /// Empty rows to fill in, up to the bounds.
    fn padded(mut self) -> Self {
        self.buttons.resize(MAX_BUTTONS, ButtonRow::default());
        let locales = (self.locales.len() + 2).clamp(3, LOCALE_ROWS);
        self.locales.resize(locales, LocaleRow::default());
        let filters = (self.filters.len() + 1).clamp(2, FILTER_ROWS);
        self.filters.resize(filters, FilterRow::default());
        self
    }

    /// The form as posted (`application/x-www-form-urlencoded` pairs; a name
    /// repeats for checkboxes). Unknown names and rows past the bounds are ignored.
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut f = Self {
            buttons: vec![ButtonRow::default(); MAX_BUTTONS],
            locales: vec![LocaleRow::default(); LOCALE_ROWS],
            filters: vec![FilterRow::default(); FILTER_ROWS],
            ..Self::default()
        };
        for (name, value) in pairs {
            let v = value.clone();
            match name.as_str() {
                "key" => f.key = v,
                "name" => f.name = v,
                "title" => f.title = v,
                "body" => f.body = v,
                "image" => f.image = v,
                "link_kind" => f.link_kind = v,
                "link" => f.link = v,
                "sound" => f.sound = v,
                "badge" => f.badge = v,
                "ttl" => f.ttl = v,
                "collapse_key" => f.collapse_key = v,
                "priority" => f.priority = v,
                "thread_id" => f.thread_id = v,
                "channel_id" => f.channel_id = v,
                "data" => f.data = v,
                "topics" => f.topics.push(v),
                "platforms" => f.platforms.push(v),
                "audience_locales" => f.audience_locales = v,
                "users" => f.users = v,
                "devices" => f.devices = v,
                "schedule_type" => f.schedule_type = v,
                "at_instant" => f.at_instant = v,
                "at_local" => f.at_local = v,
                "missed" => f.missed = v,
                "grace" => f.grace = v,
                "cron" => f.cron = v,
                "zone" => f.zone = v,
                "until" => f.until = v,
                "quiet_start" => f.quiet_start = v,
                "quiet_end" => f.quiet_end = v,
                "throttle" => f.throttle = v,
                "preview_locale" => f.preview_locale = v,
                other => match indexed(other) {
                    Some(("button", n @ 1..=MAX_BUTTONS, field)) => {
                        let row = &mut f.buttons[n - 1];
                        match field {
                            "id" => row.id = v,
                            "label" => row.label = v,
                            "url" => row.url = v,
                            _ => {}
                        }
                    }
                    Some(("locale", n @ 1..=LOCALE_ROWS, field)) => {
                        let row = &mut f.locales[n - 1];
                        match field {
                            "tag" => row.tag = v,
                            "title" => row.title = v,
                            "body" => row.body = v,
                            _ => {}
                        }
                    }
                    Some(("filter", n @ 1..=FILTER_ROWS, field)) => {
                        let row = &mut f.filters[n - 1];
                        match field {
                            "attribute" => row.attribute = v,
                            "op" => row.op = v,
                            "value" => row.value = v,
                            _ => {}
                        }
                    }
                    _ => {}
                },
            }
        }
        // Trailing empty rows are dropped; a filled row keeps its number.
        while f.locales.len() > 1 && f.locales.last() == Some(&LocaleRow::default()) {
            f.locales.pop();
        }
        while f.filters.len() > 1 && f.filters.last().is_some_and(FilterRow::is_empty) {
            f.filters.pop();
        }
        f
    }

    /// The form showing a stored definition, for editing.
    pub fn from_definition(def: &CampaignDefinition) -> Self {
        let m = &def.message;
        let s = &def.schedule;
        let (link_kind, link) = match (&m.deeplink, &m.url) {
            (Some(d), _) => ("deeplink", d.clone()),
            (None, Some(u)) => ("url", u.clone()),
            (None, None) => ("none", String::new()),
        };
        let text = |o: &Option<String>| o.clone().unwrap_or_default();
        Self {
            key: def.key.clone(),
            name: text(&def.name),
            title: m.title.clone(),
            body: m.body.clone(),
            image: text(&m.image),
            link_kind: link_kind.to_owned(),
            link,
            sound: text(&m.sound),
            badge: m.badge.map(|b| b.to_string()).unwrap_or_default(),
            ttl: m
                .ttl
                .map(|t| humantime::format_duration(t).to_string())
                .unwrap_or_default(),
            collapse_key: text(&m.collapse_key),
            priority: match m.priority {
                Priority::High => "high",
                Priority::Normal => "normal",
            }
            .to_owned(),
            thread_id: text(&m.thread_id),
            channel_id: text(&m.channel_id),
            data: if m.data.is_empty() {
                String::new()
            } else {
                serde_json::to_string_pretty(&m.data).unwrap_or_default()
            },
            buttons: m
                .buttons
                .iter()
                .map(|b| ButtonRow {
                    id: b.id.clone(),
                    label: b.label.clone(),
                    url: text(&b.url),
                })
                .collect(),
            locales: m
                .locales
                .iter()
                .map(|(tag, t)| LocaleRow {
                    tag: tag.clone(),
                    title: t.title.clone(),
                    body: t.body.clone(),
                })
                .collect(),
            topics: def.audience.topics.clone(),
            platforms: def
                .audience
                .platforms
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            audience_locales: def.audience.locales.join(", "),
            users: def.audience.users.join("\n"),
            devices: match def.audience.devices {
                DevicePolicy::All => "all",
                DevicePolicy::Primary => "primary",
            }
            .to_owned(),
            filters: def
                .audience
                .attributes
                .iter()
                .map(|a| FilterRow {
                    attribute: a.attribute.clone(),
                    op: op_name(a.op).to_owned(),
                    value: match &a.value {
                        Some(serde_json::Value::Array(items)) => items
                            .iter()
                            .map(crate::domain::campaign::scalar_text)
                            .collect::<Vec<_>>()
                            .join(", "),
                        Some(v) => crate::domain::campaign::scalar_text(v),
                        None => String::new(),
                    },
                })
                .collect(),
            schedule_type: kind_name(s.kind).to_owned(),
            at_instant: if s.kind == ScheduleKind::At {
                text(&s.at)
            } else {
                String::new()
            },
            at_local: if s.kind == ScheduleKind::Local {
                text(&s.at)
            } else {
                String::new()
            },
            missed: match s.missed {
                Missed::Skip => "skip",
                Missed::NextDay => "next_day",
                Missed::SendNow => "send_now",
            }
            .to_owned(),
            grace: s
                .grace
                .map(|g| humantime::format_duration(g).to_string())
                .unwrap_or_default(),
            cron: text(&s.cron),
            zone: text(&s.zone),
            until: text(&s.until),
            quiet_start: def
                .quiet_hours
                .as_ref()
                .map(|q| q.start.clone())
                .unwrap_or_default(),
            quiet_end: def
                .quiet_hours
                .as_ref()
                .map(|q| q.end.clone())
                .unwrap_or_default(),
            throttle: def
                .throttle_per_minute
                .map(|t| t.to_string())
                .unwrap_or_default(),
            preview_locale: String::new(),
        }
        .padded()
    }

    /// The definition the form describes, with the problems of reading the
    /// form itself (a badge that is not a number, data that is not JSON). A
    /// field that does not read is left out, so validation can still report
    /// everything else at once.
    pub fn to_definition(&self, app: &str) -> (CampaignDefinition, Layout, Vec<FieldError>) {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: &str| {
            errors.push(FieldError {
                field: field.to_owned(),
                message: message.to_owned(),
            })
        };
        let mut layout = Layout::default();
        let badge = opt(&self.badge).and_then(|b| {
            b.parse::<u32>()
                .map_err(|_| err("message.badge", "must be a whole number, 0 or more"))
                .ok()
        });
        let ttl = opt(&self.ttl).and_then(|t| {
            humantime::parse_duration(&t)
                .map_err(|_| err("message.ttl", "is not a duration such as 1h, 30m or 2days"))
                .ok()
        });
        let data = match opt(&self.data) {
            None => BTreeMap::new(),
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|_| {
                err(
                    "message.data",
                    "must be a JSON object such as {\"order\": \"1234\"}",
                );
                BTreeMap::new()
            }),
        };
        let grace = opt(&self.grace).and_then(|g| {
            humantime::parse_duration(&g)
                .map_err(|_| err("schedule.grace", "is not a duration such as 30m or 2h"))
                .ok()
        });
        let throttle = opt(&self.throttle).and_then(|t| {
            t.parse::<u32>()
                .map_err(|_| err("throttle_per_minute", "must be a whole number, 1 or more"))
                .ok()
        });
        let mut buttons = Vec::new();
        for (row, b) in self.buttons.iter().enumerate() {
            if b.id.trim().is_empty() && b.label.trim().is_empty() && b.url.trim().is_empty() {
                continue;
            }
            layout.buttons.push(row + 1);
            buttons.push(Button {
                id: b.id.trim().to_owned(),
                label: b.label.clone(),
                url: opt(&b.url),
            });
        }
        let mut locales = BTreeMap::new();
        for (row, l) in self.locales.iter().enumerate() {
            let tag = l.tag.trim();
            if tag.is_empty() {
                if !l.title.trim().is_empty() || !l.body.trim().is_empty() {
                    err(
                        &format!("locale{}", row + 1),
                        "name the locale, e.g. de or pt-BR",
                    );
                }
                continue;
            }
            if layout.locales.insert(tag.to_owned(), row + 1).is_some() {
                err(
                    &format!("locale{}", row + 1),
                    "this locale is already above",
                );
                continue;
            }
            locales.insert(
                tag.to_owned(),
                LocalizedText {
                    title: l.title.clone(),
                    body: l.body.clone(),
                },
            );
        }
        let mut attributes = Vec::new();
        for (row, f) in self.filters.iter().enumerate() {
            if f.is_empty() {
                continue;
            }
            let Some(op) = parse_op(&f.op) else {
                err(&format!("filter{}", row + 1), "choose a condition");
                continue;
            };
            let value = match (op, opt(&f.value)) {
                (_, None) => None,
                (FilterOp::In, Some(v)) => Some(serde_json::Value::Array(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| serde_json::Value::String(s.to_owned()))
                        .collect(),
                )),
                (_, Some(v)) => Some(serde_json::Value::String(v)),
            };
            layout.filters.push(row + 1);
            attributes.push(AttributeFilter {
                attribute: f.attribute.trim().to_owned(),
                op,
                value,
            });
        }
        let kind = match self.schedule_type.as_str() {
            "now" => ScheduleKind::Now,
            "at" => ScheduleKind::At,
            "cron" => ScheduleKind::Cron,
            _ => ScheduleKind::Local,
        };
        // Only the fields of the chosen kind are sent: the others stay in the
        // form (switching back keeps them) but are not part of the campaign.
        let schedule = Schedule {
            kind,
            at: match kind {
                ScheduleKind::At => opt(&self.at_instant),
                ScheduleKind::Local => opt(&self.at_local),
                _ => None,
            },
            cron: (kind == ScheduleKind::Cron)
                .then(|| opt(&self.cron))
                .flatten(),
            zone: (kind == ScheduleKind::Cron)
                .then(|| opt(&self.zone))
                .flatten(),
            until: (kind == ScheduleKind::Cron)
                .then(|| opt(&self.until))
                .flatten(),
            missed: match (kind, self.missed.as_str()) {
                (ScheduleKind::Local | ScheduleKind::Cron, "next_day") => Missed::NextDay,
                (ScheduleKind::Local | ScheduleKind::Cron, "send_now") => Missed::SendNow,
                _ => Missed::Skip,
            },
            grace: (kind == ScheduleKind::Local && self.missed == "skip")
                .then_some(grace)
                .flatten(),
        };
        let quiet_hours = match (opt(&self.quiet_start), opt(&self.quiet_end)) {
            (None, None) => None,
            (start, end) => Some(QuietHours {
                start: start.unwrap_or_default(),
                end: end.unwrap_or_default(),
            }),
        };
        let link = opt(&self.link);
        let def = CampaignDefinition {
            key: self.key.trim().to_owned(),
            name: opt(&self.name),
            app: app.to_owned(),
            status: DesiredStatus::Draft,
            message: Message {
                title: self.title.clone(),
                body: self.body.clone(),
                image: opt(&self.image),
                buttons,
                deeplink: link.clone().filter(|_| self.link_kind == "deeplink"),
                url: link.filter(|_| self.link_kind == "url"),
                sound: opt(&self.sound),
                badge,
                thread_id: opt(&self.thread_id),
                channel_id: opt(&self.channel_id),
                data,
                ttl,
                collapse_key: opt(&self.collapse_key),
                priority: if self.priority == "normal" {
                    Priority::Normal
                } else {
                    Priority::High
                },
                locales,
            },
            audience: Audience {
                topics: self.topics.clone(),
                platforms: self
                    .platforms
                    .iter()
                    .filter_map(|p| Platform::try_from(p.clone()).ok())
                    .collect(),
                locales: self
                    .audience_locales
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                attributes,
                users: self
                    .users
                    .lines()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                devices: if self.devices == "primary" {
                    DevicePolicy::Primary
                } else {
                    DevicePolicy::All
                },
            },
            schedule,
            quiet_hours,
            throttle_per_minute: throttle,
        };
        (def, layout, errors)
    }

    pub fn has_platform(&self, p: &str) -> bool {
        self.platforms.iter().any(|x| x == p)
    }

    pub fn has_topic(&self, t: &str) -> bool {
        self.topics.iter().any(|x| x == t)
    }
}

impl FilterRow {
    fn is_empty(&self) -> bool {
        self.attribute.trim().is_empty() && self.value.trim().is_empty()
    }
}

fn kind_name(k: ScheduleKind) -> &'static str {
    match k {
        ScheduleKind::Now => "now",
        ScheduleKind::At => "at",
        ScheduleKind::Local => "local",
        ScheduleKind::Cron => "cron",
    }
}

fn op_name(op: FilterOp) -> &'static str {
    match op {
        FilterOp::Eq => "eq",
        FilterOp::Ne => "ne",
        FilterOp::In => "in",
        FilterOp::Exists => "exists",
        FilterOp::NotExists => "not_exists",
    }
}

fn parse_op(s: &str) -> Option<FilterOp> {
    Some(match s {
        "eq" => FilterOp::Eq,
        "ne" => FilterOp::Ne,
        "in" => FilterOp::In,
        "exists" => FilterOp::Exists,
        "not_exists" => FilterOp::NotExists,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{app, pairs};
    use super::*;

    #[test]
    fn a_full_form_reads_as_the_definition_a_file_would_give() {
        let form = ComposeForm::from_pairs(&pairs(&[
            ("key", "winter"),
            ("name", "Winter sale"),
            ("title", "Sale"),
            ("body", "Everything -20%"),
            ("image", "https://img.example.com/a.png"),
            ("button1_id", "buy"),
            ("button1_label", "Buy"),
            ("button3_id", "later"),
            ("button3_label", "Later"),
            ("link_kind", "deeplink"),
            ("link", "shop://sale"),
            ("badge", "1"),
            ("ttl", "2h"),
            ("priority", "normal"),
            ("data", "{\"k\": \"v\"}"),
            ("locale2_tag", "de"),
            ("locale2_title", "Schlussverkauf"),
            ("locale2_body", "Alles -20%"),
            ("topics", "news"),
            ("topics", "offers"),
            ("platforms", "ios"),
            ("audience_locales", "de, fr"),
            ("devices", "primary"),
            ("filter1_attribute", "tier"),
            ("filter1_op", "in"),
            ("filter1_value", "gold, silver"),
            ("schedule_type", "local"),
            ("at_local", "2026-12-01T09:00"),
            ("at_instant", "2026-12-01T09:00:00Z"),
            ("cron", "0 9 * * *"),
            ("missed", "next_day"),
            ("quiet_start", "22:00"),
            ("quiet_end", "07:00"),
            ("throttle", "600"),
        ]));
        let (def, _, errors) = form.to_definition("shop");
        assert!(errors.is_empty(), "{errors:?}");
        let file = crate::domain::campaign::parse_toml(
            "t.toml",
            r#"
key = "winter"
name = "Winter sale"
app = "shop"
throttle_per_minute = 600
[message]
title = "Sale"
body = "Everything -20%"
image = "https://img.example.com/a.png"
deeplink = "shop://sale"
badge = 1
ttl = "2h"
priority = "normal"
buttons = [{ id = "buy", label = "Buy" }, { id = "later", label = "Later" }]
data = { k = "v" }
locales = { de = { title = "Schlussverkauf", body = "Alles -20%" } }
[audience]
topics = ["news", "offers"]
platforms = ["ios"]
locales = ["de", "fr"]
devices = "primary"
attributes = [{ attribute = "tier", op = "in", value = ["gold", "silver"] }]
[schedule]
type = "local"
at = "2026-12-01T09:00"
missed = "next_day"
[quiet_hours]
start = "22:00"
end = "07:00"
"#,
        )
        .unwrap();
        assert_eq!(def, file);
        assert!(def.validate(&app()).is_ok());
        // And back: the edit form shows the same fields, which read the same.
        let again = ComposeForm::from_definition(&def);
        assert_eq!(again.to_definition("shop").0, def);
    }

    #[test]
    fn only_the_chosen_schedules_fields_are_sent_and_rows_are_bounded() {
        let mut items = vec![
            ("schedule_type", "now"),
            ("at_local", "2026-12-01T09:00"),
            ("cron", "0 9 * * *"),
            ("grace", "10m"),
        ];
        items.push(("locale99_tag", "fr"));
        let (def, _, _) = ComposeForm::from_pairs(&pairs(&items)).to_definition("shop");
        assert_eq!(def.schedule.kind, ScheduleKind::Now);
        assert_eq!(def.schedule.at, None);
        assert_eq!(def.schedule.cron, None);
        assert_eq!(def.schedule.grace, None);
        assert!(def.message.locales.is_empty());
    }
}
