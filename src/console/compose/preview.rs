//! What the phone shows: the notification as iOS and Android lay it out.

use crate::domain::campaign::CampaignDefinition;
use crate::domain::message::payload;

/// What the phone shows: the notification as iOS and Android lay it out.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// The locale shown, empty for the default text.
    pub locale: String,
    pub title: String,
    pub body: String,
    pub image: Option<String>,
    pub buttons: Vec<String>,
    /// The APNs payload's size for this locale, of [`payload::APNS_MAX_PAYLOAD`].
    pub apns_bytes: usize,
    pub apns_limit: usize,
}

impl Preview {
    /// The notification for the locale the form asks to preview (the default
    /// text when that locale has no row).
    pub fn of(def: &CampaignDefinition, locale: &str) -> Self {
        let m = &def.message;
        let text = m.locales.get(locale);
        Self {
            locale: text.map(|_| locale.to_owned()).unwrap_or_default(),
            title: text.map_or(&m.title, |t| &t.title).clone(),
            body: text.map_or(&m.body, |t| &t.body).clone(),
            image: m
                .image
                .clone()
                .filter(|u| crate::domain::message::is_http_url(u)),
            buttons: m.buttons.iter().map(|b| b.label.clone()).collect(),
            apns_bytes: payload::apns_payload_size(m, text.map(|_| locale)),
            apns_limit: payload::APNS_MAX_PAYLOAD,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{pairs, ComposeForm};
    use super::*;

    #[test]
    fn the_preview_shows_the_chosen_locale_or_the_default() {
        let form = ComposeForm::from_pairs(&pairs(&[
            ("title", "Hello"),
            ("body", "World"),
            ("image", "https://img.example.com/a.png"),
            ("button1_id", "a"),
            ("button1_label", "Open"),
            ("locale1_tag", "de"),
            ("locale1_title", "Hallo"),
            ("locale1_body", "Welt"),
        ]));
        let (def, _, _) = form.to_definition("shop");
        let de = Preview::of(&def, "de");
        assert_eq!((de.title.as_str(), de.body.as_str()), ("Hallo", "Welt"));
        assert_eq!(de.buttons, vec!["Open".to_owned()]);
        assert!(de.apns_bytes > 0 && de.apns_bytes < de.apns_limit);
        let default = Preview::of(&def, "fr");
        assert_eq!(
            (default.title.as_str(), default.locale.as_str()),
            ("Hello", "")
        );
    }
}
