//! lem-common: what the coordinator and the agent agree on.
//!
//! No IO lives here: config loading takes a file reader from the caller, so every
//! function can be tested on strings.

pub mod arrivals;
pub mod config;
pub mod domain;
pub mod flops;
pub mod holm;
pub mod lease_ttl;
pub mod mig;
pub mod phases;
pub mod prometheus;
pub mod rng;
pub mod server;
pub mod shipped_prompt;
pub mod stats;
pub mod welch;
pub mod wire;
