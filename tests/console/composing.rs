//! Making campaigns: the composer, the plan before and after scheduling, the
//! confirmation pages, and the campaign list.

use super::*;

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
    editors_compose_and_edit_campaigns,
    the_plan_and_the_confirmation_come_before_scheduling,
    the_campaign_list_searches_and_pages,
);
