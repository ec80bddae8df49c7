//! Building provider payloads from a message. Pure: no I/O, unit-tested here.

use serde_json::{json, Map, Value};

use crate::campaign::Message;

/// Apple's limit for a regular remote notification payload.
pub const APNS_MAX_PAYLOAD: usize = 4096;

/// The category announced when a message has buttons; the app's extension
/// registers the actual buttons from `meridian.buttons`.
pub const APNS_BUTTONS_CATEGORY: &str = "meridian.buttons";

/// Per-message values that are not part of the definition.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// Our message (delivery) id, so the app can report receipts for it.
    pub message_id: &'a str,
}

/// Title and body for a device locale: exact tag, then its language, then the default.
pub fn localized<'m>(message: &'m Message, locale: Option<&str>) -> (&'m str, &'m str) {
    let Some(locale) = locale.map(|l| l.replace('_', "-")) else {
        return (&message.title, &message.body);
    };
    let find = |tag: &str| {
        message
            .locales
            .iter()
            .find(|(k, _)| k.replace('_', "-").eq_ignore_ascii_case(tag))
            .map(|(_, v)| (v.title.as_str(), v.body.as_str()))
    };
    let language = locale.split('-').next().unwrap_or_default();
    find(&locale)
        .or_else(|| find(language))
        .unwrap_or((&message.title, &message.body))
}

/// The JSON body sent to APNs.
pub fn apns_payload(message: &Message, locale: Option<&str>, env: Envelope<'_>) -> Value {
    let (title, body) = localized(message, locale);
    let mut aps = Map::new();
    aps.insert("alert".into(), json!({ "title": title, "body": body }));
    if let Some(sound) = &message.sound {
        aps.insert("sound".into(), json!(sound));
    }
    if let Some(badge) = message.badge {
        aps.insert("badge".into(), json!(badge));
    }
    if let Some(thread) = &message.thread_id {
        aps.insert("thread-id".into(), json!(thread));
    }
    if !message.buttons.is_empty() {
        aps.insert("category".into(), json!(APNS_BUTTONS_CATEGORY));
    }
    if message.image.is_some() {
        // The Notification Service Extension downloads the image.
        aps.insert("mutable-content".into(), json!(1));
    }
    let mut ours = Map::new();
    ours.insert("id".into(), json!(env.message_id));
    if let Some(image) = &message.image {
        ours.insert("image".into(), json!(image));
    }
    if let Some(link) = &message.deeplink {
        ours.insert("deeplink".into(), json!(link));
    }
    if let Some(url) = &message.url {
        ours.insert("url".into(), json!(url));
    }
    if !message.buttons.is_empty() {
        ours.insert("buttons".into(), json!(message.buttons));
    }
    let mut root = Map::new();
    for (k, v) in &message.data {
        root.insert(k.clone(), v.clone());
    }
    root.insert("aps".into(), Value::Object(aps));
    root.insert("meridian".into(), Value::Object(ours));
    Value::Object(root)
}

/// The size of the APNs payload for a locale, with a message id as long as a real one.
pub fn apns_payload_size(message: &Message, locale: Option<&str>) -> usize {
    const ID_PLACEHOLDER: &str = "00000000-0000-0000-0000-000000000000";
    let env = Envelope {
        message_id: ID_PLACEHOLDER,
    };
    serde_json::to_vec(&apns_payload(message, locale, env)).map_or(usize::MAX, |v| v.len())
}

/// Per-device values for an FCM message.
#[derive(Debug, Clone, Copy)]
pub struct FcmTarget<'a> {
    pub token: &'a str,
    pub locale: Option<&'a str>,
    /// iOS devices reached through FCM also get an `apns` block.
    pub ios: bool,
    /// `collapse_key` / `apns-collapse-id` (the campaign's id for campaign traffic).
    pub collapse_key: Option<&'a str>,
}

fn data_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The JSON body sent to FCM HTTP v1 (`{"message": {...}}`). Every `data` value is a string.
pub fn fcm_message(message: &Message, target: FcmTarget<'_>, env: Envelope<'_>) -> Value {
    let (title, body) = localized(message, target.locale);
    let mut notification = Map::new();
    notification.insert("title".into(), json!(title));
    notification.insert("body".into(), json!(body));
    if let Some(image) = &message.image {
        notification.insert("image".into(), json!(image));
    }
    let mut data = Map::new();
    for (k, v) in &message.data {
        data.insert(k.clone(), json!(data_string(v)));
    }
    data.insert("meridian_id".into(), json!(env.message_id));
    if let Some(link) = &message.deeplink {
        data.insert("deeplink".into(), json!(link));
    }
    if let Some(url) = &message.url {
        data.insert("url".into(), json!(url));
    }
    if !message.buttons.is_empty() {
        data.insert("buttons".into(), json!(json!(message.buttons).to_string()));
    }
    let high = message.priority == crate::campaign::Priority::High;
    let mut android_notification = Map::new();
    if let Some(open) = message.deeplink.as_ref().or(message.url.as_ref()) {
        android_notification.insert("click_action".into(), json!(open));
    }
    if let Some(channel) = &message.channel_id {
        android_notification.insert("channel_id".into(), json!(channel));
    }
    if let Some(image) = &message.image {
        android_notification.insert("image".into(), json!(image));
    }
    if let Some(sound) = &message.sound {
        android_notification.insert("sound".into(), json!(sound));
    }
    let mut android = Map::new();
    android.insert(
        "priority".into(),
        json!(if high { "HIGH" } else { "NORMAL" }),
    );
    if let Some(ttl) = message.ttl {
        android.insert("ttl".into(), json!(format!("{}s", ttl.as_secs())));
    }
    if let Some(c) = target.collapse_key {
        android.insert("collapse_key".into(), json!(c));
    }
    android.insert("notification".into(), Value::Object(android_notification));

    let mut msg = Map::new();
    msg.insert("token".into(), json!(target.token));
    msg.insert("notification".into(), Value::Object(notification));
    msg.insert("data".into(), Value::Object(data));
    msg.insert("android".into(), Value::Object(android));
    if target.ios {
        let mut headers = Map::new();
        headers.insert("apns-priority".into(), json!(if high { "10" } else { "5" }));
        if let Some(c) = target.collapse_key {
            headers.insert("apns-collapse-id".into(), json!(c));
        }
        let mut apns = Map::new();
        apns.insert("headers".into(), Value::Object(headers));
        let payload = apns_payload(message, target.locale, env);
        apns.insert("payload".into(), json!({ "aps": payload["aps"].clone() }));
        if let Some(image) = &message.image {
            apns.insert("fcm_options".into(), json!({ "image": image }));
        }
        msg.insert("apns".into(), Value::Object(apns));
    }
    json!({ "message": Value::Object(msg) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::{Button, LocalizedText};

    fn message() -> Message {
        let mut m = Message {
            title: "Sale".into(),
            body: "Everything -20%".into(),
            image: Some("https://cdn.example.com/a.png".into()),
            deeplink: Some("shop://sale".into()),
            buttons: vec![Button {
                id: "shop".into(),
                label: "Shop now".into(),
                url: None,
            }],
            badge: Some(1),
            ..Message::default()
        };
        m.locales.insert(
            "de".into(),
            LocalizedText {
                title: "Angebot".into(),
                body: "Alles -20%".into(),
            },
        );
        m.data.insert("campaign".into(), json!("bf"));
        m
    }

    #[test]
    fn locale_falls_back_from_region_to_language_to_default() {
        let m = message();
        assert_eq!(localized(&m, Some("de_AT")).0, "Angebot");
        assert_eq!(localized(&m, Some("DE")).0, "Angebot");
        assert_eq!(localized(&m, Some("fr-FR")).0, "Sale");
        assert_eq!(localized(&m, None).0, "Sale");
    }

    #[test]
    fn apns_payload_carries_image_buttons_and_link() {
        let p = apns_payload(&message(), Some("de-DE"), Envelope { message_id: "m1" });
        assert_eq!(p["aps"]["alert"]["title"], "Angebot");
        assert_eq!(p["aps"]["mutable-content"], 1);
        assert_eq!(p["aps"]["category"], APNS_BUTTONS_CATEGORY);
        assert_eq!(p["aps"]["badge"], 1);
        assert_eq!(p["meridian"]["image"], "https://cdn.example.com/a.png");
        assert_eq!(p["meridian"]["deeplink"], "shop://sale");
        assert_eq!(p["meridian"]["buttons"][0]["label"], "Shop now");
        assert_eq!(p["meridian"]["id"], "m1");
        assert_eq!(p["campaign"], "bf");
    }

    #[test]
    fn fcm_message_has_string_data_and_platform_blocks() {
        let mut m = message();
        m.data.insert("count".into(), json!(3));
        m.ttl = Some(std::time::Duration::from_secs(3600));
        let target = FcmTarget {
            token: "t1",
            locale: Some("de"),
            ios: true,
            collapse_key: Some("c-7"),
        };
        let v = fcm_message(&m, target, Envelope { message_id: "m1" });
        let msg = &v["message"];
        assert_eq!(msg["token"], "t1");
        assert_eq!(msg["notification"]["title"], "Angebot");
        assert_eq!(
            msg["notification"]["image"],
            "https://cdn.example.com/a.png"
        );
        assert!(msg["data"]
            .as_object()
            .unwrap()
            .values()
            .all(Value::is_string));
        assert_eq!(msg["data"]["count"], "3");
        assert_eq!(msg["data"]["deeplink"], "shop://sale");
        assert_eq!(msg["android"]["ttl"], "3600s");
        assert_eq!(msg["android"]["collapse_key"], "c-7");
        assert_eq!(
            msg["android"]["notification"]["click_action"],
            "shop://sale"
        );
        assert_eq!(msg["apns"]["headers"]["apns-collapse-id"], "c-7");
        assert_eq!(msg["apns"]["payload"]["aps"]["mutable-content"], 1);
        let android_only = fcm_message(
            &m,
            FcmTarget {
                ios: false,
                ..target
            },
            Envelope { message_id: "m1" },
        );
        assert!(android_only["message"].get("apns").is_none());
    }

    #[test]
    fn size_grows_with_body() {
        let mut m = message();
        let small = apns_payload_size(&m, None);
        m.body.push_str(&"x".repeat(100));
        assert_eq!(apns_payload_size(&m, None), small + 100);
    }
}
