//! Downloads: ranged parts fetched in parallel, verified in order, into the spool.
//!
//! The first request asks for the first part (`Range: bytes=0-<part - 1>`), so an object of up to
//! one part (every small artifact) is one GET and nothing more: no HEAD first. Its answer names
//! the object's size and ETag. The rest is asked for in parts of [`PART`], up to [`IN_FLIGHT`] at
//! once on their own connections, each with `If-Match: <etag>` (and the first answer's version or
//! GCS generation, when it names one): a part of another object (this key
//! removed and stored again while it was read) is refused by the store itself (412) and never
//! mixed in; the download is then a miss ([`ErrorKind::Refused`]), the object is left alone.
//!
//! Parts are taken in order: each is hashed and spooled once every part before it has been, so the
//! digest covers the bytes in their order, and nothing is handed back before the whole payload
//! matched the envelope's digest (a mismatch removes the object, as before). Memory: at most
//! `IN_FLIGHT` parts per download (4 x 4 MiB), plus the spool's in-memory limit; a download that
//! is dropped aborts its part fetches.

use super::{ObjectStoreBackend, Op};
use crate::envelope::{Header, PayloadDigest, HEADER_LEN};
use crate::store::spool::{Spool, Spooled};
use crate::store::{Artifact, ArtifactBody, ErrorKind, Found, StoreError};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Size of one ranged part (the first request's too).
pub const PART: u64 = 4 * 1024 * 1024;
/// Parts fetched at once during one download (bounds its memory to this many parts: 16 MiB).
pub const IN_FLIGHT: usize = 4;

/// What a part fetch ended with.
type PartResult = Result<Bytes, object_store::Error>;

impl ObjectStoreBackend {
    /// A verified payload, or a miss.
    pub(super) async fn download(&self, key: &ObjectPath) -> Found {
        let first = GetOptions {
            range: Some(GetRange::Bounded(0..self.download_part)),
            ..Default::default()
        };
        let result = match self.inner.get_opts(key, first).await {
            Ok(r) => r,
            Err(e @ object_store::Error::NotFound { .. }) => {
                let text = e.to_string().to_ascii_lowercase();
                if text.contains("nosuchbucket") || text.contains("containernotfound") {
                    return Err(self.fault(Op::Download, key, e));
                }
                return Ok(None);
            }
            Err(e) => return Err(self.fault(Op::Download, key, e)),
        };
        let size = result.meta.size;
        let mut parts = Parts {
            store: self.inner.clone(),
            key: key.clone(),
            etag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
            next: result.range.end,
            size,
            part: self.download_part,
            queue: FuturesOrdered::new(),
        };
        // The other parts are on their way while the first one's body arrives.
        parts.fill();
        let mut check = Check {
            head: Vec::with_capacity(HEADER_LEN),
            digest: PayloadDigest::new(),
            spool: Spool::new(
                &self.spool_dir,
                self.inline_limit,
                Some(size.saturating_sub(HEADER_LEN as u64)),
            ),
        };
        let spool_err = |mut e: StoreError| {
            e.message = format!("{}: {}", self.where_(key), e.message);
            e
        };
        let mut first = result.into_stream();
        while let Some(chunk) = first.next().await {
            let chunk = chunk.map_err(|e| self.fault(Op::Download, key, e))?;
            check.push(&chunk).await.map_err(spool_err)?;
        }
        drop(first);
        while let Some(part) = parts.queue.next().await {
            let bytes = part.map_err(|e| self.part_fault(key, e))?;
            parts.fill();
            check.push(&bytes).await.map_err(spool_err)?;
        }
        let header = match Header::decode(&check.head) {
            Ok(h) => h,
            Err(e) => return Err(self.quarantine(key, e).await),
        };
        let (len, d) = check.digest.finish();
        if let Err(e) = header.verify(len, &d) {
            return Err(self.quarantine(key, e).await);
        }
        let body = match check.spool.finish().await.map_err(spool_err)? {
            Spooled::Memory(bytes) => ArtifactBody::Memory(bytes),
            Spooled::File(file) => ArtifactBody::File { file, offset: 0 },
        };
        Ok(Some(Artifact {
            len,
            body,
            digest: Some(d),
        }))
    }

    /// A part that could not be fetched: the object changed (or went) since the first part was
    /// read, which makes the download a miss, or a fault of the store.
    fn part_fault(&self, key: &ObjectPath, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. } => {
                StoreError::new(
                    ErrorKind::Refused,
                    format!(
                        "{}: the object changed while it was read (a later part no longer matched \
                         the first part's ETag); not served",
                        self.where_(key)
                    ),
                )
            }
            e => self.fault(Op::Download, key, e),
        }
    }
}

/// The envelope header split off the first bytes, the payload hashed and spooled, in order.
struct Check {
    head: Vec<u8>,
    digest: PayloadDigest,
    spool: Spool,
}

impl Check {
    async fn push(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let mut rest = chunk;
        if self.head.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.head.len()).min(rest.len());
            self.head.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        if rest.is_empty() {
            return Ok(());
        }
        self.digest.update(rest);
        self.spool.push(rest).await
    }
}

/// The parts after the first: fetched up to [`IN_FLIGHT`] at once, handed out in order.
struct Parts {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    etag: Option<String>,
    /// The object's version (GCS: its generation), when the store names one.
    version: Option<String>,
    /// Where the next part not yet asked for starts.
    next: u64,
    size: u64,
    part: u64,
    queue: FuturesOrdered<Fetch>,
}

impl Parts {
    /// Starts part fetches until `IN_FLIGHT` parts are in flight or held (the part being
    /// consumed counts as one of them).
    fn fill(&mut self) {
        while self.next < self.size && self.queue.len() < IN_FLIGHT - 1 {
            let end = self.next.saturating_add(self.part).min(self.size);
            let range = self.next..end;
            self.next = end;
            let task = tokio::spawn(fetch(
                self.store.clone(),
                self.key.clone(),
                range,
                self.etag.clone(),
                self.version.clone(),
            ));
            self.queue.push_back(Fetch(task));
        }
    }
}

/// One part, all of it or an error: with `If-Match` when the store gave an ETag, and of the same
/// version when it named one.
async fn fetch(
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    range: Range<u64>,
    etag: Option<String>,
    version: Option<String>,
) -> PartResult {
    let want = range.end - range.start;
    let options = GetOptions {
        range: Some(GetRange::Bounded(range.clone())),
        if_match: etag,
        version,
        ..Default::default()
    };
    let bytes = store.get_opts(&key, options).await?.bytes().await?;
    if bytes.len() as u64 != want {
        return Err(object_store::Error::Generic {
            store: "download",
            source: format!(
                "bytes {}-{} came back as {} bytes, not {want}",
                range.start,
                range.end - 1,
                bytes.len()
            )
            .into(),
        });
    }
    Ok(bytes)
}

/// A spawned part fetch, aborted when dropped (a download given up stops its parts).
struct Fetch(tokio::task::JoinHandle<PartResult>);

impl Future for Fetch {
    type Output = PartResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PartResult> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(object_store::Error::Generic {
                    store: "download",
                    source: format!("a part fetch ended early: {e}").into(),
                })
            })
        })
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}
