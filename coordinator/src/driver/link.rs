//! How the driver reaches agents: the `AgentLink` trait, and its in-process
//! implementation over channels (embedded mode). The QUIC server adds another.

use crate::scheduler::{AgentId, ToAgent};
use std::collections::BTreeMap;
use std::sync::mpsc;

/// Delivers scheduler messages to agents. Delivery is best effort: an agent that is not
/// connected misses the message and catches up when it says Hello again (it re-announces
/// what it holds and resends its spool), so a failed send never undoes a persisted record.
pub trait AgentLink {
    fn send(&mut self, agent: &AgentId, msg: ToAgent) -> Result<(), LinkError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("agent {0} is not connected")]
    NotConnected(AgentId),
}

/// In-process agents, each reading its messages from a channel.
#[derive(Debug, Default)]
pub struct ChannelLink {
    agents: BTreeMap<AgentId, mpsc::Sender<ToAgent>>,
}

impl ChannelLink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects `agent` (replacing an earlier connection); it reads from the receiver.
    pub fn connect(&mut self, agent: AgentId) -> mpsc::Receiver<ToAgent> {
        let (tx, rx) = mpsc::channel();
        self.agents.insert(agent, tx);
        rx
    }

    pub fn disconnect(&mut self, agent: &AgentId) {
        self.agents.remove(agent);
    }
}

impl AgentLink for ChannelLink {
    fn send(&mut self, agent: &AgentId, msg: ToAgent) -> Result<(), LinkError> {
        let tx = self
            .agents
            .get(agent)
            .ok_or_else(|| LinkError::NotConnected(agent.clone()))?;
        tx.send(msg)
            .map_err(|_| LinkError::NotConnected(agent.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_connected_agent_and_a_gone_agent_is_named() {
        let mut link = ChannelLink::new();
        let a = AgentId("a".into());
        let rx = link.connect(a.clone());
        link.send(&a, ToAgent::Drain).unwrap();
        link.send(&a, ToAgent::HelloRequired).unwrap();
        let got: Vec<ToAgent> = rx.try_iter().collect();
        assert_eq!(got, [ToAgent::Drain, ToAgent::HelloRequired]);
        drop(rx);
        assert_eq!(
            link.send(&a, ToAgent::Drain),
            Err(LinkError::NotConnected(a.clone()))
        );
        let b = AgentId("b".into());
        assert_eq!(
            link.send(&b, ToAgent::Drain),
            Err(LinkError::NotConnected(b))
        );
    }
}
