//! The `raw` tree of embedded experiments: one immutable raw result per
//! (experiment, cycle, attempt).

use super::codec::{from_json, to_json, RAW};
use super::error::StoreError;
use super::Store;
use lem_common::domain::RawResult;

pub fn raw_key(experiment_id: &str, cycle: u32, attempt: u32) -> String {
    format!("{experiment_id}/{cycle:04}/{attempt:04}")
}

impl Store {
    /// Stores one attempt's raw result. Refuses to overwrite: raw results are immutable.
    pub fn put_raw(&self, raw: &RawResult) -> Result<(), StoreError> {
        let tree = self.tree(RAW)?;
        let key = raw_key(&raw.experiment_id, raw.cycle, raw.attempt);
        let swapped =
            tree.compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(to_json(raw)))?;
        if swapped.is_err() {
            return Err(StoreError::RawExists { key });
        }
        tree.flush()?;
        Ok(())
    }

    /// Raw results of one experiment in (cycle, attempt) order.
    pub fn raw_results(&self, experiment_id: &str) -> Result<Vec<RawResult>, StoreError> {
        let tree = self.tree(RAW)?;
        let prefix = format!("{experiment_id}/");
        let mut out = Vec::new();
        for item in tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            out.push(from_json(RAW, &key, &v)?);
        }
        Ok(out)
    }

    /// Cycles with at least one stored attempt, ascending. Read from the keys alone,
    /// without deserialising the results.
    pub fn raw_cycles(&self, experiment_id: &str) -> Result<Vec<u32>, StoreError> {
        let tree = self.tree(RAW)?;
        let prefix = format!("{experiment_id}/");
        let mut cycles = Vec::new();
        for key in tree.scan_prefix(prefix.as_bytes()).keys() {
            let key = key?;
            let rest = &key[prefix.len()..];
            // Key layout: see `raw_key`.
            let cycle = std::str::from_utf8(rest)
                .ok()
                .and_then(|r| r.split('/').next())
                .and_then(|c| c.parse::<u32>().ok());
            match cycle {
                Some(c) => cycles.push(c),
                None => {
                    return Err(StoreError::BadKey {
                        tree: RAW,
                        key: String::from_utf8_lossy(&key).into_owned(),
                    })
                }
            }
        }
        cycles.dedup();
        Ok(cycles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::raw_result;
    use std::time::Duration;

    #[test]
    fn raw_results_are_written_once_and_read_back_in_cycle_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(5)).unwrap();
        // Stored out of order; read back by cycle.
        for cycle in [1, 0] {
            store
                .put_raw(&raw_result("exp_a", cycle, 4, 1_000))
                .unwrap();
        }
        store.put_raw(&raw_result("exp_b", 0, 4, 1_000)).unwrap();
        let again = store
            .put_raw(&raw_result("exp_a", 1, 9, 2_000))
            .unwrap_err();
        assert!(
            matches!(&again, StoreError::RawExists { key } if key == &raw_key("exp_a", 1, 0)),
            "{again}"
        );
        let back = store.raw_results("exp_a").unwrap();
        let cycles: Vec<u32> = back.iter().map(|r| r.cycle).collect();
        assert_eq!(cycles, [0, 1]);
        // The refused overwrite left the first value.
        assert_eq!(back[1].wall_ns, 1_000);
        assert_eq!(store.raw_cycles("exp_a").unwrap(), [0, 1]);
        assert_eq!(store.raw_cycles("exp_b").unwrap(), [0]);
        assert!(store.raw_cycles("exp_c").unwrap().is_empty());
    }
}
