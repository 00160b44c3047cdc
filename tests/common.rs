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
