//! `lem serve`: the coordinator daemon. It owns the data dir — the store held open, the
//! cluster CA, the operator credential — and serves agents and CLIs over lem-net's QUIC
//! endpoint.
//!
//! Threads: a tokio runtime runs the endpoint and one task per session; the [`Driver`]
//! (scheduler + store, persist-then-send) runs on ONE dedicated OS thread, fed by a
//! channel of inputs (agent events with their result bodies, CLI requests) and ticked
//! at the scheduler's `poll_timeout`. Nothing async ever touches the scheduler, and a
//! slow store write never stalls a socket.
//!
//! [`Driver`]: crate::driver::Driver

mod agent_session;
mod bootstrap;
mod cli_requests;
mod cli_session;
mod driver_thread;
mod join_tokens;
mod metrics;
mod metrics_http;
mod options;
mod quic_link;
mod result_pages;
mod run;

pub use bootstrap::{ensure_operator_credential, OPERATOR_DIR};
pub use join_tokens::{
    revoke as revoke_join_token, token_summaries, JoinTokenIssuer, MAX_TOKEN_TTL_MS, MAX_TOKEN_USES,
};
pub use metrics::trace_samples;
pub use options::ServeOptions;
pub use quic_link::QuicLink;
pub use run::{serve, ServeError, ADDR_FILE, METRICS_ADDR_FILE};
