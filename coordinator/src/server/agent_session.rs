//! One agent's session: its identity is the id on its certificate (an agent never names
//! itself). Messages it sends become scheduler events for the driver thread; messages
//! the driver sends it arrive in its outbox and are written here. When the connection
//! goes, the outbox is unregistered and the scheduler learns nothing: it declares the
//! agent lost only when the agent timeout passes, as it would for a silent network.

use super::driver_thread::DriverInput;
use super::quic_link::{QuicLink, SessionId};
use crate::scheduler::AgentId;
use crate::wire_edge::event_from_agent;
use lem_common::wire::AgentMessage;
use lem_net::AcceptedSession;
use std::sync::mpsc::Sender;

pub async fn serve_agent(
    session: AcceptedSession,
    session_id: SessionId,
    link: QuicLink,
    inputs: Sender<DriverInput>,
) {
    let agent = AgentId(session.peer.id.clone());
    let AcceptedSession {
        mut send,
        mut recv,
        connection,
        ..
    } = session;
    let (outbox, mut outgoing) = tokio::sync::mpsc::unbounded_channel();
    // Registered before its first message is read, so no reply to it can miss it.
    link.register(agent.clone(), session_id, outbox);
    tracing::info!(%agent, session = session_id, "agent connected");
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            if let Err(error) = send.send(&message).await {
                tracing::info!(%error, "agent session: write failed");
                break;
            }
        }
    });
    loop {
        match recv.recv::<AgentMessage>().await {
            Ok(Some(message)) => {
                let from = event_from_agent(agent.clone(), message);
                let input = DriverInput::Agent {
                    event: from.event,
                    body: from.result_body,
                };
                if inputs.send(input).is_err() {
                    break; // the driver stopped: the server is shutting down
                }
            }
            Ok(None) => break,
            Err(error) => {
                tracing::info!(%agent, %error, "agent session ended");
                break;
            }
        }
    }
    link.unregister(&agent, session_id);
    writer.abort();
    connection.close(lem_net::close_code::DONE, "session ended");
    tracing::info!(%agent, session = session_id, "agent disconnected");
}
