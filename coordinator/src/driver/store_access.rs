//! How the driver reaches the store: held open for its whole life (a server owning the
//! data dir), or opened for each operation (embedded mode, so another lem process can
//! read the store between two of its operations).

use crate::store::{Store, StoreError};
use std::sync::Arc;

pub trait StoreAccess {
    /// Runs `f` on the open store.
    fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;
}

impl StoreAccess for Arc<Store> {
    fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(self)
    }
}
