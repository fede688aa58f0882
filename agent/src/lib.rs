//! lem-agent: owns a node's devices, runs inference jobs and meters their energy.

pub mod convert;
pub mod daemon;
pub mod engine;
pub mod hub;
pub mod meter;
mod metered_window;
pub mod model;
pub mod model_hash;
pub mod openai;
pub mod prompts;
pub mod runner;
pub mod serving;
pub mod sysinfo;
pub mod threads;
pub mod warmup;
