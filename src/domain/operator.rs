//! Console operators: their roles, what each role may do, and the rules for an
//! email and a password. Pure: hashing and storage are the edges' business.

use std::fmt;
use std::str::FromStr;

/// What an operator may do in the console, on the apps granted to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything of their apps.
    Viewer,
    /// Also composes, edits, schedules, pauses, resumes, cancels and sends test pushes.
    Editor,
    /// Also manages API keys and operators, and reads the audit log.
    Admin,
}

/// An action the server checks a role against, for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    EditCampaigns,
    ManageKeys,
    ManageOperators,
    ReadAudit,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn can(self, p: Permission) -> bool {
        match p {
            Permission::Read => true,
            Permission::EditCampaigns => self >= Role::Editor,
            Permission::ManageKeys | Permission::ManageOperators | Permission::ReadAudit => {
                self == Role::Admin
            }
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: admin, editor or viewer"))
    }
}

impl TryFrom<String> for Role {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// The apps an operator is granted: every app, or the ones listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppGrant {
    All,
    Only(Vec<String>),
}

impl AppGrant {
    pub fn allows(&self, app: &str) -> bool {
        match self {
            AppGrant::All => true,
            AppGrant::Only(apps) => apps.iter().any(|a| a == app),
        }
    }
}

impl AppGrant {
    /// As stored: `None` for every app, else a JSON array of app ids.
    pub fn to_stored(&self) -> Option<String> {
        match self {
            AppGrant::All => None,
            AppGrant::Only(apps) => Some(serde_json::Value::from(apps.clone()).to_string()),
        }
    }
}

impl TryFrom<Option<String>> for AppGrant {
    type Error = String;

    fn try_from(stored: Option<String>) -> Result<Self, String> {
        match stored {
            None => Ok(AppGrant::All),
            Some(text) => serde_json::from_str(&text)
                .map(AppGrant::Only)
                .map_err(|e| format!("operator apps {text:?}: {e}")),
        }
    }
}

/// An email as operators are known by: trimmed and lowercased, one `@` with
/// something on each side, no spaces, at most 254 characters.
pub fn normalize_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid {
        Ok(email)
    } else {
        Err(format!("{raw:?} is not an email address"))
    }
}

/// The shortest password accepted (NIST SP 800-63B asks for at least 8; a
/// console that can message every user of an app deserves more).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest: Argon2 takes any length, but a megabyte of "password" is a
/// request that only costs us.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Checks a new password: its length, and that it is not a well-known one or
/// a run of one character or of a keyboard row (common passwords padded to
/// the minimum length are what guessing lists try first).
pub fn check_password(password: &str, email: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(format!(
            "the password must have at most {MAX_PASSWORD_CHARS} characters"
        ));
    }
    let lower = password.to_lowercase();
    let distinct: std::collections::HashSet<char> = lower.chars().collect();
    if distinct.len() < 4 {
        return Err("the password repeats too few characters".to_owned());
    }
    let local = email.split('@').next().unwrap_or_default();
    if local.chars().count() >= 3 && lower.contains(local) {
        return Err("the password must not contain the email's name".to_owned());
    }
    if SEQUENCES.iter().any(|s| s.contains(lower.as_str())) {
        return Err("the password is a run of the keyboard or the alphabet".to_owned());
    }
    // Stripped of digits and symbols at the ends: "Password2024!" is "password".
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    let common = COMMON_PASSWORDS.contains(&core);
    if common {
        return Err("the password is too common: choose another".to_owned());
    }
    Ok(())
}

/// Keyboard and alphabet runs a password must not be a part of.
const SEQUENCES: &[&str] = &[
    "abcdefghijklmnopqrstuvwxyz",
    "01234567890123456789",
    "98765432109876543210",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertzuiopasdfghjklyxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
    "1qaz2wsx3edc4rfv5tgb6yhn",
];

/// Passwords (and password stems) at the top of every breach list.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "letmein",
    "welcome",
    "admin",
    "administrator",
    "qwerty",
    "qwertz",
    "azerty",
    "iloveyou",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "master",
    "shadow",
    "sunshine",
    "princess",
    "superman",
    "batman",
    "trustno",
    "whatever",
    "freedom",
    "starwars",
    "changeme",
    "secret",
    "default",
    "login",
    "hello",
    "charlie",
    "michael",
    "jessica",
    "ashley",
    "mustang",
    "access",
    "flower",
    "hottie",
    "loveme",
    "zaq1zaq1",
    "zaq12wsx",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "q1w2e3r4",
    "asdfgh",
    "asdfghjkl",
    "zxcvbnm",
    "qazwsx",
    "computer",
    "internet",
    "samsung",
    "google",
    "marketing",
    "meridian",
    "notification",
    "summer",
    "winter",
    "spring",
    "autumn",
    "december",
    "november",
    "october",
    "september",
    "january",
    "february",
    "company",
    "welcome1",
    "password1",
    "abc123",
    "test",
    "testing",
    "guest",
    "root",
    "toor",
    "user",
    "demo",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_more_as_they_rise() {
        assert!(Role::Viewer.can(Permission::Read));
        assert!(!Role::Viewer.can(Permission::EditCampaigns));
        assert!(Role::Editor.can(Permission::EditCampaigns));
        assert!(!Role::Editor.can(Permission::ManageKeys));
        assert!(!Role::Editor.can(Permission::ReadAudit));
        assert!(Role::Admin.can(Permission::ManageOperators));
        assert_eq!("editor".parse::<Role>(), Ok(Role::Editor));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn emails_are_normalized_or_refused() {
        assert_eq!(
            normalize_email(" Ana@Example.COM ").unwrap(),
            "ana@example.com"
        );
        for bad in [
            "",
            "ana",
            "@example.com",
            "ana@",
            "a b@example.com",
            "a@b@c",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn weak_passwords_are_refused_with_a_reason() {
        let email = "ana@example.com";
        assert!(check_password("correct horse battery", email).is_ok());
        assert!(check_password("Kx9!vQ2#mLp7", email).is_ok());
        for weak in [
            "short",
            "password1234",
            "Password2024!",
            "aaaaaaaaaaaaaa",
            "abababababab",
            "qwertyuiopas",
            "123456789012",
            "ana-is-the-best-2026",
            "welcome123456",
        ] {
            assert!(check_password(weak, email).is_err(), "{weak}");
        }
        assert!(check_password(&"x".repeat(129), email).is_err());
    }

    #[test]
    fn a_grant_names_its_apps() {
        assert!(AppGrant::All.allows("shop"));
        let only = AppGrant::Only(vec!["shop".into()]);
        assert!(only.allows("shop") && !only.allows("news"));
    }
}
