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
        let reply = if !request.is_read_only() && peer.role != Role::Operator {
            tracing::warn!(%peer, request = request.name(), "refused: role may only read");
            CliReply::Refused {
                reason: format!(
                    "{peer} may only read; `{}` needs an operator credential \
                     (`lem user add NAME --role operator` on the coordinator host)",
                    request.name()
                ),
            }
        } else if let Some(reply) = tokens.answer(&request, (lem_net::system_clock())()) {
            // Join tokens: no scheduler state, answered here from the store's token book.
            tracing::info!(%peer, request = request.name(), reply = reply_kind(&reply), "join tokens");
            reply
        } else {
            let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
            let input = DriverInput::Cli {
                request,
                reply: reply_tx,
            };
            match inputs.send(input) {
                Ok(()) => reply_rx.await.unwrap_or_else(|_| shutting_down()),
                Err(_) => shutting_down(),
            }
        };
        if let Err(error) = send.send(&reply).await {
            tracing::info!(%peer, %error, "CLI session: reply not written");
            break;
        }
    }
    connection.close(lem_net::close_code::DONE, "done");
}

/// How a join-token reply is logged: its kind, never a token's text.
fn reply_kind(reply: &CliReply) -> &'static str {
    match reply {
        CliReply::JoinToken { .. } => "created",
        CliReply::JoinTokens(_) => "listed",
        CliReply::JoinTokenRevoked {
            newly_revoked: true,
            ..
        } => "revoked",
        CliReply::JoinTokenRevoked { .. } => "already revoked",
        CliReply::Refused { .. } => "refused",
        _ => "other",
    }
}

fn shutting_down() -> CliReply {
    CliReply::Refused {
        reason: "the coordinator is shutting down".into(),
    }
}
