//! A message's content (title, body, per-locale texts, buttons, data) and its
//! checks, and [`payload`]: how it is written for APNs and FCM. Apart from
//! the campaign so that the payload module, which reads the content, and the
//! content's checks, which ask the payload's size, do not import each other
//! through the campaign.

pub mod payload;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::locale::Locale;

pub const MAX_BUTTONS: usize = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
    /// App link opened on tap (any scheme, e.g. `shop://sale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deeplink: Option<String>,
    /// Web page opened on tap (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge: Option<u32>,
    /// iOS notification grouping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Android notification channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, serde_json::Value>,
    /// How long the provider keeps trying to deliver; also when an unsent message expires.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    /// Per-locale title/body, chosen by the device's locale (`de-AT` → `de-AT`, then `de`),
    /// falling back to the default title/body.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub locales: BTreeMap<String, LocalizedText>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalizedText {
    pub title: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Button {
    pub id: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    High,
    Normal,
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a definition, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

pub(crate) fn is_http_url(s: &str) -> bool {
    url::Url::parse(s)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false)
}

/// What a string holding U+0000 is told: Postgres stores it in neither text nor
/// jsonb, so it is refused as input rather than failing the write.
pub const NUL_REFUSED: &str = "must not contain the NUL character (\\u0000)";

/// The field path (`message.data.k`, `audience.users[2]`) of the first string or
/// member name in `value` that holds U+0000, below `at` (empty for the root).
pub fn nul_at(value: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0').then(|| at.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v, &format!("{at}[{i}]"))),
        Value::Object(members) => members.iter().find_map(|(k, v)| {
            let here = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_at(v, &here)
            }
        }),
        _ => None,
    }
}

/// Pushes the NUL refusal for the first such string of `v` (serialized) under `at`.
pub(crate) fn check_nul(v: &impl Serialize, at: &str, errs: &mut ValidationErrors) {
    if let Some(field) = serde_json::to_value(v)
        .ok()
        .and_then(|value| nul_at(&value, at))
    {
        errs.push(field, NUL_REFUSED);
    }
}

impl Message {
    /// Checks a message on its own (a transactional push has no campaign around it).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors(Vec::new());
        check_nul(self, "message", &mut errs);
        self.check(&mut errs);
        if errs.0.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    pub(crate) fn check(&self, errs: &mut ValidationErrors) {
        if self.title.trim().is_empty() {
            errs.push("message.title", "must not be empty");
        }
        if self.body.trim().is_empty() {
            errs.push("message.body", "must not be empty");
        }
        if let Some(image) = &self.image {
            if !is_http_url(image) {
                errs.push("message.image", "must be an http or https URL");
            }
        }
        if self.buttons.len() > MAX_BUTTONS {
            errs.push(
                "message.buttons",
                format!("at most {MAX_BUTTONS} buttons, got {}", self.buttons.len()),
            );
        }
        let mut ids = BTreeSet::new();
        for (i, b) in self.buttons.iter().enumerate() {
            if !valid_key(&b.id) {
                errs.push(
                    format!("message.buttons[{i}].id"),
                    "must be 1-100 characters of letters, digits, '-', '_' or '.'",
                );
            } else if !ids.insert(b.id.as_str()) {
                errs.push(
                    format!("message.buttons[{i}].id"),
                    format!("duplicate button id {:?}", b.id),
                );
            }
            if b.label.trim().is_empty() {
                errs.push(format!("message.buttons[{i}].label"), "must not be empty");
            }
            if b.url
                .as_deref()
                .is_some_and(|u| url::Url::parse(u).is_err())
            {
                errs.push(format!("message.buttons[{i}].url"), "is not a URL");
            }
        }
        if let Some(link) = &self.deeplink {
            if url::Url::parse(link).is_err() {
                errs.push("message.deeplink", "is not a URL (e.g. shop://orders/1234)");
            }
        }
        if let Some(u) = &self.url {
            if !is_http_url(u) {
                errs.push("message.url", "must be an http or https URL");
            }
        }
        if self.deeplink.is_some() && self.url.is_some() {
            errs.push("message.url", "set either deeplink or url, not both");
        }
        if let Some(ttl) = self.ttl {
            if ttl > Duration::from_secs(28 * 24 * 3600) {
                errs.push("message.ttl", "must be at most 28 days (FCM's limit)");
            }
        }
        for (locale, text) in &self.locales {
            if !Locale::is_valid(locale) {
                errs.push(
                    format!("message.locales.{locale}"),
                    "is not a locale such as \"de\" or \"pt-BR\"",
                );
            }
            if text.title.trim().is_empty() {
                errs.push(
                    format!("message.locales.{locale}.title"),
                    "must not be empty",
                );
            }
            if text.body.trim().is_empty() {
                errs.push(
                    format!("message.locales.{locale}.body"),
                    "must not be empty",
                );
            }
        }
        for locale in std::iter::once(None).chain(self.locales.keys().map(Some)) {
            let size = payload::apns_payload_size(self, locale.map(String::as_str));
            if size > payload::APNS_MAX_PAYLOAD {
                let field = locale.map_or("message".to_owned(), |l| format!("message.locales.{l}"));
                errs.push(
                    field,
                    format!(
                        "the APNs payload would be {size} bytes; the limit is {}",
                        payload::APNS_MAX_PAYLOAD
                    ),
                );
            }
        }
    }
}

const KEY_MAX: usize = 100;

pub(crate) fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= KEY_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
