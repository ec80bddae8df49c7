//! What operators watch: metrics and readiness.

use super::*;

/// `/metrics` answers Prometheus text with the families ops read: deliveries by
/// status and provider, provider latency, retries by reason, invalidated tokens,
/// scheduler lag, lease takeovers, queue depth, rate-limit waits, API requests.
async fn metrics_expose_the_engine_and_the_api<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    rig.device(1, "UTC", Platform::Android, false).await;
    rig.device(2, "UTC", Platform::Ios, false).await;
    rig.device(3, "UTC", Platform::Android, true).await;
    rig.schedule("hello", "type = \"now\"").await;
    let engine = rig.engine("worker-a", 100);
    let (base, key) = rig.api(Some(&engine)).await;
    engine.run_until_idle().await.unwrap();
    // A push the provider turns away once: a retry.
    rig.sim.set_behaviour(Behaviour {
        fail_next: 1,
        fail_status: 503,
        ..Behaviour::default()
    });
    post(
        &base,
        &key,
        "/v1/push",
        serde_json::json!({"userIds": ["user-1"], "message": {"title": "t", "summary": "s"}}),
    )
    .await;
    engine.run_until_idle().await.unwrap();
    get(&base, &key, "/v1/messages").await;
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "# TYPE meridian_deliveries_total counter",
        "meridian_deliveries_total{status=\"sent\",provider=\"fcm\"}",
        "meridian_deliveries_total{status=\"token_invalid\",provider=\"fcm\"}",
        "meridian_deliveries_total{status=\"retry\",provider=",
        "meridian_provider_request_duration_seconds_bucket{provider=\"fcm\",outcome=\"accepted\"",
        "meridian_provider_request_duration_seconds_bucket{provider=\"apns\",outcome=",
        "meridian_retries_total{reason=",
        "meridian_tokens_invalidated_total{provider=\"fcm\"}",
        "meridian_scheduler_lag_seconds_bucket",
        "meridian_lease_takeovers_total",
        "meridian_queue_depth{kind=\"chunks_pending\"}",
        "meridian_queue_depth{kind=\"deliveries_retry\"}",
        "meridian_rate_limit_waits_total{provider=\"apns\"}",
        "meridian_api_requests_total{route=\"/v1/messages\",method=\"GET\",status=\"200\"}",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    // A gauge read from the shared database says so where dashboards read it.
    assert!(
        text.lines()
            .any(|l| l.starts_with("# HELP meridian_queue_depth") && l.contains("max, not sum")),
        "{text}"
    );
}

/// `/healthz` answers while the process does; `/readyz` only while the database
/// answers and the scheduler has turned recently, and names what is not ready.
async fn readiness_follows_the_database_and_the_scheduler<S: Store + Clone>(db: &TestDb<S>) {
    let rig = rig(db, at(2026, 11, 23, 10, 0)).await;
    let engine = Arc::new(rig.engine("worker-a", 100));
    let probe = engine.clone();
    let (base, _) = rig
        .api_probed(Some(&engine), Some(Arc::new(move || probe.ticking())))
        .await;
    let fetch = |path: &'static str| {
        let url = format!("{base}{path}");
        async move {
            let res = reqwest::get(url).await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    assert_eq!(fetch("/healthz").await, (200, "ok".to_owned()));
    let (status, body) = fetch("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("not_ready") && body.contains("has not turned yet"),
        "{body}"
    );
    let runner = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = fetch("/readyz").await;
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"status": "ready", "database": "ok", "scheduler": "ok"})
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    engine.stop();
    runner.await.unwrap();
    // A loop that stopped turning is no longer ready.
    rig.clock.advance(TimeDelta::minutes(10));
    let (status, body) = fetch("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("scheduler: the scheduler last turned 600 s ago"),
        "{body}"
    );
    // Nor is one whose database is gone; the process still answers.
    rig.store.close().await;
    let (status, body) = fetch("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database: "), "{body}");
    assert_eq!(fetch("/healthz").await.0, 200);
}

/// With the default retention (90 days), a campaign's messages and chunks are
/// kept for 90 days and deleted after, in batches, while its counts stay; the
/// deletes are counted in `/metrics`.
async fn retention_deletes_old_messages_and_keeps_the_counts<S: Store + Clone>(db: &TestDb<S>) {
    let start = at(2026, 8, 1, 10, 0);
    let rig = rig(db, start).await;
    for n in 1..=3 {
        rig.device(n, "UTC", Platform::Android, false).await;
    }
    let id = rig.schedule("hello", "type = \"now\"").await;
    let engine = rig.engine("worker-a", 2);
    engine.run_until_idle().await.unwrap();
    let counts = rig.store.delivery_count_by_status(id).await.unwrap();
    assert_eq!(counts.get("sent"), Some(&3), "{counts:?}");
    let (base, key) = rig.api(Some(&engine)).await;
    let messages = get(&base, &key, &format!("/v1/messages?campaign={id}")).await;
    assert_eq!(
        messages["messages"].as_array().map(Vec::len),
        Some(3),
        "{messages}"
    );
    // 6 days on: nothing is old enough.
    rig.clock.advance(TimeDelta::days(6));
    let report = engine.prune().await.unwrap();
    assert!(report.0.iter().all(|(_, n)| *n == 0), "{report:?}");
    // 89 days on: the done chunks are (7 days), the messages not yet.
    rig.clock.advance(TimeDelta::days(83));
    let report = engine.prune().await.unwrap();
    assert_eq!(report.get(RetentionKind::Chunks), 2, "{report:?}");
    assert_eq!(report.get(RetentionKind::Deliveries), 0, "{report:?}");
    // 91 days on: the messages go.
    rig.clock.advance(TimeDelta::days(2));
    let report = engine.prune().await.unwrap();
    assert_eq!(report.get(RetentionKind::Deliveries), 3, "{report:?}");
    let messages = get(&base, &key, &format!("/v1/messages?campaign={id}")).await;
    assert_eq!(
        messages["messages"].as_array().map(Vec::len),
        Some(0),
        "{messages}"
    );
    assert_eq!(
        rig.store.delivery_count_by_status(id).await.unwrap(),
        counts
    );
    let campaign = get(&base, &key, &format!("/v1/campaigns/{id}")).await;
    assert_eq!(campaign["deliveries"]["sent"], 3, "{campaign}");
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("meridian_retention_pruned_total{kind=\"deliveries\"}"),
        "{text}"
    );
}

storage_tests!(
    retention_deletes_old_messages_and_keeps_the_counts,
    readiness_follows_the_database_and_the_scheduler,
    metrics_expose_the_engine_and_the_api,
);
