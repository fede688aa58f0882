//! `serve`: open the data dir, bind the endpoint, start the driver thread, accept
//! sessions until SIGTERM or Ctrl+C, then close the endpoint, stop the driver and flush.

use super::agent_session::serve_agent;
use super::bootstrap::ensure_operator_credential;
use super::cli_session::serve_cli;
use super::driver_thread::{self, DriverInput};
use super::options::ServeOptions;
use super::quic_link::QuicLink;
use crate::driver::DriverError;
use crate::store::{Store, StoreError};
use lem_net::pki::{ClusterCa, PkiError, LEAF_VALIDITY};
use lem_net::{Alpn, EnrollmentDesk, NetError, ServerEndpoint, ServerOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The file in the data dir that holds the address the server is bound to (`--listen
/// 127.0.0.1:0` picks a port; scripts and tests read it here).
pub const ADDR_FILE: &str = crate::store::SERVE_ADDR_FILE;
/// The file that holds the bound `--metrics-listen` address, when metrics are served.
pub const METRICS_ADDR_FILE: &str = "metrics.addr";

/// How long `lem serve` waits for another process to release the store.
const STORE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the store in {}: {source}", .data_dir.display())]
    Store {
        data_dir: PathBuf,
        source: StoreError,
    },
    #[error(
        "another process holds the store in {} — is `lem serve` already running there? \
         (last address it wrote: {addr})",
        .data_dir.display()
    )]
    Held { data_dir: PathBuf, addr: String },
    #[error("cluster credentials in {}: {source}", .data_dir.display())]
    Pki { data_dir: PathBuf, source: PkiError },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the driver stopped: {0}")]
    Driver(#[from] DriverError),
    #[error("cannot install the SIGTERM/Ctrl+C handler: {0}")]
    Signal(String),
}

pub fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let data_dir = options.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServeError::Io {
        what: "cannot create the data dir",
        path: data_dir.clone(),
        source,
    })?;
    let store_error = |source| ServeError::Store {
        data_dir: data_dir.clone(),
        source,
    };
    let pki_error = |source| ServeError::Pki {
        data_dir: data_dir.clone(),
        source,
    };
    let store = Arc::new(Store::open(&data_dir, STORE_WAIT).map_err(|e| {
        match e {
            StoreError::Locked { .. } | StoreError::HeldByServer { .. } => ServeError::Held {
                data_dir: data_dir.clone(),
                addr: std::fs::read_to_string(data_dir.join(ADDR_FILE))
                    .map(|a| a.trim().to_owned())
                    .unwrap_or_else(|_| "unknown".into()),
            },
            other => store_error(other),
        }
    })?);
    let (ca, created) = ClusterCa::load_or_create(&data_dir).map_err(pki_error)?;
    if created {
        say(&format!(
            "created the cluster CA in {} (ca.pem, ca.key.pem); keep ca.key.pem private",
            data_dir.display()
        ));
    }
    let (operator_dir, created) = ensure_operator_credential(&ca, &data_dir).map_err(pki_error)?;
    if created {
        say(&format!(
            "created an operator credential in {} (key.pem is 0600): the `lem` CLI on this \
             host uses it with --data-dir {}",
            operator_dir.display(),
            data_dir.display()
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lem-serve-io")
        .build()
        .map_err(|source| ServeError::Io {
            what: "cannot start the async runtime for",
            path: data_dir.clone(),
            source,
        })?;
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let notify = shutdown.clone();
    ctrlc::set_handler(move || notify.notify_one())
        .map_err(|e| ServeError::Signal(e.to_string()))?;

    let (inputs, inputs_rx) = std::sync::mpsc::channel();
    let link = QuicLink::default();
    let driver = {
        let (store, link, config) = (store.clone(), link.clone(), options.scheduler.clone());
        let stop_serving = shutdown.clone();
        std::thread::Builder::new()
            .name("lem-driver".into())
            .spawn(move || {
                let result = driver_thread::run(store, link, config, inputs_rx);
                // Without its driver the server cannot serve: stop accepting too.
                stop_serving.notify_one();
                result
            })
            .map_err(|source| ServeError::Io {
                what: "cannot start the driver thread for",
                path: data_dir.clone(),
                source,
            })?
    };

    let tokens = super::join_tokens::JoinTokenIssuer {
        store: store.clone(),
        ca_sha256: ca.sha256(),
    };
    let served = runtime.block_on(async {
        let desk = EnrollmentDesk {
            ca: Arc::new(ca),
            tokens: store.clone(),
            clock: lem_net::system_clock(),
            agent_validity: LEAF_VALIDITY,
        };
        let mut endpoint = ServerEndpoint::bind(
            desk,
            ServerOptions::new(options.listen, certificate_names(&options.server_names)),
        )?;
        let addr = endpoint.local_addr()?;
        if let Some(listen) = options.metrics_listen {
            let bound = super::metrics_http::serve(listen, inputs.clone())
                .await
                .map_err(|source| ServeError::Io {
                    what: "cannot bind --metrics-listen for the data dir",
                    path: data_dir.clone(),
                    source,
                })?;
            write_addr_file(&data_dir, METRICS_ADDR_FILE, &bound.to_string())?;
            say(&format!(
                "serving Prometheus metrics at http://{bound}/metrics"
            ));
        }
        write_addr_file(&data_dir, ADDR_FILE, &addr.to_string())?;
        tracing::info!(%addr, "listening");
        say(&format!(
            "listening on {addr} (names: {}); address in {}",
            certificate_names(&options.server_names).join(", "),
            data_dir.join(ADDR_FILE).display()
        ));
        let mut next_session = 0u64;
        loop {
            let session = tokio::select! {
                session = endpoint.accept() => session,
                () = shutdown.notified() => break,
            };
            let Some(session) = session else { break };
            next_session += 1;
            match session.alpn {
                Alpn::Agent => {
                    tokio::spawn(serve_agent(
                        session,
                        next_session,
                        link.clone(),
                        inputs.clone(),
                    ));
                }
                Alpn::Cli => {
                    tokio::spawn(serve_cli(session, inputs.clone(), tokens.clone()));
                }
                // The endpoint serves enrollment itself and yields no session for it.
                Alpn::Enroll => {}
            }
        }
        say("shutting down: closing the endpoint, flushing the store");
        endpoint.close();
        Ok::<_, ServeError>(())
    });
    // The driver finishes the input it is handling, flushes and returns.
    let _ = inputs.send(DriverInput::Shutdown);
    let driven = driver
        .join()
        .unwrap_or_else(|_| Err(DriverError::MustRestart));
    runtime.shutdown_timeout(Duration::from_secs(2));
    served?;
    driven?;
    store.flush().map_err(store_error)?;
    say("stopped");
    Ok(())
}

/// Lifecycle lines go to stderr whatever the log level: an operator starting the
/// daemon by hand must see where it listens and what it created.
fn say(line: &str) {
    eprintln!("lem serve: {line}");
}

/// Written whole (temporary file, then rename), so a reader never sees half an address.
fn write_addr_file(data_dir: &Path, file: &str, addr: &str) -> Result<(), ServeError> {
    let path = data_dir.join(file);
    let tmp = data_dir.join(format!("{file}.tmp"));
    let io = |source| ServeError::Io {
        what: "cannot write the address file",
        path: path.clone(),
        source,
    };
    std::fs::write(&tmp, format!("{addr}\n")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(())
}

/// The names the server certificate carries: the ones asked for, plus loopback, so `lem
/// token …` and other commands on the coordinator host reach it whatever names a cluster
/// gives (only holders of the cluster's certificates can use the connection either way).
fn certificate_names(asked: &[String]) -> Vec<String> {
    let mut names = asked.to_vec();
    for loopback in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == loopback) {
            names.push(loopback.to_owned());
        }
    }
    names
}
