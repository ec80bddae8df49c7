//! The console in a real headless Chromium (Debian's, over WebDriver): signing
//! in, a campaign's plan with every zone at its own 09:00 (Asia/Kathmandu's
//! +05:45 included), scheduling it, a title with `<script>` shown as text, a
//! viewer without the buttons, and the pages at 1440 and 390 px. Screenshots
//! are saved under `target/console-screenshots/`.

mod common;

use std::sync::Arc;

use common::console::{operator, serve_console, PASSWORD};
use common::webdriver::{self, Browser};
use meridian::clock::{Clock, SystemClock};
use meridian::config::Config;
use meridian::definitions;
use meridian::domain::campaign::Platform;
use meridian::domain::operator::{AppGrant, Role};
use meridian::domain::state::CampaignState;
use meridian::store::prelude::*;
use meridian::store::DeviceUpsert;

async fn sign_in(b: &Browser, base: &str, email: &str) {
    b.goto(&format!("{base}/console/login")).await;
    b.type_into("#email", email).await;
    b.type_into("#password", PASSWORD).await;
    b.click("#sign-in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_composes_plans_and_schedules_a_local_nine_oclock_campaign_in_chromium() {
    if !webdriver::available() {
        return;
    }
    let db = common::sqlite().await;
    let config: Config = toml::from_str(common::api::CONFIG).unwrap();
    let store = Arc::new(db.store.clone());
    let now = SystemClock.now();
    definitions::sync_apps(&*store, &config, now).await.unwrap();
    // One device in each zone; `news` reaches everyone who did not opt out.
    let zones = [
        "Asia/Kathmandu",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Adelaide",
    ];
    for (n, zone) in zones.iter().enumerate() {
        let user = format!("u{n}");
        let token = format!("fcm-{n}");
        store
            .device_upsert(
                &DeviceUpsert {
                    app_id: "shop",
                    user_external_id: Some(&user),
                    install_id: None,
                    platform: Platform::Android,
                    token: &token,
                    timezone: Some(zone),
                    locale: None,
                    primary: false,
                },
                now,
            )
            .await
            .unwrap();
    }
    operator(&*store, "ed@example.com", Role::Editor, AppGrant::All).await;
    operator(&*store, "vi@example.com", Role::Viewer, AppGrant::All).await;
    operator(&*store, "ad@example.com", Role::Admin, AppGrant::All).await;
    let base = serve_console(store.clone(), config).await;

    let b = Browser::start(1440, 1000).await;
    sign_in(&b, &base, "ed@example.com").await;
    b.wait_url("/console/apps/").await;
    b.goto(&format!("{base}/console/apps/shop/campaigns")).await;
    b.click("#new-campaign").await;
    b.wait_url("/campaigns/new").await;

    // Compose: the preview follows the typing, on both platforms.
    b.type_into("#key", "spring-sale").await;
    b.type_into("#name", "<script>alert(1)</script> Spring sale")
        .await;
    b.type_into("#title", "<script>alert(1)</script>").await;
    b.type_into("#body", "Our spring sale starts now.").await;
    b.type_into("#image", "https://img.example.com/spring.png")
        .await;
    b.type_into("#button1_id", "shop").await;
    b.type_into("#button1_label", "Shop now").await;
    b.type_into("#button2_id", "later").await;
    b.type_into("#button2_label", "Remind me").await;
    b.click("input[name='topics'][value='news']").await;
    b.click("#schedule-local").await;
    // 30 March 2031: Europe has just moved to summer time (Berlin +02:00),
    // Adelaide is on summer time until April (+10:30), New York since March (-04:00).
    b.set_value("#at_local", "2031-03-31T09:00").await;
    b.wait_text("#preview-android .android-actions", "REMIND ME")
        .await;
    assert_eq!(
        b.text("#preview-ios .ntitle").await,
        "<script>alert(1)</script>"
    );
    assert_eq!(b.count("#preview-ios .ios-actions li").await, 2);
    assert_eq!(b.count("#preview-android img.bigpicture").await, 1);
    assert_eq!(b.count("#preview-ios img.thumb").await, 1);
    // An error appears beside its field as it is typed, from the validator,
    // and goes when it is fixed.
    b.type_into("#link", "not a link").await;
    b.click("input[name='link_kind'][value='url']").await;
    b.wait_text("#err-link", "http or https URL").await;
    b.screenshot("compose-error-1440").await;
    b.clear("#link").await;
    b.type_into("#link", "https://shop.example.com/spring")
        .await;
    for _ in 0..100 {
        if b.text("#err-link").await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(b.text("#err-link").await, "");
    // A German text, previewed as German.
    b.type_into("#locale1_tag", "de").await;
    b.type_into("#locale1_title", "Frühlingsverkauf").await;
    b.type_into("#locale1_body", "Jetzt zugreifen.").await;
    b.wait_text("#preview_locale", "de").await;
    b.click("#preview_locale option[value='de']").await;
    b.wait_text("#preview-ios .ntitle", "Frühlingsverkauf")
        .await;
    b.screenshot("compose-1440").await;
    b.resize(390, 844).await;
    b.screenshot("compose-390").await;
    assert!(!b.overflows().await, "the composer fits 390 px");
    b.resize(1440, 1000).await;
    b.click("#save").await;
    b.wait_url("?done=saved").await;
    let c = store
        .campaign_get("shop", "spring-sale")
        .await
        .unwrap()
        .unwrap();
    let id = c.id;
    assert_eq!(c.state, CampaignState::Draft);
    let def = definitions::stored_definition(&c).unwrap();
    assert_eq!(def.message.buttons.len(), 2);
    assert_eq!(
        def.message.image.as_deref(),
        Some("https://img.example.com/spring.png")
    );
    assert_eq!(def.message.locales["de"].title, "Frühlingsverkauf");
    assert_eq!(def.schedule.at.as_deref(), Some("2031-03-31T09:00"));
    // The script in the title is text on the page, not a script.
    assert_eq!(b.text(".title").await, "<script>alert(1)</script>");
    assert_eq!(b.count("main script").await, 0);

    // The plan before scheduling: Kathmandu at its own 09:00, 03:15 UTC, on
    // the timeline and in the table; Berlin's clocks changed that week.
    b.click("#open-plan").await;
    b.wait_url("/plan").await;
    let kathmandu = b.text("tr[id='plan-Asia/Kathmandu']").await;
    assert!(
        kathmandu.contains("09:00 (UTC+05:45)") && kathmandu.contains("2031-03-31 03:15"),
        "{kathmandu}"
    );
    assert_eq!(
        b.count("#timeline circle[data-zones~='Asia/Kathmandu'][data-utc='2031-03-31 03:15']")
            .await,
        1
    );
    assert_eq!(b.count("#timeline circle").await, 4);
    let berlin = b.text("tr[id='plan-Europe/Berlin']").await;
    assert!(
        berlin.contains("09:00 (UTC+02:00)")
            && berlin.contains("07:00")
            && berlin.contains("clocks changed in the week before: UTC+01:00 → UTC+02:00"),
        "{berlin}"
    );
    b.screenshot("plan-draft-1440").await;

    // Scheduling asks first, with the plan's outline.
    b.click("#plan-schedule").await;
    b.wait_url("/schedule").await;
    assert!(b
        .text("#consequence")
        .await
        .contains("4 recipient(s) in 4 send(s)"));
    b.screenshot("confirm-schedule").await;
    b.click("#confirm").await;
    b.wait_url("?done=schedule").await;
    assert_eq!(
        store
            .campaign_get_by_id("shop", id)
            .await
            .unwrap()
            .unwrap()
            .state,
        CampaignState::Scheduled
    );
    // The campaign page's plan: every zone at its own 09:00.
    let kathmandu = b.text("tr[id='zone-Asia/Kathmandu']").await;
    assert!(
        kathmandu.contains("09:00 (UTC+05:45)") && kathmandu.contains("2031-03-31 03:15"),
        "{kathmandu}"
    );
    let adelaide = b.text("tr[id='zone-Australia/Adelaide']").await;
    assert!(
        adelaide.contains("09:00 (UTC+10:30)") && adelaide.contains("2031-03-30 22:30"),
        "{adelaide}"
    );
    // The zones with recipients are listed; the other 485 are folded away.
    assert_eq!(
        b.count("#live section > .scroll > table.plan > tbody > tr")
            .await,
        4
    );
    assert_eq!(b.count("#empty-zones tbody tr").await, 485);
    b.screenshot("campaign-plan-1440").await;
    b.resize(390, 844).await;
    b.screenshot("campaign-plan-390").await;
    assert!(
        !b.overflows().await,
        "the plan fits 390 px without scrolling sideways"
    );

    // A viewer sees the plan but no action, and cannot reach one by its URL.
    let v = Browser::start(1440, 1000).await;
    sign_in(&v, &base, "vi@example.com").await;
    v.wait_url("/console/apps/").await;
    v.goto(&format!("{base}/console/apps/shop/campaigns/{id}"))
        .await;
    assert_eq!(v.count("#action-pause").await, 0);
    assert_eq!(v.count("#edit").await, 0);
    assert!(v
        .text("tr[id='zone-Asia/Kathmandu']")
        .await
        .contains("03:15"));
    v.screenshot("campaign-viewer-1440").await;
    v.goto(&format!("{base}/console/apps/shop/campaigns/{id}/pause"))
        .await;
    assert_eq!(v.text("h1").await, "Not allowed");

    // An admin makes a client key for the mobile app: its secret shown once,
    // its kind in the list.
    let a = Browser::start(1440, 1000).await;
    sign_in(&a, &base, "ad@example.com").await;
    a.wait_url("/console/apps/").await;
    a.goto(&format!("{base}/console/apps/shop/keys")).await;
    a.type_into("#name", "ios-app").await;
    a.set_value("#kind", "client").await;
    a.click("#create-key").await;
    assert!(a.wait_text("#new-secret", "mrd_").await.starts_with("mrd_"));
    assert!(
        a.text("#keys").await.contains("ios-app client"),
        "{}",
        a.text("#keys").await
    );
    a.screenshot("keys-1440").await;
    db.finish().await;
}

/// A campaign sent by the engine to the simulator while an operator watches its
/// page: the counts and each zone's state change without a reload (htmx polls
/// the live region), ending completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_campaign_page_shows_progress_live_while_the_engine_sends() {
    if !webdriver::available() {
        return;
    }
    let db = common::sqlite().await;
    let rig = common::rig::rig(&db, SystemClock.now()).await;
    let zones = ["Asia/Kathmandu", "Europe/Berlin", "America/New_York"];
    for n in 0..30 {
        rig.device(n, zones[n as usize % 3], Platform::Android, n % 10 == 9)
            .await;
    }
    let id = rig.schedule("now", "type = \"now\"").await;
    operator(&*rig.store, "vi@example.com", Role::Viewer, AppGrant::All).await;
    let base =
        common::console::serve_console_uncached(rig.store.clone(), (*rig.config).clone()).await;
    let b = Browser::start(1440, 1000).await;
    sign_in(&b, &base, "vi@example.com").await;
    b.wait_url("/console/apps/").await;
    b.goto(&format!("{base}/console/apps/shop/campaigns/{id}"))
        .await;
    assert_eq!(b.text("#live-state").await, "scheduled");
    b.screenshot("live-before").await;
    rig.engine("worker", 5).run_until_idle().await.unwrap();
    // No reload: the region is polled and swapped in place.
    let mut state = String::new();
    for _ in 0..100 {
        if b.count("#count-sent").await == 1 {
            state = b.text("#live-state").await;
            if state == "completed" {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state, "completed");
    assert_eq!(b.text("#count-sent").await, "27");
    assert_eq!(b.text("#count-token_invalid").await, "3");
    assert!(b.text("table.plan tbody").await.contains("completed"));
    // The slot's counts by outcome (a `now` campaign: one slot for everyone).
    let cell = |n: usize| format!("table.live-zones tbody tr:first-child td:nth-child({n})");
    assert_eq!(b.text(&cell(6)).await, "27");
    assert_eq!(b.text(&cell(7)).await, "0");
    assert_eq!(b.text(&cell(8)).await, "3");
    assert_eq!(b.text(&cell(10)).await, "0");
    // The funnel and the sends per minute came with the same swap.
    b.wait_text("#funnel-sent", "27 (100.0%)").await;
    assert_eq!(b.count("#per-minute rect").await, 1);
    assert_eq!(b.text("#progress-text").await, "30 of 30 settled");
    b.screenshot("live-after").await;
    // The app's overview: the audience, and the day's sends as a chart.
    b.goto(&format!("{base}/console/apps/shop")).await;
    assert_eq!(b.text("#sent-24h").await, "27");
    assert_eq!(b.text("#invalid-rate").await, "10.0%");
    assert_eq!(b.count("#sends-24h rect").await, 24);
    b.screenshot("overview-1440").await;
    b.resize(390, 844).await;
    assert!(!b.overflows().await, "the overview fits 390 px");
    b.screenshot("overview-390").await;
    b.resize(1440, 1000).await;

    // One recipient's history, found by their phone number as support would.
    rig.user("user-4", Some("+4915112345678")).await;
    b.click("#nav-messages").await;
    b.wait_url("/messages").await;
    b.click("#by option[value='phone']").await;
    b.type_into("#q", "+49 151 1234 5678").await;
    b.click("#find").await;
    b.wait_url("by=phone&q=%2B49+151+1234+5678").await;
    assert_eq!(b.count("#messages tbody tr a").await, 1);
    assert!(b.text("#messages tbody").await.contains("user-4"));
    b.click("#messages tbody a").await;
    b.wait_url("/messages/").await;
    let history = b.text("#history").await;
    assert!(
        history.contains("queued") || history.contains("sent"),
        "{history}"
    );
    assert_eq!(b.text("#message-status").await, "sent");
    b.screenshot("message-history").await;
    // A dead token's message says why.
    b.goto(&format!(
        "{base}/console/apps/shop/messages?by=user&q=user-9"
    ))
    .await;
    assert!(b.text("#messages tbody").await.contains("token_invalid"));
    db.finish().await;
}
