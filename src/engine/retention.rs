//! Retention: deleting finished records past their time (`[retention]`), in
//! small batches that never hold the database for long.
//!
//! Each batch is one short transaction; after it the loop rests a multiple of
//! the batch's own time: as long again while nothing is being sent, thirty
//! times as long while chunks are in flight, so pruning takes about 3% of the
//! writer's time (on SQLite there is one) while a campaign sends and the send
//! path's statements run in between. A campaign's counts are kept (tallies
//! count writes, not deletes).

use std::time::{Duration, Instant};

use super::{Engine, EngineError};
use crate::config::RetentionConfig;
use crate::store::{RetentionKind, Store};

/// Rest after a batch while chunks are being sent, in multiples of the batch's
/// own time. Pruning 10M old rows during a 1M SQLite campaign cost it 19% of
/// its rate at 1 and 11% at 9 (BENCHMARKS.md); the backlog of a daily
/// campaign is a few rows a second, and idle time clears it (139,000 rows/s
/// on SQLite at 1).
const REST_WHILE_SENDING: u32 = 30;

/// Rest after a batch while nothing is being sent.
const REST_IDLE: u32 = 1;

/// How long each kind is kept (zero: for ever).
fn keep(c: &RetentionConfig, kind: RetentionKind) -> Duration {
    match kind {
        RetentionKind::Deliveries | RetentionKind::PushRequests => c.deliveries,
        RetentionKind::History => c.history,
        RetentionKind::Webhooks => c.webhooks,
        RetentionKind::Fallbacks => c.fallbacks,
        RetentionKind::IdempotencyKeys => c.idempotency_keys,
        RetentionKind::Chunks => c.chunks,
    }
}

/// What one pass deleted, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport(pub Vec<(RetentionKind, u64)>);

impl PruneReport {
    pub fn get(&self, kind: RetentionKind) -> u64 {
        self.0
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

impl<S: Store> Engine<S> {
    /// How many times a batch's time to rest after it: long while chunks are
    /// in flight (the send path comes first), short when none are.
    fn prune_rest(&self) -> u32 {
        if self.sending.available_permits() < self.settings.chunks_in_flight.max(1) {
            REST_WHILE_SENDING
        } else {
            REST_IDLE
        }
    }

    /// One pass: every kind past its time, a batch after another until a batch
    /// comes back short (or the engine stops), resting between batches.
    pub async fn prune(&self) -> Result<PruneReport, EngineError> {
        let c = &self.config.retention;
        let mut report = PruneReport::default();
        for kind in RetentionKind::ALL {
            let keep = keep(c, kind);
            if keep.is_zero() {
                continue;
            }
            let Ok(keep) = chrono::TimeDelta::from_std(keep) else {
                continue;
            };
            let before = self.now() - keep;
            let mut total = 0;
            while !self.is_stopping() {
                let t = Instant::now();
                let n = self.store.retention_prune(kind, before, c.batch).await?;
                crate::metrics::retention_pruned(kind.as_str(), n);
                total += n;
                if n < c.batch.unsigned_abs() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(t.elapsed() * self.prune_rest()) => {}
                    _ = self.until_stopped() => {}
                }
            }
            report.0.push((kind, total));
        }
        Ok(report)
    }

    /// Prunes every `retention.every` until the engine stops; a failure is
    /// logged and the next pass tries again.
    pub(super) async fn retention_loop(&self) {
        for kind in RetentionKind::ALL {
            crate::metrics::retention_pruned(kind.as_str(), 0);
        }
        while !self.is_stopping() {
            match self.prune().await {
                Ok(report) if report.0.iter().any(|(_, n)| *n > 0) => {
                    let n = |k| report.get(k);
                    tracing::info!(
                        message = "Records past their retention deleted.",
                        deliveries = n(RetentionKind::Deliveries),
                        history = n(RetentionKind::History),
                        push_requests = n(RetentionKind::PushRequests),
                        webhooks = n(RetentionKind::Webhooks),
                        fallbacks = n(RetentionKind::Fallbacks),
                        idempotency_keys = n(RetentionKind::IdempotencyKeys),
                        chunks = n(RetentionKind::Chunks),
                    );
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(message = "Pruning old records failed; trying again later.", %error)
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.retention.every) => {}
                _ = self.until_stopped() => {}
            }
        }
    }
}
