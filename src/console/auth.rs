//! Passwords, session tokens and the checks a sign-in goes through.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;

/// Why a password could not be hashed (the system's random source failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

impl From<tokio::task::JoinError> for HashError {
    fn from(e: tokio::task::JoinError) -> Self {
        HashError(e.to_string())
    }
}

/// An Argon2id hash (the crate's defaults: 19 MiB, 2 passes, 1 lane, as
/// OWASP's password storage sheet recommends) in the PHC string format.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches `stored` (the comparison inside is constant-time).
/// A stored hash that does not parse matches nothing.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash verified when the email is unknown, so a sign-in takes as long
/// either way and its timing does not tell which emails are operators.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not the password of anyone").unwrap_or_default())
}

/// 32 random bytes, URL-safe base64: a session token or a CSRF token.
pub fn random_token() -> Result<String, HashError> {
    let bytes = crate::api::keys::random_bytes::<32>().map_err(|e| HashError(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A printable random password for `operator add` when none is given.
pub fn random_password() -> Result<String, HashError> {
    random_token().map(|t| t[..20].to_owned())
}

/// What a session is stored by: the SHA-256 of its token, as API keys are
/// stored, so the table alone cannot sign anyone in.
pub fn token_hash(token: &str) -> String {
    crate::api::keys::hash(token)
}

/// Constant-time equality of two strings (CSRF tokens).
pub fn same(a: &str, b: &str) -> bool {
    crate::domain::bytes::same(a.as_bytes(), b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert!(!verify_password("anything", "not a hash"));
        assert_ne!(h, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        assert!(same(&a, &a.clone()) && !same(&a, &b) && !same("a", "ab"));
    }
}
