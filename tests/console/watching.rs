//! Watching campaigns and apps: the live region's read bound, the funnel, sends
//! per minute, progress, the CSV, the overview and how it finds the day's
//! messages.

use super::*;

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

storage_tests!(
    live_progress_reads_once_a_second_however_many_watch,
    a_sent_campaign_shows_its_funnel_and_downloads_as_csv,
    the_newest_messages_are_found_by_id,
);
