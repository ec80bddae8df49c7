//! Releasing due slots and completing finished work (and planning the next
//! occurrence of recurring campaigns).

use super::{Engine, EngineError};
use crate::campaign::PlanSchedule;
use crate::planner::{self, PlanRequest, ZoneCount};
use crate::store::{NewSlot, Store};

impl<S: Store> Engine<S> {
    /// Releases every due slot this instance wins; returns how many.
    pub(super) async fn release_due(&self) -> Result<usize, EngineError> {
        let now = self.now();
        let mut released = 0;
        for slot in self.store.due_slots(now, 1000).await? {
            let Some(ctx) = self.campaign_ctx(slot.campaign_id, &slot.definition.0) else {
                continue;
            };
            let segment = ctx.segment();
            let won = self
                .store
                .release_slot(
                    &slot,
                    &segment,
                    self.settings.chunk_size,
                    &self.settings.worker_id,
                    now,
                )
                .await?;
            if let Some(r) = won {
                released += 1;
                tracing::info!(
                    message = "Slot released.",
                    campaign_id = slot.campaign_id,
                    zone = %slot.zone,
                    occurrence = %slot.occurrence,
                    recipients = r.recipients,
                    chunks = r.chunks,
                    lag_ms = (now - slot.fire_at).num_milliseconds(),
                );
            }
        }
        Ok(released)
    }

    /// Completes slots and campaigns with nothing left pending; a recurring
    /// campaign gets the next occurrence of each completed slot's zone first.
    pub(super) async fn complete(&self) -> Result<(usize, usize), EngineError> {
        let slots = self.store.complete_slots().await?;
        for (slot_id, campaign_id) in &slots {
            self.plan_next_occurrence(*slot_id, *campaign_id).await?;
        }
        let campaigns = self.store.complete_campaigns(self.now()).await?;
        for id in &campaigns {
            tracing::info!(message = "Campaign completed.", campaign_id = id);
        }
        Ok((slots.len(), campaigns.len()))
    }

    async fn plan_next_occurrence(
        &self,
        slot_id: i64,
        campaign_id: i64,
    ) -> Result<(), EngineError> {
        let Some(slot) = self.store.slot_info(slot_id).await? else {
            return Ok(());
        };
        let Some(ctx) = self.campaign_ctx(campaign_id, &slot.definition.0) else {
            return Ok(());
        };
        if !matches!(ctx.campaign.schedule, PlanSchedule::Cron { .. }) {
            return Ok(());
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
            Err(error) => {
                tracing::warn!(message = "No next occurrence planned.", campaign_id, %error);
                return Ok(());
            }
        };
        let next: Vec<NewSlot> = plan
            .slots
            .iter()
            .map(|s| NewSlot {
                occurrence: s.occurrence.clone(),
                zone: slot.zone.clone(),
                fire_at: s.fire_at,
                disposition: s.disposition,
                planned_count: 0,
            })
            .collect();
        if !next.is_empty() {
            self.store.add_slots(campaign_id, &next, self.now()).await?;
        }
        Ok(())
    }
}
