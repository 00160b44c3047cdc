//! Cloud backends (Amazon S3 and S3-compatible stores, Google Cloud Storage, Azure Blob Storage)
//! through the `object_store` crate, which does request signing, credential chains, multipart
//! upload, conditional requests and retries.
//!
//! Keys are `<prefix>/<hash>` (or `<hash>` without a prefix). Objects carry the same envelope as the
//! fs store (48-byte header with length and SHA-256, then the Nx payload).
//!
//! Writes: the request body is spooled first (memory up to 8 MiB, then an unlinked temp file), so the
//! length and digest are known before anything is sent. Small objects go up in one create-if-absent
//! PUT (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`, Azure `If-None-Match: *`). Larger ones are
//! uploaded with multipart to a unique temp key `<prefix>/.tmp/<hash>.<random>`, then copied to the
//! final key with a create-if-absent copy (S3: a one-part multipart copy completed with
//! `If-None-Match: *`; GCS: `ifGenerationMatch=0`; Azure: `If-None-Match: *`), then the temp key is
//! deleted. Either way the final key only ever holds a complete object, and the first writer wins.
//!
//! Reads: the object streams into a spool (memory up to 8 MiB, else an unlinked temp file) while
//! its digest is computed; only a verified payload is handed back. A digest failure removes the
//! object so the next build can store a good one.
//!
//! One file per cloud builds its client from the configuration and the environment (`s3.rs`,
//! `gcs.rs`, `azure.rs`: credentials, endpoints, what messages say about them); timeouts and retries
//! are the resilience policy's ([`super::resilience`]).

mod answer;
mod azure;
mod gcs;
mod s3;

use super::resilience::Resilience;
use super::spool::{self, Spool, Spooled};
use super::{
    Artifact, ArtifactBody, AsyncStore, BodyStream, Cause, Deleted, ErrorKind, Found, PutOutcome,
    Store, StoreError, Upload, Written,
};
use crate::config::Backend;
use crate::envelope::{EnvelopeError, Header, PayloadDigest, HEADER_LEN};
use crate::key::{Prefix, TaskHash};
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, CopyMode, CopyOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, WriteMultipart,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;

/// Multipart part size (S3 needs >= 5 MiB for every part but the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once during a multipart upload (bounds memory to about this many parts).
const UPLOAD_CONCURRENCY: usize = 2;
const TMP_SEGMENT: &str = ".tmp";

/// Which cloud, for messages and credential hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Gcs,
    Azure,
}

impl Cloud {
    pub fn name(self) -> &'static str {
        match self {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gcs",
            Cloud::Azure => "azure",
        }
    }

    /// The cloud as a sentence names it.
    pub fn title(self) -> &'static str {
        match self {
            Cloud::S3 => "S3",
            Cloud::Gcs => "GCS",
            Cloud::Azure => "Azure",
        }
    }

    /// What holds the objects: `bucket` or `container`.
    pub fn holder(self) -> &'static str {
        match self {
            Cloud::Azure => "container",
            Cloud::S3 | Cloud::Gcs => "bucket",
        }
    }
}

/// A store on S3, GCS or Azure Blob.
#[derive(Clone)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    /// The same store with a longer read timeout, for multipart uploads and the publishing copy.
    bulk: Arc<dyn ObjectStore>,
    cloud: Cloud,
    /// Bucket or `<account>/<container>`.
    bucket: String,
    /// Shown in `describe()`, e.g. the region.
    detail: Option<String>,
    prefix: Prefix,
    /// Which credential sources the environment offered (names only, never values).
    credentials: String,
    spool_dir: PathBuf,
    inline_limit: u64,
    /// The bulk client's answer timeout, for messages.
    bulk_answer: Duration,
}

/// One store, two clients that differ only in their answer timeout.
struct Clients {
    quick: Arc<dyn ObjectStore>,
    /// For multipart uploads and the publishing copy (the resilience policy's `bulk_answer`).
    bulk: Arc<dyn ObjectStore>,
}

/// A cloud's builder, configured, with what messages say about it.
struct Configured {
    cloud: Cloud,
    /// Bucket or `<account>/<container>`.
    bucket: String,
    detail: Option<String>,
    /// Which credential sources the environment offered (names only, never values).
    credentials: String,
    clients: object_store::Result<Clients>,
}

/// Builds a configured builder twice, with the resilience policy's client options: the client
/// for ordinary calls and the one for large uploads.
fn clients<B: Clone, S: ObjectStore>(
    builder: B,
    allow_http: bool,
    resilience: &Resilience,
    with_options: fn(B, ClientOptions) -> B,
    build: fn(B) -> object_store::Result<S>,
) -> object_store::Result<Clients> {
    let quick = build(with_options(
        builder.clone(),
        resilience.object_client(allow_http, false),
    ))?;
    let bulk = build(with_options(
        builder,
        resilience.object_client(allow_http, true),
    ))?;
    Ok(Clients {
        quick: Arc::new(quick),
        bulk: Arc::new(bulk),
    })
}

fn present(env: &HashMap<String, String>, name: &str) -> bool {
    env.get(name).is_some_and(|v| !v.is_empty())
}

impl ObjectStoreBackend {
    /// Builds the client for a cloud backend from the configuration and the environment's
    /// standard credential variables (AWS_*, GOOGLE_*, AZURE_*). Nothing is contacted yet.
    pub fn from_config(
        backend: &Backend,
        prefix: Prefix,
        env: &HashMap<String, String>,
    ) -> Result<Self, StoreError> {
        Self::from_config_with(backend, prefix, env, &Resilience::default())
    }

    /// `from_config` with the run's resilience policy (timeouts, retries).
    pub fn from_config_with(
        backend: &Backend,
        prefix: Prefix,
        env: &HashMap<String, String>,
        resilience: &Resilience,
    ) -> Result<Self, StoreError> {
        let configured = Self::configure(backend, env, resilience)?;
        let Configured {
            cloud,
            bucket,
            detail,
            credentials,
            clients,
        } = configured;
        let clients = clients.map_err(|e| {
            StoreError::new(
                ErrorKind::Unavailable,
                format!(
                    "{} {bucket}: cannot set up the client: {e}; {credentials}",
                    cloud.name()
                ),
            )
        })?;
        let mut store = Self::with_client(clients.quick, cloud, bucket, detail, prefix);
        store.bulk = clients.bulk;
        store.bulk_answer = resilience.bulk_answer;
        Ok(store.with_credentials(credentials))
    }

    /// The configured builder of the backend's cloud.
    fn configure(
        backend: &Backend,
        env: &HashMap<String, String>,
        resilience: &Resilience,
    ) -> Result<Configured, StoreError> {
        let not_object = |what: String| {
            StoreError::new(
                ErrorKind::Unavailable,
                format!("{what} is not an object store"),
            )
        };
        Ok(match backend {
            Backend::S3 {
                bucket,
                region,
                endpoint,
                force_path_style,
            } => s3::configure(
                &s3::S3Settings {
                    bucket,
                    region: region.as_deref(),
                    endpoint: endpoint.as_deref(),
                    force_path_style: *force_path_style,
                },
                env,
                resilience,
            ),
            Backend::Gcs { bucket } => gcs::configure(bucket, env, resilience),
            Backend::Azure {
                container,
                account_name,
                endpoint,
            } => azure::configure(
                &azure::AzureSettings {
                    container,
                    account_name: account_name.as_deref(),
                    endpoint: endpoint.as_deref(),
                },
                env,
                resilience,
            ),
            Backend::Fs { path } => {
                return Err(not_object(format!("fs backend ({})", path.display())))
            }
            Backend::Http { url } => return Err(not_object(format!("http backend ({url})"))),
        })
    }

    /// Wraps an already built client (tests use this to reach an emulator directly).
    pub fn with_client(
        inner: Arc<dyn ObjectStore>,
        cloud: Cloud,
        bucket: String,
        detail: Option<String>,
        prefix: Prefix,
    ) -> Self {
        ObjectStoreBackend {
            bulk: inner.clone(),
            inner,
            cloud,
            bucket,
            detail,
            prefix,
            credentials: String::new(),
            spool_dir: spool::dir(),
            inline_limit: spool::INLINE_LIMIT,
            bulk_answer: Resilience::default().bulk_answer,
        }
    }

    fn with_credentials(mut self, credentials: String) -> Self {
        self.credentials = credentials;
        self
    }

    /// Where request and response bodies larger than the inline limit are spooled.
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = dir.into();
        self
    }

    /// Sets the in-memory threshold (tests use small values to force the file and multipart paths).
    pub fn with_inline_limit(mut self, limit: u64) -> Self {
        self.inline_limit = limit;
        self
    }

    /// The raw client (tests use it to tamper with objects).
    pub fn client(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// The object key of a hash: `<prefix>/<hash>`.
    pub fn object_key(&self, hash: &TaskHash) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(hash.as_str())
        } else {
            ObjectPath::from(format!("{}/{}", self.prefix.as_str(), hash.as_str()))
        }
    }

    fn tmp_key(&self, hash: &TaskHash) -> ObjectPath {
        let mut rand = [0u8; 8];
        // A failing OS random source only makes the name less unique; pid and time still differ.
        let _ = getrandom::fill(&mut rand);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!(
            "{}.{}.{:x}.{}",
            hash.as_str(),
            std::process::id(),
            nanos,
            hex::encode(rand)
        );
        if self.prefix.is_empty() {
            ObjectPath::from(format!("{TMP_SEGMENT}/{name}"))
        } else {
            ObjectPath::from(format!("{}/{TMP_SEGMENT}/{name}", self.prefix.as_str()))
        }
    }

    fn where_(&self, key: &ObjectPath) -> String {
        format!("{} {}/{}", self.cloud.name(), self.bucket, key)
    }

    /// Turns a client error into a store fault naming the backend, bucket, key and reason (the
    /// cloud's error code and message, not its raw answer), with its root cause when it is one
    /// the summary groups by: a bucket that does not exist, credentials missing or refused, an
    /// unknown host. Those last for the run, except a refused write (reads may still work, e.g.
    /// with read-only credentials).
    fn fault(&self, op: &str, key: &ObjectPath, e: object_store::Error) -> StoreError {
        let raw = e.to_string();
        let lower = raw.to_ascii_lowercase();
        let text = answer::short(&raw);
        let holder = self.cloud.holder();
        let cloud = self.cloud.title();
        let bucket = &self.bucket;
        // Reads are a listing, a download or a metadata check; anything else writes.
        let writing = !matches!(op, "download" | "listing" | "checking");
        let credentials_refused = matches!(
            e,
            object_store::Error::Unauthenticated { .. }
                | object_store::Error::PermissionDenied { .. }
        );
        let (reason, cause) = if lower.contains("nosuchbucket")
            || lower.contains("containernotfound")
            || lower.contains("bucket does not exist")
            || lower.contains("bucket not found")
        {
            (
                format!("the {holder} does not exist ({text})"),
                Some(Cause::lasting(
                    format!("{} no {holder} {bucket}", self.cloud.name()),
                    format!("{cloud} {holder} {bucket} does not exist"),
                )),
            )
        } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
            (
                format!("unknown host ({text})"),
                Some(Cause::lasting(
                    format!("{} unknown host {bucket}", self.cloud.name()),
                    format!(
                        "the {cloud} endpoint of {holder} {bucket} is an unknown host ({text})"
                    ),
                )),
            )
        } else if credentials_refused
            || lower.contains("credential")
            || lower.contains("accessdenied")
            || lower.contains("signaturedoesnotmatch")
            || lower.contains("invalidaccesskeyid")
            || lower.contains("authorization")
            || lower.contains("403 forbidden")
            || lower.contains("401 unauthorized")
            || lower.contains("token")
        {
            let what = if credentials_refused {
                "credentials were refused"
            } else {
                "credentials missing or refused"
            };
            let summary = format!("{what} by {cloud} ({text}); {}", self.credentials);
            let cause = if writing {
                Cause::writes_only(
                    format!("{} write refused {bucket}", self.cloud.name()),
                    format!("{cloud} refused writes to {holder} {bucket}: {summary}"),
                )
            } else {
                Cause::lasting(
                    format!("{} credentials {bucket}", self.cloud.name()),
                    summary,
                )
            };
            (
                format!("{what} ({text}); {}", self.credentials),
                Some(cause),
            )
        } else if matches!(e, object_store::Error::NotFound { .. }) && op.contains("multipart") {
            (
                format!(
                    "the upload is gone ({text}): the store may have taken longer than the {} s \
                     read timeout to assemble it, after which the client aborted it",
                    self.bulk_answer.as_secs()
                ),
                None,
            )
        } else if matches!(e, object_store::Error::NotFound { .. }) {
            (
                format!("not found: the {holder} may not exist ({text})"),
                None,
            )
        } else {
            (text, None)
        };
        let error = StoreError::new(
            ErrorKind::Unavailable,
            format!("{}: {op} failed: {reason}", self.where_(key)),
        );
        match cause {
            Some(c) => error.with_cause(c),
            None => error,
        }
    }

    /// Checks that the bucket/container answers with these credentials (one cheap list request).
    /// The proxy runs it once at start so a misconfiguration is reported before any task.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        let prefix = if self.prefix.is_empty() {
            None
        } else {
            Some(ObjectPath::from(self.prefix.as_str()))
        };
        let mut listing = self.inner.list(prefix.as_ref());
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.fault(
                "listing",
                &prefix.unwrap_or_else(|| ObjectPath::from("")),
                e,
            )),
        }
    }

    /// Receives a request body behind a header placeholder into a spool (its limit counts the
    /// payload alone) and checks the declared length; the header is filled in at the end.
    async fn receive(
        &self,
        body: &mut BodyStream<'_>,
        declared_len: Option<u64>,
    ) -> Result<(Spooled, Header), StoreError> {
        let header_len = HEADER_LEN as u64;
        let mut spool = Spool::new(
            &self.spool_dir,
            self.inline_limit.saturating_add(header_len),
            declared_len.map(|n| n.saturating_add(header_len)),
        );
        spool.push(&[0u8; HEADER_LEN]).await?;
        let mut digest = PayloadDigest::new();
        while let Some(chunk) = super::next_chunk(body, digest.len(), declared_len).await? {
            digest.update(&chunk);
            spool.push(&chunk).await?;
        }
        let header = digest.into_header();
        spool.rewrite_start(header.encode().to_vec()).await?;
        Ok((spool.finish().await?, header))
    }

    /// Multipart upload of a spooled object to a temp key, then a create-if-absent copy to the
    /// final key, then removal of the temp key.
    async fn upload_large(
        &self,
        hash: &TaskHash,
        key: &ObjectPath,
        mut file: tokio::fs::File,
        header: &Header,
    ) -> Result<PutOutcome, StoreError> {
        let tmp = self.tmp_key(hash);
        let uploaded = self.upload_parts(&tmp, &mut file).await;
        drop(file);
        let result = match uploaded {
            Ok(()) => {
                let copied = self
                    .bulk
                    .copy_opts(&tmp, key, CopyOptions::new().with_mode(CopyMode::Create))
                    .await;
                match copied {
                    Ok(()) => Ok(PutOutcome::Stored(header.payload_len)),
                    Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. }) => {
                        Ok(PutOutcome::AlreadyExists)
                    }
                    Err(e) => Err(self.fault("publishing (copy from the temp key)", key, e)),
                }
            }
            Err(e) => Err(e),
        };
        // The temp key is garbage now, whatever happened (a failed multipart upload left none).
        // Removing a large object is a call of the large upload (an emulator or a store may take
        // longer than `timeout` to drop gigabytes): the bulk client's answer timeout.
        match self.bulk.delete(&tmp).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                if result.is_ok() {
                    return Err(self.fault("removing the temp object", &tmp, e));
                }
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        tmp: &ObjectPath,
        file: &mut tokio::fs::File,
    ) -> Result<(), StoreError> {
        let upload = self
            .bulk
            .put_multipart(tmp)
            .await
            .map_err(|e| self.fault("starting the multipart upload", tmp, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(StoreError::new(
                        ErrorKind::Unavailable,
                        format!("cannot read spool file: {e}"),
                    ));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(UPLOAD_CONCURRENCY).await {
                let _ = writer.abort().await;
                return Err(self.fault("uploading a part", tmp, e));
            }
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map(|_| ())
            .map_err(|e| self.fault("completing the multipart upload", tmp, e))
    }

    /// Removes an object that failed verification so the next build can store a good one.
    async fn quarantine(&self, key: &ObjectPath, reason: EnvelopeError) -> StoreError {
        let removed = match self.inner.delete(key).await {
            Ok(()) => "removed it".to_owned(),
            Err(e) => format!("could not remove it: {e}"),
        };
        StoreError::new(
            ErrorKind::Corrupt,
            format!(
                "corrupt cache object {} ({reason}); treated as a miss and {removed}",
                self.where_(key)
            ),
        )
    }
}

impl AsyncStore for ObjectStoreBackend {
    async fn get(&self, hash: &TaskHash) -> Found {
        let key = self.object_key(hash);
        let result = match self.inner.get_opts(&key, GetOptions::default()).await {
            Ok(r) => r,
            Err(e @ object_store::Error::NotFound { .. }) => {
                let text = e.to_string().to_ascii_lowercase();
                if text.contains("nosuchbucket") || text.contains("containernotfound") {
                    return Err(self.fault("download", &key, e));
                }
                return Ok(None);
            }
            Err(e) => return Err(self.fault("download", &key, e)),
        };
        let size = result.meta.size;
        let mut stream = result.into_stream();
        let mut head: Vec<u8> = Vec::with_capacity(HEADER_LEN);
        let mut digest = PayloadDigest::new();
        let mut spool = Spool::new(
            &self.spool_dir,
            self.inline_limit,
            Some(size.saturating_sub(HEADER_LEN as u64)),
        );
        let spool_err = |mut e: StoreError| {
            e.message = format!("{}: {}", self.where_(&key), e.message);
            e
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.fault("download", &key, e))?;
            let mut rest = &chunk[..];
            if head.len() < HEADER_LEN {
                let take = (HEADER_LEN - head.len()).min(rest.len());
                head.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
            if rest.is_empty() {
                continue;
            }
            digest.update(rest);
            spool.push(rest).await.map_err(spool_err)?;
        }
        let header = match Header::decode(&head) {
            Ok(h) => h,
            Err(e) => return Err(self.quarantine(&key, e).await),
        };
        let (len, d) = digest.finish();
        if let Err(e) = header.verify(len, &d) {
            return Err(self.quarantine(&key, e).await);
        }
        let body = match spool.finish().await.map_err(spool_err)? {
            Spooled::Memory(bytes) => ArtifactBody::Memory(bytes),
            Spooled::File(file) => ArtifactBody::File { file, offset: 0 },
        };
        Ok(Some(Artifact {
            len,
            body,
            digest: Some(d),
        }))
    }

    async fn put(&self, hash: &TaskHash, upload: Upload<'_, '_>) -> Written {
        let Upload { body, declared_len } = upload;
        let key = self.object_key(hash);
        // A large or unsized body: one HEAD first spares uploading what is already stored.
        if declared_len.is_none_or(|n| n > self.inline_limit) {
            match self.inner.head(&key).await {
                Ok(_) => return Ok(PutOutcome::AlreadyExists),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.fault("checking", &key, e)),
            }
        }
        let (spool, header) = self.receive(body, declared_len).await?;
        let outcome = match spool {
            Spooled::Memory(bytes) => {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                self.inner
                    .put_opts(&key, PutPayload::from(bytes), opts)
                    .await
                    .map(|_| true)
            }
            Spooled::File(file) => {
                let file = tokio::fs::File::from_std(file);
                return self.upload_large(hash, &key, file, &header).await;
            }
        };
        match outcome {
            Ok(_) => Ok(PutOutcome::Stored(header.payload_len)),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.fault("upload", &key, e)),
        }
    }

    fn describe(&self) -> String {
        let mut out = format!("{} {}", self.cloud.name(), self.bucket);
        if !self.prefix.is_empty() {
            out.push('/');
            out.push_str(self.prefix.as_str());
        }
        if let Some(d) = &self.detail {
            out.push_str(&format!(" ({d})"));
        }
        out
    }

    async fn delete(&self, hash: &TaskHash) -> Result<Deleted, StoreError> {
        let key = self.object_key(hash);
        // Object stores answer a delete of a missing key with success: ask first.
        match self.inner.head(&key).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(Deleted::Absent),
            Err(e) => return Err(self.fault("checking", &key, e)),
            Ok(_) => {}
        }
        match self.inner.delete(&key).await {
            Ok(()) => Ok(Deleted::Removed),
            Err(object_store::Error::NotFound { .. }) => Ok(Deleted::Absent),
            Err(e) => Err(self.fault("deleting", &key, e)),
        }
    }

    fn with_namespace(&self, ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        let mut store = self.clone();
        store.prefix = super::namespaced(&self.prefix, ns)?;
        Ok(Arc::new(store))
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.prepare().await
    }
}
