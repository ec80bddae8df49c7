//! Every state machine in Meridian: one enum per machine and one table of
//! allowed transitions. The same values are `CHECK` constraints in both schemas,
//! and the campaign table is mirrored in SQL (`campaign_transitions` + a trigger);
//! tests compare the two.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("unknown {machine} state {value:?}")]
    Unknown {
        machine: &'static str,
        value: String,
    },
    #[error("a {machine} cannot go from {from} to {to}")]
    NotAllowed {
        machine: &'static str,
        from: &'static str,
        to: &'static str,
    },
}

/// A finite state machine: its states, their names in SQL, and the allowed moves.
pub trait StateMachine: Copy + Eq + fmt::Debug + 'static {
    const MACHINE: &'static str;
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn allowed_next(self) -> &'static [Self];

    fn parse(s: &str) -> Result<Self, StateError> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| StateError::Unknown {
                machine: Self::MACHINE,
                value: s.to_owned(),
            })
    }

    fn can_become(self, to: Self) -> bool {
        self.allowed_next().contains(&to)
    }

    fn check_transition(self, to: Self) -> Result<(), StateError> {
        if self.can_become(to) {
            Ok(())
        } else {
            Err(StateError::NotAllowed {
                machine: Self::MACHINE,
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }

    /// Every allowed (from, to) pair, for comparison with the SQL tables.
    fn transitions() -> Vec<(&'static str, &'static str)> {
        Self::ALL
            .iter()
            .flat_map(|f| f.allowed_next().iter().map(|t| (f.as_str(), t.as_str())))
            .collect()
    }
}

macro_rules! states {
    ($(#[$meta:meta])* $name:ident, $machine:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal => [$($next:ident),*]),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl StateMachine for $name {
            const MACHINE: &'static str = $machine;
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
            fn allowed_next(self) -> &'static [Self] {
                match self { $(Self::$variant => &[$(Self::$next),*]),+ }
            }
        }

        impl TryFrom<String> for $name {
            type Error = StateError;
            fn try_from(s: String) -> Result<Self, StateError> {
                <Self as StateMachine>::parse(&s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states! {
    /// A campaign's lifecycle.
    CampaignState, "campaign" {
        /// Editable; nothing planned. Leaves by being scheduled or cancelled.
        Draft = "draft" => [Scheduled, Cancelled],
        /// Slots are planned, none released yet; still editable (re-planned on edit).
        /// Leaves when its first slot is released, or by pause / cancel / unschedule.
        Scheduled = "scheduled" => [Draft, Running, Paused, Cancelled],
        /// At least one slot released. Leaves when nothing is pending (completed),
        /// or by pause / cancel.
        Running = "running" => [Paused, Completed, Cancelled],
        /// Nothing new is released or leased; resume returns to where it was.
        Paused = "paused" => [Scheduled, Running, Cancelled],
        /// Terminal: every slot released and no delivery pending.
        Completed = "completed" => [],
        /// Terminal: pending work cancelled, in-flight sends finish.
        Cancelled = "cancelled" => [],
    }
}

states! {
    /// One per-zone send slot of a campaign occurrence.
    SlotState, "slot" {
        /// Waiting for its `fire_at`. Leaves when the scheduler releases it, or on cancel.
        Pending = "pending" => [Released, Skipped, Cancelled],
        /// Its audience is being turned into deliveries. Leaves when all of them are final.
        Released = "released" => [Completed, Cancelled],
        Completed = "completed" => [],
        /// Its local time had passed beyond the grace period (`missed = "skip"`).
        Skipped = "skipped" => [],
        Cancelled = "cancelled" => [],
    }
}

states! {
    /// A device token's usability.
    DeviceState, "device" {
        /// Targeted by campaigns. Leaves when a provider says the token is dead.
        Active = "active" => [Invalid],
        /// Never targeted. Leaves when the app registers the same token again.
        Invalid = "invalid" => [Active],
    }
}

states! {
    /// A range of a released slot's audience, sent by one worker at a time.
    ChunkState, "chunk" {
        /// Waiting for a worker. Leaves when leased, or when its campaign is cancelled.
        Pending = "pending" => [Leased, Cancelled],
        /// A worker sends it until its lease ends; a lapsed lease is leased again
        /// (a new attempt). Leaves when done, or back to pending when its sending failed.
        Leased = "leased" => [Leased, Pending, Done],
        Done = "done" => [],
        Cancelled = "cancelled" => [],
    }
}

states! {
    /// A status change queued for its app's webhook. Acknowledged rows are deleted.
    OutboxState, "outbox" {
        /// Waiting for its turn (its app's events go out in order).
        Pending = "pending" => [Leased],
        /// Being posted; a lapsed lease is leased again. A refused post goes
        /// back to pending, or to dead once its attempts run out.
        Leased = "leased" => [Leased, Pending, Dead],
        /// Its attempts ran out; kept for inspection.
        Dead = "dead" => [],
    }
}

states! {
    /// A message handed to the fallback channel (SMS) because push could not reach its user.
    FallbackState, "fallback" {
        /// Waiting for its next attempt.
        Pending = "pending" => [Leased],
        /// Being posted; a lapsed lease is leased again.
        Leased = "leased" => [Leased, Pending, Sent, Failed],
        Sent = "sent" => [],
        Failed = "failed" => [],
    }
}

states! {
    /// One message to one device.
    DeliveryStatus, "delivery" {
        /// Waiting to be leased.
        Queued = "queued" => [Leased, Cancelled, Expired],
        /// Owned by a dispatch worker until its lease expires; a lapsed lease is leased again.
        Leased = "leased" => [Leased, Queued, Sent, Retry, Failed, TokenInvalid, Expired],
        /// Waiting for its next attempt after a retryable failure.
        Retry = "retry" => [Leased, Cancelled, Expired],
        /// Accepted by the provider. Receipts from the app move it further.
        Sent = "sent" => [Delivered, Opened, Dismissed],
        Delivered = "delivered" => [Opened, Dismissed],
        Opened = "opened" => [],
        Dismissed = "dismissed" => [Opened],
        /// Refused for good; the provider's reason is kept.
        Failed = "failed" => [],
        /// The provider said the token is dead; the device was marked invalid.
        TokenInvalid = "token_invalid" => [],
        /// Its TTL passed before it could be sent.
        Expired = "expired" => [],
        /// Not sent: a frequency cap of one of the campaign's topics was reached.
        Suppressed = "suppressed" => [],
        Cancelled = "cancelled" => [],
        /// A push found no active device of the user: a message without a
        /// device. Leaves when the fallback channel (SMS) has answered.
        NoDevice = "no_device" => [FallbackSent, FallbackFailed],
        /// The fallback channel took the message of a user push could not reach.
        FallbackSent = "fallback_sent" => [],
        /// The fallback channel refused it, or its retries ran out.
        FallbackFailed = "fallback_failed" => [],
    }
}

impl CampaignState {
    /// Whether the definition may still change (no slot released yet).
    pub fn is_editable(self) -> bool {
        matches!(self, Self::Draft | Self::Scheduled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Ok(*s));
        }
        for s in CampaignState::ALL {
            assert_eq!(CampaignState::parse(s.as_str()), Ok(*s));
        }
    }

    #[test]
    fn terminal_campaign_states_go_nowhere() {
        assert!(CampaignState::Completed.allowed_next().is_empty());
        assert_eq!(
            CampaignState::Completed.check_transition(CampaignState::Running),
            Err(StateError::NotAllowed {
                machine: "campaign",
                from: "completed",
                to: "running"
            })
        );
        assert!(CampaignState::Draft.can_become(CampaignState::Scheduled));
        assert!(!CampaignState::Draft.can_become(CampaignState::Running));
    }

    #[test]
    fn unknown_state_is_an_error() {
        assert!(matches!(
            SlotState::parse("bogus"),
            Err(StateError::Unknown { .. })
        ));
    }
}
