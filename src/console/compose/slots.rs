//! Where a validation error goes on the composer: every field and row has an
//! error slot (`err-title`, `err-button2`), and a field path the validator
//! names (`message.buttons[0].label`) is placed by the form row it came from.

use std::collections::BTreeMap;

use super::form::{ComposeForm, Layout};
use crate::domain::campaign::FieldError;

impl ComposeForm {
    /// Every error slot of this form, for the live check to fill or empty.
    pub fn slots(&self) -> Vec<String> {
        let mut all: Vec<String> = FIXED_SLOTS.iter().map(|s| (*s).to_owned()).collect();
        all.extend((1..=self.buttons.len()).map(|n| format!("button{n}")));
        all.extend((1..=self.locales.len()).map(|n| format!("locale{n}")));
        all.extend((1..=self.filters.len()).map(|n| format!("filter{n}")));
        all
    }
}

/// The error slots that are not rows; `other` takes what has no place.
const FIXED_SLOTS: &[&str] = &[
    "key",
    "name",
    "message",
    "title",
    "body",
    "image",
    "buttons",
    "link",
    "sound",
    "badge",
    "ttl",
    "collapse_key",
    "priority",
    "thread_id",
    "channel_id",
    "data",
    "locales",
    "topics",
    "platforms",
    "audience_locales",
    "users",
    "devices",
    "schedule_type",
    "schedule_at",
    "missed",
    "grace",
    "cron",
    "zone",
    "until",
    "quiet",
    "throttle",
    "other",
];

/// `message.buttons[1].label` → (`message.buttons`, Some(1), `label`).
fn list_entry(field: &str) -> Option<(&str, usize, &str)> {
    let (base, rest) = field.split_once('[')?;
    let (n, tail) = rest.split_once(']')?;
    Some((base, n.parse().ok()?, tail.trim_start_matches('.')))
}

/// Validation errors placed beside the form's fields.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors {
    by_slot: BTreeMap<String, Vec<String>>,
}

impl FieldErrors {
    pub fn new(errors: &[FieldError], layout: &Layout) -> Self {
        let mut by_slot: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in errors {
            let (slot, detail) = slot_of(&e.field, layout);
            let text = match detail {
                Some(d) if !d.is_empty() => format!("{d}: {}", e.message),
                _ => e.message.clone(),
            };
            by_slot.entry(slot).or_default().push(text);
        }
        Self { by_slot }
    }

    /// The slot's messages, one line, empty when the field is fine.
    pub fn get(&self, slot: &str) -> String {
        self.by_slot
            .get(slot)
            .map(|m| m.join("; "))
            .unwrap_or_default()
    }

    /// A row's slot (`button2`).
    pub fn row(&self, kind: &str, n: &usize) -> String {
        self.get(&format!("{kind}{n}"))
    }

    pub fn is_empty(&self) -> bool {
        self.by_slot.is_empty()
    }

    pub fn count(&self) -> usize {
        self.by_slot.values().map(Vec::len).sum()
    }
}

/// The slot a validation field belongs in, and what to prefix the message
/// with when the field is a part of what the slot shows.
fn slot_of(field: &str, layout: &Layout) -> (String, Option<String>) {
    let plain = |s: &str| (s.to_owned(), None);
    if let Some((base, i, tail)) = list_entry(field) {
        let row = |rows: &[usize], kind: &str| {
            rows.get(i)
                .map(|r| (format!("{kind}{r}"), Some(tail.to_owned())))
        };
        let found = match base {
            "message.buttons" => row(&layout.buttons, "button"),
            "audience.attributes" => row(&layout.filters, "filter"),
            "audience.topics" => Some(plain("topics")),
            "audience.locales" => Some(plain("audience_locales")),
            "audience.users" => Some(("users".to_owned(), Some(format!("line {}", i + 1)))),
            _ => None,
        };
        return found.unwrap_or_else(|| ("other".to_owned(), Some(field.to_owned())));
    }
    if let Some(rest) = field.strip_prefix("message.locales.") {
        let (tag, part) = rest.split_once('.').unwrap_or((rest, ""));
        return match layout.locales.get(tag) {
            Some(row) => (format!("locale{row}"), Some(part.to_owned())),
            None => ("locales".to_owned(), Some(field.to_owned())),
        };
    }
    let slot = match field {
        "key" | "name" => field,
        "message" => "message",
        "message.title" => "title",
        "message.body" => "body",
        "message.image" => "image",
        "message.buttons" => "buttons",
        "message.deeplink" | "message.url" => "link",
        "message.sound" => "sound",
        "message.badge" => "badge",
        "message.ttl" => "ttl",
        "message.collapse_key" => "collapse_key",
        "message.priority" => "priority",
        "message.thread_id" => "thread_id",
        "message.channel_id" => "channel_id",
        "message.data" => "data",
        "message.locales" => "locales",
        "audience.platforms" => "platforms",
        "audience.devices" => "devices",
        "schedule" | "schedule.type" => "schedule_type",
        "schedule.at" => "schedule_at",
        "schedule.missed" => "missed",
        "schedule.grace" => "grace",
        "schedule.cron" => "cron",
        "schedule.zone" => "zone",
        "schedule.until" => "until",
        "quiet_hours" | "quiet_hours.start" | "quiet_hours.end" => {
            return (
                "quiet".to_owned(),
                field.strip_prefix("quiet_hours.").map(str::to_owned),
            )
        }
        "throttle_per_minute" => "throttle",
        f if f.starts_with("locale") || f.starts_with("filter") => f,
        f if f.starts_with("message.data") => "data",
        _ => return ("other".to_owned(), Some(field.to_owned())),
    };
    plain(slot)
}

#[cfg(test)]
mod tests {
    use super::super::{app, pairs};
    use super::*;

    #[test]
    fn errors_land_beside_the_row_they_are_about() {
        let form = ComposeForm::from_pairs(&pairs(&[
            ("key", "bad key!"),
            ("title", ""),
            ("body", "b"),
            ("image", "ftp://x"),
            ("button2_id", "ok"),
            ("button2_label", " "),
            ("locale3_tag", "de"),
            ("locale3_title", "T"),
            ("locale3_body", ""),
            ("filter2_attribute", "tier"),
            ("filter2_op", "eq"),
            ("badge", "lots"),
            ("schedule_type", "local"),
            ("at_local", "tomorrow"),
            ("topics", "sports"),
            ("quiet_start", "22:00"),
        ]));
        let (def, layout, mut errors) = form.to_definition("shop");
        if let Err(e) = def.validate(&app()) {
            errors.extend(e.0);
        }
        let slots = FieldErrors::new(&errors, &layout);
        assert!(slots.get("key").contains("letters, digits"));
        assert_eq!(slots.get("title"), "must not be empty");
        assert!(slots.get("image").contains("http"));
        assert_eq!(slots.get("button2"), "label: must not be empty");
        assert_eq!(slots.get("button1"), "");
        assert_eq!(slots.get("locale3"), "body: must not be empty");
        assert_eq!(slots.get("filter2"), "value: is required");
        assert!(slots.get("badge").contains("whole number"));
        assert!(slots.get("schedule_at").contains("local date and time"));
        assert!(slots.get("topics").contains("unknown topic \"sports\""));
        assert!(slots.get("quiet").starts_with("end:"));
        assert_eq!(slots.get("other"), "", "every error has its place");
        // Every slot an error names is one the form renders.
        let known = form.slots();
        for e in &errors {
            let (slot, _) = slot_of(&e.field, &layout);
            assert!(known.contains(&slot), "{slot} for {}", e.field);
        }
    }
}
