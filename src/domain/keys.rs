//! What an API key may do: its kind.

use std::fmt;
use std::str::FromStr;

/// The kind of an API key. A server key stays on the partner's servers and can
/// do everything its app can; a client key is publishable (it ships inside the
/// mobile app, where anyone can extract it), so it can do only what the app on
/// a device needs and nothing that reads or sends to anyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Every route of its app: pushes, campaigns, users, messages.
    Server,
    /// Registers its device or install, unregisters its own token, reads and
    /// sets its user's subscriptions (with an identity proof where the app
    /// requires one), posts receipts.
    Client,
}

impl KeyKind {
    pub const ALL: [KeyKind; 2] = [KeyKind::Server, KeyKind::Client];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Server => "server",
            KeyKind::Client => "client",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown key kind {s:?}: server or client"))
    }
}

impl TryFrom<String> for KeyKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_as_written() {
        for k in KeyKind::ALL {
            assert_eq!(k.as_str().parse::<KeyKind>(), Ok(k));
        }
        assert!("admin"
            .parse::<KeyKind>()
            .unwrap_err()
            .contains("server or client"));
    }
}
