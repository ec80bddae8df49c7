//! The console over HTTP as a browser uses it, on both backends: accounts and
//! sessions, CSRF, the sign-in throttle, roles and apps enforced on the server,
//! the audit log, escaping and the security headers.

mod common;

use std::sync::Arc;

use common::console::{operator, serve_console, Client, PASSWORD};
use common::TestDb;
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::definitions;
use meridian::domain::campaign::parse_toml;
use meridian::domain::operator::{AppGrant, Role};
use meridian::domain::state::CampaignState;
use meridian::store::prelude::*;

struct Console<S> {
    base: String,
    store: Arc<S>,
    config: Config,
}

async fn console<S: Store + Clone>(db: &TestDb<S>) -> Console<S> {
    let config: Config = toml::from_str(common::api::CONFIG).unwrap();
    let store = Arc::new(db.store.clone());
    definitions::sync_apps(&*store, &config, SystemClock.now())
        .await
        .unwrap();
    let base = serve_console(store.clone(), config.clone()).await;
    Console {
        base,
        store,
        config,
    }
}

impl<S: Store> Console<S> {
    /// Saves a draft campaign of app `shop`; its id.
    async fn draft(&self, key: &str, title: &str) -> i64 {
        let text = format!(
            "key = \"{key}\"\napp = \"shop\"\nname = {title:?}\nstatus = \"draft\"\n[message]\ntitle = {title:?}\nbody = \"World\"\n\
             [audience]\ntopics = [\"marketing\"]\n[schedule]\ntype = \"local\"\nat = \"2030-12-01T09:00\"\n"
        );
        let def = parse_toml("t.toml", &text).unwrap();
        let prepared = definitions::prepare(&*self.store, &self.config, &def, SystemClock.now())
            .await
            .unwrap();
        definitions::save(&*self.store, prepared, SystemClock.now())
            .await
            .unwrap()
            .record
            .id
    }

    async fn state(&self, id: i64) -> CampaignState {
        self.store
            .campaign_get_by_id("shop", id)
            .await
            .unwrap()
            .unwrap()
            .state
    }

    async fn actions(&self) -> Vec<(String, String)> {
        self.store
            .audit_list(100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.actor, e.action))
            .collect()
    }
}

async fn signing_in_sets_a_safe_cookie_and_rotates_the_session<S: Store + Clone>(db: &TestDb<S>) {
    let c = console(db).await;
    operator(&*c.store, "ana@example.com", Role::Editor, AppGrant::All).await;
    let browser = Client::new(&c.base);
    assert_eq!(
        browser.get("/console").await.location.as_deref(),
        Some("/console/login")
    );

    let wrong = browser
        .sign_in("ana@example.com", "not-her-password-at-all")
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("The email or the password is wrong."));
    assert!(browser.cookie("meridian_session").is_none());

    let ok = browser.sign_in("Ana@Example.com", PASSWORD).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let cookie = ok
        .set_cookies
        .iter()
        .find(|c| c.starts_with("meridian_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/console", "Max-Age=43200"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP unless configured: {cookie}"
    );
    let first = browser.cookie("meridian_session").unwrap();
    let home = browser.get("/console").await;
    assert_eq!(home.location.as_deref(), Some("/console/apps/other"));
    let page = browser.get("/console/apps/shop/campaigns").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("ana@example.com · editor"));

    // Signing in again gives a new session and ends the one the browser had.
    let again = browser.sign_in("ana@example.com", PASSWORD).await;
    assert_eq!(again.status, 303);
    let second = browser.cookie("meridian_session").unwrap();
    assert_ne!(first, second);
    let stale = Client::new(&c.base);
    stale.set_cookie("meridian_session", &first);
    assert_eq!(
        stale
            .get("/console/apps/shop/campaigns")
            .await
            .location
            .as_deref(),
        Some("/console/login")
    );
    // The token is stored hashed: the table alone signs no one in.
    let stored = db
        .raw_texts("SELECT token_hash FROM console_sessions")
        .await
        .unwrap();
    assert!(!stored.contains(&second) && stored.len() == 1, "{stored:?}");

    let page = browser.get("/console/apps/shop/campaigns").await;
    let out = browser
        .post("/console/logout", &[("csrf", &page.csrf())])
        .await;
    assert_eq!(out.status, 303);
    assert!(browser.cookie("meridian_session").is_none());
    let actions = c.actions().await;
    for a in ["signin_failed", "signin", "signout"] {
        assert!(actions.iter().any(|(_, x)| x == a), "{a}: {actions:?}");
    }
}

async fn forms_without_their_csrf_token_are_refused<S: Store + Clone>(db: &TestDb<S>) {
    let c = console(db).await;
    operator(&*c.store, "ed@example.com", Role::Editor, AppGrant::All).await;
    let id = c.draft("spring", "Spring").await;
    let browser = Client::new(&c.base);
    browser.get("/console/login").await;
    let forged = browser
        .post(
            "/console/login",
            &[
                ("email", "ed@example.com"),
                ("password", PASSWORD),
                ("csrf", "forged"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(
        browser.sign_in("ed@example.com", PASSWORD).await.status,
        303
    );
    let path = format!("/console/apps/shop/campaigns/{id}/schedule");
    for token in ["", "forged"] {
        let refused = browser.post(&path, &[("csrf", token)]).await;
        assert_eq!(refused.status, 403, "{token:?}");
    }
    // No token at all: the same page, not the form extractor's bare 422.
    let missing = browser.post(&path, &[]).await;
    assert_eq!(missing.status, 403);
    assert!(
        missing.body.contains("The form expired"),
        "{}",
        missing.body
    );
    let test = browser
        .post(&format!("/console/apps/shop/campaigns/{id}/test"), &[])
        .await;
    assert_eq!(test.status, 403);
    assert_eq!(c.state(id).await, CampaignState::Draft);
    let page = browser
        .get(&format!("/console/apps/shop/campaigns/{id}"))
        .await;
    let done = browser.post(&path, &[("csrf", &page.csrf())]).await;
    assert_eq!(done.status, 303);
    assert_eq!(c.state(id).await, CampaignState::Scheduled);
}

async fn sign_in_is_throttled_per_account<S: Store + Clone>(db: &TestDb<S>) {
    let c = console(db).await;
    operator(&*c.store, "ana@example.com", Role::Viewer, AppGrant::All).await;
    let browser = Client::new(&c.base);
    for _ in 0..5 {
        assert_eq!(
            browser
                .sign_in("ana@example.com", "guessing-wrongly-1")
                .await
                .status,
            401
        );
    }
    let throttled = browser.sign_in("ana@example.com", PASSWORD).await;
    assert_eq!(throttled.status, 429, "even the right password waits");
    assert!(throttled.body.contains("Too many failed sign-ins"));
    assert!(browser.cookie("meridian_session").is_none());
    // Another account from elsewhere is not held back by it.
    operator(&*c.store, "bo@example.com", Role::Viewer, AppGrant::All).await;
    assert_eq!(
        Client::new(&c.base)
            .sign_in("bo@example.com", PASSWORD)
            .await
            .status,
        303
    );
}

async fn roles_and_apps_are_enforced_on_the_server<S: Store + Clone>(db: &TestDb<S>) {
    let c = console(db).await;
    let id = c.draft("autumn", "Autumn").await;
    operator(&*c.store, "vi@example.com", Role::Viewer, AppGrant::All).await;
    operator(&*c.store, "ed@example.com", Role::Editor, AppGrant::All).await;
    operator(&*c.store, "ad@example.com", Role::Admin, AppGrant::All).await;
    operator(
        &*c.store,
        "other@example.com",
        Role::Admin,
        AppGrant::Only(vec!["other".into()]),
    )
    .await;
    let page_path = format!("/console/apps/shop/campaigns/{id}");
    let schedule = format!("{page_path}/schedule");

    let viewer = Client::new(&c.base);
    viewer.sign_in("vi@example.com", PASSWORD).await;
    let page = viewer.get(&page_path).await;
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("action-schedule"),
        "no button for a viewer"
    );
    // Posted anyway (no button needed): refused on the server.
    let refused = viewer.post(&schedule, &[("csrf", &page.csrf())]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(c.state(id).await, CampaignState::Draft);
    assert_eq!(viewer.get("/console/audit").await.status, 403);

    let outsider = Client::new(&c.base);
    outsider.sign_in("other@example.com", PASSWORD).await;
    assert_eq!(outsider.get(&page_path).await.status, 404);
    assert_eq!(
        outsider
            .get("/console/apps/shop/messages?by=user&q=u1")
            .await
            .status,
        404
    );
    assert_eq!(
        outsider.get("/console/apps/shop/messages/1").await.status,
        404
    );
    assert_eq!(
        outsider.get("/console/apps/shop/campaigns").await.status,
        404
    );
    assert_eq!(outsider.get("/console/apps/shop").await.status, 404);
    let nav = outsider.get("/console/apps/other/campaigns").await;
    assert!(
        nav.body.contains("/console/apps/other/campaigns")
            && !nav.body.contains("/console/apps/shop/")
    );

    let editor = Client::new(&c.base);
    editor.sign_in("ed@example.com", PASSWORD).await;
    let page = editor.get(&page_path).await;
    assert!(page.body.contains("action-schedule"));
    let done = editor.post(&schedule, &[("csrf", &page.csrf())]).await;
    assert_eq!(
        done.location.as_deref(),
        Some(format!("{page_path}?done=schedule").as_str())
    );
    assert_eq!(c.state(id).await, CampaignState::Scheduled);
    // Pausing twice: the second is refused by the state machine, shown on the page.
    let page = editor.get(&format!("{page_path}?done=schedule")).await;
    assert!(page.body.contains("Done: schedule."));
    let pause = format!("{page_path}/pause");
    assert_eq!(
        editor.post(&pause, &[("csrf", &page.csrf())]).await.status,
        303
    );
    let again = editor.post(&pause, &[("csrf", &page.csrf())]).await;
    assert_eq!(again.status, 409);
    assert!(
        again.body.contains("cannot pause a paused campaign"),
        "{}",
        again.body
    );

    let admin = Client::new(&c.base);
    admin.sign_in("ad@example.com", PASSWORD).await;
    let audit = admin.get("/console/audit").await;
    assert_eq!(audit.status, 200);
    for needle in [
        "campaign_schedule",
        "campaign_pause",
        "ed@example.com",
        "autumn",
        "127.0.0.1",
    ] {
        assert!(audit.body.contains(needle), "{needle}");
    }
    let entries = c.actions().await;
    assert!(!entries
        .iter()
        .any(|(who, what)| who == "vi@example.com" && what.starts_with("campaign_")));
}

async fn user_strings_are_escaped_and_pages_carry_a_strict_policy<S: Store + Clone>(
    db: &TestDb<S>,
) {
    let c = console(db).await;
    let id = c.draft("xss", "<script>alert(1)</script>").await;
    operator(&*c.store, "vi@example.com", Role::Viewer, AppGrant::All).await;
    let browser = Client::new(&c.base);
    let login = browser.get("/console/login").await;
    let csp = login.headers["content-security-policy"].to_str().unwrap();
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(rule), "{csp}");
    }
    assert_eq!(login.headers["x-frame-options"], "DENY");
    assert_eq!(login.headers["cache-control"], "no-store");
    browser.sign_in("vi@example.com", PASSWORD).await;
    for path in [
        format!("/console/apps/shop/campaigns/{id}"),
        "/console/apps/shop/campaigns".to_owned(),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200);
        // One script element, our own file (no inline script); the title is
        // there as text, its brackets escaped.
        assert_eq!(page.body.matches("<script").count(), 1, "{path}");
        assert!(
            page.body
                .contains("<script src=\"/console/static/htmx.min.js"),
            "{path}"
        );
        let at = page.body.find("alert(1)").expect("the title is shown");
        let around = &page.body[at.saturating_sub(20)..at];
        assert!(
            around.ends_with("&#60;script&#62;") || around.ends_with("&lt;script&gt;"),
            "{around}"
        );
    }
    let css = browser.get("/console/static/console.css").await;
    assert_eq!(css.status, 200);
    let etag = css.headers["etag"].to_str().unwrap().to_owned();
    assert!(css.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let http = reqwest::Client::new();
    let again = http
        .get(format!("{}/console/static/console.css", c.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
}

async fn disabling_an_operator_ends_their_sessions<S: Store + Clone>(db: &TestDb<S>) {
    let c = console(db).await;
    operator(&*c.store, "ana@example.com", Role::Viewer, AppGrant::All).await;
    let browser = Client::new(&c.base);
    browser.sign_in("ana@example.com", PASSWORD).await;
    assert_eq!(
        browser.get("/console/apps/shop/campaigns").await.status,
        200
    );
    let cli = meridian::console::accounts::Actor {
        operator_id: None,
        name: "cli",
        address: None,
    };
    meridian::console::accounts::set_disabled(
        &*c.store,
        "ana@example.com",
        true,
        &cli,
        SystemClock.now(),
    )
    .await
    .unwrap();
    assert_eq!(
        browser
            .get("/console/apps/shop/campaigns")
            .await
            .location
            .as_deref(),
        Some("/console/login")
    );
    assert_eq!(
        browser.sign_in("ana@example.com", PASSWORD).await.status,
        401
    );
}

/// However many watch a campaign, its live region reads the database at most
/// once a second: twenty concurrent polls and the page itself share one read.
async fn live_progress_reads_once_a_second_however_many_watch<S: Store + Clone>(db: &TestDb<S>) {
    let config: Config = toml::from_str(common::api::CONFIG).unwrap();
    let store = Arc::new(db.store.clone());
    definitions::sync_apps(&*store, &config, SystemClock.now())
        .await
        .unwrap();
    let live = Arc::new(meridian::console::live::LiveCache::default());
    let base =
        common::console::serve_console_with(store.clone(), config.clone(), live.clone()).await;
    let c = Console {
        base,
        store,
        config,
    };
    let id = c.draft("watched", "Watched").await;
    // Scheduled: it can still change, so its snapshot is fresh for a second
    // (a draft's or a completed campaign's for 15).
    let record = c
        .store
        .campaign_get_by_id("shop", id)
        .await
        .unwrap()
        .unwrap();
    definitions::act(
        &*c.store,
        &c.config,
        &record,
        definitions::Action::Schedule,
        SystemClock.now(),
    )
    .await
    .unwrap();
    operator(&*c.store, "vi@example.com", Role::Viewer, AppGrant::All).await;
    let browser = Client::new(&c.base);
    browser.sign_in("vi@example.com", PASSWORD).await;
    let page = browser
        .get(&format!("/console/apps/shop/campaigns/{id}"))
        .await;
    assert!(page.body.contains(&format!(
        "hx-get=\"/console/apps/shop/campaigns/{id}/live\""
    )));
    let path = format!("/console/apps/shop/campaigns/{id}/live");
    let polls = futures::future::join_all((0..20).map(|_| browser.get(&path))).await;
    assert!(polls
        .iter()
        .all(|p| p.status == 200 && p.body.contains("id=\"live\"")));
    assert_eq!(live.reads(), 1, "one read for the page and twenty polls");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(browser.get(&path).await.status, 200);
    assert_eq!(live.reads(), 2, "read again once a second has passed");
    // Another app's operator gets nothing of it.
    operator(
        &*c.store,
        "o@example.com",
        Role::Admin,
        AppGrant::Only(vec!["other".into()]),
    )
    .await;
    let outsider = Client::new(&c.base);
    outsider.sign_in("o@example.com", PASSWORD).await;
    assert_eq!(outsider.get(&path).await.status, 404);
}

/// Admins create an app's API key (its secret shown once, working against the
/// API at once), revoke it, and add and disable operators; editors and admins
/// of only some apps cannot.
async fn admins_manage_keys_and_operators<S: Store + Clone>(db: &TestDb<S>) {
    let c = console(db).await;
    operator(&*c.store, "ad@example.com", Role::Admin, AppGrant::All).await;
    operator(&*c.store, "ed@example.com", Role::Editor, AppGrant::All).await;
    operator(
        &*c.store,
        "shopadmin@example.com",
        Role::Admin,
        AppGrant::Only(vec!["shop".into()]),
    )
    .await;
    let admin = Client::new(&c.base);
    admin.sign_in("ad@example.com", PASSWORD).await;
    let page = admin.get("/console/apps/shop/keys").await;
    assert_eq!(page.status, 200);
    let created = admin
        .post(
            "/console/apps/shop/keys",
            &[("csrf", &page.csrf()), ("name", "backend")],
        )
        .await;
    assert_eq!(created.status, 200);
    let marker = "id=\"new-secret\">";
    let at = created.body.find(marker).expect("the secret, once") + marker.len();
    let secret = created.body[at..].split('<').next().unwrap().to_owned();
    assert!(secret.starts_with("mrd_"), "{secret}");
    let api = reqwest::Client::new();
    let call = |key: String| {
        let api = api.clone();
        let url = format!("{}/v1/campaigns", c.base);
        async move {
            api.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(call(secret.clone()).await, 200);
    let again = admin.get("/console/apps/shop/keys").await;
    assert!(!again.body.contains(&secret) && again.body.contains("backend"));
    let twice = admin
        .post(
            "/console/apps/shop/keys",
            &[("csrf", &page.csrf()), ("name", "backend")],
        )
        .await;
    assert_eq!(twice.status, 409);
    let revoked = admin
        .post(
            "/console/apps/shop/keys/backend/revoke",
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(revoked.status, 303);
    assert_eq!(call(secret).await, 401);

    let editor = Client::new(&c.base);
    editor.sign_in("ed@example.com", PASSWORD).await;
    assert_eq!(editor.get("/console/apps/shop/keys").await.status, 403);
    assert_eq!(editor.get("/console/operators").await.status, 403);
    let limited = Client::new(&c.base);
    limited.sign_in("shopadmin@example.com", PASSWORD).await;
    assert_eq!(limited.get("/console/apps/shop/keys").await.status, 200);
    assert_eq!(
        limited.get("/console/operators").await.status,
        403,
        "could grant apps it lacks"
    );

    let ops = admin.get("/console/operators").await;
    let weak = admin
        .post(
            "/console/operators",
            &[
                ("csrf", &ops.csrf()),
                ("email", "not-an-email"),
                ("role", "viewer"),
                ("apps", ""),
            ],
        )
        .await;
    assert_eq!(weak.status, 422);
    assert!(weak.body.contains("not an email address"), "{}", weak.body);
    let added = admin
        .post(
            "/console/operators",
            &[
                ("csrf", &ops.csrf()),
                ("email", "new@example.com"),
                ("role", "viewer"),
                ("apps", "shop"),
            ],
        )
        .await;
    assert_eq!(added.status, 200);
    let marker = "id=\"new-password\">";
    let at = added.body.find(marker).expect("the password, once") + marker.len();
    let password = added.body[at..].split('<').next().unwrap().to_owned();
    let newcomer = Client::new(&c.base);
    assert_eq!(
        newcomer.sign_in("new@example.com", &password).await.status,
        303
    );
    assert_eq!(
        newcomer.get("/console/apps/other/campaigns").await.status,
        404
    );
    let id = c
        .store
        .operator_get_by_email("new@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let off = admin
        .post(
            &format!("/console/operators/{id}/disable"),
            &[("csrf", &ops.csrf())],
        )
        .await;
    assert_eq!(off.status, 303);
    assert_eq!(
        newcomer
            .get("/console/apps/shop/campaigns")
            .await
            .location
            .as_deref(),
        Some("/console/login")
    );
    let me = c
        .store
        .operator_get_by_email("ad@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let selfie = admin
        .post(
            &format!("/console/operators/{me}/disable"),
            &[("csrf", &ops.csrf())],
        )
        .await;
    assert_eq!(selfie.status, 403);
    let actions = c.actions().await;
    for a in [
        "api_key_created",
        "api_key_revoked",
        "operator_added",
        "operator_disabled",
    ] {
        assert!(
            actions
                .iter()
                .any(|(who, x)| x == a && who == "ad@example.com"),
            "{a}: {actions:?}"
        );
    }
}

/// An editor sends a campaign's message to one user as a test: queued as a
/// transactional push (found under its request id), audited; a viewer cannot.
async fn editors_send_a_test_push<S: Store + Clone>(db: &TestDb<S>) {
    let c = console(db).await;
    let id = c.draft("tested", "Tested").await;
    c.store
        .device_upsert(
            &meridian::store::DeviceUpsert {
                app_id: "shop",
                user_external_id: Some("u1"),
                install_id: None,
                platform: meridian::domain::campaign::Platform::Android,
                token: "fcm-u1",
                timezone: None,
                locale: None,
                primary: false,
            },
            SystemClock.now(),
        )
        .await
        .unwrap();
    operator(&*c.store, "ed@example.com", Role::Editor, AppGrant::All).await;
    operator(&*c.store, "vi@example.com", Role::Viewer, AppGrant::All).await;
    let path = format!("/console/apps/shop/campaigns/{id}/test");
    let editor = Client::new(&c.base);
    editor.sign_in("ed@example.com", PASSWORD).await;
    let page = editor
        .get(&format!("/console/apps/shop/campaigns/{id}"))
        .await;
    let sent = editor
        .post(
            &path,
            &[("csrf", &page.csrf()), ("to_kind", "user"), ("to", "u1")],
        )
        .await;
    assert_eq!(sent.status, 200);
    assert!(
        sent.body.contains("queued for 1 device(s) of user"),
        "{}",
        sent.body
    );
    let at = sent.body.find("req_").unwrap();
    let request: String = sent.body[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let rows = c
        .store
        .message_list(
            "shop",
            &meridian::store::DeliveryFilter {
                user_external_id: None,
                campaign_id: None,
                request_id: Some(&request),
                status: None,
                since: None,
                before_id: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{request}");
    assert_eq!(rows[0].user_external_id.as_deref(), Some("u1"));
    assert_eq!(
        c.state(id).await,
        CampaignState::Draft,
        "a test does not touch the campaign"
    );
    let nobody = editor
        .post(
            &path,
            &[
                ("csrf", &page.csrf()),
                ("to_kind", "user"),
                ("to", "nobody"),
            ],
        )
        .await;
    assert!(nobody.body.contains("no device found"), "{}", nobody.body);
    let blank = editor
        .post(
            &path,
            &[("csrf", &page.csrf()), ("to_kind", "user"), ("to", " ")],
        )
        .await;
    assert_eq!(blank.status, 422);
    let viewer = Client::new(&c.base);
    viewer.sign_in("vi@example.com", PASSWORD).await;
    let vpage = viewer
        .get(&format!("/console/apps/shop/campaigns/{id}"))
        .await;
    assert!(!vpage.body.contains("send-test"));
    let refused = viewer
        .post(
            &path,
            &[("csrf", &vpage.csrf()), ("to_kind", "user"), ("to", "u1")],
        )
        .await;
    assert_eq!(refused.status, 403);
    let actions = c.actions().await;
    assert_eq!(
        actions.iter().filter(|(_, a)| a == "test_push").count(),
        2,
        "{actions:?}"
    );
}

/// The composer's form, as a browser posts it (checkboxes repeat their name).
fn compose_form<'a>(csrf: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("csrf", csrf),
        ("key", "winter"),
        ("name", "Winter sale"),
        ("title", "Winter <b>sale</b>"),
        ("body", "Everything -20%"),
        ("image", "https://img.example.com/w.png"),
        ("button1_id", "buy"),
        ("button1_label", "Buy"),
        ("button2_id", "later"),
        ("button2_label", "Later"),
        ("link_kind", "deeplink"),
        ("link", "shop://winter"),
        ("priority", "high"),
        ("topics", "marketing"),
        ("platforms", "ios"),
        ("platforms", "android"),
        ("devices", "all"),
        ("schedule_type", "local"),
        ("at_local", "2030-12-01T09:00"),
        ("missed", "skip"),
    ];
    for (k, v) in extra {
        match form.iter_mut().find(|(name, _)| name == k) {
            Some(pair) => pair.1 = v,
            None => form.push((k, v)),
        }
    }
    form
}

async fn editors_compose_and_edit_campaigns<S: Store + Clone>(db: &TestDb<S>) {
    let c = console(db).await;
    operator(&*c.store, "ed@example.com", Role::Editor, AppGrant::All).await;
    operator(&*c.store, "vi@example.com", Role::Viewer, AppGrant::All).await;
    let editor = Client::new(&c.base);
    editor.sign_in("ed@example.com", PASSWORD).await;
    let blank = editor.get("/console/apps/shop/campaigns/new").await;
    assert_eq!(blank.status, 200);
    let csrf = blank.csrf();

    // As the operator types: the preview and every field's slot, from the
    // campaign validator (an empty title and a badge that is not a number).
    let check = editor
        .post(
            "/console/apps/shop/compose/check",
            &compose_form(&csrf, &[("title", ""), ("badge", "many")]),
        )
        .await;
    assert_eq!(check.status, 200);
    assert!(
        check
            .body
            .contains(r#"id="err-title" hx-swap-oob="true">must not be empty<"#),
        "{}",
        check.body
    );
    assert!(check
        .body
        .contains(r#"id="err-badge" hx-swap-oob="true">must be a whole number"#));
    assert!(
        check.body.contains(r#"id="err-key" hx-swap-oob="true"><"#),
        "a fine field's slot is emptied"
    );
    assert!(check.body.contains("id=\"preview-android\""));
    // The same definition from a file would get the same message (one validator).
    let refused = editor
        .post("/console/apps/shop/compose/check", &[("title", "x")])
        .await;
    assert_eq!(refused.status, 403, "the check needs the CSRF token too");

    // Saving an invalid form writes nothing and shows the errors in place.
    let invalid = editor
        .post(
            "/console/apps/shop/campaigns/new",
            &compose_form(&csrf, &[("title", ""), ("topics", "sports")]),
        )
        .await;
    assert_eq!(invalid.status, 422);
    assert!(invalid
        .body
        .contains(r#"id="err-title">must not be empty<"#));
    assert!(
        invalid.body.contains("unknown topic &#34;sports&#34;")
            || invalid.body.contains("unknown topic &quot;sports&quot;"),
        "{}",
        invalid.body
    );
    assert!(
        invalid.body.contains(">Everything -20%</textarea>"),
        "what was typed is kept"
    );
    assert!(c
        .store
        .campaign_get("shop", "winter")
        .await
        .unwrap()
        .is_none());

    // A valid form is a draft, exactly the definition a file would give.
    let saved = editor
        .post(
            "/console/apps/shop/campaigns/new",
            &compose_form(&csrf, &[]),
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let record = c
        .store
        .campaign_get("shop", "winter")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, CampaignState::Draft);
    assert_eq!(
        saved.location.unwrap(),
        format!("/console/apps/shop/campaigns/{}?done=saved", record.id)
    );
    let file = parse_toml(
        "t.toml",
        r#"
key = "winter"
name = "Winter sale"
app = "shop"
[message]
title = "Winter <b>sale</b>"
body = "Everything -20%"
image = "https://img.example.com/w.png"
deeplink = "shop://winter"
buttons = [{ id = "buy", label = "Buy" }, { id = "later", label = "Later" }]
[audience]
topics = ["marketing"]
platforms = ["ios", "android"]
[schedule]
type = "local"
at = "2030-12-01T09:00"
"#,
    )
    .unwrap();
    assert_eq!(definitions::stored_definition(&record).unwrap(), file);
    // The same key again is refused beside the key.
    let twice = editor
        .post(
            "/console/apps/shop/campaigns/new",
            &compose_form(&csrf, &[("name", "Other")]),
        )
        .await;
    assert_eq!(twice.status, 422);
    assert!(twice
        .body
        .contains(r#"id="err-key">another campaign of this app has this key<"#));

    // Editing: the form shows the stored definition; a scheduled campaign is
    // planned again and stays scheduled; the key cannot change.
    let id = record.id;
    let edit_path = format!("/console/apps/shop/campaigns/{id}/edit");
    let form = editor.get(&edit_path).await;
    assert!(
        form.body
            .contains("value=\"Winter &#60;b&#62;sale&#60;/b&#62;\"")
            || form
                .body
                .contains("value=\"Winter &lt;b&gt;sale&lt;/b&gt;\""),
        "{}",
        form.body
    );
    let page = editor
        .get(&format!("/console/apps/shop/campaigns/{id}"))
        .await;
    assert_eq!(
        editor
            .post(
                &format!("/console/apps/shop/campaigns/{id}/schedule"),
                &[("csrf", &page.csrf())]
            )
            .await
            .status,
        303
    );
    let slots_before = c.store.slot_list(id).await.unwrap();
    let edited = editor
        .post(
            &edit_path,
            &compose_form(&csrf, &[("at_local", "2030-12-02T10:30")]),
        )
        .await;
    assert_eq!(edited.status, 303, "{}", edited.body);
    let after = c
        .store
        .campaign_get_by_id("shop", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.state, CampaignState::Scheduled);
    assert_eq!(after.revision, record.revision + 2);
    let slots_after = c.store.slot_list(id).await.unwrap();
    assert_eq!(slots_after.len(), slots_before.len());
    let kathmandu = slots_after
        .iter()
        .find(|s| s.zone == "Asia/Kathmandu")
        .unwrap();
    assert_eq!(kathmandu.fire_at.to_rfc3339(), "2030-12-02T04:45:00+00:00");
    let renamed = editor
        .post(&edit_path, &compose_form(&csrf, &[("key", "spring")]))
        .await;
    assert_eq!(renamed.status, 422);
    assert!(renamed.body.contains("cannot change"));
    // Once running, a campaign is no longer edited.
    editor
        .post(
            &format!("/console/apps/shop/campaigns/{id}/pause"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(editor.get(&edit_path).await.status, 409);
    assert_eq!(
        editor
            .post(&edit_path, &compose_form(&csrf, &[]))
            .await
            .status,
        422
    );

    // A viewer composes nothing, even by posting.
    let viewer = Client::new(&c.base);
    viewer.sign_in("vi@example.com", PASSWORD).await;
    assert_eq!(
        viewer.get("/console/apps/shop/campaigns/new").await.status,
        403
    );
    let vcsrf = viewer.get("/console/apps/shop/campaigns").await.csrf();
    let form = compose_form(&vcsrf, &[("key", "viewer")]);
    assert_eq!(
        viewer
            .post("/console/apps/shop/campaigns/new", &form)
            .await
            .status,
        403
    );
    assert_eq!(
        viewer
            .post("/console/apps/shop/compose/check", &form)
            .await
            .status,
        403
    );
    assert!(c
        .store
        .campaign_get("shop", "viewer")
        .await
        .unwrap()
        .is_none());
    let entries = c.actions().await;
    assert!(entries.contains(&("ed@example.com".to_owned(), "campaign_create".to_owned())));
    assert!(entries.contains(&("ed@example.com".to_owned(), "campaign_edit".to_owned())));
}

/// The plan page: a draft's plan as if scheduled now (nothing written), a
/// scheduled campaign's stored slots; the action pages ask before acting.
async fn the_plan_and_the_confirmation_come_before_scheduling<S: Store + Clone>(db: &TestDb<S>) {
    let c = console(db).await;
    let id = c.draft("plan-me", "Plan me").await;
    operator(&*c.store, "ed@example.com", Role::Editor, AppGrant::All).await;
    operator(&*c.store, "vi@example.com", Role::Viewer, AppGrant::All).await;
    let editor = Client::new(&c.base);
    editor.sign_in("ed@example.com", PASSWORD).await;
    let plan = editor
        .get(&format!("/console/apps/shop/campaigns/{id}/plan"))
        .await;
    assert_eq!(plan.status, 200);
    assert!(plan.body.contains("it would get if scheduled now"));
    assert!(plan.body.contains("more zones have no recipient yet"));
    assert!(
        c.store.slot_list(id).await.unwrap().is_empty(),
        "a draft's plan writes nothing"
    );
    let confirm = editor
        .get(&format!("/console/apps/shop/campaigns/{id}/schedule"))
        .await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("id=\"confirm\""));
    assert_eq!(
        c.state(id).await,
        CampaignState::Draft,
        "asking changes nothing"
    );
    assert_eq!(
        editor
            .get(&format!("/console/apps/shop/campaigns/{id}/pause"))
            .await
            .status,
        409
    );
    let viewer = Client::new(&c.base);
    viewer.sign_in("vi@example.com", PASSWORD).await;
    assert_eq!(
        viewer
            .get(&format!("/console/apps/shop/campaigns/{id}/schedule"))
            .await
            .status,
        403
    );
    assert_eq!(
        viewer
            .get(&format!("/console/apps/shop/campaigns/{id}/plan"))
            .await
            .status,
        200
    );
    assert_eq!(
        editor
            .post(
                &format!("/console/apps/shop/campaigns/{id}/schedule"),
                &[("csrf", &confirm.csrf())]
            )
            .await
            .status,
        303
    );
    let plan = editor
        .get(&format!("/console/apps/shop/campaigns/{id}/plan"))
        .await;
    assert!(!plan.body.contains("it would get if scheduled now"));
    assert!(plan.body.contains("state-scheduled"));
}

/// After the engine sends to the simulator: the campaign page's funnel, sends
/// per minute and progress, and its deliveries as a CSV streamed page by page.
async fn a_sent_campaign_shows_its_funnel_and_downloads_as_csv<S: Store + Clone>(db: &TestDb<S>) {
    use meridian::domain::campaign::Platform;
    let rig = common::rig::rig(db, SystemClock.now()).await;
    for n in 0..12 {
        rig.device(n, "Europe/Berlin", Platform::Ios, n == 11).await;
    }
    let id = rig.schedule("now", "type = \"now\"").await;
    rig.engine("worker", 5).run_until_idle().await.unwrap();
    operator(&*rig.store, "vi@example.com", Role::Viewer, AppGrant::All).await;
    let base = serve_console(rig.store.clone(), (*rig.config).clone()).await;
    let browser = Client::new(&base);
    browser.sign_in("vi@example.com", PASSWORD).await;
    let page = browser
        .get(&format!("/console/apps/shop/campaigns/{id}"))
        .await;
    assert!(
        page.body
            .contains(r#"<dd id="funnel-sent">11 (100.0%)</dd>"#),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains(r#"<dd id="funnel-opened">0 (0.0%)</dd>"#));
    assert!(page
        .body
        .contains(r#"<progress id="progress" max="12" value="12">"#));
    assert!(page.body.contains("id=\"per-minute\""));
    assert!(page.body.contains("11 sent; one bar per 1 min"));

    let csv = browser
        .get(&format!("/console/apps/shop/campaigns/{id}/deliveries.csv"))
        .await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    assert!(csv.headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("now-deliveries.csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "message_id,user_external_id,platform,status,attempts,provider_id,error_reason,created_at,sent_at,updated_at");
    assert_eq!(lines.len(), 13, "{}", csv.body);
    assert_eq!(lines.iter().filter(|l| l.contains(",sent,")).count(), 11);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(",token_invalid,"))
            .count(),
        1
    );
    assert!(lines[1..].iter().all(|l| l.split(',').count() >= 10));
    // Newest first, each message once.
    let ids: Vec<i64> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    // Another app's operator gets nothing of it.
    operator(
        &*rig.store,
        "o@example.com",
        Role::Admin,
        AppGrant::Only(vec!["other".into()]),
    )
    .await;
    let outsider = Client::new(&base);
    outsider.sign_in("o@example.com", PASSWORD).await;
    assert_eq!(
        outsider
            .get(&format!("/console/apps/shop/campaigns/{id}/deliveries.csv"))
            .await
            .status,
        404
    );
}

/// The overview finds the last day's messages by bisecting delivery ids: the
/// boundary is the first message created at or after the time asked.
async fn the_newest_messages_are_found_by_id<S: Store + Clone>(db: &TestDb<S>) {
    use meridian::domain::campaign::Platform;
    let start = SystemClock.now();
    let rig = common::rig::rig(db, start).await;
    for n in 0..7 {
        rig.device(n, "Europe/Berlin", Platform::Android, false)
            .await;
    }
    assert_eq!(
        rig.store.delivery_first_since(start).await.unwrap(),
        0,
        "no deliveries"
    );
    let first = rig.schedule("first", "type = \"now\"").await;
    rig.engine("worker", 3).run_until_idle().await.unwrap();
    rig.clock.advance(chrono::TimeDelta::hours(2));
    let second = rig.schedule("second", "type = \"now\"").await;
    rig.engine("worker", 3).run_until_idle().await.unwrap();
    let ids = |campaign: i64| {
        let store = rig.store.clone();
        async move {
            let f = meridian::store::DeliveryFilter {
                campaign_id: Some(campaign),
                limit: 100,
                ..Default::default()
            };
            let mut ids: Vec<i64> = store
                .message_list("shop", &f)
                .await
                .unwrap()
                .iter()
                .map(|d| d.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let later = ids(second).await;
    assert_eq!(later.len(), 7);
    let boundary = rig
        .store
        .delivery_first_since(start + chrono::TimeDelta::hours(1))
        .await
        .unwrap();
    let earlier = ids(first).await;
    assert_eq!(earlier.len(), 7);
    assert!(
        boundary > earlier[6] && boundary <= later[0],
        "{boundary}: {earlier:?} then {later:?}"
    );
    let all = rig
        .store
        .delivery_first_since(start - chrono::TimeDelta::hours(1))
        .await
        .unwrap();
    assert!(
        all <= earlier[0],
        "the first campaign's messages are included"
    );
    let none = rig
        .store
        .delivery_first_since(start + chrono::TimeDelta::hours(3))
        .await
        .unwrap();
    assert_eq!(none, later[6] + 1);
}

/// The campaign list filters and searches in SQL, a page at a time.
async fn the_campaign_list_searches_and_pages<S: Store + Clone>(db: &TestDb<S>) {
    let c = console(db).await;
    for n in 0..52 {
        c.draft(&format!("spring-{n:02}"), &format!("Spring {n}"))
            .await;
    }
    let autumn = c.draft("autumn_100", "Autumn 100%").await;
    operator(&*c.store, "vi@example.com", Role::Viewer, AppGrant::All).await;
    let browser = Client::new(&c.base);
    browser.sign_in("vi@example.com", PASSWORD).await;
    let rows = |body: &str| body.matches("<tr>\n  <td><a href=").count();
    let found = browser.get("/console/apps/shop/campaigns?q=AUTUMN").await;
    assert_eq!(rows(&found.body), 1, "{}", found.body);
    assert!(found.body.contains(&format!("/campaigns/{autumn}\"")));
    // `%` and `_` are letters to the search, not patterns.
    assert_eq!(
        rows(
            &browser
                .get("/console/apps/shop/campaigns?q=100%25")
                .await
                .body
        ),
        1
    );
    assert_eq!(
        rows(&browser.get("/console/apps/shop/campaigns?q=n_1").await.body),
        1
    );
    assert_eq!(
        rows(
            &browser
                .get("/console/apps/shop/campaigns?q=%25%25")
                .await
                .body
        ),
        0
    );
    assert_eq!(
        rows(
            &browser
                .get("/console/apps/shop/campaigns?state=running")
                .await
                .body
        ),
        0
    );
    // 53 drafts: 50, then the 3 oldest behind "Older campaigns".
    let first = browser
        .get("/console/apps/shop/campaigns?state=draft")
        .await;
    assert_eq!(rows(&first.body), 50);
    let start = first
        .body
        .find("id=\"older\"")
        .map(|i| first.body[..i].rfind("href=\"").unwrap() + 6)
        .unwrap();
    let older =
        first.body[start..start + first.body[start..].find('"').unwrap()].replace("&#38;", "&");
    let second = browser.get(&older).await;
    assert_eq!(rows(&second.body), 3, "{older}");
    assert!(second.body.contains("spring-00") && !second.body.contains("id=\"older\""));
}

storage_tests!(
    the_campaign_list_searches_and_pages,
    the_newest_messages_are_found_by_id,
    a_sent_campaign_shows_its_funnel_and_downloads_as_csv,
    editors_compose_and_edit_campaigns,
    the_plan_and_the_confirmation_come_before_scheduling,
    editors_send_a_test_push,
    admins_manage_keys_and_operators,
    live_progress_reads_once_a_second_however_many_watch,
    signing_in_sets_a_safe_cookie_and_rotates_the_session,
    forms_without_their_csrf_token_are_refused,
    sign_in_is_throttled_per_account,
    roles_and_apps_are_enforced_on_the_server,
    user_strings_are_escaped_and_pages_carry_a_strict_policy,
    disabling_an_operator_ends_their_sessions,
);

/// `meridian operator` as an admin runs it: a generated password printed once,
/// a weak one refused in one line with exit 2, the list without secrets.
#[test]
fn the_operator_command_adds_lists_and_refuses_weak_passwords() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n{}",
            dir.path().join("m.db").display(),
            common::api::CONFIG
        ),
    )
    .unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().unwrap()
    };
    let added = run(
        &["operator", "add", "ana@example.com", "--role", "admin"],
        None,
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let password = String::from_utf8(added.stdout).unwrap();
    assert_eq!(password.trim().len(), 20, "{password}");
    let weak = run(
        &[
            "operator",
            "add",
            "bo@example.com",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        Some("password1234\n"),
    );
    assert_eq!(weak.status.code(), Some(2));
    let err = String::from_utf8_lossy(&weak.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("password"), "{err}");
    let unknown_app = run(
        &[
            "operator",
            "add",
            "cy@example.com",
            "--role",
            "viewer",
            "--apps",
            "nope",
        ],
        None,
    );
    assert_eq!(unknown_app.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown_app.stderr).contains("apps: \"nope\""));
    let list = run(&["operator", "list"], None);
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(
        text.contains("ana@example.com") && text.contains("admin"),
        "{text}"
    );
    assert!(
        !text.contains(password.trim()) && !text.contains("argon2"),
        "{text}"
    );
}
