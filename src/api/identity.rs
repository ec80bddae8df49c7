//! Identity proofs: how a client key (which anyone can extract from the app)
//! shows that the user it names is the user signed in on the device.
//!
//! The partner's backend, which knows who is signed in, mints the proof and
//! the app passes it in `X-Meridian-Identity`: either the HMAC-SHA256 of the
//! user's external id under the app's identity secret, in hex (as OneSignal's
//! identity verification and Intercom's user hash), or a short-lived JWT whose
//! `sub` is the external id (`exp` required), signed HS256 with the same
//! secret or ES256 with a key whose public half the app's config names.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ring::hmac;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::SubjectPublicKeyInfoDer;

use crate::config::{AppConfig, IdentityMode};
use crate::domain::bytes::{from_hex, to_hex};
use crate::provider::jwt;

/// The header a client sends its proof in.
pub const HEADER: &str = "x-meridian-identity";

/// How far a JWT's `exp` may lie behind this server's clock (clock skew).
const LEEWAY_SECS: i64 = 60;

/// The DER header of a P-256 SubjectPublicKeyInfo, before the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error(
        "identity proof required: this app ties a device to a user only with X-Meridian-Identity \
         (the HMAC-SHA256 of the user id under the app's identity secret, in hex, or a JWT whose \
         sub is the user id, made by your backend); without one, register an anonymous install \
         (installId)"
    )]
    Required,
    #[error("X-Meridian-Identity: neither 64 hex digits (HMAC-SHA256) nor a JWT")]
    Malformed,
    #[error("X-Meridian-Identity: the signature does not match this user id under this app's identity key")]
    Forged,
    #[error("X-Meridian-Identity: the JWT is for another user (its sub is not the user id)")]
    OtherUser,
    #[error("X-Meridian-Identity: the JWT expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("X-Meridian-Identity: the JWT has no exp (proofs must be short-lived)")]
    NoExpiry,
    #[error("X-Meridian-Identity: JWT alg {0:?} is not accepted (HS256, ES256)")]
    Algorithm(String),
    #[error("X-Meridian-Identity: this app has no {0} configured to check such a proof")]
    NotConfigured(&'static str),
}

impl ProofError {
    /// The stable `error` code of the 401 answer.
    pub fn code(&self) -> &'static str {
        match self {
            ProofError::Required => "identity_required",
            _ => "identity_invalid",
        }
    }
}

/// One app's identity settings with its keys read.
pub struct IdentityCheck {
    mode: IdentityMode,
    secret: Option<hmac::Key>,
    /// The uncompressed P-256 point of the ES256 key.
    es256: Option<Vec<u8>>,
}

impl std::fmt::Debug for IdentityCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCheck")
            .field("mode", &self.mode)
            .field("secret", &self.secret.as_ref().map(|_| ".."))
            .field("es256", &self.es256.as_ref().map(|_| ".."))
            .finish()
    }
}

impl IdentityCheck {
    pub fn new(
        mode: IdentityMode,
        secret: Option<&[u8]>,
        es256_spki_pem: Option<&str>,
    ) -> Result<Self, String> {
        let es256 = match es256_spki_pem {
            None => None,
            Some(pem) => Some(p256_point(pem)?),
        };
        if secret.is_some_and(<[u8]>::is_empty) {
            return Err("the identity secret is empty".into());
        }
        Ok(Self {
            mode,
            secret: secret.map(|s| hmac::Key::new(hmac::HMAC_SHA256, s)),
            es256,
        })
    }

    /// Reads the files an app's `identity` names.
    pub fn from_config(app: &AppConfig) -> Result<Self, String> {
        let read =
            |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let secret = match &app.identity.secret_file {
            // A trailing newline from `echo > file` is not part of the secret.
            Some(p) => Some(trim_newline(read(p)?)),
            None => None,
        };
        let pem = match &app.identity.es256_public_key_file {
            Some(p) => Some(
                String::from_utf8(read(p)?)
                    .map_err(|_| "the ES256 key is not PEM text".to_owned())?,
            ),
            None => None,
        };
        Self::new(app.identity.mode, secret.as_deref(), pem.as_deref())
    }

    /// Whether a client key may act for user `external_id` with this proof (or
    /// none): a proof given is always checked; none is enough only when the
    /// app's identity is optional.
    pub fn admit(
        &self,
        external_id: &str,
        proof: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), ProofError> {
        match proof {
            Some(p) => self.verify(external_id, p, now),
            None if self.mode == IdentityMode::Optional => Ok(()),
            None => Err(ProofError::Required),
        }
    }

    /// Checks a proof for `external_id`.
    pub fn verify(
        &self,
        external_id: &str,
        proof: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ProofError> {
        let proof = proof.trim();
        if proof.contains('.') {
            return self.verify_jwt(external_id, proof, now);
        }
        let key = self
            .secret
            .as_ref()
            .ok_or(ProofError::NotConfigured("identity secret"))?;
        let mac = from_hex(proof)
            .filter(|m| m.len() == 32)
            .ok_or(ProofError::Malformed)?;
        hmac::verify(key, external_id.as_bytes(), &mac).map_err(|_| ProofError::Forged)
    }

    fn verify_jwt(
        &self,
        external_id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ProofError> {
        let t = jwt::decode(token).map_err(|_| ProofError::Malformed)?;
        let alg = t
            .header
            .get("alg")
            .and_then(|a| a.as_str())
            .unwrap_or_default();
        match alg {
            "HS256" => {
                let key = self
                    .secret
                    .as_ref()
                    .ok_or(ProofError::NotConfigured("identity secret"))?;
                t.verify_hs256(key).map_err(|_| ProofError::Forged)?;
            }
            "ES256" => {
                let key = self
                    .es256
                    .as_ref()
                    .ok_or(ProofError::NotConfigured("ES256 public key"))?;
                t.verify_es256(key).map_err(|_| ProofError::Forged)?;
            }
            other => return Err(ProofError::Algorithm(other.to_owned())),
        }
        // Only a verified token's claims are read.
        if t.claims.get("sub").and_then(|s| s.as_str()) != Some(external_id) {
            return Err(ProofError::OtherUser);
        }
        let exp = t
            .claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .ok_or(ProofError::NoExpiry)?;
        if exp + LEEWAY_SECS <= now.timestamp() {
            return Err(ProofError::Expired(
                DateTime::from_timestamp(exp, 0).unwrap_or_default(),
            ));
        }
        Ok(())
    }
}

/// Every configured app's check, by app id; an app whose keys cannot be read
/// is left out (logged), so its client keys cannot tie devices to users.
pub fn checks(config: &crate::config::Config) -> HashMap<String, IdentityCheck> {
    let mut out = HashMap::new();
    for (id, app) in &config.apps {
        match IdentityCheck::from_config(app) {
            Ok(c) => {
                out.insert(id.clone(), c);
            }
            Err(error) => {
                tracing::error!(message = "Identity proofs of this app cannot be checked.", app = %id, %error);
            }
        }
    }
    out
}

fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

/// The point of a P-256 public key given as PEM SubjectPublicKeyInfo.
fn p256_point(pem: &str) -> Result<Vec<u8>, String> {
    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("the ES256 public key is not a PEM public key: {e}"))?;
    let der: &[u8] = der.as_ref();
    match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
        Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(point.to_vec()),
        _ => Err("the ES256 public key is not an uncompressed P-256 key".into()),
    }
}

/// A P-256 point as PEM SubjectPublicKeyInfo (what `openssl ec -pubout`
/// writes), for the tests.
#[cfg(test)]
fn p256_spki_pem(point: &[u8]) -> String {
    use base64::Engine as _;
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// The proof a backend mints for `external_id`: HMAC-SHA256 in hex.
pub fn hmac_proof(secret: &[u8], external_id: &str) -> String {
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        external_id.as_bytes(),
    );
    to_hex(tag.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use chrono::TimeZone;
    use serde_json::json;

    const SECRET: &[u8] = b"partner identity secret";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
    }

    fn hs256(secret: &[u8], claims: serde_json::Value) -> String {
        let b = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let input = format!("{}.{}", b(json!({"alg": "HS256", "typ": "JWT"})), b(claims));
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
        format!(
            "{input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    #[test]
    fn hmac_proofs_name_one_user_under_one_secret() {
        let check = IdentityCheck::new(IdentityMode::Required, Some(SECRET), None).unwrap();
        let proof = hmac_proof(SECRET, "user-1");
        assert_eq!(check.verify("user-1", &proof, now()), Ok(()));
        assert_eq!(
            check.verify("user-2", &proof, now()),
            Err(ProofError::Forged)
        );
        let other = hmac_proof(b"another app's secret", "user-1");
        assert_eq!(
            check.verify("user-1", &other, now()),
            Err(ProofError::Forged)
        );
        assert_eq!(
            check.verify("user-1", "abc", now()),
            Err(ProofError::Malformed)
        );
        assert_eq!(
            check.admit("user-1", None, now()),
            Err(ProofError::Required)
        );
        let optional = IdentityCheck::new(IdentityMode::Optional, Some(SECRET), None).unwrap();
        assert_eq!(optional.admit("user-1", None, now()), Ok(()));
        assert_eq!(
            optional.admit("user-1", Some(&other), now()),
            Err(ProofError::Forged)
        );
    }

    #[test]
    fn jwts_need_their_user_a_valid_signature_and_an_expiry() {
        let check = IdentityCheck::new(IdentityMode::Required, Some(SECRET), None).unwrap();
        let exp = now().timestamp() + 300;
        let ok = hs256(SECRET, json!({"sub": "user-1", "exp": exp}));
        assert_eq!(check.verify("user-1", &ok, now()), Ok(()));
        assert_eq!(
            check.verify("user-2", &ok, now()),
            Err(ProofError::OtherUser)
        );
        let forged = hs256(b"guess", json!({"sub": "user-1", "exp": exp}));
        assert_eq!(
            check.verify("user-1", &forged, now()),
            Err(ProofError::Forged)
        );
        let old = hs256(
            SECRET,
            json!({"sub": "user-1", "exp": now().timestamp() - 3600}),
        );
        assert!(matches!(
            check.verify("user-1", &old, now()),
            Err(ProofError::Expired(_))
        ));
        let forever = hs256(SECRET, json!({"sub": "user-1"}));
        assert_eq!(
            check.verify("user-1", &forever, now()),
            Err(ProofError::NoExpiry)
        );
        // `alg: none` (no signature) is refused before anything is read.
        let b = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b(json!({"alg": "none"})),
            b(json!({"sub": "user-1", "exp": exp}))
        );
        assert_eq!(
            check.verify("user-1", &none, now()),
            Err(ProofError::Algorithm("none".into()))
        );
    }

    #[test]
    fn es256_jwts_are_checked_with_the_configured_public_key() {
        let key = jwt::Es256Key::from_pem(&jwt::generate_p8().unwrap()).unwrap();
        let pem = p256_spki_pem(&key.public_key());
        let check = IdentityCheck::new(IdentityMode::Required, None, Some(&pem)).unwrap();
        let exp = now().timestamp() + 300;
        let token = key
            .sign(
                &json!({"alg": "ES256", "typ": "JWT"}),
                &json!({"sub": "user-1", "exp": exp}),
            )
            .unwrap();
        assert_eq!(check.verify("user-1", &token, now()), Ok(()));
        let stranger = jwt::Es256Key::from_pem(&jwt::generate_p8().unwrap()).unwrap();
        let token = stranger
            .sign(
                &json!({"alg": "ES256"}),
                &json!({"sub": "user-1", "exp": exp}),
            )
            .unwrap();
        assert_eq!(
            check.verify("user-1", &token, now()),
            Err(ProofError::Forged)
        );
        // No secret configured: an HMAC proof cannot be checked.
        assert_eq!(
            check.verify("user-1", &hmac_proof(SECRET, "user-1"), now()),
            Err(ProofError::NotConfigured("identity secret"))
        );
        assert!(IdentityCheck::new(IdentityMode::Required, None, Some("not pem")).is_err());
    }
}
