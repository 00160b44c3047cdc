//! The store that could not be made: every call is a fault with the same reason, so a build goes
//! on uncached and the run summary (or the server's log) says why. Used for a client that cannot
//! be built (the proxy) and for a token whose namespace cannot be made (the server).

use super::{Artifact, BodyStream, ErrorKind, PutOutcome, Store, StoreError};
use crate::key::{Prefix, TaskHash};
use futures_util::future::BoxFuture;
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

impl Store for UnavailableStore {
    fn get<'a>(
        &'a self,
        _hash: &'a TaskHash,
    ) -> BoxFuture<'a, Result<Option<Artifact>, StoreError>> {
        Box::pin(async move { Err(self.fault()) })
    }

    fn put<'a>(
        &'a self,
        _hash: &'a TaskHash,
        _body: &'a mut BodyStream<'_>,
        _declared_len: Option<u64>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(async move { Err(self.fault()) })
    }

    fn describe(&self) -> String {
        self.location.clone()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { Err(self.fault()) })
    }

    /// Any namespace of it is as unavailable, for the same reason.
    fn with_namespace(&self, _ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        Ok(Arc::new(self.clone()))
    }
}
