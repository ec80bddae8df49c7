//! The daemon's logs: tracing-subscriber to stderr, human-readable on a terminal
//! and JSON for the journal or a file, with a level that SIGHUP can change.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{LogConfig, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log.level: {level:?}: {message}")]
    Level { level: String, message: String },
    #[error("logging: {0}")]
    Setup(String),
}

/// Changes the running filter (the subscriber keeps its format and writer).
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` set the filter: it wins over `log.level`, on reload too.
    from_env: bool,
}

/// What [`LogHandle::set_level`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChange {
    Applied,
    /// `RUST_LOG` is set and keeps deciding.
    KeptRustLog,
}

/// Installs the global subscriber: the filter from `RUST_LOG` (when it parses),
/// else `log.level`; the format as [`json_output`] decides.
pub fn init(config: &LogConfig) -> Result<LogHandle, LogError> {
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (parse_level(&config.level)?, false),
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = json_output(config.format, terminal, stderr_is_journal());
    let (filter, handle) = reload::Layer::new(filter);
    let text_layer = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(terminal)
    });
    let json_layer = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text_layer)
        .with(json_layer)
        .try_init()
        .map_err(|e| LogError::Setup(e.to_string()))?;
    Ok(LogHandle {
        filter: handle,
        from_env,
    })
}

impl LogHandle {
    /// Replaces the filter with `level`; a bad one is an error and the old filter stays.
    pub fn set_level(&self, level: &str) -> Result<LevelChange, LogError> {
        let filter = parse_level(level)?;
        if self.from_env {
            return Ok(LevelChange::KeptRustLog);
        }
        self.filter
            .reload(filter)
            .map_err(|e| LogError::Setup(e.to_string()))?;
        Ok(LevelChange::Applied)
    }
}

fn parse_level(level: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(level).map_err(|e| LogError::Level {
        level: level.to_owned(),
        message: e.to_string(),
    })
}

/// JSON or text: as configured, or on `auto` text only on a terminal — the journal
/// (stderr is the stream `$JOURNAL_STREAM` names), a pipe or a file get JSON.
/// The journal check keeps a terminal that inherited `JOURNAL_STREAM` human-readable.
pub fn json_output(format: LogFormat, stderr_is_terminal: bool, stderr_is_journal: bool) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => stderr_is_journal || !stderr_is_terminal,
    }
}

/// Whether stderr is connected to the journal: `$JOURNAL_STREAM` is the
/// `device:inode` of the stream systemd connected, compared with stderr's own
/// (systemd.exec(5)), since the variable is inherited by whatever a service starts.
#[cfg(unix)]
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => journal_stream_is(&stream, m.dev(), m.ino()),
        Err(_) => false,
    }
}

#[cfg(not(unix))]
fn stderr_is_journal() -> bool {
    false
}

fn journal_stream_is(stream: &str, dev: u64, ino: u64) -> bool {
    stream.split_once(':').is_some_and(|(d, i)| {
        d.trim().parse::<u64>() == Ok(dev) && i.trim().parse::<u64>() == Ok(ino)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_text_on_a_terminal_only() {
        assert!(!json_output(LogFormat::Auto, true, false));
        assert!(json_output(LogFormat::Auto, false, false));
        assert!(json_output(LogFormat::Auto, false, true));
        assert!(json_output(LogFormat::Json, true, false));
        assert!(!json_output(LogFormat::Text, false, true));
    }

    #[test]
    fn journal_stream_names_device_and_inode() {
        assert!(journal_stream_is("8:123456", 8, 123_456));
        assert!(!journal_stream_is("8:123457", 8, 123_456));
        assert!(!journal_stream_is("8", 8, 123_456));
        assert!(!journal_stream_is("", 8, 123_456));
    }

    #[test]
    fn a_bad_level_names_the_key() {
        let e = parse_level("meridian=loud").err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.starts_with("log.level: \"meridian=loud\"")));
    }
}
