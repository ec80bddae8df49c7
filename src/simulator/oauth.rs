//! Google's OAuth token endpoint: a service account's signed assertion for an access token.

use super::server::{count_error, respond, Reply};
use super::{lock, State};
use crate::provider::jwt;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Google's token endpoint for the JWT-bearer grant.
pub(super) fn oauth(state: &State, body: &[u8]) -> Reply {
    let invalid = |why: &str| {
        count_error(state, "invalid_grant");
        respond(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"error": "invalid_grant", "error_description": why}),
        )
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return respond(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"error": "unsupported_grant_type"}),
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return invalid("missing assertion");
    };
    let Ok(parsed) = jwt::decode(assertion) else {
        return invalid("malformed assertion");
    };
    let iss = parsed
        .claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(account) = state.fcm_accounts.iter().find(|a| a.client_email == iss) else {
        return invalid("unknown service account");
    };
    if parsed.verify_rs256(&account.public_key).is_err() {
        return invalid("Invalid JWT Signature.");
    }
    let now = state.clock.now().timestamp();
    let claim = |k: &str| parsed.claims.get(k).and_then(Value::as_i64).unwrap_or(0);
    let scope_ok = parsed
        .claims
        .get("scope")
        .and_then(Value::as_str)
        .is_some_and(|s| s.split(' ').any(|s| s == crate::provider::fcm::SCOPE));
    let aud_ok = parsed
        .claims
        .get("aud")
        .and_then(Value::as_str)
        .is_some_and(|a| a.ends_with("/token"));
    if !scope_ok || !aud_ok {
        return invalid("bad scope or audience");
    }
    if claim("exp") <= now || claim("iat") > now + 300 || claim("exp") - claim("iat") > 3600 {
        return invalid("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.");
    }
    let ttl = lock(&state.behaviour).access_token_ttl_secs;
    let value = format!(
        "sim-access-{}-{}",
        state.counter.fetch_add(1, Ordering::Relaxed),
        fastrand::u64(..)
    );
    lock(&state.access_tokens).insert(value.clone(), (account.project_id.clone(), now + ttl));
    lock(&state.stats).oauth_grants += 1;
    respond(
        StatusCode::OK,
        &[],
        json!({"access_token": value, "expires_in": ttl, "token_type": "Bearer"}),
    )
}
