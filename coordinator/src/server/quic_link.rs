//! The driver's [`AgentLink`] to network agents: each connected agent's session task
//! registers an outbox here; `send` converts the scheduler's message to its wire form and
//! queues it for that task to write. Cheap to clone (one shared table), so a driver
//! rebuilt from the store after a failure reaches the same sessions.

use crate::driver::{AgentLink, LinkError};
use crate::scheduler::{AgentId, ToAgent};
use crate::wire_edge::message_to_agent;
use lem_common::wire::CoordinatorMessage;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;

/// A session's number: a reconnected agent's new session replaces its old one, and the
/// old one's end must not unregister the new.
pub type SessionId = u64;

/// Each connected agent's session and outbox.
type Outboxes = BTreeMap<AgentId, (SessionId, UnboundedSender<CoordinatorMessage>)>;

#[derive(Debug, Clone, Default)]
pub struct QuicLink {
    outboxes: Arc<Mutex<Outboxes>>,
}

impl QuicLink {
    /// `agent`'s messages go to `outbox` from now on (replacing an earlier session).
    pub fn register(
        &self,
        agent: AgentId,
        session: SessionId,
        outbox: UnboundedSender<CoordinatorMessage>,
    ) {
        self.table().insert(agent, (session, outbox));
    }

    /// Forgets `agent`'s outbox if it is still `session`'s.
    pub fn unregister(&self, agent: &AgentId, session: SessionId) {
        let mut table = self.table();
        if table.get(agent).is_some_and(|(s, _)| *s == session) {
            table.remove(agent);
        }
    }

    fn table(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        BTreeMap<AgentId, (SessionId, UnboundedSender<CoordinatorMessage>)>,
    > {
        // A panic while holding the lock leaves a table that is still consistent.
        self.outboxes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AgentLink for QuicLink {
    fn send(&mut self, agent: &AgentId, msg: ToAgent) -> Result<(), LinkError> {
        let table = self.table();
        let (_, outbox) = table
            .get(agent)
            .ok_or_else(|| LinkError::NotConnected(agent.clone()))?;
        outbox
            .send(message_to_agent(msg))
            .map_err(|_| LinkError::NotConnected(agent.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reaches_the_latest_session_and_an_old_session_end_leaves_it() {
        let mut link = QuicLink::default();
        let agent = AgentId("node-a-0123abcd".into());
        let (old_tx, mut old_rx) = tokio::sync::mpsc::unbounded_channel();
        let (new_tx, mut new_rx) = tokio::sync::mpsc::unbounded_channel();
        link.register(agent.clone(), 1, old_tx);
        link.register(agent.clone(), 2, new_tx);
        link.unregister(&agent, 1);
        link.send(&agent, ToAgent::Drain).unwrap();
        assert_eq!(new_rx.try_recv().unwrap(), CoordinatorMessage::Drain);
        assert!(old_rx.try_recv().is_err());
        link.unregister(&agent, 2);
        assert_eq!(
            link.send(&agent, ToAgent::HelloRequired),
            Err(LinkError::NotConnected(agent))
        );
    }
}
