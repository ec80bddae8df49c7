//! Prometheus metrics: every family's name and labels are here, so
//! `docs/operations.md` and `/metrics` cannot drift apart. The recorder is
//! process-wide (the `metrics` facade); `install` is idempotent so several
//! servers in one test process share it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::state::{DeliveryStatus, StateMachine};

pub const DELIVERIES: &str = "meridian_deliveries_total";
pub const PROVIDER_LATENCY: &str = "meridian_provider_request_duration_seconds";
pub const RETRIES: &str = "meridian_retries_total";
pub const TOKENS_INVALIDATED: &str = "meridian_tokens_invalidated_total";
pub const SCHEDULER_LAG: &str = "meridian_scheduler_lag_seconds";
pub const LEASE_TAKEOVERS: &str = "meridian_lease_takeovers_total";
pub const QUEUE_DEPTH: &str = "meridian_queue_depth";
pub const RATE_LIMIT_WAITS: &str = "meridian_rate_limit_waits_total";
pub const API_REQUESTS: &str = "meridian_api_requests_total";
pub const RETENTION_PRUNED: &str = "meridian_retention_pruned_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder once; `None` when another recorder was
/// installed first (metrics then go there, and `/metrics` renders nothing).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(PROVIDER_LATENCY.to_owned()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(SCHEDULER_LAG.to_owned()),
                        &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
                    )
                })
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            // Series that start at zero, so a scrape shows them before they happen.
            metrics::counter!(LEASE_TAKEOVERS).increment(0);
            for provider in ["apns", "fcm"] {
                metrics::counter!(RATE_LIMIT_WAITS, "provider" => provider).increment(0);
                metrics::counter!(TOKENS_INVALIDATED, "provider" => provider).increment(0);
            }
            Some(handle)
        })
        .as_ref()
}

/// The text exposition of every family recorded so far.
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        DELIVERIES,
        "Delivery outcomes decided, by status and provider."
    );
    describe_histogram!(
        PROVIDER_LATENCY,
        Unit::Seconds,
        "Time of one request to APNs or FCM, by provider and outcome."
    );
    describe_counter!(RETRIES, "Sends scheduled for another attempt, by reason.");
    describe_counter!(
        TOKENS_INVALIDATED,
        "Device tokens the provider declared dead."
    );
    describe_histogram!(
        SCHEDULER_LAG,
        Unit::Seconds,
        "From a slot's due time to the first send of each of its chunks."
    );
    describe_counter!(
        LEASE_TAKEOVERS,
        "Chunks taken from an owner whose lease lapsed or was reclaimed (not those given back)."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Work waiting in the database, by kind, read when scraped: the same on every \
         instance sharing it (aggregate with max, not sum)."
    );
    describe_counter!(
        RATE_LIMIT_WAITS,
        "Sends that waited for the provider pacer."
    );
    describe_counter!(API_REQUESTS, "API requests by route, method and status.");
    describe_counter!(
        RETENTION_PRUNED,
        "Records deleted past their retention, by kind ([retention])."
    );
}

/// Records of `kind` deleted by retention (0 makes the series show at start).
pub fn retention_pruned(kind: &'static str, n: u64) {
    metrics::counter!(RETENTION_PRUNED, "kind" => kind).increment(n);
}

/// An outcome decided for a message.
pub fn delivery(status: DeliveryStatus, provider: &'static str, reason: Option<&str>) {
    metrics::counter!(DELIVERIES, "status" => status.as_str(), "provider" => provider).increment(1);
    match status {
        DeliveryStatus::Retry => {
            metrics::counter!(RETRIES, "reason" => retry_reason(reason.unwrap_or("unknown")))
                .increment(1);
        }
        DeliveryStatus::TokenInvalid => {
            metrics::counter!(TOKENS_INVALIDATED, "provider" => provider).increment(1);
        }
        _ => {}
    }
}

/// A retry reason as a label: the provider's reason code (the part before any
/// `:` or `(` of free text), so the label set stays small.
pub fn retry_reason(reason: &str) -> String {
    reason
        .split([':', '('])
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .chars()
        .take(48)
        .collect()
}

/// One provider request and how it ended (`Outcome::label`): metrics names no
/// provider type, so the providers may record here without a cycle.
pub fn provider_request(provider: &'static str, outcome: &'static str, took: Duration) {
    metrics::histogram!(PROVIDER_LATENCY, "provider" => provider, "outcome" => outcome)
        .record(took.as_secs_f64());
}

pub fn rate_limit_wait(provider: &'static str) {
    metrics::counter!(RATE_LIMIT_WAITS, "provider" => provider).increment(1);
}

pub fn scheduler_lag(lag: Duration) {
    metrics::histogram!(SCHEDULER_LAG).record(lag.as_secs_f64());
}

pub fn lease_takeover() {
    metrics::counter!(LEASE_TAKEOVERS).increment(1);
}

pub fn queue_depth(kind: String, n: i64) {
    metrics::gauge!(QUEUE_DEPTH, "kind" => kind).set(n as f64);
}

pub fn api_request(route: String, method: String, status: u16) {
    metrics::counter!(API_REQUESTS, "route" => route, "method" => method, "status" => status.to_string())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_reasons_keep_the_code_only() {
        assert_eq!(retry_reason("TooManyRequests"), "TooManyRequests");
        assert_eq!(retry_reason("UNAVAILABLE: try later"), "UNAVAILABLE");
        assert_eq!(retry_reason("HTTP 503"), "HTTP 503");
        assert_eq!(retry_reason(""), "unknown");
    }
}
