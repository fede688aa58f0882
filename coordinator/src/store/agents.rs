//! The `agents` tree: agents enrolled in the cluster, by id. Enrolment is once per id;
//! whether an agent is drained is scheduler state (its `AgentDrained` record).

use super::codec::{from_json, to_json, AGENTS};
use super::error::StoreError;
use super::Store;
use crate::scheduler::AgentId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub agent: AgentId,
    /// SHA-256 (hex) of the agent's certificate, DER.
    pub certificate_sha256: String,
    /// RFC 3339 UTC.
    pub enrolled_at: String,
}

impl Store {
    /// Stores a newly enrolled agent; refuses an id already enrolled.
    pub fn enroll_agent(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        let tree = self.tree(AGENTS)?;
        let swapped = tree.compare_and_swap(
            rec.agent.0.as_bytes(),
            None as Option<&[u8]>,
            Some(to_json(rec)),
        )?;
        if swapped.is_err() {
            return Err(StoreError::AgentExists {
                agent: rec.agent.clone(),
            });
        }
        tree.flush()?;
        Ok(())
    }

    pub fn agent(&self, agent: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let tree = self.tree(AGENTS)?;
        match tree.get(agent.0.as_bytes())? {
            Some(v) => Ok(Some(from_json(AGENTS, &agent.0, &v)?)),
            None => Ok(None),
        }
    }

    /// Every enrolled agent, by id.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let tree = self.tree(AGENTS)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            out.push(from_json(AGENTS, &String::from_utf8_lossy(&k), &v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(name: &str, cert: &str) -> AgentRecord {
        AgentRecord {
            agent: AgentId(name.into()),
            certificate_sha256: cert.into(),
            enrolled_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn an_agent_is_enrolled_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = record("node-1", "aa");
        {
            let store = Store::open(dir.path(), Duration::from_secs(5)).unwrap();
            store.enroll_agent(&first).unwrap();
            let err = store.enroll_agent(&record("node-1", "bb")).unwrap_err();
            assert!(
                matches!(&err, StoreError::AgentExists { agent } if agent.0 == "node-1"),
                "{err}"
            );
            store.enroll_agent(&record("node-0", "cc")).unwrap();
        }
        let store = Store::open(dir.path(), Duration::from_secs(5)).unwrap();
        assert_eq!(store.agent(&AgentId("node-1".into())).unwrap(), Some(first));
        let ids: Vec<String> = store
            .agents()
            .unwrap()
            .into_iter()
            .map(|a| a.agent.0)
            .collect();
        assert_eq!(ids, ["node-0", "node-1"]);
    }
}
