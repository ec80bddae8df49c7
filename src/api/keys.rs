//! API keys: random secrets shown once, stored as their SHA-256.

use base64::Engine as _;
use ring::rand::SecureRandom;

/// What a new key is made of: the secret (printed once), a short prefix that names
/// it in listings, and the hash that is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    pub secret: String,
    pub prefix: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `N` bytes from the system's secure random number generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomError)?;
    Ok(bytes)
}

/// A new key: `mrd_` and 32 random bytes in URL-safe base64.
pub fn generate() -> Result<GeneratedKey, RandomError> {
    let bytes = random_bytes::<32>()?;
    let secret = format!(
        "mrd_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    Ok(GeneratedKey {
        prefix: secret.chars().take(12).collect(),
        hash: hash(&secret),
        secret,
    })
}

/// The stored form of a secret: lowercase hex SHA-256. Keys carry 256 random bits,
/// so a fast hash is enough (no password stretching needed).
pub fn hash(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    crate::domain::bytes::to_hex(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("mrd_") && a.secret.len() == 4 + 43);
        assert_eq!(a.hash, hash(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
