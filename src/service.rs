//! The REST API and the engine running together on one store: what `serve` and
//! `demo` share, so the demo exercises exactly the daemon's startup and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::{Engine, EngineError, EngineSettings};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The engine could not be set up (a provider's configuration, a hook's).
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("server.listen: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "database.url: another meridian instance runs the engine on this SQLite database \
         (it holds {path}); SQLite serves one instance, Postgres several"
    )]
    Locked { path: std::path::PathBuf },
    #[error("database.url: cannot lock {path}: {source}")]
    Lock {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// On SQLite, the lock file beside the database that the instance running the
/// engine holds for its life (released by the OS however it ends), so a second
/// one is refused and the first may take back every lease a crash left.
fn lock_sqlite(config: &Config) -> Result<Option<std::fs::File>, ServiceError> {
    let Some(db) = config.database.sqlite_path() else {
        return Ok(None);
    };
    if db.is_empty() || db.starts_with(":memory:") {
        return Ok(None);
    }
    let path = std::path::PathBuf::from(format!("{db}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ServiceError::Lock {
            path: path.clone(),
            source,
        })?;
    use rustix::fs::{flock, FlockOperation};
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(ServiceError::Locked { path }),
        Err(e) => Err(ServiceError::Lock {
            path,
            source: e.into(),
        }),
    }
}

/// The API listening and, unless `engine.enabled = false`, the engine's loops
/// running. Stop it with [`Service::stop`].
pub struct Service<S> {
    /// Where the API listens (the bound port when `server.listen` asked for 0).
    pub api_addr: SocketAddr,
    engine: Option<Arc<Engine<S>>>,
    first_turn: Option<tokio::sync::watch::Receiver<u64>>,
    /// The one shutdown token: the API and every engine loop wait on it.
    shutdown: CancellationToken,
    api_server: tokio::task::JoinHandle<std::io::Result<()>>,
    runner: Option<tokio::task::JoinHandle<()>>,
    /// SQLite: the lock file held while the engine runs ([`lock_sqlite`]).
    _engine_lock: Option<std::fs::File>,
}

impl<S: Store> Service<S> {
    /// Builds the engine, binds `server.listen` and starts both. The store is
    /// expected migrated and the apps synced.
    pub async fn start(
        store: Arc<S>,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServiceError> {
        let shutdown = CancellationToken::new();
        let engine_lock = if config.engine.enabled {
            lock_sqlite(&config)?
        } else {
            None
        };
        let engine = if config.engine.enabled {
            let settings = EngineSettings::from_config(&config.engine);
            let engine = Engine::new(store.clone(), config.clone(), clock.clone(), settings)?
                .with_shutdown(shutdown.clone());
            Some(Arc::new(engine))
        } else {
            None
        };
        let addr = config.server.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::Listen { addr, source })?;
        let api_addr = listener.local_addr().unwrap_or(addr);
        let mut api_state = ApiState::new(store, config, clock);
        if let Some(e) = &engine {
            let probe = e.clone();
            api_state = api_state
                .with_rows_queued(e.rows_queued())
                .with_scheduler(Arc::new(move || probe.ticking()));
        }
        // The console shares the port and the state; it needs the client's address.
        let router = crate::console::beside(api::router(api_state.clone()), api_state)
            .into_make_service_with_connect_info::<SocketAddr>();
        let api_server = tokio::spawn({
            let stop = shutdown.clone();
            async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }
        });
        // Subscribed before the loop starts, so its first turn is seen.
        let first_turn = engine.as_ref().map(|e| e.heartbeat());
        let runner = engine
            .clone()
            .map(|e| tokio::spawn(async move { e.run().await }));
        Ok(Self {
            api_addr,
            engine,
            first_turn,
            shutdown,
            api_server,
            runner,
            _engine_lock: engine_lock,
        })
    }

    pub fn engine(&self) -> Option<&Engine<S>> {
        self.engine.as_deref()
    }

    /// Changes once the release loop has turned for the first time (taken once;
    /// `None` with the engine off or when already taken).
    pub fn take_first_turn(&mut self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.first_turn.take()
    }

    /// Stops accepting API requests, stops the engine (nothing new is released or
    /// leased, sends not started are given back) and waits up to `grace` for the
    /// sends in flight to be recorded; what is still in flight then is left to
    /// lease expiry.
    pub async fn stop(self, grace: Duration) {
        self.shutdown.cancel();
        if let Some(runner) = self.runner {
            if tokio::time::timeout(grace, runner).await.is_err() {
                tracing::warn!(message = "Grace period over with sends in flight; their leases will expire and be taken over.");
            }
        }
        if let Ok(Err(error)) = self.api_server.await {
            tracing::warn!(message = "The API server stopped with an error.", %error);
        }
    }
}
