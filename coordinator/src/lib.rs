//! lem-coordinator: experiment lifecycle, result store, late aggregation and the `lem` CLI.
//! In embedded mode (the default) it drives a local `lem-agent` runner in-process.

pub mod aggregate;
pub mod cli;
pub mod driver;
pub mod embedded;
pub mod embedded_agent;
pub mod embedded_run;
pub mod export;
pub mod pivot;
pub mod report;
pub mod scheduler;
pub mod server;
pub mod store;
#[cfg(test)]
mod test_fixtures;
pub mod until_ci;
pub mod window_energy;
pub mod wire_cli_edge;
pub mod wire_edge;
