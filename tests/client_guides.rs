//! The reference client guides (`docs/clients/*.md`) cannot drift from the API:
//! every HTTP request they show is replayed here, in order, against the API
//! with a client key, an identity proof from the app's secret and a receipt
//! token from a push the engine really sent to the guide's device.

mod common;

use common::api::key_of_kind;
use common::rig::{at, rig_with};
use common::TestDb;
use meridian::api::identity::hmac_proof;
use meridian::domain::keys::KeyKind;
use meridian::store::Store;

const SECRET: &str = "the guides' identity secret";

/// One ```http block: the method, the path, the headers and the body.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn requests(guide: &str) -> Vec<Request> {
    let mut out = Vec::new();
    let mut rest = guide;
    while let Some(start) = rest.find("```http\n") {
        let block = &rest[start + "```http\n".len()..];
        let end = block.find("\n```").expect("an http block ends");
        let (head, body) = block[..end]
            .split_once("\n\n")
            .unwrap_or((&block[..end], ""));
        let mut lines = head.lines();
        let (method, path) = lines.next().unwrap().split_once(' ').unwrap();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(": ").expect("a header line");
                (k.to_owned(), v.to_owned())
            })
            .collect();
        out.push(Request {
            method: method.to_owned(),
            path: path.to_owned(),
            headers,
            body: body.trim().to_owned(),
        });
        rest = &block[end..];
    }
    out
}

async fn replay<S: Store + Clone>(db: &TestDb<S>, guide: &str, token: &str) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("identity.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let extra = format!(
        "[apps.shop.identity]\nmode = \"required\"\nsecret_file = \"{}\"\n",
        secret.display()
    );
    let rig = rig_with(db, at(2026, 11, 23, 10, 0), &extra).await;
    rig.sim.record_sends(true);
    let engine = rig.engine("worker-a", 10);
    let (base, _) = rig.api(Some(&engine)).await;
    let client = key_of_kind(&*rig.store, "shop", "app", KeyKind::Client).await;
    let proof = hmac_proof(SECRET.as_bytes(), "user-42");
    let http = reqwest::Client::new();
    let mut receipt: Option<String> = None;
    let shown = requests(guide);
    assert!(shown.len() >= 7, "{shown:?}");
    for r in &shown {
        let fill = |s: &str, receipt: &Option<String>| {
            s.replace("{{CLIENT_KEY}}", &client)
                .replace("{{PROOF}}", &proof)
                .replace("{{TOKEN}}", token)
                .replace("{{INSTALL_ID}}", "install-7f3a")
                .replace("{{RECEIPT}}", receipt.as_deref().unwrap_or("none yet"))
        };
        let all = format!("{} {:?} {}", r.path, r.headers, r.body);
        if all.contains("{{RECEIPT}}") && receipt.is_none() {
            // The push the guide's device reports on: a campaign to the user's
            // topic, sent by the engine to the simulator.
            rig.save(
                "key = \"guide\"\napp = \"shop\"\nstatus = \"scheduled\"\n[message]\ntitle = \"Sale\"\n\
                 body = \"Now\"\n[[message.buttons]]\nid = \"buy\"\nlabel = \"Buy\"\n\
                 [audience]\ntopics = [\"marketing\"]\n[schedule]\ntype = \"now\"\n",
            )
            .await;
            assert_eq!(engine.run_until_idle().await.unwrap().sent, 1);
            let send = rig.sim.recorded_sends().pop().expect("the push was sent");
            assert_eq!(send.token(), Some(token));
            let found = send.body["meridian"]["receipt"]
                .as_str()
                .or_else(|| send.body["message"]["data"]["meridian_receipt"].as_str());
            receipt = Some(found.expect("a receipt token").to_owned());
        }
        let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
        let mut req = http.request(method, format!("{base}{}", fill(&r.path, &receipt)));
        for (k, v) in &r.headers {
            req = req.header(k.as_str(), fill(v, &receipt));
        }
        if !r.body.is_empty() {
            req = req.body(fill(&r.body, &receipt));
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let answer = res.text().await.unwrap();
        assert!(
            status.is_success(),
            "{} {}: {status} {answer}",
            r.method,
            r.path
        );
    }
    assert!(receipt.is_some(), "the guide reports receipts");
    let device = rig
        .store
        .device_get_by_token("shop", token)
        .await
        .unwrap()
        .unwrap();
    assert!(
        device.user_id.is_some(),
        "the guide ties the install to its user"
    );
}

async fn the_android_guide_is_the_api<S: Store + Clone>(db: &TestDb<S>) {
    let guide = include_str!("../docs/clients/android.md");
    replay(db, guide, "fcm-registration-token-of-the-guide").await;
}

async fn the_ios_guide_is_the_api<S: Store + Clone>(db: &TestDb<S>) {
    let guide = include_str!("../docs/clients/ios.md");
    replay(db, guide, &"ab".repeat(32)).await;
}

storage_tests!(the_android_guide_is_the_api, the_ios_guide_is_the_api);
