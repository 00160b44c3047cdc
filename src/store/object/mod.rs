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
//! uploaded with multipart to a unique temp key `<prefix>/.tmp/<hash>.<pid>.<nanos>.<random>`, then
//! copied to the final key with a create-if-absent copy (S3: a one-part multipart copy completed
//! with `If-None-Match: *`; GCS: `ifGenerationMatch=0`; Azure: `If-None-Match: *`), then the final
//! key's length is checked (Azure may answer a Copy Blob `pending` and finish it later; the crate
//! does not look at the copy status), then the temp key is deleted. A final object that stays short
//! is not reported stored and its temp key is kept (the copy may still need it); a read's digest
//! check would quarantine it. Either way the first writer wins.
//!
//! Reads: the object streams into a spool (memory up to 8 MiB, else an unlinked temp file) while
//! its digest is computed; only a verified payload is handed back. A digest failure removes the
//! object so the next build can store a good one.
//!
//! One file per cloud builds its client from the configuration and the environment (`s3.rs`,
//! `gcs.rs`, `azure.rs`: credentials, endpoints, what messages say about them); timeouts and retries
//! are the resilience policy's ([`super::resilience`]).

pub(crate) mod answer;
mod azure;
mod gcs;
mod s3;

use super::resilience::{resend_create, Resilience};
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
/// Bounds of the wait for a copy's final length (Azure may finish a Copy Blob after answering).
const PUBLISH_CHECKS: u32 = 20;
const PUBLISH_CHECK_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// `NX_OPEN_CACHE_OBJECT_TIMING=1`: each large transfer prints its phases' times to stderr (for
/// profiling the cloud path). The line holds the direction (get or put), the byte count, the total
/// time and rate, and each phase's time: no object key and no hash.
fn timing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("NX_OPEN_CACHE_OBJECT_TIMING").is_ok_and(|v| !v.is_empty() && v != "0")
    })
}

/// Phase times of one transfer, printed when [`timing`] is on.
struct Phases {
    what: &'static str,
    start: std::time::Instant,
    last: std::time::Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn new(what: &'static str) -> Self {
        let now = std::time::Instant::now();
        Phases {
            what,
            start: now,
            last: now,
            marks: Vec::new(),
        }
    }

    fn mark(&mut self, name: &'static str) {
        if !timing() {
            return;
        }
        let now = std::time::Instant::now();
        self.marks.push((name, now - self.last));
        self.last = now;
    }

    fn print(&self, bytes: u64) {
        if !timing() || bytes < PART_SIZE as u64 {
            return;
        }
        let total = self.start.elapsed().as_secs_f64();
        let parts: Vec<String> = self
            .marks
            .iter()
            .map(|(n, d)| format!("{n} {:.0} ms", d.as_secs_f64() * 1e3))
            .collect();
        eprintln!(
            "nx-open-cache timing: {} {} bytes in {:.0} ms ({:.1} MB/s): {}",
            self.what,
            bytes,
            total * 1e3,
            bytes as f64 / total / 1e6,
            parts.join(", ")
        );
    }
}

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
            Backend::Http { url, .. } => return Err(not_object(format!("http backend ({url})"))),
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
    /// cloud's error code and message, not its raw answer), with its root cause, which the run
    /// summary groups by. A bucket that does not exist, refused credentials (an unknown key id, a
    /// wrong secret, a 401, or a refused listing) and an unknown host last for the run; a refused
    /// write concerns writes only; a refused read of one object (its KMS key, an ACL) after the
    /// listing passed concerns that object. Any other fault is one cause per cloud, operation,
    /// bucket and status or code (3 in a row open the breaker). Lastingness is decided on the
    /// status and the service's code ([`answer::lasting`]), never on the URL or bucket name, and
    /// no cause's reason names an object key or an upload id.
    fn fault(&self, op: Op, key: &ObjectPath, e: object_store::Error) -> StoreError {
        let raw = e.to_string();
        // The listing's key is the prefix, the same for every request.
        let text = match op {
            Op::Listing => answer::short(&raw),
            _ => scrub(&answer::short(&raw), key),
        };
        let holder = self.cloud.holder();
        let cloud = self.cloud.title();
        let name = self.cloud.name();
        let bucket = &self.bucket;
        let status = answer::status(&raw);
        let service = answer::service_error(&raw);
        let code = service.as_ref().and_then(|s| s.code.clone());
        let refused = matches!(e, object_store::Error::PermissionDenied { .. })
            || status == Some("403")
            || code.as_deref() == Some("AccessDenied");
        let lasting = answer::lasting(&raw)
            .or_else(|| {
                matches!(e, object_store::Error::Unauthenticated { .. })
                    .then_some(answer::Lasting::Credentials)
            })
            // The listing is the start-up check: a refusal there refuses everything.
            .or_else(|| (refused && op == Op::Listing).then_some(answer::Lasting::Credentials));
        let credentials = &self.credentials;
        let (reason, cause) = match lasting {
            Some(answer::Lasting::NoBucket) => (
                format!("the {holder} does not exist ({text})"),
                Cause::lasting(
                    format!("{name} no {holder} {bucket}"),
                    format!("{cloud} {holder} {bucket} does not exist"),
                ),
            ),
            Some(answer::Lasting::UnknownHost) => (
                format!("unknown host ({text})"),
                Cause::lasting(
                    format!("{name} unknown host {bucket}"),
                    format!(
                        "the {cloud} endpoint of {holder} {bucket} is an unknown host ({text})"
                    ),
                ),
            ),
            Some(answer::Lasting::Credentials) => {
                let summary =
                    format!("credentials were refused by {cloud} ({text}); {credentials}");
                (
                    format!("credentials were refused ({text}); {credentials}"),
                    Cause::lasting(format!("{name} credentials {bucket}"), summary),
                )
            }
            None if refused && op.writes() => (
                format!("the write was refused ({text}); {credentials}"),
                Cause::writes_only(
                    format!("{name} write refused {bucket}"),
                    format!("{cloud} refused writes to {holder} {bucket}: ({text}); {credentials}"),
                ),
            ),
            None if refused => (
                format!(
                    "the read was refused ({text}): the listing passed, so this object's own \
                     permissions (a KMS key, an ACL) refuse it"
                ),
                Cause::new(
                    format!("{name} read refused {bucket}"),
                    format!(
                        "{cloud} refused reads of objects in {holder} {bucket} ({text}): the \
                         listing passed, so the objects' own permissions (a KMS key, an ACL) \
                         refuse them"
                    ),
                ),
            ),
            None => {
                let reason = if matches!(e, object_store::Error::NotFound { .. }) && op.multipart()
                {
                    format!(
                        "the upload is gone ({text}): the store may have taken longer than the \
                         {} s read timeout to assemble it, after which the client aborted it",
                        self.bulk_answer.as_secs()
                    )
                } else if matches!(e, object_store::Error::NotFound { .. }) {
                    format!("not found: the {holder} may not exist ({text})")
                } else if op == Op::Listing || fetching_credentials(&raw) {
                    // The start-up check, or fetching credentials failed (the metadata
                    // service, a web identity): it may pass, but say where they were looked for.
                    format!("{text}; {credentials}")
                } else {
                    text.clone()
                };
                let class = code
                    .as_deref()
                    .or(status)
                    .unwrap_or(match e {
                        object_store::Error::NotFound { .. } => "not found",
                        _ => "error",
                    })
                    .to_owned();
                let op_text = op.text();
                (
                    reason.clone(),
                    Cause::new(
                        format!("{name} {op_text} {bucket} {class}"),
                        format!("{cloud} {holder} {bucket}: {op_text} failed: {reason}"),
                    ),
                )
            }
        };
        StoreError::new(
            ErrorKind::Unavailable,
            format!("{}: {} failed: {reason}", self.where_(key), op.text()),
        )
        .with_cause(cause)
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
                Op::Listing,
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
        phases: &mut Phases,
    ) -> Result<PutOutcome, StoreError> {
        let tmp = self.tmp_key(hash);
        let uploaded = self.upload_parts(&tmp, &mut file).await;
        phases.mark("multipart");
        drop(file);
        let result = match uploaded {
            Ok(()) => {
                let copied = self
                    .bulk
                    .copy_opts(&tmp, key, CopyOptions::new().with_mode(CopyMode::Create))
                    .await;
                phases.mark("copy");
                match copied {
                    Ok(()) => {
                        let expected = (HEADER_LEN as u64).saturating_add(header.payload_len);
                        if let Err(e) = self.check_published(key, expected).await {
                            // The temp key stays: a copy still under way may need it.
                            phases.mark("check");
                            phases.print(header.payload_len);
                            return Err(e);
                        }
                        Ok(PutOutcome::Stored(header.payload_len))
                    }
                    Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. }) => {
                        Ok(PutOutcome::AlreadyExists)
                    }
                    Err(e) => Err(self.fault(Op::Publishing, key, e)),
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
                    return Err(self.fault(Op::RemovingTemp, &tmp, e));
                }
            }
        }
        phases.mark("delete temp");
        phases.print(header.payload_len);
        result
    }

    /// Waits (bounded) until the final key holds `expected` bytes after a copy: a service that
    /// copies asynchronously (Azure Copy Blob answering `pending`) must not make a short object
    /// count as stored.
    async fn check_published(&self, key: &ObjectPath, expected: u64) -> Result<(), StoreError> {
        let mut seen = None;
        for attempt in 0..PUBLISH_CHECKS {
            if attempt > 0 {
                tokio::time::sleep(PUBLISH_CHECK_PAUSE).await;
            }
            match self.inner.head(key).await {
                Ok(meta) if meta.size == expected => return Ok(()),
                Ok(meta) => seen = Some(meta.size),
                Err(object_store::Error::NotFound { .. }) => seen = None,
                Err(e) => return Err(self.fault(Op::Checking, key, e)),
            }
        }
        let held = seen.map_or_else(|| "no object".to_owned(), |n| format!("{n} bytes"));
        Err(StoreError::new(
            ErrorKind::Unavailable,
            format!(
                "{}: after the copy from the temp key the object holds {held}, not {expected} \
                 (the service may still be copying); not reported stored, temp key kept",
                self.where_(key)
            ),
        ))
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
            .map_err(|e| self.fault(Op::StartingMultipart, tmp, e))?;
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
                return Err(self.fault(Op::UploadingPart, tmp, e));
            }
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map(|_| ())
            .map_err(|e| self.fault(Op::CompletingMultipart, tmp, e))
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
        let mut phases = Phases::new("get");
        let result = match self.inner.get_opts(&key, GetOptions::default()).await {
            Ok(r) => r,
            Err(e @ object_store::Error::NotFound { .. }) => {
                let text = e.to_string().to_ascii_lowercase();
                if text.contains("nosuchbucket") || text.contains("containernotfound") {
                    return Err(self.fault(Op::Download, &key, e));
                }
                return Ok(None);
            }
            Err(e) => return Err(self.fault(Op::Download, &key, e)),
        };
        let size = result.meta.size;
        phases.mark("answer");
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
            let chunk = chunk.map_err(|e| self.fault(Op::Download, &key, e))?;
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
        phases.mark("download+hash+spool");
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
        phases.mark("finish");
        phases.print(len);
        Ok(Some(Artifact {
            len,
            body,
            digest: Some(d),
        }))
    }

    async fn put(&self, hash: &TaskHash, upload: Upload<'_, '_>) -> Written {
        let Upload { body, declared_len } = upload;
        let key = self.object_key(hash);
        let mut phases = Phases::new("put");
        // A large or unsized body: one HEAD spares uploading what is already stored. It runs while
        // the body is received (its round trip hidden behind the spooling); when it finds the
        // object first, the rest of the body is not read.
        let checking = declared_len.is_none_or(|n| n > self.inline_limit);
        let head = async {
            if !checking {
                return Ok(false);
            }
            match self.inner.head(&key).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.fault(Op::Checking, &key, e)),
            }
        };
        let receiving = self.receive(body, declared_len);
        tokio::pin!(head, receiving);
        let mut checked = false;
        let received = loop {
            tokio::select! {
                found = &mut head, if !checked => {
                    checked = true;
                    if found? {
                        return Ok(PutOutcome::AlreadyExists);
                    }
                }
                received = &mut receiving => break received,
            }
        };
        // A body that failed to arrive is the answer, whatever the check would say.
        let (spool, header) = received?;
        if !checked && head.await? {
            return Ok(PutOutcome::AlreadyExists);
        }
        phases.mark("head+receive+hash+spool");
        let outcome = match spool {
            Spooled::Memory(bytes) => {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                let payload = PutPayload::from(bytes);
                match self
                    .inner
                    .put_opts(&key, payload.clone(), opts.clone())
                    .await
                {
                    // The connection was reset after the request went out, unanswered: sent
                    // once more (the resilience policy's rule).
                    Err(e) if resend_create(&e) => {
                        self.inner.put_opts(&key, payload, opts).await.map(|_| true)
                    }
                    other => other.map(|_| true),
                }
            }
            Spooled::File(file) => {
                let file = tokio::fs::File::from_std(file);
                return self
                    .upload_large(hash, &key, file, &header, &mut phases)
                    .await;
            }
        };
        match outcome {
            Ok(_) => Ok(PutOutcome::Stored(header.payload_len)),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.fault(Op::Upload, &key, e)),
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
            Err(e) => return Err(self.fault(Op::Checking, &key, e)),
            Ok(_) => {}
        }
        match self.inner.delete(&key).await {
            Ok(()) => Ok(Deleted::Removed),
            Err(object_store::Error::NotFound { .. }) => Ok(Deleted::Absent),
            Err(e) => Err(self.fault(Op::Deleting, &key, e)),
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
/// What a store call was doing when it failed: named in faults, and whether it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// The start-up check's listing.
    Listing,
    Download,
    /// A metadata check of an object.
    Checking,
    Upload,
    Publishing,
    RemovingTemp,
    StartingMultipart,
    UploadingPart,
    CompletingMultipart,
    Deleting,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Listing => "listing",
            Op::Download => "download",
            Op::Checking => "checking",
            Op::Upload => "upload",
            Op::Publishing => "publishing (copy from the temp key)",
            Op::RemovingTemp => "removing the temp object",
            Op::StartingMultipart => "starting the multipart upload",
            Op::UploadingPart => "uploading a part",
            Op::CompletingMultipart => "completing the multipart upload",
            Op::Deleting => "deleting",
        }
    }

    /// It changes the store (a refusal then says nothing about reads).
    fn writes(self) -> bool {
        !matches!(self, Op::Listing | Op::Download | Op::Checking)
    }

    fn multipart(self) -> bool {
        matches!(
            self,
            Op::StartingMultipart | Op::UploadingPart | Op::CompletingMultipart
        )
    }
}

/// Whether a client error's text is about fetching credentials (the words of the client, or the
/// instance metadata service's paths), for the wording only: it never makes a cause lasting.
fn fetching_credentials(raw: &str) -> bool {
    let lower = raw.to_ascii_lowercase();
    lower.contains("credential")
        || lower.contains("/latest/api/token")
        || lower.contains("/latest/meta-data")
}

/// `text` without the object key (it names a hash, or a temp object) and the upload id, which
/// differ on every request: `<key>`, `uploadId=<id>`.
fn scrub(text: &str, key: &ObjectPath) -> String {
    let mut out = if key.as_ref().is_empty() {
        text.to_owned()
    } else {
        text.replace(&format!("/{}", key.as_ref()), "/<key>")
    };
    let mut from = 0;
    while let Some(at) = out[from..].find("uploadId=") {
        let start = from + at + "uploadId=".len();
        let end = out[start..]
            .find(['&', ' ', ')', '"', '\''])
            .map_or(out.len(), |n| start + n);
        out.replace_range(start..end, "<id>");
        from = start + "<id>".len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(bucket: &str) -> ObjectStoreBackend {
        ObjectStoreBackend::with_client(
            Arc::new(object_store::memory::InMemory::new()),
            Cloud::S3,
            bucket.to_owned(),
            None,
            Prefix::default(),
        )
    }

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.to_owned().into(),
        }
    }

    fn denied(path: &str, text: &str) -> object_store::Error {
        object_store::Error::PermissionDenied {
            path: path.to_owned(),
            source: text.to_owned().into(),
        }
    }

    #[test]
    fn a_bucket_named_like_a_token_answering_503_is_not_lasting() {
        let b = backend("nx-token-cache");
        let key = ObjectPath::from("123");
        let text = "Error performing GET http://127.0.0.1:9000/nx-token-cache/123?continuation-token=abc in 4ms - Server returned non-2xx status code: 503 Service Unavailable: <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        let cause = b.fault(Op::Download, &key, generic(text)).cause.unwrap();
        assert!(!cause.lasting && !cause.writes_only, "{cause:?}");
        assert_eq!(cause.key, "s3 download nx-token-cache SlowDown");
        let eai_again = "Error performing GET http://h/nx-token-cache/123 - error sending request: client error (Connect): dns error: failed to lookup address information: Temporary failure in name resolution";
        let cause = b
            .fault(Op::Download, &key, generic(eai_again))
            .cause
            .unwrap();
        assert!(!cause.lasting, "{cause:?}");
        let unknown = "Error performing GET http://h/nx-token-cache/123 - error sending request: client error (Connect): dns error: failed to lookup address information: Name or service not known";
        let cause = b.fault(Op::Download, &key, generic(unknown)).cause.unwrap();
        assert!(cause.lasting, "{cause:?}");
        assert!(!cause.reason.contains("/123"), "no object key: {cause:?}");
    }

    #[test]
    fn a_refused_object_read_after_the_listing_passed_is_not_lasting() {
        let b = backend("acme");
        let text = "Server returned non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        let read = b
            .fault(Op::Download, &ObjectPath::from("555"), denied("555", text))
            .cause
            .unwrap();
        assert!(!read.lasting && !read.writes_only, "{read:?}");
        assert_eq!(read.key, "s3 read refused acme");
        let write = b
            .fault(Op::Upload, &ObjectPath::from("555"), denied("555", text))
            .cause
            .unwrap();
        assert!(write.writes_only && !write.lasting, "{write:?}");
        let listing = b
            .fault(Op::Listing, &ObjectPath::from(""), generic(text))
            .cause
            .unwrap();
        assert!(listing.lasting, "the start-up listing refused: {listing:?}");
        let bad_key = "Server returned non-2xx status code: 403 Forbidden: <Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>";
        let read = b
            .fault(
                Op::Download,
                &ObjectPath::from("555"),
                denied("555", bad_key),
            )
            .cause
            .unwrap();
        assert!(read.lasting, "{read:?}");
    }

    #[test]
    fn multipart_faults_are_one_cause_without_temp_keys_or_upload_ids() {
        let b = backend("acme");
        let causes: Vec<Box<Cause>> = ["1111", "2222"]
            .iter()
            .map(|h| {
                let tmp = ObjectPath::from(format!(".tmp/{h}.77.abc.0011"));
                let text = format!("Error performing PUT http://h/acme/.tmp/{h}.77.abc.0011?partNumber=1&uploadId=XyZ{h} in 3ms - Server returned non-2xx status code: 500 Internal Server Error: <Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>");
                b.fault(Op::UploadingPart, &tmp, generic(&text))
                    .cause
                    .unwrap()
            })
            .collect::<Vec<_>>();
        assert_eq!(causes[0].key, causes[1].key);
        assert_eq!(causes[0].key, "s3 uploading a part acme InternalError");
        let plain = "Error performing PUT http://h/acme/.tmp/1111.77.abc.0011?partNumber=1&uploadId=XyZ1 - connection reset";
        let tmp = ObjectPath::from(".tmp/1111.77.abc.0011");
        let cause = b
            .fault(Op::UploadingPart, &tmp, generic(plain))
            .cause
            .unwrap();
        assert!(
            !cause.reason.contains("1111") && !cause.reason.contains("XyZ1"),
            "{cause:?}"
        );
        assert!(
            cause.reason.contains("<key>?partNumber=1&uploadId=<id>"),
            "{cause:?}"
        );
    }
}
