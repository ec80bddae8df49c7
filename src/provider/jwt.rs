//! Compact JWS (JWT) signing and verification with ring: ES256 for APNs provider
//! tokens, RS256 for Google's OAuth JWT-bearer assertions. Used by the clients to
//! sign and by the simulator to verify, so both ends follow one definition.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a PEM PKCS#8 private key: {0}")]
    Pem(String),
    #[error("key rejected: {0}")]
    Key(String),
    #[error("signing failed")]
    Sign,
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    Signature,
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn pkcs8(pem: &str) -> Result<PrivatePkcs8KeyDer<'static>, JwtError> {
    PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| JwtError::Pem(e.to_string()))
}

/// An ES256 signer from an Apple `.p8` key (PKCS#8 PEM, P-256).
pub struct Es256Key {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for Es256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Es256Key(..)")
    }
}

impl Es256Key {
    pub fn from_pem(pem: &str) -> Result<Self, JwtError> {
        let der = pkcs8(pem)?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(Self { pair, rng })
    }

    /// The uncompressed public point, for verifiers.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    pub fn sign<H: Serialize, C: Serialize>(
        &self,
        header: &H,
        claims: &C,
    ) -> Result<String, JwtError> {
        let input = signing_input(header, claims)?;
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| JwtError::Sign)?;
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }
}

/// An RS256 signer from a service account's `private_key` (PKCS#8 PEM, RSA).
pub struct Rs256Key {
    pair: RsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for Rs256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rs256Key(..)")
    }
}

impl Rs256Key {
    pub fn from_pem(pem: &str) -> Result<Self, JwtError> {
        let der = pkcs8(pem)?;
        let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// The public key as DER `RSAPublicKey`, for verifiers.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public().as_ref().to_vec()
    }

    pub fn sign<H: Serialize, C: Serialize>(
        &self,
        header: &H,
        claims: &C,
    ) -> Result<String, JwtError> {
        let input = signing_input(header, claims)?;
        let mut sig = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| JwtError::Sign)?;
        Ok(format!("{input}.{}", b64(&sig)))
    }
}

fn signing_input<H: Serialize, C: Serialize>(header: &H, claims: &C) -> Result<String, JwtError> {
    let h = serde_json::to_vec(header).map_err(|_| JwtError::Sign)?;
    let c = serde_json::to_vec(claims).map_err(|_| JwtError::Sign)?;
    Ok(format!("{}.{}", b64(&h), b64(&c)))
}

/// A token split into its decoded header and claims, not yet verified.
#[derive(Debug, Clone)]
pub struct Unverified<'t> {
    pub header: Value,
    pub claims: Value,
    input: &'t str,
    signature: Vec<u8>,
}

pub fn decode(token: &str) -> Result<Unverified<'_>, JwtError> {
    let (input, sig) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (h, c) = input.split_once('.').ok_or(JwtError::Malformed)?;
    let part = |s: &str| -> Result<Value, JwtError> {
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
    };
    Ok(Unverified {
        header: part(h)?,
        claims: part(c)?,
        input,
        signature: URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| JwtError::Malformed)?,
    })
}

impl Unverified<'_> {
    pub fn verify_es256(&self, public_key: &[u8]) -> Result<(), JwtError> {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
            .verify(self.input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::Signature)
    }

    /// HS256: the HMAC-SHA256 of the signing input under a shared secret,
    /// compared in constant time.
    pub fn verify_hs256(&self, key: &ring::hmac::Key) -> Result<(), JwtError> {
        ring::hmac::verify(key, self.input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::Signature)
    }

    pub fn verify_rs256(&self, public_key: &[u8]) -> Result<(), JwtError> {
        signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key)
            .verify(self.input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::Signature)
    }

    pub fn claims_as<T: DeserializeOwned>(&self) -> Result<T, JwtError> {
        serde_json::from_value(self.claims.clone()).map_err(|_| JwtError::Malformed)
    }
}

/// A fresh P-256 key as a `.p8`-style PEM (tests, the demo and the simulator).
pub fn generate_p8() -> Result<String, JwtError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map(|k| k.serialize_pem())
        .map_err(|e| JwtError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RSA_PEM: &str = include_str!("../simulator/test-service-account-key.pem");

    #[test]
    fn es256_round_trip_and_tamper() {
        let key = Es256Key::from_pem(&generate_p8().unwrap()).unwrap();
        let token = key
            .sign(
                &json!({"alg": "ES256", "kid": "K"}),
                &json!({"iss": "T", "iat": 1}),
            )
            .unwrap();
        let parsed = decode(&token).unwrap();
        assert_eq!(parsed.header["kid"], "K");
        parsed.verify_es256(&key.public_key()).unwrap();
        let other = Es256Key::from_pem(&generate_p8().unwrap()).unwrap();
        assert_eq!(
            parsed.verify_es256(&other.public_key()),
            Err(JwtError::Signature)
        );
    }

    #[test]
    fn rs256_round_trip() {
        let key = Rs256Key::from_pem(RSA_PEM).unwrap();
        let token = key
            .sign(&json!({"alg": "RS256"}), &json!({"iss": "a@b"}))
            .unwrap();
        let parsed = decode(&token).unwrap();
        parsed.verify_rs256(&key.public_key()).unwrap();
        assert_eq!(parsed.claims["iss"], "a@b");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(decode("abc").is_err());
        assert!(decode("a.b.c").is_err());
        assert!(Es256Key::from_pem("nope").is_err());
    }
}
