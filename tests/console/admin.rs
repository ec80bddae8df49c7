//! What admins and editors do besides campaigns: API keys, operators, test pushes.

use super::*;

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
    // A client key made here is one: it registers devices, and reads no campaign.
    let client = admin
        .post(
            "/console/apps/shop/keys",
            &[
                ("csrf", &page.csrf()),
                ("name", "ios-app"),
                ("kind", "client"),
            ],
        )
        .await;
    assert_eq!(client.status, 200);
    let at = client.body.find(marker).expect("the secret, once") + marker.len();
    let client_secret = client.body[at..].split('<').next().unwrap().to_owned();
    assert_eq!(call(client_secret).await, 403);
    assert!(
        client.body.contains("<td>ios-app</td><td>client</td>"),
        "{}",
        client.body
    );
    let odd = admin
        .post(
            "/console/apps/shop/keys",
            &[("csrf", &page.csrf()), ("name", "odd"), ("kind", "root")],
        )
        .await;
    assert_eq!(odd.status, 422);

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

storage_tests!(admins_manage_keys_and_operators, editors_send_a_test_push,);
