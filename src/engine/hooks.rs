//! The outgoing hooks' pass: each app's status changes POSTed to its webhook in
//! signed batches, and fallbacks found (`sweep_fallbacks`) and sent. A batch or a
//! fallback is leased, POSTed with no transaction open, then written back fenced
//! by the lease, like every other piece of work.

use std::collections::HashMap;

use chrono::TimeDelta;

use super::{Engine, EngineError};
use crate::hooks::{self, HookClient, HookFailure};
use crate::store::{FallbackFinish, FallbackOutcome, LeaseTerms, OutboxRetry, Store, StoreError};

/// How far back the sweep looks for pushes that may still need a fallback.
const FALLBACK_HORIZON: TimeDelta = TimeDelta::days(3);

/// The configured endpoints: each app's webhook, and fallback channels by app and
/// topic (`None`: the app's own).
#[derive(Default)]
pub(super) struct Hooks {
    pub(super) webhooks: HashMap<String, HookClient>,
    pub(super) fallbacks: HashMap<(String, Option<String>), HookClient>,
}

impl Hooks {
    pub(super) fn from_config(config: &crate::config::Config) -> Result<Self, hooks::HookError> {
        let mut h = Self::default();
        for (id, app) in &config.apps {
            if let Some(w) = &app.webhook {
                h.webhooks.insert(
                    id.clone(),
                    HookClient::new(&format!("apps.{id}.webhook"), w)?,
                );
            }
            if let Some(f) = &app.fallback {
                h.fallbacks.insert(
                    (id.clone(), None),
                    HookClient::new(&format!("apps.{id}.fallback"), f)?,
                );
            }
            for (topic, t) in &app.topics {
                if let Some(f) = &t.fallback {
                    h.fallbacks.insert(
                        (id.clone(), Some(topic.clone())),
                        HookClient::new(&format!("apps.{id}.topics.{topic}.fallback"), f)?,
                    );
                }
            }
        }
        Ok(h)
    }

    fn fallback(&self, app: &str, topic: Option<&str>) -> Option<&HookClient> {
        topic
            .and_then(|t| self.fallbacks.get(&(app.to_owned(), Some(t.to_owned()))))
            .or_else(|| self.fallbacks.get(&(app.to_owned(), None)))
    }
}

/// What one pass of the hooks did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HooksReport {
    /// Status changes a webhook took.
    pub events_sent: usize,
    /// Status changes put back for a later attempt (or given up).
    pub events_failed: usize,
    /// Fallbacks queued by the sweep.
    pub fallbacks_found: u64,
    pub fallbacks_sent: usize,
    pub fallbacks_failed: usize,
}

impl<S: Store> Engine<S> {
    /// One pass over the hooks: every app's webhook batches until its outbox is
    /// empty or an attempt fails, then the fallback sweep and the fallbacks due.
    pub async fn deliver_hooks(&self) -> Result<HooksReport, EngineError> {
        let mut report = HooksReport::default();
        let worker = self.settings.worker_id.as_str();
        for (app, client) in &self.hooks.webhooks {
            loop {
                let now = self.now();
                let batch = self
                    .store
                    .outbox_lease(
                        app,
                        &LeaseTerms {
                            owner: worker,
                            until: now + self.settings.lease,
                            limit: i64::from(client.config.batch_size),
                        },
                        now,
                    )
                    .await?;
                let Some(first) = batch.first() else { break };
                let last = batch.last().map_or(first.id, |e| e.id);
                let key = format!("status-{}-{last}", first.id);
                match client
                    .post(&hooks::status_body(app, &batch), &key, self.now())
                    .await
                {
                    Ok(()) => match self.store.outbox_ack(&batch).await {
                        Ok(n) => report.events_sent += n as usize,
                        // Another worker took the batch over (the lease lapsed while
                        // posting): it sends it again under the same key.
                        Err(StoreError::LeaseLost { what }) => {
                            tracing::warn!(message = "Webhook batch lease lost.", %what);
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    },
                    Err(failure) => {
                        let attempt = u32::try_from(first.lease.attempt).unwrap_or(1);
                        let max = if failure.retry {
                            i32::try_from(client.config.max_attempts).unwrap_or(i32::MAX)
                        } else {
                            0
                        };
                        tracing::warn!(message = "Status webhook refused a batch.", app = %app, error = %failure.message, attempt, events = batch.len());
                        report.events_failed += self
                            .store
                            .outbox_retry(&OutboxRetry {
                                events: &batch,
                                next_attempt_at: self.retry_at(attempt, &failure),
                                error: &failure.message,
                                max_attempts: max,
                            })
                            .await? as usize;
                        // The endpoint is failing: the rest waits for the next pass.
                        break;
                    }
                }
            }
        }
        if self.hooks.fallbacks.is_empty() {
            return Ok(report);
        }
        let now = self.now();
        report.fallbacks_found = self
            .store
            .fallback_sweep(now, now - FALLBACK_HORIZON)
            .await?;
        let due = self
            .store
            .fallback_lease(
                &LeaseTerms {
                    owner: worker,
                    until: now + self.settings.lease,
                    limit: 100,
                },
                now,
            )
            .await?;
        for f in due {
            let webhook = self.has_webhook(&f.app_id);
            let outcome = match self.hooks.fallback(&f.app_id, f.topic.as_deref()) {
                None => FallbackOutcome::Failed {
                    error: "no fallback channel is configured any more".to_owned(),
                },
                Some(_) if f.phone.is_none() => FallbackOutcome::Failed {
                    error: "the user has no phone number".to_owned(),
                },
                Some(client) => {
                    let key = format!("fallback-{}", f.id);
                    match client
                        .post(&hooks::fallback_body(&f), &key, self.now())
                        .await
                    {
                        Ok(()) => FallbackOutcome::Sent,
                        Err(failure) => {
                            let attempt = u32::try_from(f.lease.attempt).unwrap_or(1);
                            tracing::warn!(message = "Fallback channel refused.", app = %f.app_id, request_id = %f.request_id, error = %failure.message, attempt);
                            if failure.retry && attempt < client.config.max_attempts {
                                FallbackOutcome::Retry {
                                    at: self.retry_at(attempt, &failure),
                                    error: failure.message,
                                }
                            } else {
                                FallbackOutcome::Failed {
                                    error: failure.message,
                                }
                            }
                        }
                    }
                }
            };
            match &outcome {
                FallbackOutcome::Sent => report.fallbacks_sent += 1,
                FallbackOutcome::Failed { .. } => report.fallbacks_failed += 1,
                FallbackOutcome::Retry { .. } => {}
            }
            match self
                .store
                .fallback_finish(
                    &FallbackFinish {
                        fallback: &f,
                        outcome: &outcome,
                        webhook,
                    },
                    self.now(),
                )
                .await
            {
                Ok(()) => {}
                Err(StoreError::LeaseLost { what }) => {
                    tracing::warn!(message = "Fallback lease lost; another worker owns it now.", %what);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }

    fn retry_at(&self, attempt: u32, failure: &HookFailure) -> chrono::DateTime<chrono::Utc> {
        let wait = hooks::backoff(attempt, failure.retry_after);
        self.now() + TimeDelta::from_std(wait).unwrap_or(TimeDelta::hours(1))
    }

    /// Whether any hook is configured (the daemon runs the hooks loop only then).
    pub fn has_hooks(&self) -> bool {
        !self.hooks.webhooks.is_empty() || !self.hooks.fallbacks.is_empty()
    }
}
