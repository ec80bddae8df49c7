//! The engine: release due slots, lease their chunks (and retry rows), dispatch
//! through the providers, record outcomes, complete slots and campaigns.
//!
//! Every stage reads "now" from the `Clock`, so tests drive it step by step
//! ([`Engine::step`]); `run` loops over the same step. No transaction is held
//! across a network call: a lease is committed, then sent, then written back
//! fenced by the lease's attempt.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{AppConfig, Config};
use crate::definitions::topic_rules;
use crate::domain::campaign::{AppContext, CampaignDefinition, ValidCampaign};
use crate::domain::state::CampaignState;
use crate::provider::app::AppProviders;
use crate::provider::{Pacer, ProviderError, RetryPolicy};
use crate::store::{CampaignSlot, Segment, Store, StoreError};

mod dispatch;
mod hooks;
pub mod outcome;
mod release;
mod retention;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
}

pub use hooks::HooksReport;
pub use retention::PruneReport;

/// How the engine works; defaults suit one instance on a small machine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// This instance's name in leases (host and pid by default).
    pub worker_id: String,
    /// Whether `worker_id` was configured, so it names this instance across
    /// restarts (its leases from before one are its own to take back).
    pub stable_worker_id: bool,
    /// Device ids per chunk of a slot's audience.
    pub chunk_size: i64,
    /// How long a lease lasts without renewal; a dead owner's work is taken over after it.
    pub lease: TimeDelta,
    /// Chunks sent at the same time.
    pub chunks_in_flight: usize,
    /// Sends in flight per chunk.
    pub sends_per_chunk: usize,
    /// Outcomes written per statement.
    pub flush_every: usize,
    /// Longest sleep between steps when idle.
    pub tick: Duration,
    pub retry: RetryPolicy,
}

/// The configuration's defaults (`EngineConfig`), defined there once.
impl Default for EngineSettings {
    fn default() -> Self {
        Self::from_config(&crate::config::EngineConfig::default())
    }
}

impl EngineSettings {
    pub fn from_config(c: &crate::config::EngineConfig) -> Self {
        Self {
            worker_id: c.worker_id.clone().unwrap_or_else(default_worker_id),
            stable_worker_id: c.worker_id.is_some(),
            chunk_size: c.chunk_size,
            // Past `TimeDelta`'s range (centuries): as good as never expiring.
            lease: TimeDelta::from_std(c.lease).unwrap_or(TimeDelta::MAX),
            chunks_in_flight: c.chunks_in_flight,
            sends_per_chunk: c.sends_per_chunk,
            flush_every: c.flush_every,
            tick: c.tick,
            retry: RetryPolicy::from_config(c),
        }
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// A campaign ready to send: its validated definition and pacing.
struct CampaignCtx {
    /// The campaign's revision this was validated at: the cache's check.
    revision: i32,
    campaign: ValidCampaign,
    app: AppConfig,
    collapse_key: String,
    throttle: Option<Pacer>,
}

impl CampaignCtx {
    fn segment(&self) -> Segment<'_> {
        let def = &self.campaign.definition;
        Segment {
            app_id: &def.app,
            audience: &def.audience,
            topics: topic_rules(&self.app, &def.audience.topics),
        }
    }
}

/// What one step did, so tests can run steps until there is nothing left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    pub released: usize,
    pub chunks: usize,
    pub sent: usize,
    pub retried: usize,
    pub completed_slots: usize,
    pub completed_campaigns: usize,
}

impl StepReport {
    pub fn did_work(&self) -> bool {
        *self != Self::default()
    }
}

pub struct Engine<S> {
    store: Arc<S>,
    config: Arc<Config>,
    providers: HashMap<String, Arc<AppProviders>>,
    clock: Arc<dyn Clock>,
    settings: EngineSettings,
    campaigns: Mutex<HashMap<i64, Arc<CampaignCtx>>>,
    /// Turns to send a chunk: `chunks_in_flight` of them.
    sending: tokio::sync::Semaphore,
    /// Cancelled once to stop: every loop, throttle and sleep waits on it.
    shutdown: CancellationToken,
    rows_queued: Arc<tokio::sync::Notify>,
    hooks: hooks::Hooks,
    /// Counts the release loop's turns (see [`Engine::heartbeat`]).
    heartbeat: tokio::sync::watch::Sender<u64>,
    /// When the release loop last turned (unix ms on the engine's clock; 0: never).
    last_turn_ms: std::sync::atomic::AtomicI64,
    /// Releases cut into key ranges, to count after their first sends.
    uncounted: Mutex<Vec<Vec<CampaignSlot>>>,
}

/// What a dispatch loop leases.
#[derive(Debug, Clone, Copy)]
enum Work {
    Chunks,
    Rows,
    Hooks,
}

impl<S: Store> Engine<S> {
    pub fn new(
        store: Arc<S>,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
    ) -> Result<Self, EngineError> {
        let mut providers = HashMap::new();
        for (id, app) in &config.apps {
            providers.insert(
                id.clone(),
                Arc::new(AppProviders::from_config(id, app, clock.clone())?),
            );
        }
        let hooks = hooks::Hooks::from_config(&config)?;
        let permits = settings.chunks_in_flight.max(1);
        Ok(Self {
            store,
            config,
            providers,
            clock,
            settings,
            campaigns: Mutex::new(HashMap::new()),
            sending: tokio::sync::Semaphore::new(permits),
            shutdown: CancellationToken::new(),
            rows_queued: Arc::new(tokio::sync::Notify::new()),
            hooks,
            heartbeat: tokio::sync::watch::channel(0).0,
            last_turn_ms: std::sync::atomic::AtomicI64::new(0),
            uncounted: Mutex::new(Vec::new()),
        })
    }

    /// Moves on every turn of the release loop and every slot group it releases,
    /// whether the pass succeeded or not: whoever supervises the process (systemd's
    /// watchdog, through `main`) can tell a loop that turns from one that is stuck.
    pub fn heartbeat(&self) -> tokio::sync::watch::Receiver<u64> {
        self.heartbeat.subscribe()
    }

    fn beat(&self) {
        self.heartbeat.send_modify(|n| *n = n.wrapping_add(1));
        self.last_turn_ms
            .store(self.now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Whether the release loop turned recently enough (within three ticks and
    /// 10 s of slack): `Err` says when it last did, for `/readyz`.
    pub fn ticking(&self) -> Result<(), String> {
        let last = self.last_turn_ms.load(Ordering::Relaxed);
        if last == 0 {
            return Err("the scheduler has not turned yet".to_owned());
        }
        let allowed = 3 * self.settings.tick.as_millis() as i64 + 10_000;
        let ago = self.now().timestamp_millis() - last;
        if ago > allowed {
            return Err(format!("the scheduler last turned {} s ago", ago / 1000));
        }
        Ok(())
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Stops with `token` instead of a token of its own: the daemon's one
    /// shutdown token, which the API waits on too.
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Asks the engine to stop: nothing new is released or leased, sends not yet
    /// started are given back, in-flight ones finish and are recorded.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Resolves once `stop` has been called.
    async fn until_stopped(&self) {
        self.shutdown.cancelled().await;
    }

    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// One pass over every stage.
    pub async fn step(&self) -> Result<StepReport, EngineError> {
        let mut report = StepReport::default();
        if self.is_stopping() {
            return Ok(report);
        }
        report.released = self.release_due().await?;
        let (retried, chunks, sent) = self.dispatch().await?;
        self.count_released().await?;
        report.retried = retried;
        report.chunks = chunks;
        report.sent = sent;
        let (slots, campaigns) = self.complete().await?;
        report.completed_slots = slots;
        report.completed_campaigns = campaigns;
        Ok(report)
    }

    /// Steps until a step finds nothing to do (tests and `dispatch_all_pending`).
    pub async fn run_until_idle(&self) -> Result<StepReport, EngineError> {
        let mut total = StepReport::default();
        loop {
            let r = self.step().await?;
            if !r.did_work() {
                return Ok(total);
            }
            total.released += r.released;
            total.chunks += r.chunks;
            total.sent += r.sent;
            total.retried += r.retried;
            total.completed_slots += r.completed_slots;
            total.completed_campaigns += r.completed_campaigns;
        }
    }

    /// Runs until `stop` is called. Releasing (and completing), sending chunks and
    /// sending delivery rows are three loops: a slot that comes due while a large
    /// one is being sent is released on time and its first chunk leased next
    /// (chunks go by their place in their slot), and a transactional push is sent
    /// at once instead of after the campaign traffic in flight. `stop` ends every
    /// loop and sleep at once (one token).
    pub async fn run(&self) {
        self.recover().await;
        let released = tokio::sync::Notify::new();
        // Hooks go by the tick: nothing signals new hook work.
        let by_tick = tokio::sync::Notify::new();
        tokio::join!(
            self.release_loop(&released),
            self.dispatch_loop(Work::Chunks, &released),
            self.dispatch_loop(Work::Rows, &self.rows_queued),
            async {
                if self.has_hooks() {
                    self.dispatch_loop(Work::Hooks, &by_tick).await;
                }
            },
            self.retention_loop(),
        );
    }

    /// What a start does about a previous run that ended abruptly: takes back
    /// its leases (see [`Engine::reclaim_leases`]) and queues the releases it
    /// left uncounted for counting. Failures are logged; the engine runs on.
    pub async fn recover(&self) {
        self.reclaim_leases().await;
        if let Err(error) = self.recount_uncounted().await {
            tracing::warn!(message = "Releases left uncounted by a previous run not found.", %error);
        }
    }

    /// Takes back at once the leases a previous run left, instead of waiting
    /// `engine.lease` for them to lapse: every lease on SQLite (one engine per
    /// database, which `Service` holds a lock file for), this instance's own on
    /// Postgres when its `worker_id` is configured (a name that survives the
    /// restart). A failure is logged: the leases then lapse as before.
    async fn reclaim_leases(&self) {
        let owner = match self.store.kind() {
            crate::config::DatabaseKind::Sqlite => None,
            crate::config::DatabaseKind::Postgres if self.settings.stable_worker_id => {
                Some(self.settings.worker_id.as_str())
            }
            crate::config::DatabaseKind::Postgres => return,
        };
        match self.store.lease_reclaim(owner, self.now()).await {
            Ok(counts) => {
                let n = |q: &str| counts.iter().find(|(k, _)| *k == q).map_or(0, |(_, n)| *n);
                if counts.iter().any(|(_, n)| *n > 0) {
                    tracing::info!(
                        message = "Leases of a previous run taken back.",
                        chunks = n("chunks"),
                        rows = n("rows"),
                        webhooks = n("webhooks"),
                        fallbacks = n("fallbacks"),
                    );
                }
            }
            Err(error) => {
                tracing::warn!(message = "Leases of a previous run not taken back; they lapse.", %error);
            }
        }
    }

    /// Notified when delivery rows were queued (a transactional push), so the rows
    /// loop leases them now rather than at its next tick.
    pub fn rows_queued(&self) -> Arc<tokio::sync::Notify> {
        self.rows_queued.clone()
    }

    /// Sleeps until the next due slot (at most the tick) between passes; a database
    /// error is logged and retried with backoff.
    async fn release_loop(&self, released: &tokio::sync::Notify) {
        let mut failures = 0u32;
        while !self.is_stopping() {
            let pass = async {
                let n = self.release_due().await?;
                // The first chunks go out while the release is counted.
                if n > 0 {
                    released.notify_one();
                }
                self.count_released().await?;
                self.complete().await?;
                Ok::<usize, EngineError>(n)
            };
            let result = pass.await;
            self.beat();
            match result {
                Ok(n) => {
                    failures = 0;
                    if n > 0 {
                        continue;
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::error!(message = "Releasing slots failed; retrying.", %error, failures);
                }
            }
            let mut sleep = self.settings.tick;
            if failures > 0 {
                sleep = backoff(failures);
            } else if let Ok(Some(next)) = self.store.slot_next_due_at().await {
                let until = (next - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
                sleep = sleep.min(until.max(Duration::from_millis(5)));
            }
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.until_stopped() => {}
            }
        }
    }

    /// Leases and sends while there is work; otherwise waits for `more` (a release,
    /// or a push queued), the tick (retries coming due) or `stop`.
    async fn dispatch_loop(&self, work: Work, more: &tokio::sync::Notify) {
        let mut failures = 0u32;
        while !self.is_stopping() {
            let pass = match work {
                Work::Chunks => self.dispatch_chunks().await,
                Work::Rows => self.dispatch_rows().await,
                // Hooks are delivered every tick (their pass drains what is due).
                Work::Hooks => self.deliver_hooks().await.map(|_| (0, 0)),
            };
            match pass {
                Ok((leased, _)) => {
                    failures = 0;
                    if leased > 0 {
                        continue;
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::error!(message = "Dispatch failed; retrying.", ?work, %error, failures);
                }
            }
            let sleep = if failures > 0 {
                backoff(failures)
            } else {
                self.settings.tick
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = more.notified() => {}
                _ = self.until_stopped() => {}
            }
        }
    }

    /// The validated campaign for a stored definition (cached per campaign), or
    /// why it cannot be sent as stored: its definition does not parse, its app
    /// is not configured, or it no longer validates against the app's config.
    fn campaign_ctx(&self, slot: &CampaignSlot) -> Result<Arc<CampaignCtx>, String> {
        let campaign_id = slot.campaign_id;
        let mut cache = self
            .campaigns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Kept per revision: an edit (which moves it) is validated again, an
        // unchanged campaign keeps its throttle.
        if let Some(c) = cache
            .get(&campaign_id)
            .filter(|c| c.revision == slot.revision)
        {
            return Ok(c.clone());
        }
        let def: &CampaignDefinition = match &slot.definition.0 {
            Ok(d) => d,
            Err(error) => return Err(format!("its stored definition does not parse: {error}")),
        };
        let Some(app) = self.config.app(&def.app).cloned() else {
            return Err(format!("its app {:?} is not configured", def.app));
        };
        let campaign = def
            .validate(&AppContext {
                app_id: &def.app,
                topics: app.topic_names(),
            })
            .map_err(|error| format!("it is no longer valid: {error}"))?;
        let throttle = campaign
            .definition
            .throttle_per_minute
            .and_then(NonZeroU32::new)
            .map(Pacer::per_minute);
        // The message's own collapse key when it has one, else one per campaign:
        // a duplicate sent after a crash still replaces the copy queued on the device.
        let collapse_key = campaign
            .definition
            .message
            .collapse_key
            .clone()
            .unwrap_or_else(|| format!("campaign-{campaign_id}"));
        let ctx = Arc::new(CampaignCtx {
            revision: slot.revision,
            campaign,
            app,
            collapse_key,
            throttle,
        });
        cache.insert(campaign_id, ctx.clone());
        Ok(ctx)
    }

    /// Pauses a campaign this instance cannot send as stored, so its due slots
    /// and chunks stop being taken (and retaken) ahead of every other
    /// campaign's; an operator fixes the cause (the app's config, a topic) and
    /// resumes it, or cancels it. Logged once, when the pause takes.
    async fn pause_unsendable(&self, campaign_id: i64, why: &str) -> Result<(), StoreError> {
        for from in [CampaignState::Running, CampaignState::Scheduled] {
            match self
                .store
                .campaign_set_state(campaign_id, from, CampaignState::Paused, self.now())
                .await
            {
                Ok(()) => {
                    tracing::error!(
                        message = "Campaign paused: it cannot be sent as stored.",
                        campaign_id,
                        reason = why
                    );
                    return Ok(());
                }
                // Not in that state: try the other, or it is already paused or over.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the app's status changes go to a webhook (its outbox).
    fn has_webhook(&self, app: &str) -> bool {
        self.config.app(app).is_some_and(|a| a.webhook.is_some())
    }

    fn providers_for(&self, app: &str) -> Option<Arc<AppProviders>> {
        self.providers.get(app).cloned()
    }

    /// Gives every app's providers its receipt key (read from the store the
    /// first time, and again while an app has none): no push leaves without
    /// its receipt token.
    async fn receipts_ready(&self) -> Result<(), EngineError> {
        if self.providers.values().all(|p| p.has_receipt_key()) {
            return Ok(());
        }
        let keys = crate::domain::receipt::keys_by_app(self.store.app_receipt_key_list().await?)
            .map_err(StoreError::Invariant)?;
        for (app, providers) in &self.providers {
            match keys.get(app) {
                Some(key) => providers.set_receipt_key(app, key.clone()),
                None => {
                    return Err(StoreError::Invariant(format!(
                        "app {app} has no receipt key: its apps row was not synced"
                    ))
                    .into())
                }
            }
        }
        Ok(())
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// Wait after consecutive failures: 200 ms more per failure, at most 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(200 * u64::from(failures.min(25)))
}
