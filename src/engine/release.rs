//! Releasing due slots and completing finished work (and planning the next
//! occurrence of recurring campaigns).

use std::sync::PoisonError;

use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::{Engine, EngineError};
use crate::domain::campaign::PlanSchedule;
use crate::domain::planner::{self, PlanRequest, ZoneCount};
use crate::store::{CampaignSlot, NewSlot, SlotCompletion, SlotRelease, Store};

/// Slots of one campaign occurrence released in one transaction.
const RELEASE_BATCH: usize = 32;

impl<S: Store> Engine<S> {
    /// Releases every due slot this instance wins; returns how many. The due slots
    /// of one campaign occurrence are released together (many zones are often due
    /// at the same instant), in one transaction.
    pub(super) async fn release_due(&self) -> Result<usize, EngineError> {
        let now = self.now();
        let mut released = 0;
        let mut due = self.store.slot_list_due(now, 1000).await?;
        due.sort_by(|a, b| {
            (a.campaign_id, &a.occurrence, a.fire_at).cmp(&(
                b.campaign_id,
                &b.occurrence,
                b.fire_at,
            ))
        });
        for group in
            due.chunk_by(|a, b| a.campaign_id == b.campaign_id && a.occurrence == b.occurrence)
        {
            // A bounded batch per campaign and pass keeps each transaction short, so
            // another campaign's slot that comes due meanwhile is released within
            // a batch's time, not after the whole of a large release.
            let group = &group[..group.len().min(RELEASE_BATCH)];
            let first = &group[0];
            let span = tracing::info_span!(
                "release",
                campaign_id = first.campaign_id,
                occurrence = %first.occurrence,
                zones = group.len(),
            );
            released += self.release_group(group, now).instrument(span).await?;
            self.beat();
        }
        Ok(released)
    }

    /// Releases one batch of due slots of one campaign occurrence; returns how many
    /// this instance won.
    async fn release_group(
        &self,
        group: &[CampaignSlot],
        now: DateTime<Utc>,
    ) -> Result<usize, EngineError> {
        let first = &group[0];
        let ctx = match self.campaign_ctx(first) {
            Ok(ctx) => ctx,
            Err(why) => {
                self.pause_unsendable(first.campaign_id, &why).await?;
                return Ok(0);
            }
        };
        let segment = ctx.segment();
        let won = self
            .store
            .slot_release(
                &SlotRelease {
                    slots: group,
                    segment: &segment,
                    chunk_size: self.settings.chunk_size,
                    worker: &self.settings.worker_id,
                },
                now,
            )
            .await?;
        let mut uncounted = Vec::new();
        for (slot_id, r) in &won {
            let Some(slot) = group.iter().find(|s| s.slot_id == *slot_id) else {
                continue;
            };
            tracing::info!(
                message = "Slot released.",
                zone = %slot.zone,
                recipients = r.counted,
                chunks = r.chunks,
                lag_ms = (now - slot.fire_at).num_milliseconds(),
            );
            if r.counted.is_none() {
                uncounted.push(slot.clone());
            }
        }
        if !uncounted.is_empty() {
            self.uncounted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(uncounted);
        }
        Ok(won.len())
    }

    /// Counts the releases cut into key ranges without reading their audience
    /// (after their first sends): who is in, who was left out and why.
    pub(super) async fn count_released(&self) -> Result<usize, EngineError> {
        let groups = std::mem::take(
            &mut *self
                .uncounted
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut counted = 0;
        for group in groups {
            let Some(first) = group.first() else { continue };
            let ctx = match self.campaign_ctx(first) {
                Ok(ctx) => ctx,
                Err(why) => {
                    self.pause_unsendable(first.campaign_id, &why).await?;
                    continue;
                }
            };
            for (slot_id, recipients) in self.store.slot_count(&group, &ctx.segment()).await? {
                tracing::info!(message = "Slot counted.", slot_id, recipients);
                counted += 1;
            }
        }
        Ok(counted)
    }

    /// Queues for counting the released slots a previous run left uncounted
    /// (it stopped between a release and its count).
    pub(super) async fn recount_uncounted(&self) -> Result<(), EngineError> {
        let slots = self.store.slot_list_uncounted().await?;
        let mut queue = self
            .uncounted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for group in
            slots.chunk_by(|a, b| a.campaign_id == b.campaign_id && a.occurrence == b.occurrence)
        {
            queue.push(group.to_vec());
        }
        Ok(())
    }

    /// Completes slots and campaigns with nothing left pending; a recurring
    /// campaign's slot is completed together with its zone's next occurrence.
    pub(super) async fn complete(&self) -> Result<(usize, usize), EngineError> {
        let due = self.store.slot_list_completable().await?;
        let mut completions = Vec::with_capacity(due.len());
        for (slot_id, campaign_id) in due {
            // Left pending when its next occurrence cannot be planned now: a
            // recurring zone must not end because of a config it was run under.
            let Some(next) = self.next_occurrence(slot_id, campaign_id).await? else {
                continue;
            };
            completions.push(SlotCompletion {
                slot_id,
                campaign_id,
                next,
            });
        }
        let slots = self.store.slot_complete(&completions, self.now()).await?;
        // Fold the counts of campaigns whose slots completed: their pages
        // then read a row per key, not one per statement that sent for them.
        let mut touched: Vec<i64> = completions.iter().map(|c| c.campaign_id).collect();
        touched.sort_unstable();
        touched.dedup();
        self.store.delivery_tally_compact(&touched).await?;
        let campaigns = self.store.campaign_complete_finished(self.now()).await?;
        for id in &campaigns {
            tracing::info!(message = "Campaign completed.", campaign_id = id);
        }
        Ok((slots.len(), campaigns.len()))
    }

    /// The next occurrence of a recurring campaign's slot, in the slot's zone
    /// (nothing for a campaign that does not recur, or whose schedule has
    /// ended); `None` when the campaign cannot be read as stored (it is paused).
    async fn next_occurrence(
        &self,
        slot_id: i64,
        campaign_id: i64,
    ) -> Result<Option<Vec<NewSlot>>, EngineError> {
        let Some(slot) = self.store.slot_get_info(slot_id).await? else {
            return Ok(Some(vec![]));
        };
        let ctx = match self.campaign_ctx(&slot) {
            Ok(ctx) => ctx,
            Err(why) => {
                self.pause_unsendable(campaign_id, &why).await?;
                return Ok(None);
            }
        };
        if !matches!(ctx.campaign.schedule, PlanSchedule::Cron { .. }) {
            return Ok(Some(vec![]));
        }
        // After this occurrence, and never in the past: occurrences missed while
        // no instance ran are skipped, not sent late.
        let after = slot.fire_at.max(self.now());
        let zones = [ZoneCount {
            zone: slot.zone.clone(),
            recipients: 0,
        }];
        let plan = match planner::plan(&PlanRequest {
            schedule: &ctx.campaign.schedule,
            quiet_hours: ctx.campaign.quiet_hours,
            zones: &zones,
            default_zone: ctx.app.timezone(),
            now: after,
        }) {
            Ok(p) => p,
            // The schedule's last occurrence has been sent: the zone is done.
            Err(planner::PlanError::NoOccurrence { .. }) => return Ok(Some(vec![])),
            Err(error) => {
                tracing::warn!(message = "No next occurrence planned.", campaign_id, %error);
                return Ok(Some(vec![]));
            }
        };
        Ok(Some(
            plan.slots
                .iter()
                .map(|s| NewSlot {
                    occurrence: s.occurrence.clone(),
                    zone: slot.zone.clone(),
                    fire_at: s.fire_at,
                    disposition: s.disposition,
                    planned_count: 0,
                })
                .collect(),
        ))
    }
}
