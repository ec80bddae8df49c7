//! Saving campaigns and their slots: idempotent, locked once running, safe
//! against a concurrent writer.

use super::*;

fn slot(zone: &str, fire_at: DateTime<Utc>, disposition: Disposition, n: u64) -> NewSlot {
    NewSlot {
        occurrence: "2026-12-01T09:00".into(),
        zone: zone.into(),
        fire_at,
        disposition,
        planned_count: n,
    }
}

async fn campaigns_save_idempotently_and_lock_when_running<S: Store>(db: &TestDb<S>) {
    let s = &db.store;
    app(s, "shop").await;
    let def = json!({"key": "k", "message": {"title": "t"}});
    let fire =
        Utc.with_ymd_and_hms(2026, 12, 1, 3, 15, 0).unwrap() + TimeDelta::microseconds(123_456);
    let slots = vec![
        slot("Asia/Kathmandu", fire, Disposition::OnTime, 3),
        slot(
            "Asia/Tokyo",
            fire - TimeDelta::hours(3),
            Disposition::Skipped,
            2,
        ),
    ];
    let save = CampaignSave {
        app_id: "shop",
        key: "k",
        name: "K",
        definition: &def,
        state: CampaignState::Scheduled,
        slots: &slots,
        tzdata_version: Some("2025b"),
    };
    let (c, outcome) = s.campaign_save(&save, now()).await.unwrap();
    assert_eq!(outcome, SaveOutcome::Created);
    assert_eq!(c.state, CampaignState::Scheduled);
    assert_eq!(c.revision, 1);
    assert_eq!(c.tzdata_version.as_deref(), Some("2025b"));
    let stored = s.slot_list(c.id).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].zone, "Asia/Tokyo");
    assert_eq!(stored[0].state, SlotState::Skipped);
    assert_eq!(stored[1].fire_at, fire, "fire_at keeps microseconds");
    assert_eq!(stored[1].state, SlotState::Pending);
    assert_eq!(stored[1].planned_count, 3);

    // The same definition again changes nothing.
    let (same, outcome) = s
        .campaign_save(&save, now() + TimeDelta::minutes(1))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Unchanged);
    assert_eq!(same, c);

    // An edit replaces the plan and bumps the revision.
    let def2 = json!({"key": "k", "message": {"title": "t2"}});
    let slots2 = vec![slot("Europe/Berlin", fire, Disposition::OnTime, 7)];
    let (edited, outcome) = s
        .campaign_save(
            &CampaignSave {
                definition: &def2,
                slots: &slots2,
                ..save.clone()
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Updated);
    assert_eq!(edited.id, c.id);
    assert_eq!(edited.revision, 2);
    assert_eq!(edited.definition.0, def2);
    let stored = s.slot_list(c.id).await.unwrap();
    assert_eq!(
        stored.iter().map(|s| s.zone.as_str()).collect::<Vec<_>>(),
        ["Europe/Berlin"]
    );

    // Back to draft drops the plan.
    let (draft, _) = s
        .campaign_save(
            &CampaignSave {
                state: CampaignState::Draft,
                slots: &[],
                ..save.clone()
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(draft.state, CampaignState::Draft);
    assert!(s.slot_list(c.id).await.unwrap().is_empty());

    // Once running, edits are refused and nothing changes.
    s.campaign_save(&save, now()).await.unwrap();
    s.campaign_set_state(
        c.id,
        CampaignState::Scheduled,
        CampaignState::Running,
        now(),
    )
    .await
    .unwrap();
    let err = s
        .campaign_save(
            &CampaignSave {
                definition: &def2,
                ..save.clone()
            },
            now(),
        )
        .await;
    assert!(
        matches!(
            err,
            Err(StoreError::NotEditable {
                state: CampaignState::Running,
                ..
            })
        ),
        "{err:?}"
    );
    let after = s.campaign_get("shop", "k").await.unwrap().unwrap();
    assert_eq!(after.definition.0, def);
    assert_eq!(after.state, CampaignState::Running);

    // Transitions are fenced by the expected state and checked against the table.
    let stale = s
        .campaign_set_state(c.id, CampaignState::Scheduled, CampaignState::Paused, now())
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let illegal = s
        .campaign_set_state(c.id, CampaignState::Running, CampaignState::Draft, now())
        .await;
    assert!(matches!(illegal, Err(StoreError::State(_))), "{illegal:?}");

    assert_eq!(s.campaign_list(Some("shop")).await.unwrap().len(), 1);
    assert_eq!(s.campaign_list(Some("other")).await.unwrap().len(), 0);
    assert_eq!(s.campaign_list_by_key("k").await.unwrap().len(), 1);
}

/// Draft campaign `k` of app `shop`, with no slots.
fn draft_k(def: &serde_json::Value) -> CampaignSave<'_> {
    CampaignSave {
        app_id: "shop",
        key: "k",
        name: "K",
        definition: def,
        state: CampaignState::Draft,
        slots: &[],
        tzdata_version: None,
    }
}

/// Saves `save` while another connection holds a write: the save must still be
/// waiting after 300 ms; then `release` ends the other's write.
async fn save_while_held<S: Store>(
    s: &S,
    save: &CampaignSave<'_>,
    release: impl std::future::Future<Output = ()>,
) -> Result<(meridian::store::CampaignRecord, SaveOutcome), StoreError> {
    let saving = s.campaign_save(save, now());
    tokio::pin!(saving);
    let waited = tokio::time::timeout(std::time::Duration::from_millis(300), &mut saving).await;
    assert!(
        waited.is_err(),
        "the save waits for the other writer: {waited:?}"
    );
    release.await;
    saving.await
}

/// Two callers create one campaign key at the same moment (two instances on one
/// Postgres): the one that loses the unique key gets `Conflict` ("try again",
/// a 409 from the API), never a storage error, and trying again finds the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_created_twice_at_once_is_a_conflict_on_postgres() {
    use sqlx::Connection;
    let Some(db) = common::postgres().await else {
        return;
    };
    common::run_and_finish(db, |db| {
        Box::pin(async move {
            let s = &db.store;
            app(s, "shop").await;
            // The other caller's row: inserted, not yet committed.
            let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut other).await.unwrap();
            sqlx::query(
                "INSERT INTO campaigns (app_id, key, name, definition, state, created_at, updated_at) \
                 VALUES ('shop', 'k', 'other', '{}', 'draft', now(), now())",
            )
            .execute(&mut other)
            .await
            .unwrap();
            let def = json!({"key": "k", "message": {"title": "t"}});
            let save = draft_k(&def);
            let commit = async {
                sqlx::query("COMMIT").execute(&mut other).await.unwrap();
            };
            let lost = save_while_held(s, &save, commit).await;
            assert!(
                matches!(lost, Err(StoreError::Conflict { .. })),
                "{lost:?}"
            );
            let (again, outcome) = s.campaign_save(&save, now()).await.unwrap();
            assert_eq!(outcome, SaveOutcome::Updated);
            assert_eq!(again.name, "K");
            assert_eq!(s.campaign_list_by_key("k").await.unwrap().len(), 1);
        })
    })
    .await;
}

/// Another process writing the same SQLite file (`meridian campaign apply` or
/// `pause` beside the daemon) holds the write lock while the store saves: the
/// store waits for it (busy timeout) and then saves, instead of failing because
/// what it read before the other's commit is stale. Write transactions begin
/// IMMEDIATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_beside_another_sqlite_process_waits_its_turn() {
    use sqlx::Connection;
    let db = common::sqlite().await;
    common::run_and_finish(db, |db| {
        Box::pin(async move {
            let s = &db.store;
            app(s, "shop").await;
            let mut other = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
            sqlx::query(
                "INSERT INTO campaigns (app_id, key, name, definition, state, created_at, updated_at) \
                 VALUES ('shop', 'other', 'other', '{}', 'draft', '2026-11-23T10:00:00+00:00', '2026-11-23T10:00:00+00:00')",
            )
            .execute(&mut other)
            .await
            .unwrap();
            let def = json!({"key": "k", "message": {"title": "t"}});
            let commit = async {
                sqlx::query("COMMIT").execute(&mut other).await.unwrap();
            };
            let (saved, outcome) = save_while_held(s, &draft_k(&def), commit).await.unwrap();
            assert_eq!(outcome, SaveOutcome::Created);
            assert_eq!(saved.key, "k");
            assert_eq!(s.campaign_list_by_key("other").await.unwrap().len(), 1);
        })
    })
    .await;
}

storage_tests!(campaigns_save_idempotently_and_lock_when_running,);
