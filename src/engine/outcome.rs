//! What a provider's answer means for a delivery's status. Pure: unit-tested here.

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::state::DeliveryStatus;
use crate::provider::{Outcome, RetryPolicy};

/// A delivery's new status after an attempt, with what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: DeliveryStatus,
    pub provider_id: Option<String>,
    pub reason: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Decides the status after attempt number `attempt` (from 1).
///
/// A retry is scheduled no sooner than the provider's `Retry-After`, with backoff
/// and jitter; past the message's expiry it becomes `expired`, past the policy's
/// last attempt `failed`. Credentials refused (`AuthFailed`) are retried too: the
/// message is fine, and ops can fix the key while it waits.
pub fn decide(
    outcome: &Outcome,
    attempt: u32,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    jitter: f64,
) -> Decision {
    let reason = outcome.reason().map(str::to_owned);
    let simple = |status| Decision {
        status,
        provider_id: None,
        reason: reason.clone(),
        next_attempt_at: None,
    };
    match outcome {
        Outcome::Accepted { provider_id } => Decision {
            status: DeliveryStatus::Sent,
            provider_id: provider_id.clone(),
            reason: None,
            next_attempt_at: None,
        },
        Outcome::TokenInvalid { .. } => simple(DeliveryStatus::TokenInvalid),
        Outcome::Rejected { .. } => simple(DeliveryStatus::Failed),
        Outcome::Retry { .. } | Outcome::AuthFailed { .. } => {
            let after = match outcome {
                Outcome::Retry { after, .. } => *after,
                _ => None,
            };
            match policy.delay(attempt, after, jitter) {
                None => Decision {
                    status: DeliveryStatus::Failed,
                    provider_id: None,
                    reason: Some(format!(
                        "gave up after {attempt} attempts: {}",
                        reason.as_deref().unwrap_or("")
                    )),
                    next_attempt_at: None,
                },
                Some(delay) => {
                    let next = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
                    if expires_at.is_some_and(|e| next > e) {
                        simple(DeliveryStatus::Expired)
                    } else {
                        Decision {
                            status: DeliveryStatus::Retry,
                            provider_id: None,
                            reason,
                            next_attempt_at: Some(next),
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()
    }

    #[test]
    fn accepted_is_sent_with_the_provider_id() {
        let d = decide(
            &Outcome::Accepted {
                provider_id: Some("p".into()),
            },
            1,
            &RetryPolicy::default(),
            now(),
            None,
            0.5,
        );
        assert_eq!(d.status, DeliveryStatus::Sent);
        assert_eq!(d.provider_id.as_deref(), Some("p"));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let o = Outcome::Retry {
            reason: "TooManyRequests".into(),
            after: Some(Duration::from_secs(120)),
        };
        let d = decide(&o, 1, &RetryPolicy::default(), now(), None, 0.0);
        assert_eq!(d.status, DeliveryStatus::Retry);
        assert_eq!(d.next_attempt_at, Some(now() + TimeDelta::seconds(120)));
        assert_eq!(d.reason.as_deref(), Some("TooManyRequests"));
    }

    #[test]
    fn past_expiry_or_attempts_it_stops() {
        let o = Outcome::Retry {
            reason: "ServiceUnavailable".into(),
            after: Some(Duration::from_secs(600)),
        };
        let d = decide(
            &o,
            1,
            &RetryPolicy::default(),
            now(),
            Some(now() + TimeDelta::seconds(60)),
            0.0,
        );
        assert_eq!(d.status, DeliveryStatus::Expired);
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let d = decide(&o, 3, &policy, now(), None, 0.0);
        assert_eq!(d.status, DeliveryStatus::Failed);
        assert!(d.reason.unwrap().starts_with("gave up after 3 attempts"));
    }

    #[test]
    fn dead_tokens_and_rejections_are_final() {
        let d = decide(
            &Outcome::TokenInvalid {
                reason: "Unregistered".into(),
            },
            1,
            &RetryPolicy::default(),
            now(),
            None,
            0.0,
        );
        assert_eq!(d.status, DeliveryStatus::TokenInvalid);
        let d = decide(
            &Outcome::Rejected {
                reason: "BadTopic".into(),
            },
            1,
            &RetryPolicy::default(),
            now(),
            None,
            0.0,
        );
        assert_eq!(d.status, DeliveryStatus::Failed);
        assert_eq!(d.reason.as_deref(), Some("BadTopic"));
        let d = decide(
            &Outcome::AuthFailed {
                reason: "ExpiredProviderToken".into(),
            },
            1,
            &RetryPolicy::default(),
            now(),
            None,
            0.0,
        );
        assert_eq!(d.status, DeliveryStatus::Retry);
    }
}
