//! The service manager's notify protocol (sd_notify(3)): `READY=1`, `STATUS=…`,
//! `WATCHDOG=1`, `RELOADING=1`, `STOPPING=1` as datagrams to `$NOTIFY_SOCKET`.
//!
//! Written over std's `UnixDatagram` rather than a crate: the protocol is one
//! datagram of `KEY=VALUE` lines to a path or an abstract name (`@…`), and owning
//! it keeps the send bounded (a write timeout) and the watchdog's forwarding
//! rule ([`feed_watchdog`]) testable without a service manager.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={addr:?}: {message}")]
    Address { addr: String, message: String },
    #[error("NOTIFY_SOCKET={addr:?}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A connection to the service manager's notify socket.
pub struct Notifier {
    addr: String,
    #[cfg(unix)]
    socket: std::os::unix::net::UnixDatagram,
    #[cfg(unix)]
    target: std::os::unix::net::SocketAddr,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, or `None` when it is unset (not
    /// started by a service manager that listens).
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(addr) if !addr.is_empty() => Self::new(&addr).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for a socket path, or an abstract name written `@name`.
    #[cfg(unix)]
    pub fn new(addr: &str) -> Result<Self, NotifyError> {
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let io = |source| NotifyError::Io {
            addr: addr.to_owned(),
            source,
        };
        let target = match addr.strip_prefix('@') {
            Some(name) => abstract_addr(addr, name)?,
            None if addr.starts_with('/') => SocketAddr::from_pathname(addr).map_err(io)?,
            None => {
                return Err(NotifyError::Address {
                    addr: addr.to_owned(),
                    message: "must be an absolute path or an abstract name starting with '@'"
                        .to_owned(),
                })
            }
        };
        let socket = UnixDatagram::unbound().map_err(io)?;
        // As libsystemd, a blocking send; bounded, so a manager that stopped
        // reading cannot hold a runtime thread for long.
        socket
            .set_write_timeout(Some(Duration::from_secs(1)))
            .map_err(io)?;
        Ok(Self {
            addr: addr.to_owned(),
            socket,
            target,
        })
    }

    #[cfg(not(unix))]
    pub fn new(addr: &str) -> Result<Self, NotifyError> {
        Err(NotifyError::Address {
            addr: addr.to_owned(),
            message: "Unix sockets are not available on this platform".to_owned(),
        })
    }

    /// Sends one message: `KEY=VALUE` lines, e.g. `"READY=1\nSTATUS=Running"`.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        #[cfg(unix)]
        {
            self.socket
                .send_to_addr(state.as_bytes(), &self.target)
                .map_err(|source| NotifyError::Io {
                    addr: self.addr.clone(),
                    source,
                })?;
        }
        #[cfg(not(unix))]
        let _ = state;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(addr: &str, name: &str) -> Result<std::os::unix::net::SocketAddr, NotifyError> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(|source| {
        NotifyError::Io {
            addr: addr.to_owned(),
            source,
        }
    })
}

#[cfg(all(unix, not(target_os = "linux")))]
fn abstract_addr(addr: &str, _name: &str) -> Result<std::os::unix::net::SocketAddr, NotifyError> {
    Err(NotifyError::Address {
        addr: addr.to_owned(),
        message: "abstract socket names exist only on Linux".to_owned(),
    })
}

/// `$WATCHDOG_USEC` when it is meant for this process (`$WATCHDOG_PID` unset or
/// ours: a child started with our environment must not feed our watchdog).
pub fn watchdog_timeout() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Calls `ping` every `every` (half the watchdog timeout, as sd_watchdog_enabled(3)
/// advises) as long as `beats` moved since the previous tick, so a loop that stops
/// turning stops the pings and the manager restarts the service. Without `beats`
/// every tick pings: liveness of the runtime only. Returns when `beats`' sender is
/// dropped.
pub async fn feed_watchdog(
    every: Duration,
    mut beats: Option<tokio::sync::watch::Receiver<u64>>,
    ping: impl Fn(),
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let alive = match beats.as_mut() {
            None => true,
            Some(rx) => match rx.has_changed() {
                Ok(changed) => {
                    rx.mark_unchanged();
                    changed
                }
                Err(_) => return,
            },
        };
        if alive {
            ping();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn watchdog_is_for_this_process_only() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_watchdog(Some("30000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
        assert_eq!(parse_watchdog(None, Some("7"), 7), None);
    }

    #[cfg(unix)]
    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.notify("READY=1\nSTATUS=Running").unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=Running");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("meridian-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.notify("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn a_relative_path_is_refused() {
        assert!(matches!(
            Notifier::new("run/notify"),
            Err(NotifyError::Address { .. })
        ));
    }

    /// Pings follow the beats: while the loop turns, one per tick; once it stops,
    /// at most the one for the beat already seen.
    #[tokio::test]
    async fn the_watchdog_is_fed_only_while_the_loop_beats() {
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let pings = Arc::new(AtomicUsize::new(0));
        let feeder = tokio::spawn({
            let pings = pings.clone();
            feed_watchdog(Duration::from_millis(20), Some(rx), move || {
                pings.fetch_add(1, Ordering::SeqCst);
            })
        });
        for _ in 0..30 {
            tx.send_modify(|n| *n += 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let while_beating = pings.load(Ordering::SeqCst);
        assert!(while_beating >= 5, "{while_beating} pings in 300 ms");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = pings.load(Ordering::SeqCst) - while_beating;
        assert!(after <= 1, "{after} pings after the beats stopped");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(1), feeder)
            .await
            .expect("the feeder ends with its heartbeat")
            .unwrap();
    }
}
