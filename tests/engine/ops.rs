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

storage_tests!(
    readiness_follows_the_database_and_the_scheduler,
    metrics_expose_the_engine_and_the_api,
);
