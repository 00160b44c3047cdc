//! The store that could not be made: every call is a fault with the same reason, so a build goes
//! on uncached and the run summary (or the server's log) says why. Used for a client that cannot
//! be built (the proxy) and for a token whose namespace cannot be made (the server).

use super::{AsyncStore, ErrorKind, Found, Store, StoreError, Upload, Written};
use crate::key::{Prefix, TaskHash};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct UnavailableStore {
    /// What it stands for, as `describe` shows it (e.g. `s3 my-bucket`).
    pub location: String,
    /// Why it cannot be used: the message of every fault.
    pub reason: String,
}

impl UnavailableStore {
    pub fn new(location: impl Into<String>, reason: impl Into<String>) -> Self {
        UnavailableStore {
            location: location.into(),
            reason: reason.into(),
        }
    }

    fn fault(&self) -> StoreError {
        StoreError::new(ErrorKind::Unavailable, self.reason.clone())
    }
}

impl AsyncStore for UnavailableStore {
    async fn get(&self, _hash: &TaskHash) -> Found {
        Err(self.fault())
    }

    async fn put(&self, _hash: &TaskHash, _upload: Upload<'_, '_>) -> Written {
        Err(self.fault())
    }

    fn describe(&self) -> String {
        self.location.clone()
    }

    async fn check(&self) -> Result<(), StoreError> {
        Err(self.fault())
    }

    /// Any namespace of it is as unavailable, for the same reason.
    fn with_namespace(&self, _ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        Ok(Arc::new(self.clone()))
    }
}
