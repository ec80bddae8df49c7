//! The pure domain: what a campaign, a message, a user and a device are, the
//! rules they obey, and the time arithmetic of planning. No I/O here, and
//! "now" comes in as a value: the store, the providers, the API and the engine
//! (the edges) depend on this layer, never the other way round.

pub mod audience;
pub mod bytes;
pub mod campaign;
pub mod ids;
pub mod keys;
pub mod locale;
pub mod message;
pub mod operator;
pub mod planner;
pub mod receipt;
pub mod state;
pub mod zone;
