//! Meridian: a self-hosted push-notification campaign engine.
//!
//! See ARCHITECTURE.md for the bird's-eye view and the map of these modules.

pub mod api;
pub mod clock;
pub mod config;
pub mod console;
pub mod daemon;
pub mod definitions;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod hooks;
pub mod import;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod provider;
pub mod service;
pub mod simulator;
pub mod store;
pub mod tls;
