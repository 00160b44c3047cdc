//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use futures_util::StreamExt;
use nx_open_cache::store::{Artifact, ArtifactBody, BodyStream};
use std::io::Read;

/// A body stream of the given bytes in chunks of `chunk` bytes.
pub fn body(data: &[u8], chunk: usize) -> BodyStream<'static> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks).boxed()
}

/// Reads a verified artifact's payload completely.
pub fn read_all(artifact: Artifact) -> Vec<u8> {
    match artifact.body {
        ArtifactBody::Memory(b) => b.to_vec(),
        ArtifactBody::File { mut file, .. } => {
            let mut out = Vec::new();
            file.read_to_end(&mut out).expect("read artifact file");
            assert_eq!(out.len() as u64, artifact.len);
            out
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no extra crates.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Every regular file below `dir` except temp files.
pub fn object_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == ".tmp") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// What Nx's client uploads (nx 24 `HttpRemoteCache.store`): a tar::Builder over a gzip encoder
/// (level 6), `follow_symlinks(false)`, `append_dir_all("", src)` when there is a `src` directory,
/// then `files`, then old-style headers (only name, size, checksum) for `terminalOutput` and `code`.
pub fn nx_store_archive(
    src: Option<&std::path::Path>,
    files: &[(&str, &[u8])],
    terminal_output: &[u8],
    code: u32,
) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    b.follow_symlinks(false);
    if let Some(src) = src {
        b.append_dir_all("", src).expect("archive the directory");
    }
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).expect("tar entry");
    }
    for (name, data) in [
        ("terminalOutput", terminal_output),
        ("code", &code.to_be_bytes()[..]),
    ] {
        let mut h = tar::Header::new_old();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("tar entry");
    }
    b.into_inner()
        .and_then(|gz| gz.finish())
        .expect("gzip the archive")
}

/// A valid Nx artifact holding `len` bytes of noise in `dist/blob.bin`: what the proxy and `serve`
/// accept. It is a little larger than `len` (noise does not compress).
pub fn artifact(len: usize, seed: u64) -> Vec<u8> {
    nx_store_archive(
        None,
        &[("dist/blob.bin", &noise(len, seed))],
        format!("seed {seed}\n").as_bytes(),
        0,
    )
}

pub mod emulator;

/// A task hash for tests.
pub fn hash(s: &str) -> nx_open_cache::key::TaskHash {
    nx_open_cache::key::TaskHash::parse(s).expect("valid test hash")
}

/// The large-object size in MiB: `NX_OPEN_CACHE_TEST_LARGE_MIB` (default 128; e.g. 1024 or 2200).
pub fn large_mib() -> u64 {
    std::env::var("NX_OPEN_CACHE_TEST_LARGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

/// Large-object tests run one at a time so the process's peak memory belongs to one of them.
pub static LARGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Deterministic stream of `len` bytes in 1 MiB chunks, generated as it is consumed.
pub fn generated(len: u64, seed: u64) -> BodyStream<'static> {
    const CHUNK: u64 = 1 << 20;
    futures_util::stream::iter((0..len.div_ceil(CHUNK)).map(move |i| {
        let n = CHUNK.min(len - i * CHUNK) as usize;
        Ok(Bytes::from(noise(n, seed.wrapping_add(i))))
    }))
    .boxed()
}

/// The SHA-256 of [`generated`]`(len, seed)`.
pub fn generated_sha256(len: u64, seed: u64) -> [u8; 32] {
    use sha2::Digest;
    const CHUNK: u64 = 1 << 20;
    let mut h = sha2::Sha256::new();
    for i in 0..len.div_ceil(CHUNK) {
        h.update(noise(
            CHUNK.min(len - i * CHUNK) as usize,
            seed.wrapping_add(i),
        ));
    }
    h.finalize().into()
}

/// A field of /proc/self/status in KiB (`VmRSS:`, `VmHWM:`), 0 where unknown.
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the process's peak-RSS counter (Linux >= 4.0) and returns the RSS now, in KiB.
pub fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    proc_status_kib("VmRSS:")
}

/// Reads a large artifact in 1 MiB steps: its length and SHA-256. A large artifact must come
/// back as a file, never in memory.
pub fn digest_file_artifact(artifact: Artifact) -> (u64, [u8; 32]) {
    use sha2::Digest;
    let ArtifactBody::File { mut file, .. } = artifact.body else {
        panic!("a large artifact must come back as a file, not in memory");
    };
    let mut digest = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).expect("read the artifact file");
        if n == 0 {
            break;
        }
        total += n as u64;
        digest.update(&buf[..n]);
    }
    (total, digest.finalize().into())
}

/// A closed port on 127.0.0.1: bound, then released.
pub fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

/// Pseudo-random bytes as a reader (the same xorshift as [`noise`]), `len` of them.
struct NoiseReader {
    left: u64,
    x: u64,
}

impl Read for NoiseReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            *b = (self.x >> 24) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes a valid Nx artifact holding `len` bytes of noise in `dist/blob.bin` to `path` as it is
/// made, never whole in memory (gzip without compression: noise does not compress). Returns the
/// file's length and SHA-256.
pub fn large_artifact_file(path: &std::path::Path, len: u64, seed: u64) -> (u64, [u8; 32]) {
    let file = std::fs::File::create(path).expect("create the artifact file");
    let gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        flate2::Compression::none(),
    );
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(
        &mut h,
        "dist/blob.bin",
        NoiseReader {
            left: len,
            x: seed | 1,
        },
    )
    .expect("tar entry");
    for (name, data) in [("terminalOutput", &b"large\n"[..]), ("code", &[0u8; 4][..])] {
        let mut h = tar::Header::new_old();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("tar entry");
    }
    let mut out = b
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("gzip the artifact");
    std::io::Write::flush(&mut out).expect("write the artifact file");
    drop(out);
    file_sha256(path)
}

/// A file's length and SHA-256, read in 1 MiB steps.
pub fn file_sha256(path: &std::path::Path) -> (u64, [u8; 32]) {
    let file = std::fs::File::open(path).expect("open the file");
    digest_file_artifact(Artifact {
        len: 0,
        body: ArtifactBody::File { file, offset: 0 },
        digest: None,
    })
}

/// A file as an upload body, read in 1 MiB chunks as it is consumed.
pub fn file_body(path: &std::path::Path) -> BodyStream<'static> {
    let file = std::fs::File::open(path).expect("open the body file");
    tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20).boxed()
}

/// The environment of a `serve` with one read-write token `secret` (client name `ci`).
pub fn serve_env(secret: &str) -> std::collections::HashMap<String, String> {
    [(
        "NX_OPEN_CACHE_SERVER_TOKENS".to_owned(),
        format!("ci:read-write:{secret}"),
    )]
    .into()
}

/// `serve`'s configuration for fs storage in `storage`, on 127.0.0.1 (a free port), log off, with
/// `extra` arguments after those; relative paths resolve against `base`.
pub fn serve_fs_config(
    storage: &std::path::Path,
    secret: &str,
    extra: &[&str],
    base: &std::path::Path,
) -> nx_open_cache::serve::config::ServeConfig {
    let storage = format!("fs:{}", storage.display());
    let args: Vec<String> = ["--storage", &storage, "--listen", "127.0.0.1:0"]
        .iter()
        .chain(["--log", "off"].iter())
        .chain(extra.iter())
        .map(|s| s.to_string())
        .collect();
    nx_open_cache::serve::config::resolve(&args, &serve_env(secret), base)
        .expect("serve configuration")
}
