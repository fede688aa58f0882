//! One CLI session: request, reply, until the CLI closes it. Operators may send every
//! request; viewers only the read-only ones — anything else is refused here, before the
//! driver sees it, so nothing is stored.

use super::driver_thread::DriverInput;
use super::join_tokens::JoinTokenIssuer;
use lem_common::wire::{CliReply, CliRequest};
use lem_net::{AcceptedSession, Role};
use std::sync::mpsc::Sender;

pub async fn serve_cli(
    session: AcceptedSession,
    inputs: Sender<DriverInput>,
    tokens: JoinTokenIssuer,
) {
    let AcceptedSession {
        peer,
        mut send,
        mut recv,
        connection,
        ..
    } = session;
    loop {
        let request = match recv.recv::<CliRequest>().await {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(error) => {
                tracing::info!(%peer, %error, "CLI session ended");
                break;
            }
        };
        let reply = if let (CliRequest::CreateJoinToken { ttl_ms, uses }, Role::Operator) =
            (&request, peer.role)
        {
            // No scheduler state: answered here, from the store's token book.
            tracing::info!(%peer, uses, "join token created");
            tokens.issue(*ttl_ms, *uses, (lem_net::system_clock())())
        } else if request.is_read_only() || peer.role == Role::Operator {
            let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
            let input = DriverInput::Cli {
                request,
                reply: reply_tx,
            };
            match inputs.send(input) {
                Ok(()) => reply_rx.await.unwrap_or_else(|_| shutting_down()),
                Err(_) => shutting_down(),
            }
        } else {
            tracing::warn!(%peer, request = request.name(), "refused: role may only read");
            CliReply::Refused {
                reason: format!(
                    "{peer} may only read; `{}` needs an operator credential \
                     (`lem user add NAME --role operator` on the coordinator host)",
                    request.name()
                ),
            }
        };
        if let Err(error) = send.send(&reply).await {
            tracing::info!(%peer, %error, "CLI session: reply not written");
            break;
        }
    }
    connection.close(lem_net::close_code::DONE, "done");
}

fn shutting_down() -> CliReply {
    CliReply::Refused {
        reason: "the coordinator is shutting down".into(),
    }
}
