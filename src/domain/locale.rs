//! One rule for a language tag, wherever one is given: a campaign's message
//! variants and audience, a user, a device. A language of 2 or 3 letters, then
//! subtags of 1 to 8 letters or digits, joined by `-` or `_` (`de`, `de-DE`,
//! `pt_BR`, `zh-Hant-TW`), at most 35 characters (BCP 47's longest useful tag).

use std::fmt;

/// A language tag that passed [`Locale::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locale(String);

/// What a refused tag is told.
pub const LOCALE_EXPECTED: &str = "expected a language tag such as \"en-US\"";

impl Locale {
    pub const MAX_LEN: usize = 35;

    /// The tag as given, if it follows the rule.
    pub fn parse(s: &str) -> Option<Self> {
        Self::is_valid(s).then(|| Self(s.to_owned()))
    }

    pub fn is_valid(s: &str) -> bool {
        if s.len() > Self::MAX_LEN {
            return false;
        }
        let mut parts = s.split(['-', '_']);
        let language = parts.next().is_some_and(|l| {
            (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic())
        });
        language
            && parts
                .all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_one_rule() {
        for ok in ["de", "de-DE", "pt_BR", "zh-Hant-TW", "es-419", "fil-PH"] {
            assert!(Locale::parse(ok).is_some(), "{ok}");
        }
        let long = format!("en{}", "-abcdefgh".repeat(4));
        for bad in [
            "",
            "a",
            "12",
            "english",
            "de DE",
            "de-",
            "de--DE",
            "de-DE!",
            "-DE",
            long.as_str(),
        ] {
            assert!(Locale::parse(bad).is_none(), "{bad}");
        }
    }
}
