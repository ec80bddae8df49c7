//! Leasing work, sending it, and writing outcomes back in batches.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::StreamExt;
use tracing::Instrument;

use super::outcome::{decide, Decision};
use super::{Engine, EngineError};
use crate::domain::campaign::Message;
use crate::domain::state::{DeliveryStatus, DeviceState};
use crate::provider::app::Push;
use crate::provider::Outcome;
use crate::store::{
    ChunkWrite, DeliveryUpdate, LeaseTerms, LeasedChunk, LeasedDelivery, NewDelivery, Store,
    StoreError,
};

impl<S: Store> Engine<S> {
    /// Leases and sends delivery rows, then chunks; returns (rows, chunks, outcomes recorded).
    pub(super) async fn dispatch(&self) -> Result<(usize, usize, usize), EngineError> {
        let (rows, from_rows) = self.dispatch_rows().await?;
        let (chunks, from_chunks) = self.dispatch_chunks().await?;
        Ok((rows, chunks, from_rows + from_chunks))
    }

    /// Leases and sends one batch of delivery rows (transactional pushes first, then
    /// retries due); returns (rows leased, outcomes recorded).
    pub(super) async fn dispatch_rows(&self) -> Result<(usize, usize), EngineError> {
        self.receipts_ready().await?;
        let now = self.now();
        let rows = self
            .store
            .delivery_lease(
                &LeaseTerms {
                    owner: &self.settings.worker_id,
                    until: now + self.settings.lease,
                    limit: 500,
                },
                now,
            )
            .await?;
        let leased = rows.len();
        if leased == 0 {
            return Ok((0, 0));
        }
        let span = tracing::info_span!("rows", rows = leased);
        Ok((leased, self.send_rows(rows).instrument(span).await?))
    }

    /// Leases and sends chunks of released slots until none is left; returns
    /// (chunks leased, outcomes recorded).
    pub(super) async fn dispatch_chunks(&self) -> Result<(usize, usize), EngineError> {
        self.receipts_ready().await?;
        let worker = &self.settings.worker_id;
        let mut recorded = 0;
        // Keep `chunks_in_flight` chunks going: lease another as soon as one finishes,
        // so one slow chunk never holds the others back. A chunk that fails stops new
        // leases but not its siblings: they finish and are recorded, and the pass
        // reports the first failure afterwards (dropping them would strand their
        // leases until they expire).
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut leased = 0;
        let mut exhausted = false;
        let mut failed: Option<EngineError> = None;
        let settle = |r: Result<usize, EngineError>,
                      recorded: &mut usize,
                      failed: &mut Option<EngineError>| match r {
            Ok(n) => *recorded += n,
            Err(e) => {
                failed.get_or_insert(e);
            }
        };
        loop {
            if !exhausted
                && failed.is_none()
                && !self.is_stopping()
                && in_flight.len() < self.settings.chunks_in_flight + READ_AHEAD
            {
                let now = self.now();
                let want = (self.settings.chunks_in_flight + READ_AHEAD - in_flight.len()) as i64;
                let terms = LeaseTerms {
                    owner: worker,
                    until: now + self.settings.lease,
                    limit: want,
                };
                let lease = self.store.chunk_lease(&terms, now);
                tokio::pin!(lease);
                // Chunks in flight keep running while the lease is taken (a chunk may
                // hold SQLite's one write connection until it is polled again).
                let chunks = loop {
                    tokio::select! {
                        r = &mut lease => break r,
                        Some(r) = in_flight.next(), if !in_flight.is_empty() => settle(r, &mut recorded, &mut failed),
                    }
                };
                match chunks {
                    Ok(chunks) => {
                        if chunks.is_empty() {
                            exhausted = true;
                        }
                        // After a failure while leasing, what was just leased goes back
                        // (it may be the failed chunk itself), as a future of its own:
                        // awaiting it here could wait on SQLite's one write connection
                        // held by a chunk in flight that is not being polled.
                        let give_back = failed.is_some();
                        for c in chunks {
                            // A takeover is a lease taken from an owner (lapsed or
                            // reclaimed); a chunk given back was released first and
                            // has none, though its attempt counts up all the same.
                            if let Some(previous_owner) = &c.previous_owner {
                                crate::metrics::lease_takeover();
                                tracing::info!(
                                    message = "Chunk taken over.",
                                    campaign_id = c.campaign_id,
                                    chunk_id = c.id,
                                    attempt = c.lease.attempt,
                                    previous_owner = %previous_owner
                                );
                            }
                            leased += usize::from(!give_back);
                            in_flight.push(self.take_chunk(c, give_back));
                        }
                    }
                    Err(e) => settle(Err(e.into()), &mut recorded, &mut failed),
                }
                continue;
            }
            match in_flight.next().await {
                Some(r) => settle(r, &mut recorded, &mut failed),
                None => break,
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok((leased, recorded))
    }

    /// Records when each slot's first send in this chunk left, for the slots not
    /// noted yet (a chunk spans the zones released together).
    async fn note_first_sends(
        &self,
        slot: &crate::store::CampaignSlot,
        first_sends: &FirstSends,
        noted: &mut HashSet<i64>,
    ) -> Result<(), StoreError> {
        let new: Vec<(i64, chrono::DateTime<chrono::Utc>)> = match first_sends.lock() {
            Ok(m) => m
                .iter()
                .filter(|(id, _)| !noted.contains(*id))
                .map(|(id, at)| (*id, *at))
                .collect(),
            Err(_) => Vec::new(),
        };
        if new.is_empty() {
            return Ok(());
        }
        if noted.is_empty() {
            if let Some(lag) = new
                .iter()
                .map(|(_, at)| *at)
                .min()
                .and_then(|at| (at - slot.fire_at).to_std().ok())
            {
                crate::metrics::scheduler_lag(lag);
            }
        }
        self.store.slot_note_sending(&new).await?;
        noted.extend(new.iter().map(|(id, _)| *id));
        Ok(())
    }

    /// Sends a leased chunk, or gives it straight back.
    async fn take_chunk(&self, chunk: LeasedChunk, give_back: bool) -> Result<usize, EngineError> {
        if give_back {
            self.store.chunk_return(&chunk, self.now()).await?;
            return Ok(0);
        }
        let span = tracing::info_span!(
            "chunk",
            chunk_id = chunk.id,
            campaign_id = chunk.campaign_id,
            slot_id = chunk.lead_slot_id,
            attempt = chunk.lease.attempt,
        );
        self.process_chunk(chunk).instrument(span).await
    }

    /// Sends a chunk's recipients and records each outcome; returns how many were recorded.
    async fn process_chunk(&self, chunk: LeasedChunk) -> Result<usize, EngineError> {
        let Some(slot) = self.store.slot_get_info(chunk.lead_slot_id).await? else {
            return Ok(0);
        };
        let ctx = match self.campaign_ctx(&slot) {
            Ok(ctx) => ctx,
            Err(why) => {
                // Back to pending first: a resumed campaign sends it.
                self.store.chunk_return(&chunk, self.now()).await?;
                self.pause_unsendable(slot.campaign_id, &why).await?;
                return Ok(0);
            }
        };
        let app_id = ctx.campaign.definition.app.clone();
        let Some(providers) = self.providers_for(&app_id) else {
            // Every configured app has its providers (Engine::new).
            self.store.chunk_return(&chunk, self.now()).await?;
            return Ok(0);
        };
        let recipients = self
            .store
            .chunk_recipient_list(&chunk, &slot, &ctx.segment(), self.now())
            .await?;
        // Each notification carries the id its delivery row will have.
        let ids = self.store.delivery_id_reserve(recipients.len()).await?;
        if ids.len() != recipients.len() {
            return Err(StoreError::Invariant(format!(
                "{} delivery ids reserved for {} recipients",
                ids.len(),
                recipients.len()
            ))
            .into());
        }
        let message = &ctx.campaign.definition.message;
        let expires_at = message
            .ttl
            .and_then(|ttl| chrono::TimeDelta::from_std(ttl).ok())
            .map(|ttl| slot.fire_at + ttl);

        // When this chunk's first send to each slot left, for the slots' scheduler lag.
        let first_sends = FirstSends::default();
        let work = async {
            // Read ahead, then wait for a turn to send: at most `chunks_in_flight`
            // chunks send (and hold unwritten outcomes) at once, so the kill bound
            // is unchanged, while the next chunk's lease and read are already done
            // when one finishes. (The semaphore is never closed.)
            let sending = self.sending.acquire().await.ok();
            let mut sends = futures::stream::iter(ids.into_iter().zip(recipients))
                .map(|(delivery_id, r)| {
                    let providers = &providers;
                    let ctx = &ctx;
                    let first_sends = &first_sends;
                    async move {
                        if self.is_stopping() {
                            return None;
                        }
                        if let Some(cap) = r.capped.clone() {
                            let d = Decision {
                                status: DeliveryStatus::Suppressed,
                                provider_id: None,
                                reason: Some(cap),
                                next_attempt_at: None,
                            };
                            return Some((delivery_id, r, d));
                        }
                        if let Some(t) = &ctx.throttle {
                            // A throttled send not yet started gives way to a stop.
                            tokio::select! {
                                _ = t.ready() => {}
                                _ = self.until_stopped() => return None,
                            }
                        }
                        let now = self.now();
                        if expires_at.is_some_and(|e| now > e) {
                            let d = Decision {
                                status: DeliveryStatus::Expired,
                                provider_id: None,
                                reason: Some("TTL passed before sending".to_owned()),
                                next_attempt_at: None,
                            };
                            return Some((delivery_id, r, d));
                        }
                        if let Ok(mut m) = first_sends.lock() {
                            m.entry(r.slot_id).or_insert(now);
                        }
                        let outcome = providers
                            .send(&Push {
                                delivery_id,
                                platform: r.platform,
                                token: &r.token,
                                locale: r.locale.as_deref(),
                                message: &ctx.campaign.definition.message,
                                collapse_key: Some(&ctx.collapse_key),
                                expires_at,
                            })
                            .await;
                        let d = decide(
                            &outcome,
                            1,
                            &self.settings.retry,
                            self.now(),
                            expires_at,
                            fastrand::f64(),
                        );
                        Some((delivery_id, r, d))
                    }
                })
                .buffer_unordered(self.settings.sends_per_chunk.max(1));
            // A flush holds up this chunk's sends on purpose: what a kill can duplicate
            // is bounded by the sends in flight plus one batch not yet written.
            let mut batch = Vec::with_capacity(self.settings.flush_every);
            let mut recorded = 0;
            let mut given_back = false;
            let mut noted = HashSet::new();
            while let Some(item) = sends.next().await {
                match item {
                    None => given_back = true,
                    Some((delivery_id, r, d)) => batch.push({
                        crate::metrics::delivery(
                            d.status,
                            providers.provider_for(r.platform),
                            d.reason.as_deref(),
                        );
                        NewDelivery {
                            id: delivery_id,
                            device_id: r.device_id,
                            slot_id: r.slot_id,
                            user_id: r.user_id,
                            status: d.status,
                            provider_id: d.provider_id,
                            error_reason: d.reason,
                            next_attempt_at: d.next_attempt_at,
                        }
                    }),
                }
                if batch.len() >= self.settings.flush_every {
                    recorded += self
                        .flush_chunk(&chunk, &app_id, &slot.occurrence, &mut batch)
                        .await?;
                    self.note_first_sends(&slot, &first_sends, &mut noted)
                        .await?;
                }
            }
            recorded += self
                .flush_chunk(&chunk, &app_id, &slot.occurrence, &mut batch)
                .await?;
            self.note_first_sends(&slot, &first_sends, &mut noted)
                .await?;
            // Every outcome is written: the next chunk may send while this one closes.
            drop(sending);
            let now = self.now();
            if given_back {
                self.store.chunk_return(&chunk, now).await?;
            } else {
                self.store.chunk_finish(&chunk, now).await?;
            }
            Ok::<usize, StoreError>(recorded)
        };
        // Keep the lease alive while sending (a throttled chunk can outlast it).
        let heartbeat = async {
            let every = (self.settings.lease / 3)
                .to_std()
                .unwrap_or(std::time::Duration::from_secs(10));
            loop {
                tokio::time::sleep(every).await;
                let until = self.now() + self.settings.lease;
                match self.store.chunk_lease_extend(&chunk, until).await {
                    Ok(()) => {}
                    Err(StoreError::LeaseLost { .. }) => tracing::warn!(
                        message = "Chunk lease lost while sending.",
                        chunk_id = chunk.id
                    ),
                    Err(error) => {
                        tracing::warn!(message = "Cannot extend chunk lease.", chunk_id = chunk.id, %error)
                    }
                }
            }
        };
        let result = tokio::select! {
            r = work => r,
            _ = heartbeat => Ok(0),
        };
        match result {
            Ok(n) => {
                tracing::debug!(message = "Chunk done.", recorded = n);
                Ok(n)
            }
            Err(StoreError::LeaseLost { what }) => {
                tracing::warn!(message = "Lease lost; another worker owns the chunk now.", %what);
                Ok(0)
            }
            Err(e) => {
                // Give the chunk back now rather than at lease expiry; its unflushed
                // sends are what a retake may repeat (the documented duplicate bound).
                if let Err(error) = self.store.chunk_return(&chunk, self.now()).await {
                    tracing::warn!(message = "Cannot give a failed chunk back; it waits for its lease to lapse.", chunk_id = chunk.id, %error);
                }
                Err(e.into())
            }
        }
    }

    async fn flush_chunk(
        &self,
        chunk: &LeasedChunk,
        app_id: &str,
        occurrence: &str,
        batch: &mut Vec<NewDelivery>,
    ) -> Result<usize, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        // In key order, as the chunk was read: each index takes the batch as a run.
        batch.sort_unstable_by_key(|d| d.device_id);
        self.store
            .chunk_record(
                &ChunkWrite {
                    chunk,
                    app_id,
                    occurrence,
                    deliveries: batch,
                    webhook: self.has_webhook(app_id),
                },
                self.now(),
            )
            .await?;
        batch.clear();
        Ok(n)
    }

    /// Sends leased delivery rows (retries) and records their outcomes.
    async fn send_rows(&self, rows: Vec<LeasedDelivery>) -> Result<usize, EngineError> {
        let mut updates = Vec::with_capacity(rows.len());
        let pushes = self.push_messages(&rows).await?;
        let pushes = &pushes;
        let sends = futures::stream::iter(rows)
            .map(|row| async move {
                let decision = self.attempt_row(&row, pushes).await;
                (row, decision)
            })
            .buffer_unordered(self.settings.sends_per_chunk.max(1));
        let results: Vec<(LeasedDelivery, Decision)> = sends.collect().await;
        for (row, d) in results {
            crate::metrics::delivery(
                d.status,
                self.providers_for(&row.app_id)
                    .map_or("none", |p| p.provider_for(row.platform)),
                d.reason.as_deref(),
            );
            updates.push(DeliveryUpdate {
                id: row.id,
                lease: row.lease.clone(),
                device_id: row.device_id,
                status: d.status,
                provider_id: d.provider_id,
                error_reason: d.reason,
                next_attempt_at: d.next_attempt_at,
                webhook: self.has_webhook(&row.app_id),
            });
        }
        let mut recorded = 0;
        for batch in updates.chunks(self.settings.flush_every.max(1)) {
            recorded += self.store.delivery_record(batch, self.now()).await? as usize;
        }
        Ok(recorded)
    }

    /// The messages of the transactional pushes among `rows`, each read once.
    async fn push_messages(
        &self,
        rows: &[LeasedDelivery],
    ) -> Result<HashMap<String, Result<PushCtx, String>>, StoreError> {
        let mut ids: Vec<String> = rows.iter().filter_map(|r| r.request_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let stored = self.store.push_message_list(&ids).await?;
        Ok(stored
            .into_iter()
            .map(|p| {
                let ctx = serde_json::from_value::<Message>(p.message.0)
                    .map(|message| PushCtx {
                        expires_at: message
                            .ttl
                            .and_then(|ttl| chrono::TimeDelta::from_std(ttl).ok())
                            .map(|ttl| p.created_at + ttl),
                        message,
                    })
                    .map_err(|e| format!("stored push message does not parse: {e}"));
                (p.id, ctx)
            })
            .collect())
    }

    /// One attempt of a leased row: a transactional push's delivery (its message
    /// from `pushes`) or a campaign's retry (its campaign's message).
    async fn attempt_row(
        &self,
        row: &LeasedDelivery,
        pushes: &HashMap<String, Result<PushCtx, String>>,
    ) -> Decision {
        let fail = |status, reason: &str| Decision {
            status,
            provider_id: None,
            reason: Some(reason.to_owned()),
            next_attempt_at: None,
        };
        if row.device_state != DeviceState::Active {
            return fail(DeliveryStatus::TokenInvalid, "device token was invalidated");
        }
        let campaign;
        let (message, collapse_key, expires_at, throttle) = match &row.request_id {
            Some(id) => match pushes.get(id) {
                Some(Ok(p)) => (
                    &p.message,
                    p.message.collapse_key.as_deref(),
                    p.expires_at,
                    None,
                ),
                Some(Err(e)) => return fail(DeliveryStatus::Failed, e),
                None => return fail(DeliveryStatus::Failed, "no message for this delivery"),
            },
            None => {
                let slot = match row.slot_id {
                    Some(id) => self.store.slot_get_info(id).await.ok().flatten(),
                    None => None,
                };
                let Some(slot) = slot else {
                    return fail(DeliveryStatus::Failed, "no message for this delivery");
                };
                let Ok(ctx) = self.campaign_ctx(&slot) else {
                    return fail(DeliveryStatus::Failed, "campaign definition is not valid");
                };
                campaign = ctx;
                let message = &campaign.campaign.definition.message;
                let expires_at = message
                    .ttl
                    .and_then(|ttl| chrono::TimeDelta::from_std(ttl).ok())
                    .map(|ttl| slot.fire_at + ttl);
                (
                    message,
                    Some(campaign.collapse_key.as_str()),
                    expires_at,
                    campaign.throttle.as_ref(),
                )
            }
        };
        let Some(providers) = self.providers_for(&row.app_id) else {
            return fail(DeliveryStatus::Failed, "app is not configured");
        };
        if expires_at.is_some_and(|e| self.now() > e) {
            return fail(DeliveryStatus::Expired, "TTL passed before sending");
        }
        if let Some(t) = throttle {
            t.ready().await;
        }
        let outcome: Outcome = providers
            .send(&Push {
                delivery_id: row.id,
                platform: row.platform,
                token: &row.token,
                locale: row.locale.as_deref(),
                message,
                collapse_key,
                expires_at,
            })
            .await;
        let attempt = u32::try_from(row.lease.attempt).unwrap_or(1);
        decide(
            &outcome,
            attempt,
            &self.settings.retry,
            self.now(),
            expires_at,
            fastrand::f64(),
        )
    }
}

/// Chunks leased and read beyond the `chunks_in_flight` that send: each one's
/// recipients are ready when a sending chunk finishes, so the sends in flight do
/// not drop while a chunk is leased and read (one writer queue, one read).
const READ_AHEAD: usize = 1;

/// When a chunk's first send to each slot left.
type FirstSends = Mutex<HashMap<i64, chrono::DateTime<chrono::Utc>>>;

/// A transactional push's message, parsed once per batch of rows.
pub(super) struct PushCtx {
    message: Message,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}
