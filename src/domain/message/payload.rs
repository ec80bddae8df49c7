//! Building provider payloads from a message. Pure: no I/O, unit-tested here.

use serde_json::{json, Map, Value};

use crate::domain::message::Message;

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
    /// The message's receipt token (`domain::receipt`): what the app posts to
    /// `/v1/receipts` without a secret.
    pub receipt: Option<&'a str>,
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
    if let Some(receipt) = env.receipt {
        ours.insert("receipt".into(), json!(receipt));
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

/// The size of the APNs payload for a locale, with a message id at least as
/// long as a real one and a receipt token as long as every one.
pub fn apns_payload_size(message: &Message, locale: Option<&str>) -> usize {
    const ID_PLACEHOLDER: &str = "00000000-0000-0000-0000-000000000000";
    const RECEIPT_PLACEHOLDER: &str = "00000000000000000000000000000000";
    let env = Envelope {
        message_id: ID_PLACEHOLDER,
        receipt: Some(RECEIPT_PLACEHOLDER),
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
    if let Some(receipt) = env.receipt {
        data.insert("meridian_receipt".into(), json!(receipt));
    }
    if let Some(link) = &message.deeplink {
        data.insert("deeplink".into(), json!(link));
    }
    if let Some(url) = &message.url {
        data.insert("url".into(), json!(url));
    }
    if !message.buttons.is_empty() {
        data.insert("buttons".into(), json!(json!(message.buttons).to_string()));
    }
    let high = message.priority == crate::domain::message::Priority::High;
    // No `click_action`: FCM reads it as an intent *action* (`new
    // Intent(click_action)`), which no deep-link filter (VIEW + scheme/host)
    // matches, so a tap opened nothing. A tap opens the app's launcher activity
    // with `data` in its extras, where `deeplink` / `url` are (docs/payloads.md).
    let mut android_notification = Map::new();
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

// ---------------------------------------------------------------------------
// The same documents written straight to bytes, for the send path.
//
// The `Value` builders above allocate a map and a string per key on every send;
// the writers below serialize borrowed, typed views instead. Their fields are
// declared in sorted order so the bytes are exactly those of the `Value`
// documents (serde_json's maps sort their keys); a test holds them equal.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

#[derive(Serialize)]
struct AlertView<'a> {
    body: &'a str,
    title: &'a str,
}

#[derive(Serialize)]
struct ApsView<'a> {
    alert: AlertView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    badge: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    #[serde(rename = "mutable-content", skip_serializing_if = "Option::is_none")]
    mutable_content: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sound: Option<&'a str>,
    #[serde(rename = "thread-id", skip_serializing_if = "Option::is_none")]
    thread_id: Option<&'a str>,
}

impl<'a> ApsView<'a> {
    fn new(message: &'a Message, locale: Option<&str>) -> Self {
        let (title, body) = localized(message, locale);
        Self {
            alert: AlertView { body, title },
            badge: message.badge,
            category: (!message.buttons.is_empty()).then_some(APNS_BUTTONS_CATEGORY),
            mutable_content: message.image.is_some().then_some(1),
            sound: message.sound.as_deref(),
            thread_id: message.thread_id.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct MeridianView<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    buttons: &'a [crate::domain::message::Button],
    #[serde(skip_serializing_if = "Option::is_none")]
    deeplink: Option<&'a str>,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
}

/// The APNs document: the message's data merged with `aps` and `meridian` (ours win).
struct ApnsView<'a> {
    data: &'a std::collections::BTreeMap<String, Value>,
    aps: ApsView<'a>,
    meridian: MeridianView<'a>,
}

impl Serialize for ApnsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let (mut aps, mut ours) = (false, false);
        for (k, v) in self.data {
            if !aps && k.as_str() >= "aps" {
                map.serialize_entry("aps", &self.aps)?;
                aps = true;
            }
            if !ours && k.as_str() >= "meridian" {
                map.serialize_entry("meridian", &self.meridian)?;
                ours = true;
            }
            if k != "aps" && k != "meridian" {
                map.serialize_entry(k, v)?;
            }
        }
        if !aps {
            map.serialize_entry("aps", &self.aps)?;
        }
        if !ours {
            map.serialize_entry("meridian", &self.meridian)?;
        }
        map.end()
    }
}

/// [`apns_payload`] serialized, without building a `Value`.
pub fn apns_payload_bytes(
    message: &Message,
    locale: Option<&str>,
    env: Envelope<'_>,
) -> Result<Vec<u8>, serde_json::Error> {
    let view = ApnsView {
        data: &message.data,
        aps: ApsView::new(message, locale),
        meridian: MeridianView {
            buttons: &message.buttons,
            deeplink: message.deeplink.as_deref(),
            id: env.message_id,
            image: message.image.as_deref(),
            receipt: env.receipt,
            url: message.url.as_deref(),
        },
    };
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, &view)?;
    Ok(out)
}

#[derive(Serialize)]
struct FcmNotificationView<'a> {
    body: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    title: &'a str,
}

#[derive(Serialize)]
struct AndroidNotificationView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sound: Option<&'a str>,
}

#[derive(Serialize)]
struct AndroidView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    collapse_key: Option<&'a str>,
    notification: AndroidNotificationView<'a>,
    priority: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
}

#[derive(Serialize)]
struct FcmOptionsView<'a> {
    image: &'a str,
}

#[derive(Serialize)]
struct ApnsHeadersView<'a> {
    #[serde(rename = "apns-collapse-id", skip_serializing_if = "Option::is_none")]
    collapse_id: Option<&'a str>,
    #[serde(rename = "apns-priority")]
    priority: &'static str,
}

#[derive(Serialize)]
struct ApnsPayloadView<'a> {
    aps: ApsView<'a>,
}

#[derive(Serialize)]
struct FcmApnsView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    fcm_options: Option<FcmOptionsView<'a>>,
    headers: ApnsHeadersView<'a>,
    payload: ApnsPayloadView<'a>,
}

/// FCM's `data`: every value a string, ours merged in (ours win), keys sorted.
struct FcmDataView<'a> {
    message: &'a Message,
    ours: [(&'static str, Option<std::borrow::Cow<'a, str>>); 5],
}

impl Serialize for FcmDataView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // `ours` is sorted by key; merge it with the (sorted) data map.
        let mut map = s.serialize_map(None)?;
        let mut ours = self.ours.iter().filter(|(_, v)| v.is_some()).peekable();
        for (k, v) in &self.message.data {
            while let Some((ok, ov)) = ours.next_if(|(ok, _)| *ok <= k.as_str()) {
                map.serialize_entry(ok, ov)?;
            }
            if self.ours.iter().any(|(ok, ov)| ov.is_some() && *ok == k) {
                continue;
            }
            match v {
                Value::String(text) => map.serialize_entry(k, text)?,
                other => map.serialize_entry(k, &other.to_string())?,
            }
        }
        for (ok, ov) in ours {
            map.serialize_entry(ok, ov)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct FcmMessageView<'a> {
    android: AndroidView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    apns: Option<FcmApnsView<'a>>,
    data: FcmDataView<'a>,
    notification: FcmNotificationView<'a>,
    token: &'a str,
}

#[derive(Serialize)]
struct FcmRootView<'a> {
    message: FcmMessageView<'a>,
}

/// [`fcm_message`] serialized, without building a `Value`.
pub fn fcm_message_bytes(
    message: &Message,
    target: FcmTarget<'_>,
    env: Envelope<'_>,
) -> Result<Vec<u8>, serde_json::Error> {
    use std::borrow::Cow;
    let (title, body) = localized(message, target.locale);
    let high = message.priority == crate::domain::message::Priority::High;
    let buttons = if message.buttons.is_empty() {
        None
    } else {
        Some(Cow::Owned(serde_json::to_string(&json!(message.buttons))?))
    };
    let view = FcmRootView {
        message: FcmMessageView {
            android: AndroidView {
                collapse_key: target.collapse_key,
                notification: AndroidNotificationView {
                    channel_id: message.channel_id.as_deref(),
                    image: message.image.as_deref(),
                    sound: message.sound.as_deref(),
                },
                priority: if high { "HIGH" } else { "NORMAL" },
                ttl: message.ttl.map(|ttl| format!("{}s", ttl.as_secs())),
            },
            apns: target.ios.then(|| FcmApnsView {
                fcm_options: message
                    .image
                    .as_deref()
                    .map(|image| FcmOptionsView { image }),
                headers: ApnsHeadersView {
                    collapse_id: target.collapse_key,
                    priority: if high { "10" } else { "5" },
                },
                payload: ApnsPayloadView {
                    aps: ApsView::new(message, target.locale),
                },
            }),
            data: FcmDataView {
                message,
                ours: [
                    ("buttons", buttons),
                    ("deeplink", message.deeplink.as_deref().map(Cow::Borrowed)),
                    ("meridian_id", Some(Cow::Borrowed(env.message_id))),
                    ("meridian_receipt", env.receipt.map(Cow::Borrowed)),
                    ("url", message.url.as_deref().map(Cow::Borrowed)),
                ],
            },
            notification: FcmNotificationView {
                body,
                image: message.image.as_deref(),
                title,
            },
            token: target.token,
        },
    };
    let mut out = Vec::with_capacity(512);
    serde_json::to_writer(&mut out, &view)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::message::{Button, LocalizedText};

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

    /// The message of `docs/payloads.md`.
    fn documented() -> Message {
        let mut m = Message {
            title: "Order shipped".into(),
            body: "Your order 1234 is on its way".into(),
            image: Some("https://cdn.example.com/push/parcel.jpg".into()),
            deeplink: Some("shop://orders/1234".into()),
            sound: Some("default".into()),
            badge: Some(1),
            ttl: Some(std::time::Duration::from_secs(3600)),
            collapse_key: Some("order-1234".into()),
            priority: crate::domain::message::Priority::High,
            buttons: vec![Button {
                id: "track".into(),
                label: "Track parcel".into(),
                url: Some("https://shop.example.com/track/1234".into()),
            }],
            ..Message::default()
        };
        m.data.insert("order".into(), json!("1234"));
        m.data.insert("items".into(), json!(3));
        m.locales.insert(
            "de".into(),
            LocalizedText {
                title: "Bestellung versandt".into(),
                body: "Deine Bestellung 1234 ist unterwegs".into(),
            },
        );
        m
    }

    /// The JSON block after `marker` in `docs/payloads.md`.
    fn documented_block(marker: &str) -> Value {
        let doc = include_str!("../../../docs/payloads.md");
        let after = &doc[doc.find(marker).expect("marker in the doc")..];
        let start = after.find("```json").expect("a json block") + "```json".len();
        let end = start + after[start..].find("```").expect("the block's end");
        serde_json::from_str(&after[start..end]).expect("the block is JSON")
    }

    /// `docs/payloads.md` is the app's contract: its examples are what is sent.
    #[test]
    fn the_documented_payloads_are_what_is_sent() {
        let m = documented();
        // The example's token: message 1234 of app `shop` under a key of zeros.
        let key = crate::domain::receipt::ReceiptKey::from_hex(&"00".repeat(32)).unwrap();
        let receipt = key.sign("shop", 1234);
        let env = Envelope {
            message_id: "1234",
            receipt: Some(&receipt),
        };
        let apns: Value =
            serde_json::from_slice(&apns_payload_bytes(&m, Some("de-DE"), env).unwrap()).unwrap();
        let target = FcmTarget {
            token: "fcm-registration-token",
            locale: Some("de-DE"),
            ios: false,
            collapse_key: m.collapse_key.as_deref(),
        };
        let fcm: Value =
            serde_json::from_slice(&fcm_message_bytes(&m, target, env).unwrap()).unwrap();
        let show = |v: &Value| serde_json::to_string_pretty(v).unwrap();
        assert_eq!(
            documented_block("<!-- apns-example -->"),
            apns,
            "{}",
            show(&apns)
        );
        assert_eq!(
            documented_block("<!-- fcm-example -->"),
            fcm,
            "{}",
            show(&fcm)
        );
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
        let p = apns_payload(
            &message(),
            Some("de-DE"),
            Envelope {
                message_id: "m1",
                receipt: None,
            },
        );
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
        let v = fcm_message(
            &m,
            target,
            Envelope {
                message_id: "m1",
                receipt: None,
            },
        );
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
        // The link travels in `data` alone: a `click_action` is an intent
        // action on Android, and a deep link there made taps open nothing.
        assert!(
            msg["android"]["notification"].get("click_action").is_none(),
            "{msg}"
        );
        assert_eq!(msg["data"]["deeplink"], "shop://sale");
        assert_eq!(msg["apns"]["headers"]["apns-collapse-id"], "c-7");
        assert_eq!(msg["apns"]["payload"]["aps"]["mutable-content"], 1);
        let android_only = fcm_message(
            &m,
            FcmTarget {
                ios: false,
                ..target
            },
            Envelope {
                message_id: "m1",
                receipt: None,
            },
        );
        assert!(android_only["message"].get("apns").is_none());
    }

    #[test]
    fn byte_writers_match_the_value_documents() {
        let plain = Message {
            title: "T \"quoted\" ✓".into(),
            body: "B".into(),
            ..Message::default()
        };
        let mut full = message();
        full.sound = Some("ping.caf".into());
        full.thread_id = Some("th".into());
        full.channel_id = Some("promo".into());
        full.url = Some("https://example.com/x".into());
        full.ttl = Some(std::time::Duration::from_secs(60));
        full.priority = crate::domain::message::Priority::Normal;
        full.buttons.push(Button {
            id: "b2".into(),
            label: "Two".into(),
            url: Some("https://example.com/b".into()),
        });
        for (k, v) in [
            ("aaa", json!(1)),
            ("aps", json!("clobbered")),
            ("buttons", json!("mine")),
            ("deep", json!({"z": 1, "a": [true, null]})),
            ("meridian", json!(2)),
            ("meridian_id", json!("x")),
            ("meridian_receipt", json!("forged by the campaign")),
            ("zzz", json!("last")),
            ("b", json!(null)),
        ] {
            full.data.insert(k.into(), v);
        }
        let mut only_data = plain.clone();
        only_data
            .data
            .insert("zz".into(), json!("after everything"));
        for m in [&plain, &full, &only_data, &message()] {
            for locale in [None, Some("de-AT"), Some("fr")] {
                let env = Envelope {
                    message_id: "00000000-0000-4000-8000-000000000042",
                    receipt: Some("AAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAA"),
                };
                assert_eq!(
                    apns_payload_bytes(m, locale, env).unwrap(),
                    serde_json::to_vec(&apns_payload(m, locale, env)).unwrap()
                );
                for ios in [false, true] {
                    for collapse_key in [None, Some("c-1")] {
                        let target = FcmTarget {
                            token: "tok",
                            locale,
                            ios,
                            collapse_key,
                        };
                        assert_eq!(
                            String::from_utf8(fcm_message_bytes(m, target, env).unwrap()).unwrap(),
                            serde_json::to_string(&fcm_message(m, target, env)).unwrap()
                        );
                    }
                }
            }
        }
    }

    /// The largest message the validator lets through (its APNs payload sized
    /// at exactly the limit) still fits when sent: with the longest message id
    /// an `i64` has and a real receipt token, both platforms' shapes.
    #[test]
    fn the_largest_valid_message_fits_with_its_receipt_token() {
        let mut m = message();
        m.buttons.push(Button {
            id: "b1".into(),
            label: "One".into(),
            url: None,
        });
        m.image = Some("https://example.com/i.png".into());
        let room = APNS_MAX_PAYLOAD - apns_payload_size(&m, None);
        m.body.push_str(&"x".repeat(room));
        assert_eq!(apns_payload_size(&m, None), APNS_MAX_PAYLOAD);
        let key = crate::domain::receipt::ReceiptKey::from_hex(&"ab".repeat(32)).unwrap();
        let id = i64::MIN;
        let receipt = key.sign("shop", id);
        let env = Envelope {
            message_id: &id.to_string(),
            receipt: Some(&receipt),
        };
        let bytes = apns_payload_bytes(&m, None, env).unwrap();
        assert!(bytes.len() <= APNS_MAX_PAYLOAD, "{} bytes", bytes.len());
        let sent: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(sent["meridian"]["receipt"], receipt.as_str());
        let target = FcmTarget {
            token: "tok",
            locale: None,
            ios: false,
            collapse_key: None,
        };
        let fcm: Value =
            serde_json::from_slice(&fcm_message_bytes(&m, target, env).unwrap()).unwrap();
        assert_eq!(fcm["message"]["data"]["meridian_receipt"], receipt.as_str());
    }

    #[test]
    fn size_grows_with_body() {
        let mut m = message();
        let small = apns_payload_size(&m, None);
        m.body.push_str(&"x".repeat(100));
        assert_eq!(apns_payload_size(&m, None), small + 100);
    }
}
