//! Rate limits of what mobile apps call: per client key and per source address.
//!
//! A generic cell rate algorithm (GCRA) per key: one instant per key (when its
//! bucket is next empty), so an address costs a few dozen bytes however fast it
//! calls, and a burst of a minute's allowance is admitted at once. Kept in this
//! instance's memory: with several instances behind a balancer, each admits up
//! to the limit. Time is the API's [`Clock`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};

use crate::clock::Clock;
use crate::config::ClientLimits;

/// Keys past which a limiter forgets those whose buckets are full again.
const PRUNE_AT: usize = 100_000;

/// One limit: `per_minute` requests a minute per key (0: no limit).
pub struct Limiter {
    interval: Option<TimeDelta>,
    burst: TimeDelta,
    next_free: Mutex<(HashMap<String, DateTime<Utc>>, usize)>,
}

impl Limiter {
    pub fn new(per_minute: u32) -> Self {
        let interval = (per_minute > 0).then(|| {
            TimeDelta::microseconds(60_000_000 / i64::from(per_minute))
                .max(TimeDelta::microseconds(1))
        });
        Self {
            interval,
            // A minute's allowance may come at once.
            burst: TimeDelta::seconds(60),
            next_free: Mutex::new((HashMap::new(), PRUNE_AT)),
        }
    }

    /// Admits one request of `key` at `now`, or says how many seconds to wait.
    pub fn check(&self, key: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        let mut guard = self
            .next_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (map, prune_at) = &mut *guard;
        if map.len() >= *prune_at {
            map.retain(|_, t| *t > now);
            *prune_at = (map.len() * 2).max(PRUNE_AT);
        }
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let next = tat + interval;
        if next - now > self.burst {
            let wait = (next - self.burst - now).num_milliseconds().max(1);
            return Err(u64::try_from((wait + 999) / 1000).unwrap_or(1));
        }
        map.insert(key.to_owned(), next);
        Ok(())
    }
}

/// What a limited request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCall {
    /// Registering or unregistering a device, reading or setting subscriptions.
    Registration,
    Receipt,
}

impl ClientCall {
    /// What a 429 says there were too many of.
    pub fn noun(self) -> &'static str {
        match self {
            ClientCall::Registration => "registrations",
            ClientCall::Receipt => "receipts",
        }
    }
}

/// The four limits of `[server.client]`.
pub struct ClientQuota {
    registrations_by_key: Limiter,
    registrations_by_address: Limiter,
    receipts_by_key: Limiter,
    receipts_by_address: Limiter,
    clock: Arc<dyn Clock>,
}

impl ClientQuota {
    pub fn new(c: &ClientLimits, clock: Arc<dyn Clock>) -> Self {
        Self {
            registrations_by_key: Limiter::new(c.registrations_per_key),
            registrations_by_address: Limiter::new(c.registrations_per_address),
            receipts_by_key: Limiter::new(c.receipts_per_key),
            receipts_by_address: Limiter::new(c.receipts_per_address),
            clock,
        }
    }

    /// Admits a call made with a client key (its hash) or none, from an
    /// address (none when the server does not know it).
    pub fn check(
        &self,
        call: ClientCall,
        key_hash: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<(), u64> {
        let now = self.clock.now();
        let (by_key, by_address) = match call {
            ClientCall::Registration => {
                (&self.registrations_by_key, &self.registrations_by_address)
            }
            ClientCall::Receipt => (&self.receipts_by_key, &self.receipts_by_address),
        };
        if let Some(address) = address {
            by_address.check(&address.to_string(), now)?;
        }
        if let Some(key) = key_hash {
            by_key.check(key, now)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_minute_of_requests_then_one_per_interval() {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let limiter = Limiter::new(60);
        for n in 0..60 {
            assert_eq!(limiter.check("a", t0), Ok(()), "request {n}");
        }
        assert_eq!(limiter.check("a", t0), Err(1));
        // Another key has its own allowance.
        assert_eq!(limiter.check("b", t0), Ok(()));
        // One more a second later.
        let t1 = t0 + TimeDelta::seconds(1);
        assert_eq!(limiter.check("a", t1), Ok(()));
        assert_eq!(limiter.check("a", t1), Err(1));
        // A quiet minute refills the bucket.
        let t2 = t1 + TimeDelta::seconds(61);
        for _ in 0..60 {
            assert_eq!(limiter.check("a", t2), Ok(()));
        }
        assert!(Limiter::new(0).check("a", t0).is_ok());
    }

    #[test]
    fn a_slow_limit_says_how_long_to_wait() {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let limiter = Limiter::new(2);
        assert!(limiter.check("a", t0).is_ok());
        assert!(limiter.check("a", t0).is_ok());
        assert_eq!(limiter.check("a", t0), Err(30));
    }
}
