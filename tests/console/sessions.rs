//! Accounts and sessions: sign-in, cookies, CSRF, the throttle, roles and apps
//! enforced on the server, escaping and the security headers, disabling, and
//! the `meridian operator` command.

use super::*;

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

storage_tests!(
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
