//! Receipt tokens: how a device proves that the message it reports on was sent
//! to it, without holding a secret.
//!
//! Every push carries `token = base64url(id ‖ tag)`, where `id` is the
//! message's id (8 bytes, big-endian) and `tag` the first 16 bytes of
//! HMAC-SHA256 under the app's receipt key of `"meridian-receipt-v1" ‖ app ‖
//! id`: 32 characters. Only Meridian holds the key, so a token cannot be made
//! for a message that was not sent to the device, nor changed to name another
//! one; the app's id in the MAC keeps one app's token from counting in another
//! even if two apps shared a key. 128 bits of tag are beyond guessing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

/// The length of every token, in characters.
pub const TOKEN_LEN: usize = 32;

const TAG_LEN: usize = 16;
const DOMAIN: &[u8] = b"meridian-receipt-v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("not a receipt token (32 URL-safe base64 characters)")]
    Malformed,
    #[error("not a receipt token of this app's messages")]
    Forged,
    #[error("a receipt key must be 64 hex digits")]
    BadKey,
}

/// An app's receipt key (never printed: `Debug` hides it).
#[derive(Clone)]
pub struct ReceiptKey(hmac::Key);

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptKey(..)")
    }
}

impl ReceiptKey {
    /// The key as stored: 32 bytes in hex.
    pub fn from_hex(hex: &str) -> Result<Self, ReceiptError> {
        let bytes = super::bytes::from_hex(hex)
            .filter(|b| b.len() == 32)
            .ok_or(ReceiptError::BadKey)?;
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    fn tag(&self, app: &str, id: i64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(DOMAIN);
        ctx.update(&(app.len() as u32).to_be_bytes());
        ctx.update(app.as_bytes());
        ctx.update(&id.to_be_bytes());
        ctx.sign()
    }

    /// The token of message `id` of `app`.
    pub fn sign(&self, app: &str, id: i64) -> String {
        let mut raw = [0u8; 8 + TAG_LEN];
        raw[..8].copy_from_slice(&id.to_be_bytes());
        raw[8..].copy_from_slice(&self.tag(app, id).as_ref()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The message id a token of `app` names, if this key made it. The tag is
    /// compared in constant time.
    pub fn verify(&self, app: &str, token: &str) -> Result<i64, ReceiptError> {
        let (id, tag) = decode(token)?;
        let expected = self.tag(app, id);
        if !super::bytes::same(&expected.as_ref()[..TAG_LEN], &tag) {
            return Err(ReceiptError::Forged);
        }
        Ok(id)
    }
}

/// Apps' receipt keys as stored, `(app, hex)`, by app; the first that cannot
/// be read is named in the error.
pub fn keys_by_app(
    stored: Vec<(String, String)>,
) -> Result<std::collections::HashMap<String, ReceiptKey>, String> {
    stored
        .into_iter()
        .map(|(app, hex)| match ReceiptKey::from_hex(&hex) {
            Ok(k) => Ok((app, k)),
            Err(e) => Err(format!("receipt key of app {app}: {e}")),
        })
        .collect()
}

/// The message id a token claims, before it is verified: to find whose key
/// checks it (a receipt posted without an API key).
pub fn claimed_id(token: &str) -> Result<i64, ReceiptError> {
    decode(token).map(|(id, _)| id)
}

fn decode(token: &str) -> Result<(i64, [u8; TAG_LEN]), ReceiptError> {
    if token.len() != TOKEN_LEN {
        return Err(ReceiptError::Malformed);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| ReceiptError::Malformed)?;
    let (id, tag) = raw.split_at(8);
    let id = i64::from_be_bytes(id.try_into().map_err(|_| ReceiptError::Malformed)?);
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| ReceiptError::Malformed)?;
    Ok((id, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_token_names_its_message_and_nothing_else() {
        let key = ReceiptKey::from_hex(K1).unwrap();
        let token = key.sign("shop", 4_200_000_123);
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(key.verify("shop", &token), Ok(4_200_000_123));
        assert_eq!(claimed_id(&token), Ok(4_200_000_123));
        // Another app's, another key's, another message's: refused.
        assert_eq!(key.verify("news", &token), Err(ReceiptError::Forged));
        let other = ReceiptKey::from_hex(K2).unwrap();
        assert_eq!(other.verify("shop", &token), Err(ReceiptError::Forged));
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[7] ^= 1;
        let moved = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(key.verify("shop", &moved), Err(ReceiptError::Forged));
        for bad in ["", "abc", &format!("{token}x"), &"*".repeat(32)] {
            assert_eq!(
                key.verify("shop", bad),
                Err(ReceiptError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(ReceiptKey::from_hex("zz").err(), Some(ReceiptError::BadKey));
        assert!(!format!("{key:?}").contains("0001"));
    }
}
