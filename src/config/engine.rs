//! `[engine]` and `[retention]`: how the scheduler and dispatch pool work, and
//! how long finished records are kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, yes, ConfigError};

/// How the scheduler and dispatch pool work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Run the scheduler and dispatch in `serve` (off: API only).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// This instance's name in leases; host and pid when unset.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Device ids per chunk of a slot's audience.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: i64,
    /// How long a lease lasts without renewal; a dead instance's work is taken over after it.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    #[serde(default = "default_chunks_in_flight")]
    pub chunks_in_flight: usize,
    #[serde(default = "default_sends_per_chunk")]
    pub sends_per_chunk: usize,
    /// Outcomes written per statement.
    #[serde(default = "default_flush_every")]
    pub flush_every: usize,
    /// Longest idle sleep of the scheduler loop.
    #[serde(default = "default_tick", with = "humantime_serde")]
    pub tick: Duration,
    /// On SIGTERM, how long in-flight sends may take to finish.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_retry_base", with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            worker_id: None,
            chunk_size: default_chunk_size(),
            lease: default_lease(),
            chunks_in_flight: default_chunks_in_flight(),
            sends_per_chunk: default_sends_per_chunk(),
            flush_every: default_flush_every(),
            tick: default_tick(),
            shutdown_grace: default_grace(),
            max_attempts: default_max_attempts(),
            retry_base: default_retry_base(),
            retry_max: default_retry_max(),
        }
    }
}

impl EngineConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.chunk_size < 1 {
            return Err(invalid("engine.chunk_size", "must be at least 1"));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(invalid("engine.lease", "must be at least 1s"));
        }
        if self.chunks_in_flight == 0 || self.sends_per_chunk == 0 || self.flush_every == 0 {
            return Err(invalid(
                "engine",
                "chunks_in_flight, sends_per_chunk and flush_every must be at least 1",
            ));
        }
        if self.max_attempts == 0 {
            return Err(invalid("engine.max_attempts", "must be at least 1"));
        }
        Ok(())
    }
}

/// How long finished records are kept before the engine deletes them, per
/// kind (`0s` keeps them for ever), and how it deletes: `batch` rows per
/// statement, as often as `every`, resting between batches (thirty times as
/// long as the last one took while a campaign sends), so pruning never holds
/// SQLite's one writer for long.
///
/// A campaign's counts (`delivery_tallies`, `slot_counts`) are never pruned:
/// its totals stay after its per-message rows are gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Finished messages (deliveries) and the transactional push requests they came from.
    #[serde(default = "default_keep_messages", with = "humantime_serde")]
    pub deliveries: Duration,
    /// Messages' status history; at most `deliveries` (a message's history goes with it).
    #[serde(default = "default_keep_messages", with = "humantime_serde")]
    pub history: Duration,
    /// Status webhook events that were given up on (`dead`); delivered ones leave at once.
    #[serde(default = "default_keep_month", with = "humantime_serde")]
    pub webhooks: Duration,
    /// Fallbacks (e.g. SMS) that were sent or failed.
    #[serde(default = "default_keep_month", with = "humantime_serde")]
    pub fallbacks: Duration,
    /// Idempotency keys: at least the 24 h in which a retried request is answered
    /// from its first response.
    #[serde(default = "default_keep_idempotency", with = "humantime_serde")]
    pub idempotency_keys: Duration,
    /// The chunks (key ranges) of completed and cancelled slots.
    #[serde(default = "default_keep_chunks", with = "humantime_serde")]
    pub chunks: Duration,
    /// Rows deleted per statement.
    #[serde(default = "default_prune_batch")]
    pub batch: i64,
    /// How often the engine looks for records past their time.
    #[serde(default = "default_prune_every", with = "humantime_serde")]
    pub every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            deliveries: default_keep_messages(),
            history: default_keep_messages(),
            webhooks: default_keep_month(),
            fallbacks: default_keep_month(),
            idempotency_keys: default_keep_idempotency(),
            chunks: default_keep_chunks(),
            batch: default_prune_batch(),
            every: default_prune_every(),
        }
    }
}

impl RetentionConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.batch) {
            return Err(invalid("retention.batch", "must be between 1 and 100000"));
        }
        if self.every < Duration::from_secs(1) {
            return Err(invalid("retention.every", "must be at least 1s"));
        }
        if !self.idempotency_keys.is_zero() && self.idempotency_keys < Duration::from_secs(DAY) {
            return Err(invalid(
                "retention.idempotency_keys",
                "must be at least 24h (a retried request is answered from its first response for 24 h) or 0s to keep them",
            ));
        }
        if !self.deliveries.is_zero() && (self.history.is_zero() || self.history > self.deliveries)
        {
            return Err(invalid(
                "retention.history",
                "must be at most retention.deliveries: a message's history is deleted with it",
            ));
        }
        Ok(())
    }
}

const DAY: u64 = 24 * 3600;

fn default_keep_messages() -> Duration {
    Duration::from_secs(90 * DAY)
}

fn default_keep_month() -> Duration {
    Duration::from_secs(30 * DAY)
}

fn default_keep_idempotency() -> Duration {
    Duration::from_secs(DAY)
}

fn default_keep_chunks() -> Duration {
    Duration::from_secs(7 * DAY)
}

fn default_prune_batch() -> i64 {
    1000
}

fn default_prune_every() -> Duration {
    Duration::from_secs(60)
}

/// Measured on the realistic layout (BENCHMARKS.md, issue 21): 1,000 and
/// 1,000 sent SQLite's 1M campaign 29% faster than 500 and 250.
fn default_chunk_size() -> i64 {
    1000
}

fn default_lease() -> Duration {
    Duration::from_secs(60)
}

fn default_chunks_in_flight() -> usize {
    4
}

fn default_sends_per_chunk() -> usize {
    256
}

fn default_flush_every() -> usize {
    1000
}

fn default_tick() -> Duration {
    Duration::from_secs(1)
}

fn default_grace() -> Duration {
    Duration::from_secs(15)
}

fn default_max_attempts() -> u32 {
    8
}

fn default_retry_base() -> Duration {
    Duration::from_secs(1)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(15 * 60)
}
