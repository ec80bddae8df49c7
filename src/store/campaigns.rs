//! Campaigns and their planned slots: saving, reading, state changes.

use std::future::Future;

use chrono::{DateTime, Utc};

use sqlx::{ColumnIndex, Database, Executor, IntoArguments};

use super::dialect::{Arg, Column, Dialect, RowsAffected};
use super::sql::SqlStore;
use super::StoreError;
use crate::domain::ids::DeliveryId;
use crate::domain::planner::Disposition;
use crate::domain::state::CampaignState;
use crate::domain::state::SlotState;
use serde_json::Value;
use sqlx::types::Json;

pub(super) const CAMPAIGN_COLUMNS: &str =
    "id, app_id, key, name, definition, state, revision, tzdata_version, \
    created_at, updated_at, scheduled_at";

pub(super) const SLOT_COLUMNS: &str =
    "id, campaign_id, occurrence, zone, fire_at, disposition, state, \
    planned_count, released_at, first_sent_at";

/// A slot as planned, to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSlot {
    pub occurrence: String,
    pub zone: String,
    pub fire_at: DateTime<Utc>,
    pub disposition: Disposition,
    pub planned_count: u64,
}

impl NewSlot {
    /// The slots as a JSON array for one set-based INSERT; `time` writes `fire_at`
    /// the way the backend compares it.
    pub(super) fn json_rows(slots: &[NewSlot], time: impl Fn(&NewSlot) -> Value) -> Value {
        slots
            .iter()
            .map(|s| {
                serde_json::json!({
                    "occurrence": s.occurrence, "zone": s.zone, "fire_at": time(s),
                    "disposition": s.disposition.as_str(), "state": s.state().to_string(),
                    "planned_count": s.planned_count,
                })
            })
            .collect()
    }

    fn state(&self) -> SlotState {
        if self.disposition == Disposition::Skipped {
            SlotState::Skipped
        } else {
            SlotState::Pending
        }
    }
}

/// A campaign definition to create or replace, with its plan when scheduled.
#[derive(Debug, Clone)]
pub struct CampaignSave<'a> {
    pub app_id: &'a str,
    pub key: &'a str,
    pub name: &'a str,
    pub definition: &'a Value,
    /// `Draft` or `Scheduled`.
    pub state: CampaignState,
    pub slots: &'a [NewSlot],
    pub tzdata_version: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CampaignRecord {
    pub id: i64,
    pub app_id: String,
    pub key: String,
    pub name: String,
    pub definition: Json<Value>,
    #[sqlx(try_from = "String")]
    pub state: CampaignState,
    pub revision: i32,
    pub tzdata_version: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlotRecord {
    pub id: i64,
    pub campaign_id: i64,
    pub occurrence: String,
    pub zone: String,
    pub fire_at: DateTime<Utc>,
    pub disposition: String,
    #[sqlx(try_from = "String")]
    pub state: SlotState,
    pub planned_count: i64,
    pub released_at: Option<DateTime<Utc>>,
    /// When the slot's first send left (its lag is this minus `fire_at`).
    pub first_sent_at: Option<DateTime<Utc>>,
}

/// How far one slot of a running campaign got.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlotProgress {
    pub campaign_id: i64,
    #[sqlx(try_from = "String")]
    pub state: SlotState,
    pub planned_count: i64,
    /// Its audience's chunks sent, and all of them (none before release).
    pub chunks_done: i64,
    pub chunks: i64,
}

impl SlotProgress {
    /// The recipients it has settled, counting a released slot by its chunks.
    pub fn settled(&self) -> f64 {
        match self.state {
            SlotState::Completed => self.planned_count as f64,
            SlotState::Released if self.chunks > 0 => {
                self.planned_count as f64 * self.chunks_done as f64 / self.chunks as f64
            }
            _ => 0.0,
        }
    }

    /// Whether it counts towards the campaign's whole (a skipped or
    /// cancelled slot sends nothing).
    pub fn counts(&self) -> bool {
        !matches!(self.state, SlotState::Skipped | SlotState::Cancelled)
    }
}

/// Which of an app's campaigns to list, newest first.
#[derive(Debug, Clone, Copy)]
pub struct CampaignFilter<'a> {
    pub state: Option<CampaignState>,
    /// Only campaigns whose key or name contains this (ASCII case ignored).
    pub search: Option<&'a str>,
    /// Only campaigns with a smaller id (the cursor of the previous page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// A `LIKE` pattern matching `needle` anywhere, its `%`, `_` and `\` escaped
/// (the statement says `ESCAPE '\'`).
fn contains_pattern(needle: &str) -> String {
    let mut p = String::with_capacity(needle.len() + 2);
    p.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

pub trait CampaignStore: Send + Sync {
    /// Creates or replaces a campaign and its planned slots in one transaction.
    /// Refuses a campaign that is no longer editable; a definition and state equal
    /// to what is stored changes nothing.
    fn campaign_save(
        &self,
        campaign: &CampaignSave<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(CampaignRecord, SaveOutcome), StoreError>> + Send;

    fn campaign_get(
        &self,
        app_id: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<CampaignRecord>, StoreError>> + Send;

    /// Campaigns with this key in any app (a key is unique per app).
    fn campaign_list_by_key(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Vec<CampaignRecord>, StoreError>> + Send;

    fn campaign_list(
        &self,
        app_id: Option<&str>,
    ) -> impl Future<Output = Result<Vec<CampaignRecord>, StoreError>> + Send;

    /// One of an app's campaigns by id; `None` for an unknown id or another app's.
    fn campaign_get_by_id(
        &self,
        app_id: &str,
        id: i64,
    ) -> impl Future<Output = Result<Option<CampaignRecord>, StoreError>> + Send;

    /// A page of an app's campaigns, newest first.
    fn campaign_list_page(
        &self,
        app_id: &str,
        filter: &CampaignFilter<'_>,
    ) -> impl Future<Output = Result<Vec<CampaignRecord>, StoreError>> + Send;

    fn slot_list(
        &self,
        campaign_id: i64,
    ) -> impl Future<Output = Result<Vec<SlotRecord>, StoreError>> + Send;

    /// The next pending send of each of an app's campaigns that has one.
    fn campaign_next_send_list(
        &self,
        app_id: &str,
    ) -> impl Future<Output = Result<std::collections::HashMap<i64, DateTime<Utc>>, StoreError>> + Send;

    /// Each slot with recipients of the app's running and paused campaigns:
    /// how far it got, for the campaign list's progress bars. Reads slots and
    /// their chunks, never the deliveries.
    fn campaign_progress_list(
        &self,
        app_id: &str,
    ) -> impl Future<Output = Result<Vec<SlotProgress>, StoreError>> + Send;

    /// Moves a campaign from `from` to `to`, fenced by `from`.
    fn campaign_set_state(
        &self,
        campaign_id: i64,
        from: CampaignState,
        to: CampaignState,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The campaign state machine as the database enforces it.
    fn campaign_transition_list(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;

    /// Cancels a campaign: pending slots, chunks and retries become cancelled
    /// (with history); sends in flight finish. Returns the deliveries cancelled.
    fn campaign_cancel(
        &self,
        campaign_id: i64,
        from: CampaignState,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Completes running campaigns with no slot and no delivery left pending.
    fn campaign_complete_finished(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// Per-slot counts: (slot id, kind, n), where kind is `recipients` or
    /// `excluded:<reason>`: opted_out, segment, invalid_token, no_device (counted at
    /// release) and capped (suppressed deliveries, counted as they are decided).
    fn slot_count_by_state(
        &self,
        campaign_id: i64,
    ) -> impl Future<Output = Result<Vec<(i64, String, i64)>, StoreError>> + Send;

    /// The counts made at release only (`recipients`, `excluded:<reason>`),
    /// without the capped deliveries, for a caller that counts deliveries itself.
    fn slot_count_list(
        &self,
        campaign_id: i64,
    ) -> impl Future<Output = Result<Vec<(i64, String, i64)>, StoreError>> + Send;
}

impl<D: Dialect> CampaignStore for SqlStore<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'r> &'r str: ColumnIndex<<D::Db as Database>::Row> + Column<'r, D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
    for<'r> i64: Column<'r, D::Db>,
    for<'r> i32: Column<'r, D::Db>,
    for<'r> i16: Column<'r, D::Db>,
    for<'r> bool: Column<'r, D::Db>,
    for<'r> String: Column<'r, D::Db>,
    for<'r> DateTime<Utc>: Column<'r, D::Db>,
    for<'r> Json<Value>: Column<'r, D::Db>,
    for<'q> Json<&'q Value>: Arg<'q, D::Db>,
    for<'q> Option<Json<&'q Value>>: Arg<'q, D::Db>,
    for<'q> Option<&'q str>: Arg<'q, D::Db>,
    for<'q> Option<i64>: Arg<'q, D::Db>,
    for<'q> Option<bool>: Arg<'q, D::Db>,
    for<'q> Option<DateTime<Utc>>: Arg<'q, D::Db>,
{
    async fn campaign_save(
        &self,
        c: &super::CampaignSave<'_>,
        now: DateTime<Utc>,
    ) -> Result<(super::CampaignRecord, super::SaveOutcome), StoreError> {
        use super::{CampaignRecord, SaveOutcome, StoreError};
        use crate::domain::state::{CampaignState, StateMachine};
        let scheduled_at = (c.state == CampaignState::Scheduled).then_some(now);
        let mut tx = self.begin_write().await?;
        let select = format!(
            "SELECT {} FROM campaigns WHERE app_id = $1 AND key = $2{}",
            CAMPAIGN_COLUMNS,
            D::FOR_UPDATE
        );
        let existing: Option<CampaignRecord> = sqlx::query_as(&select)
            .bind(c.app_id)
            .bind(c.key)
            .fetch_optional(&mut *tx)
            .await?;
        let (id, outcome) = match existing {
            // Past the editable states the file's status is history, not a request.
            Some(e)
                if e.definition.0 == *c.definition
                    && e.name == c.name
                    && (e.state == c.state || !e.state.is_editable()) =>
            {
                tx.rollback().await?;
                return Ok((e, SaveOutcome::Unchanged));
            }
            Some(e) if !e.state.is_editable() => {
                return Err(StoreError::NotEditable {
                    key: c.key.to_owned(),
                    state: e.state,
                })
            }
            Some(e) => {
                e.state.check_transition(c.state).or_else(|err| {
                    if e.state == c.state {
                        Ok(())
                    } else {
                        Err(err)
                    }
                })?;
                let done = sqlx::query(
                    "UPDATE campaigns SET name = $2, definition = $3, state = $4, revision = revision + 1, \
                     tzdata_version = $5, updated_at = $6, scheduled_at = $7 WHERE id = $1 AND state = $8",
                )
                .bind(e.id)
                .bind(c.name)
                .bind(sqlx::types::Json(c.definition))
                .bind(c.state.as_str())
                .bind(c.tzdata_version)
                .bind(now)
                .bind(scheduled_at)
                .bind(e.state.as_str())
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::Conflict {
                        key: c.key.to_owned(),
                    });
                }
                sqlx::query("DELETE FROM slots WHERE campaign_id = $1")
                    .bind(e.id)
                    .execute(&mut *tx)
                    .await?;
                (e.id, SaveOutcome::Updated)
            }
            None => {
                // Another caller creating the same key at the same moment wins
                // the unique key; this one is told to try again, not a storage error.
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO campaigns (app_id, key, name, definition, state, tzdata_version, created_at, updated_at, scheduled_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT (app_id, key) DO NOTHING RETURNING id",
                )
                .bind(c.app_id)
                .bind(c.key)
                .bind(c.name)
                .bind(sqlx::types::Json(c.definition))
                .bind(c.state.as_str())
                .bind(c.tzdata_version)
                .bind(now)
                .bind(scheduled_at)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = id else {
                    return Err(StoreError::Conflict {
                        key: c.key.to_owned(),
                    });
                };
                (id, SaveOutcome::Created)
            }
        };
        Self::insert_slots(&mut tx, id, c.slots, now).await?;
        let select = format!("SELECT {} FROM campaigns WHERE id = $1", CAMPAIGN_COLUMNS);
        let record: CampaignRecord = sqlx::query_as(&select).bind(id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok((record, outcome))
    }

    async fn campaign_get(
        &self,
        app_id: &str,
        key: &str,
    ) -> Result<Option<super::CampaignRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM campaigns WHERE app_id = $1 AND key = $2",
            CAMPAIGN_COLUMNS
        );
        Ok(sqlx::query_as(&sql)
            .bind(app_id)
            .bind(key)
            .fetch_optional(&self.read)
            .await?)
    }

    async fn campaign_list_by_key(
        &self,
        key: &str,
    ) -> Result<Vec<super::CampaignRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM campaigns WHERE key = $1 ORDER BY app_id",
            CAMPAIGN_COLUMNS
        );
        Ok(sqlx::query_as(&sql).bind(key).fetch_all(&self.read).await?)
    }

    async fn campaign_list(
        &self,
        app_id: Option<&str>,
    ) -> Result<Vec<super::CampaignRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM campaigns WHERE $1 IS NULL OR app_id = $1 ORDER BY app_id, key",
            CAMPAIGN_COLUMNS
        );
        Ok(sqlx::query_as(&sql)
            .bind(app_id)
            .fetch_all(&self.read)
            .await?)
    }

    async fn campaign_get_by_id(
        &self,
        app_id: &str,
        id: i64,
    ) -> Result<Option<super::CampaignRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM campaigns WHERE id = $1 AND app_id = $2",
            CAMPAIGN_COLUMNS
        );
        Ok(sqlx::query_as(&sql)
            .bind(id)
            .bind(app_id)
            .fetch_optional(&self.read)
            .await?)
    }

    async fn campaign_list_page(
        &self,
        app_id: &str,
        f: &super::CampaignFilter<'_>,
    ) -> Result<Vec<super::CampaignRecord>, StoreError> {
        use crate::domain::state::StateMachine;
        let sql = format!(
            "SELECT {} FROM campaigns WHERE app_id = $1 AND ($2 IS NULL OR state = $2) \
             AND ($3 IS NULL OR id < $3) \
             AND ($5 IS NULL OR lower(key) LIKE $5 ESCAPE '\\' OR lower(name) LIKE $5 ESCAPE '\\') \
             ORDER BY id DESC LIMIT $4",
            CAMPAIGN_COLUMNS
        );
        let pattern = f.search.map(contains_pattern);
        Ok(sqlx::query_as(&sql)
            .bind(app_id)
            .bind(f.state.map(|s| s.as_str()))
            .bind(f.before_id)
            .bind(f.limit)
            .bind(pattern.as_deref())
            .fetch_all(&self.read)
            .await?)
    }

    async fn campaign_progress_list(&self, app_id: &str) -> Result<Vec<SlotProgress>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.campaign_id, s.state, s.planned_count, \
               (SELECT COUNT(*) FROM slot_chunks c WHERE c.slot_id = s.id AND c.state = 'done') AS chunks_done, \
               (SELECT COUNT(*) FROM slot_chunks c WHERE c.slot_id = s.id) AS chunks \
             FROM slots s JOIN campaigns k ON k.id = s.campaign_id \
             WHERE k.app_id = $1 AND k.state IN ('running', 'paused') AND s.planned_count > 0",
        )
        .bind(app_id)
        .fetch_all(&self.read)
        .await?)
    }

    async fn campaign_next_send_list(
        &self,
        app_id: &str,
    ) -> Result<std::collections::HashMap<i64, DateTime<Utc>>, StoreError> {
        let rows: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT s.campaign_id, min(s.fire_at) FROM slots s JOIN campaigns k ON k.id = s.campaign_id \
             WHERE k.app_id = $1 AND s.state = 'pending' GROUP BY s.campaign_id",
        )
        .bind(app_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn slot_list(&self, campaign_id: i64) -> Result<Vec<super::SlotRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM slots WHERE campaign_id = $1 ORDER BY fire_at, zone",
            SLOT_COLUMNS
        );
        Ok(sqlx::query_as(&sql)
            .bind(campaign_id)
            .fetch_all(&self.read)
            .await?)
    }

    async fn campaign_set_state(
        &self,
        campaign_id: i64,
        from: crate::domain::state::CampaignState,
        to: crate::domain::state::CampaignState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use crate::domain::state::StateMachine;
        from.check_transition(to)?;
        let done = sqlx::query(
            "UPDATE campaigns SET state = $3, updated_at = $4, \
             completed_at = CASE WHEN $3 = 'completed' THEN $4 ELSE completed_at END \
             WHERE id = $1 AND state = $2",
        )
        .bind(campaign_id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(now)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                key: format!("#{campaign_id}"),
            })
        }
    }

    async fn campaign_transition_list(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT from_state, to_state FROM campaign_transitions ORDER BY from_state, to_state",
        )
        .fetch_all(&self.read)
        .await?)
    }

    async fn campaign_cancel(
        &self,
        campaign_id: i64,
        from: crate::domain::state::CampaignState,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        use crate::domain::state::{CampaignState, StateMachine};
        from.check_transition(CampaignState::Cancelled)?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE campaigns SET state = 'cancelled', updated_at = $3 WHERE id = $1 AND state = $2")
            .bind(campaign_id)
            .bind(from.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                key: format!("#{campaign_id}"),
            });
        }
        sqlx::query("UPDATE slots SET state = 'cancelled' WHERE campaign_id = $1 AND state IN ('pending', 'released')")
            .bind(campaign_id)
            .execute(&mut *tx)
            .await?;
        // Chunks being sent finish; the ones not started never will be.
        sqlx::query("UPDATE slot_chunks SET state = 'cancelled', updated_at = $2 WHERE campaign_id = $1 AND state = 'pending'")
            .bind(campaign_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let cancelled: Vec<DeliveryId> = sqlx::query_scalar(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = $2 \
             WHERE campaign_id = $1 AND status IN ('queued', 'retry') RETURNING id",
        )
        .bind(campaign_id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let events: Vec<(DeliveryId, String, i32, Option<String>)> = cancelled
            .iter()
            .map(|id| {
                (
                    *id,
                    "cancelled".to_owned(),
                    0,
                    Some("campaign cancelled".to_owned()),
                )
            })
            .collect();
        Self::insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(cancelled.len() as u64)
    }

    async fn campaign_complete_finished(&self, now: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        // A campaign whose every slot was skipped (its time had passed in every
        // zone) never releases anything: it starts and completes here, rather
        // than staying `scheduled` for good. (Two steps: the state table has
        // no `scheduled → completed`.)
        sqlx::query(
            "UPDATE campaigns SET state = 'running', updated_at = $1 WHERE state = 'scheduled' \
             AND EXISTS (SELECT 1 FROM slots s WHERE s.campaign_id = campaigns.id) \
             AND NOT EXISTS (SELECT 1 FROM slots s WHERE s.campaign_id = campaigns.id AND s.state IN ('pending', 'released'))",
        )
        .persistent(false)
        .bind(now)
        .execute(&self.write)
        .await?;
        // Polled while the tables under it grow: planned afresh at every call.
        Ok(sqlx::query_scalar(
            "UPDATE campaigns SET state = 'completed', completed_at = $1, updated_at = $1 WHERE state = 'running' \
             AND NOT EXISTS (SELECT 1 FROM slots s WHERE s.campaign_id = campaigns.id AND s.state IN ('pending', 'released')) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.campaign_id = campaigns.id AND d.status IN ('queued', 'leased', 'retry')) \
             RETURNING id",
        )
        .persistent(false)
        .bind(now)
        .fetch_all(&self.write)
        .await?)
    }

    async fn slot_count_list(
        &self,
        campaign_id: i64,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT c.slot_id, c.kind, c.n FROM slot_counts c JOIN slots s ON s.id = c.slot_id \
             WHERE s.campaign_id = $1 ORDER BY c.slot_id, c.kind",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?)
    }

    async fn slot_count_by_state(
        &self,
        campaign_id: i64,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT slot_id, kind, n FROM ( \
               SELECT c.slot_id, c.kind, c.n FROM slot_counts c JOIN slots s ON s.id = c.slot_id \
               WHERE s.campaign_id = $1 \
               UNION ALL \
               SELECT slot_id, 'excluded:capped', CAST(SUM(n) AS BIGINT) FROM delivery_tallies \
               WHERE campaign_id = $1 AND status = 'suppressed' GROUP BY slot_id HAVING SUM(n) <> 0 \
             ) t ORDER BY slot_id, kind",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_slot_counts_by_its_chunks_and_a_skipped_one_not_at_all() {
        let slot = |state, chunks_done, chunks| SlotProgress {
            campaign_id: 1,
            state,
            planned_count: 1000,
            chunks_done,
            chunks,
        };
        assert_eq!(slot(SlotState::Released, 3, 4).settled(), 750.0);
        assert_eq!(slot(SlotState::Released, 0, 0).settled(), 0.0);
        assert_eq!(slot(SlotState::Completed, 4, 4).settled(), 1000.0);
        assert_eq!(slot(SlotState::Pending, 0, 0).settled(), 0.0);
        assert!(!slot(SlotState::Skipped, 0, 0).counts());
        assert!(slot(SlotState::Pending, 0, 0).counts());
    }
}
