//! Row ids that cannot be mixed up: a device's id is not a delivery's, though
//! both are `BIGINT`. `Push::delivery_id` once received a device id on the
//! campaign path; with these types that no longer compiles.

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

/// The id of a row of kind `K` ([`Device`], [`Delivery`], [`User`]). Reads,
/// writes and serializes as the bare number.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id<K> {
    value: i64,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

/// Marker: a device (one push token of one app).
#[derive(Debug)]
pub enum Device {}
/// Marker: a delivery (one message to one device); its id is the message id a
/// notification carries.
#[derive(Debug)]
pub enum Delivery {}
/// Marker: a user (the partner's external id, stored once per app).
#[derive(Debug)]
pub enum User {}

pub type DeviceId = Id<Device>;
pub type DeliveryId = Id<Delivery>;
pub type UserId = Id<User>;

impl<K> Id<K> {
    pub const fn new(value: i64) -> Self {
        Self {
            value,
            kind: PhantomData,
        }
    }

    pub const fn get(self) -> i64 {
        self.value
    }
}

// By hand: derives would demand `K: Clone` and so on of the markers.
impl<K> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K> Copy for Id<K> {}
impl<K> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<K> Eq for Id<K> {}
impl<K> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}
impl<K> std::hash::Hash for Id<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}
impl<K> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}
impl<K> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.value, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_its_number_in_json_and_text() {
        let id = DeliveryId::new(42);
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert_eq!(
            serde_json::from_str::<DeviceId>("7").unwrap(),
            DeviceId::new(7)
        );
        assert_eq!(id.to_string(), "42");
        assert_eq!(format!("{id:?}"), "42");
    }
}
