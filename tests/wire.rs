//! What goes over the wire, on both backends: the ids, collapse keys and
//! languages of the notifications the simulator records.

mod common;

use std::collections::BTreeMap;

use common::rig::{at, get, post, rig};
use common::TestDb;
use meridian::clock::Clock;
use meridian::domain::campaign::Platform;
use meridian::store::{DeviceUpsert, Store};

/// The id a notification carries (`apns-id`, `meridian.id`, `data.meridian_id`).
fn wire_id(send: &meridian::simulator::RecordedSend) -> i64 {
    let id = if send.path.starts_with("/3/device/") {
        send.body["meridian"]["id"].as_str()
    } else {
        send.body["message"]["data"]["meridian_id"].as_str()
    };
    id.and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no message id in {send:?}"))
}

/// Two campaigns to the same two devices: every notification carries the id of
/// its own delivery row (the campaign path sent the device id, so both campaigns
/// went out under ids 1 and 2 and a receipt for the second was recorded against
/// the first), `apns-id` is derived from it, and a receipt for one campaign's
/// message moves that message alone. The campaign's own collapse key is sent
/// when it has one, `campaign-<id>` otherwise.
async fn each_notification_carries_its_own_delivery_id<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let ios = rig.device(1, "UTC", Platform::Ios, false).await;
    let android = rig.device(2, "UTC", Platform::Android, false).await;
    rig.sim.record_sends(true);
    let with_key = rig
        .save(
            "key = \"a\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Sale\"\nbody = \"Now\"\n\
             collapse_key = \"weekly-sale\"\n[audience]\ntopics = [\"marketing\"]\n[schedule]\ntype = \"now\"\n",
        )
        .await;
    let engine = rig.engine("worker-a", 10);
    assert_eq!(engine.run_until_idle().await.unwrap().sent, 2);
    let without_key = rig.schedule("b", "type = \"now\"").await;
    assert_eq!(engine.run_until_idle().await.unwrap().sent, 2);
    let sends = rig.sim.recorded_sends();
    assert_eq!(sends.len(), 4, "{sends:?}");

    let (base, key) = rig.api(Some(&engine)).await;
    let mut stored = BTreeMap::new();
    for user in ["user-1", "user-2"] {
        let page = get(&base, &key, &format!("/v1/messages?user={user}")).await;
        for m in page["messages"].as_array().unwrap() {
            let campaign = m["campaignId"].as_i64().unwrap();
            let token = m["token"].as_str().unwrap().to_owned();
            stored.insert((campaign, token), m.clone());
        }
    }
    assert_eq!(stored.len(), 4, "{stored:?}");
    let mut ids = std::collections::HashSet::new();
    for send in &sends {
        let token = send.token().unwrap().to_owned();
        let id = wire_id(send);
        assert!(ids.insert(id), "message id {id} sent twice: {sends:?}");
        let (campaign, message) = stored
            .iter()
            .find(|(_, m)| m["id"].as_i64() == Some(id))
            .map(|((c, _), m)| (*c, m))
            .unwrap_or_else(|| panic!("no delivery has the sent id {id}: {stored:?}"));
        assert_eq!(message["token"].as_str(), Some(token.as_str()));
        let collapse = if campaign == with_key {
            "weekly-sale".to_owned()
        } else {
            assert_eq!(campaign, without_key);
            format!("campaign-{without_key}")
        };
        if token == ios {
            let apns_id =
                meridian::provider::apns_id_for(meridian::domain::ids::DeliveryId::new(id));
            assert_eq!(send.headers.get("apns-id"), Some(&apns_id), "{send:?}");
            assert_eq!(message["providerId"].as_str(), Some(apns_id.as_str()));
            assert_eq!(send.headers.get("apns-collapse-id"), Some(&collapse));
        } else {
            assert_eq!(token, android);
            assert_eq!(
                send.body["message"]["android"]["collapse_key"],
                collapse.as_str()
            );
        }
    }
    // A receipt for the second campaign's message moves that message alone.
    let second = &stored[&(without_key, ios.clone())];
    let first = &stored[&(with_key, ios.clone())];
    let (status, _) = post(
        &base,
        &key,
        "/v1/receipts",
        serde_json::json!({"messageId": second["id"], "status": "opened"}),
    )
    .await;
    assert_eq!(status, 200);
    let status_of = |m: &serde_json::Value| {
        let id = m["id"].as_i64().unwrap();
        let (base, key) = (base.clone(), key.clone());
        async move { get(&base, &key, &format!("/v1/messages/{id}")).await["status"].clone() }
    };
    assert_eq!(status_of(second).await, "opened");
    assert_eq!(status_of(first).await, "sent");
}

/// A device registered without a locale is sent its user's language, as it is
/// sent in its user's zone: whether the user's locale came before the device or
/// after it (one at a time or in a batch import), and never over the device's own.
async fn a_device_without_a_locale_speaks_its_users_language<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let user = |id: &'static str, locale: Option<&'static str>| meridian::store::UserUpsert {
        app_id: "shop",
        external_id: id,
        phone: None,
        timezone: None,
        locale,
        attributes: None,
    };
    let now = rig.clock.now();
    // Before the device, after it, after it in a batch, and a device with its own.
    rig.store
        .user_upsert(&user("before", Some("de-DE")), now)
        .await
        .unwrap();
    for name in ["before", "after", "batch", "own"] {
        rig.device_of(Some(name), None, &format!("fcm-{name}"), false)
            .await;
        rig.store
            .subscription_set("shop", name, &[("marketing", true)], now)
            .await
            .unwrap();
    }
    rig.store
        .user_upsert(&user("after", Some("de_AT")), now)
        .await
        .unwrap();
    rig.store
        .user_upsert_many(&[user("batch", Some("de"))], now)
        .await
        .unwrap();
    rig.store
        .device_upsert(
            &DeviceUpsert {
                app_id: "shop",
                user_external_id: Some("own"),
                install_id: None,
                platform: Platform::Android,
                token: "fcm-own",
                timezone: None,
                locale: Some("en-GB"),
                primary: false,
            },
            now,
        )
        .await
        .unwrap();
    rig.store
        .user_upsert(&user("own", Some("de-DE")), now)
        .await
        .unwrap();
    rig.sim.record_sends(true);
    rig.save(
        "key = \"l\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Hello\"\nbody = \"World\"\n\
         [message.locales.de]\ntitle = \"Hallo\"\nbody = \"Welt\"\n\
         [audience]\ntopics = [\"marketing\"]\n[schedule]\ntype = \"now\"\n",
    )
    .await;
    assert_eq!(rig.engine("w", 10).run_until_idle().await.unwrap().sent, 4);
    let titles: BTreeMap<String, String> = rig
        .sim
        .recorded_sends()
        .iter()
        .map(|s| {
            (
                s.token().unwrap().to_owned(),
                s.body["message"]["notification"]["title"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("fcm-before", "Hallo"),
        ("fcm-after", "Hallo"),
        ("fcm-batch", "Hallo"),
        ("fcm-own", "Hello"),
    ]
    .iter()
    .map(|(t, l)| (t.to_string(), l.to_string()))
    .collect();
    assert_eq!(titles, want);
}

storage_tests!(
    each_notification_carries_its_own_delivery_id,
    a_device_without_a_locale_speaks_its_users_language,
);
