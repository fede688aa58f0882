//! The `aggregates` tree: derived per-experiment aggregates, replaced when recomputed.

use super::codec::{from_json, to_json, AGGREGATES};
use super::error::StoreError;
use super::Store;
use serde::{Deserialize, Serialize};

impl Store {
    pub fn put_aggregate<T: Serialize>(
        &self,
        experiment_id: &str,
        agg: &T,
    ) -> Result<(), StoreError> {
        let tree = self.tree(AGGREGATES)?;
        tree.insert(experiment_id.as_bytes(), to_json(agg))?;
        tree.flush()?;
        Ok(())
    }

    pub fn aggregate<T: for<'de> Deserialize<'de>>(
        &self,
        experiment_id: &str,
    ) -> Result<Option<T>, StoreError> {
        let tree = self.tree(AGGREGATES)?;
        match tree.get(experiment_id.as_bytes())? {
            Some(v) => Ok(Some(from_json(AGGREGATES, experiment_id, &v)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn aggregates_are_replaced_when_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(5)).unwrap();
        assert_eq!(store.aggregate::<serde_json::Value>("exp").unwrap(), None);
        store
            .put_aggregate("exp", &serde_json::json!({"n": 1}))
            .unwrap();
        store
            .put_aggregate("exp", &serde_json::json!({"n": 2}))
            .unwrap();
        assert_eq!(
            store.aggregate::<serde_json::Value>("exp").unwrap(),
            Some(serde_json::json!({"n": 2}))
        );
    }
}
