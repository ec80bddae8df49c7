//! Talking to Apple and Google: our own thin clients over one HTTP/2 stack
//! (h2, hyper's HTTP/2 layer, over rustls with ring), and what their answers mean.
//!
//! Provider answers are values ([`Outcome`]), not errors: a dead token or a 429
//! is a normal result the engine records and reacts to.

use std::num::NonZeroU32;
use std::time::Duration;

pub mod apns;
pub mod app;
pub mod fcm;
mod http;
pub mod jwt;

pub use http::TransportError;

/// What happened to one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider took the message; its id when it returns one.
    Accepted { provider_id: Option<String> },
    /// The token is dead (or not ours): mark the device invalid, never retry.
    TokenInvalid { reason: String },
    /// Try again later, not before `after` when the provider said so.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Refused for good; the reason is kept verbatim.
    Rejected { reason: String },
    /// Our credentials were refused (after one refresh): nothing to retry per message; alert.
    AuthFailed { reason: String },
}

impl Outcome {
    /// The outcome's kind, as metrics label it.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::TokenInvalid { .. } => "token_invalid",
            Self::Retry { .. } => "retry",
            Self::Rejected { .. } => "rejected",
            Self::AuthFailed { .. } => "auth_failed",
        }
    }

    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Accepted { .. } => None,
            Self::TokenInvalid { reason }
            | Self::Retry { reason, .. }
            | Self::Rejected { reason }
            | Self::AuthFailed { reason } => Some(reason),
        }
    }
}

/// Setting a client up can fail; sending cannot (it yields an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    #[error(transparent)]
    Jwt(#[from] jwt::JwtError),
}

pub(crate) fn config_error(key: impl Into<String>, message: impl Into<String>) -> ProviderError {
    ProviderError::Config {
        key: key.into(),
        message: message.into(),
    }
}

/// Connection settings shared by both providers.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub ca_file: Option<std::path::PathBuf>,
    pub timeout: Duration,
    /// HTTP/2 connections to open; requests are spread over them as streams.
    pub connections: usize,
}

/// `Retry-After` in seconds (the form both providers use).
pub(crate) fn retry_after(headers: &hyper::http::HeaderMap) -> Option<Duration> {
    headers
        .get(hyper::http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// When to try again: exponential backoff with full jitter, never sooner than
/// the provider's `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

/// The configuration's defaults (`EngineConfig`), defined there once.
impl Default for RetryPolicy {
    fn default() -> Self {
        Self::from_config(&crate::config::EngineConfig::default())
    }
}

impl RetryPolicy {
    pub fn from_config(c: &crate::config::EngineConfig) -> Self {
        Self {
            base: c.retry_base,
            max: c.retry_max,
            max_attempts: c.max_attempts,
        }
    }

    /// The delay before attempt `attempt + 1` (attempts count from 1), or `None`
    /// when attempts are used up. `jitter` in [0, 1) picks the point in the window.
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let window = exp.min(self.max);
        // Half fixed, half jittered: spreads retries without collapsing to zero.
        let backoff = window / 2 + window.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
        Some(retry_after.map_or(backoff, |ra| ra.max(backoff)))
    }
}

/// Paces sends to a rate, per app and provider. Burst and rate are chosen so that
/// no one-second window sees more than `per_second` sends, with 1% to spare for
/// sends that leave late.
#[derive(Debug)]
pub struct Pacer {
    limiter: governor::DefaultDirectRateLimiter,
}

impl Pacer {
    pub fn new(per_second: NonZeroU32) -> Self {
        Self::within(
            per_second,
            Duration::from_secs(1),
            (per_second.get() / 100).max(1),
        )
    }

    /// At most `per_minute` sends in any minute (a campaign's throttle).
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self::within(
            per_minute,
            Duration::from_secs(60),
            (per_minute.get() / 60).max(1),
        )
    }

    fn within(n: NonZeroU32, window: Duration, burst: u32) -> Self {
        // A zero period (over a billion a second): governor's own quota instead.
        let quota = governor::Quota::with_period(period(n.get(), window, burst))
            .unwrap_or_else(|| governor::Quota::per_second(n))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: governor::RateLimiter::direct(quota),
        }
    }

    /// Waits for a send slot.
    pub async fn ready(&self) {
        self.limiter.until_ready().await;
    }

    /// Takes a slot if one is free now.
    pub fn try_take(&self) -> bool {
        self.limiter.check().is_ok()
    }
}

/// The interval between sends so that any `window` of permits, `burst` of them
/// at once and one per interval after, holds at most `n` less 1%: a send leaves a
/// little after its permit (a busy core, a write queued behind another) and the
/// provider counts arrivals, so with no margin a few late sends of one second
/// land in the next (10,006 in one second at 10,000/s, BENCHMARKS.md eighth round).
fn period(n: u32, window: Duration, burst: u32) -> Duration {
    let steady = n.saturating_sub(burst + n / 100).max(1);
    window / steady
}

/// APNs wants a UUID in `apns-id`; ours is derived from the delivery id, so
/// Apple's answer and our record share one id.
pub fn apns_id_for(delivery_id: crate::domain::ids::DeliveryId) -> String {
    let v = delivery_id.get() as u64;
    format!(
        "00000000-0000-4000-8000-{:04x}{:08x}",
        (v >> 32) & 0xffff,
        v & 0xffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, None, 0.0), Some(Duration::from_millis(500)));
        assert_eq!(p.delay(3, None, 0.0), Some(Duration::from_secs(2)));
        assert!(p.delay(3, None, 0.999).unwrap() < Duration::from_secs(4));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(30)), 0.5),
            Some(Duration::from_secs(30))
        );
        assert_eq!(p.delay(8, None, 0.0), None);
        assert!(p.delay(7, None, 1.0).unwrap() <= p.max);
    }

    #[test]
    fn a_window_of_permits_stays_a_margin_under_the_rate() {
        for (n, window, burst) in [
            (100u32, 1u64, 1u32),
            (1_000, 1, 10),
            (10_000, 1, 100),
            (600, 60, 10),
            (60_000, 60, 1_000),
        ] {
            let window = Duration::from_secs(window);
            let steady = (window.as_nanos() / period(n, window, burst).as_nanos()) as u32;
            assert!(burst + steady <= n - n / 100, "{n}: {burst} + {steady}");
            assert!(burst + steady >= n - n / 50, "{n}: not much under the rate");
        }
    }

    #[test]
    fn pacer_allows_a_small_burst_only() {
        let pacer = Pacer::new(NonZeroU32::new(1000).unwrap());
        let taken = (0..100).filter(|_| pacer.try_take()).count();
        assert!((10..=11).contains(&taken), "{taken}");
    }

    #[test]
    fn apns_id_is_a_uuid_that_encodes_the_delivery() {
        let id = apns_id_for(crate::domain::ids::DeliveryId::new(0x1234_5678_9abc));
        assert_eq!(id, "00000000-0000-4000-8000-123456789abc");
        assert_eq!(id.len(), 36);
    }
}
