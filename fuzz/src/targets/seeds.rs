//! Realistic starting inputs for each target, made with the project's own writers: envelopes
//! from `envelope::seal`, Nx artifacts from `archive::pack_to_vec` (gzip, as Nx writes them, and
//! zstd), hostile archives forged entry by entry (for `unpack` and `validate`, which also gets
//! the shapes its rules are about), sealed objects from the seal writer, option sets from the
//! README, and the requests Nx sends. `tests/fuzz_corpus.rs` runs them through the bodies
//! and writes them into the working corpus `fuzz/target/corpus/<target>/` on request.

use super::{block_on, seal_open, MemoryStore};
use nx_open_cache::archive::{self, Format, PackOptions};
use nx_open_cache::envelope;
use nx_open_cache::key::TaskHash;
use nx_open_cache::seal::keys::EncryptionKey;
use nx_open_cache::seal::{SealConfig, SealedStore};
use nx_open_cache::store::Store;
use std::sync::Arc;

/// The seeds of target `name`: (file name, bytes).
pub fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    let named = |prefix: &str, list: Vec<Vec<u8>>| {
        list.into_iter()
            .enumerate()
            .map(|(i, b)| (format!("seed-{prefix}-{i:02}"), b))
            .collect()
    };
    match name {
        "envelope" => named("envelope", envelopes()),
        "unpack" => named("archive", archives()),
        "seal_open" => named("sealed", sealed_objects()),
        "config" => named("options", option_sets()),
        "router" => named("requests", requests()),
        "validate" => named("validation", validations()),
        _ => Vec::new(),
    }
}

/// A small Nx task output: files, a nested directory, an empty file, a symlink inside.
pub fn artifact(format: Format) -> Vec<u8> {
    let dir = super::scratch();
    let root = dir.path();
    let write = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    };
    write("dist/apps/web/main.js", b"console.log('hello');\n");
    write("dist/apps/web/assets/logo.svg", b"<svg/>");
    write("dist/apps/web/empty.txt", b"");
    std::os::unix::fs::symlink("main.js", root.join("dist/apps/web/index.js")).expect("symlink");
    archive::pack_to_vec(&PackOptions {
        root: root.to_path_buf(),
        files: vec!["dist/apps/web".into()],
        terminal_output: "> nx run web:build\n\nSuccessfully ran target build\n".into(),
        code: 0,
        format,
        level: Some(6),
        threads: Some(1),
        ..PackOptions::default()
    })
    .expect("pack the seed artifact")
}

fn envelopes() -> Vec<Vec<u8>> {
    let nx = artifact(Format::Nx);
    let sealed = envelope::seal(&nx);
    let mut truncated = sealed.clone();
    truncated.truncate(sealed.len() - 7);
    vec![
        envelope::seal(b""),
        envelope::seal(b"hello"),
        sealed,
        truncated,
        envelope::seal(&artifact(Format::Zstd)),
    ]
}

/// A forged tar entry (name and link name straight into the header, past the tar crate's checks).
fn raw(name: &str, kind: u8, link: &str, mode: u32, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(mode);
    h.set_mtime(0);
    {
        let b = h.as_mut_bytes();
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[157..157 + link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len() + (512 - data.len() % 512) % 512, 0);
    out
}

fn gzip_tar(entries: &[Vec<u8>]) -> Vec<u8> {
    use std::io::Write;
    let mut tar = entries.concat();
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

fn archives() -> Vec<Vec<u8>> {
    let out = || raw("terminalOutput", b'0', "", 0o644, b"done\n");
    let code = || raw("code", b'0', "", 0o644, &0u32.to_be_bytes());
    let file = |name: &str| raw(name, b'0', "", 0o644, b"x");
    let with = |e: Vec<u8>| gzip_tar(&[e, out(), code()]);
    let nx = artifact(Format::Nx);
    vec![
        nx.clone(),
        artifact(Format::Zstd),
        nx[..nx.len() / 2].to_vec(),
        gzip_tar(&[
            raw("dist", b'5', "", 0o755, b""),
            file("dist/a.js"),
            out(),
            code(),
        ]),
        with(file("../escape.txt")),
        with(file("/abs.txt")),
        with(raw("dist/up", b'2', "../../victim", 0o777, b"")),
        gzip_tar(&[
            raw("l", b'2', "dist", 0o777, b""),
            file("l/x"),
            out(),
            code(),
        ]),
        with(raw(
            "out-link/x",
            b'0',
            "",
            0o644,
            b"through a link of dest",
        )),
        with(raw("hard", b'1', "/etc/hostname", 0o644, b"")),
        with(raw("fifo", b'6', "", 0o644, b"")),
        with(raw("suid", b'0', "", 0o4755, b"#!/bin/sh\n")),
        gzip_tar(&[file("dup"), file("dup"), out(), code()]),
        gzip_tar(&[out()]),
    ]
}

/// `entry` (one header block and its data) with the header bytes at `at` replaced by `bytes` and
/// the checksum made right again.
fn patched(mut entry: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    entry[at..at + bytes.len()].copy_from_slice(bytes);
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&entry[..512]);
    h.set_cksum();
    entry[..512].copy_from_slice(h.as_bytes());
    entry
}

/// The archives of `unpack`, and the shapes the validator's rules are about: extension headers,
/// symlink chains in either order, symlink mode fields, corrupt and cut compressed data.
fn validations() -> Vec<Vec<u8>> {
    let out = || raw("terminalOutput", b'0', "", 0o644, b"done\n");
    let code = || raw("code", b'0', "", 0o644, &0u32.to_be_bytes());
    let link = |name: &str, target: &str| raw(name, b'2', target, 0o777, b"");
    let with = |mut entries: Vec<Vec<u8>>| {
        entries.extend([out(), code()]);
        gzip_tar(&entries)
    };
    let chain = |n: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| link(&format!("l{i}"), &format!("l{}", i + 1)))
            .chain([raw(&format!("l{n}"), b'0', "", 0o644, b"end")])
            .collect()
    };
    let pax = |records: &str| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(records.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        let mut v = h.as_bytes().to_vec();
        v.extend_from_slice(records.as_bytes());
        v.resize(v.len().div_ceil(512) * 512, 0);
        v
    };
    let long_name = |name: &str| {
        let mut h = tar::Header::new_gnu();
        h.as_mut_bytes()[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(name.len() as u64 + 1);
        h.set_cksum();
        let mut v = h.as_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        v.resize(v.len().div_ceil(512) * 512, 0);
        v
    };
    let valid = with(vec![
        raw("dist", b'5', "", 0o755, b""),
        raw("dist/a.js", b'0', "", 0o644, &[b'a'; 3000]),
        link("dist/b.js", "a.js"),
    ]);
    let mut corrupt = valid.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x55;
    let mut trailing = valid.clone();
    trailing.extend_from_slice(b"\0junk");
    let mut reversed = chain(45);
    reversed.reverse();
    let mut out_of_order = chain(30);
    out_of_order.rotate_left(15);
    let mut seeds = archives();
    seeds.extend([
        valid.clone(),
        corrupt,
        valid[..valid.len() - 5].to_vec(),
        trailing,
        with(chain(39)),
        with(chain(41)),
        with(reversed),
        with(out_of_order),
        with(vec![patched(link("dist/l", "x"), 100, b"zzzzzzz\0")]),
        with(vec![patched(link("dist/l", "x"), 100, b"0004777\0")]),
        with(vec![patched(
            raw("dist/f", b'0', "", 0o644, b"x"),
            100,
            b"\0\0\0\0\0\0\0\0",
        )]),
        with(vec![
            pax("20 path=dist/pax.js\n"),
            raw("ignored", b'0', "", 0o644, b"x"),
        ]),
        with(vec![
            long_name(&format!("dist/{}/x.js", "d".repeat(120))),
            raw("cut", b'0', "", 0o644, b"x"),
        ]),
        with(vec![
            raw("./", b'5', "", 0o755, b""),
            link("up", ".."),
            link("dangling", "dist/missing/deeper"),
        ]),
    ]);
    seeds
}

/// The artifact sealed by a writer with `config`.
fn seal_with(config: SealConfig, artifact: &[u8]) -> Vec<u8> {
    let hash = TaskHash::parse(seal_open::HASH).expect("a valid hash");
    let inner = Arc::new(MemoryStore::new(None, None));
    let store = SealedStore::new(inner.clone(), config);
    let chunks = vec![Ok(bytes::Bytes::copy_from_slice(artifact))];
    let mut body: nx_open_cache::store::BodyStream<'static> =
        Box::pin(futures_util::stream::iter(chunks));
    block_on(store.put(&hash, &mut body, Some(artifact.len() as u64))).expect("seal a seed");
    inner.object().expect("the sealed object").to_vec()
}

fn sealed_objects() -> Vec<Vec<u8>> {
    let key = || vec![EncryptionKey::new(seal_open::ENCRYPTION_KEY)];
    let signs = || SealConfig {
        signing_key: Some(seal_open::signer()),
        ..SealConfig::default()
    };
    let encrypts = || SealConfig {
        encryption_keys: key(),
        ..SealConfig::default()
    };
    let both = || SealConfig {
        signing_key: Some(seal_open::signer()),
        encryption_keys: key(),
        ..SealConfig::default()
    };
    let nx = artifact(Format::Nx);
    // Two encrypted chunks and a bit: the chunk counter and the last-chunk flag.
    let large: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    vec![
        nx.clone(),
        seal_with(signs(), &nx),
        seal_with(encrypts(), &nx),
        seal_with(both(), &nx),
        seal_with(both(), b""),
        seal_with(
            SealConfig {
                signing_key: Some(seal_open::other_signer()),
                ..SealConfig::default()
            },
            &nx,
        ),
        seal_with(
            SealConfig {
                encryption_keys: vec![EncryptionKey::new(seal_open::OTHER_ENCRYPTION_KEY)],
                ..SealConfig::default()
            },
            &nx,
        ),
        seal_with(encrypts(), &large),
        seal_with(signs(), &large[..5000]),
    ]
}

fn option_sets() -> Vec<Vec<u8>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let public = b64.encode(seal_open::signer().verifying_key().as_bytes());
    let secret = b64.encode(seal_open::SIGNER_SEED);
    let enc = b64.encode(seal_open::ENCRYPTION_KEY);
    let sets = [
        r#"{"options": {"backend": "fs", "path": "/mnt/nx-cache"}, "env": {"HOME": "/home/dev"}}"#.to_owned(),
        r#"{"options": {}, "env": {"HOME": "/home/dev"}}"#.to_owned(),
        r#"{"options": {"backend": "http", "url": "https://cache.example.com"}, "env": {"NX_OPEN_CACHE_TOKEN": "t"}}"#.to_owned(),
        r#"{"options": {"backend": "s3", "bucket": "my-nx-cache", "region": "eu-west-1", "writePrefix": "untrusted", "readPrefixes": ["trusted", "untrusted"]}, "env": {"CI": "true", "NX_OPEN_CACHE_WRITE_PREFIX": "trusted", "NX_OPEN_CACHE_READ_PREFIXES": "trusted"}}"#.to_owned(),
        format!(r#"{{"options": {{"backend": "s3", "bucket": "my-nx-cache", "region": "eu-west-1", "trustedKeys": ["{public}"], "requireSignature": true}}, "env": {{"NX_OPEN_CACHE_SIGNING_KEY": "{secret}", "NX_OPEN_CACHE_ENCRYPTION_KEY": "{enc}"}}}}"#),
        format!(r#"{{"options": {{"backend": "gcs", "bucket": "b", "trustedKeys": ["{secret}"]}}, "env": {{}}}}"#),
        r#"{"options": {"backend": "azure", "container": "nx-cache", "accountName": "acct", "endpoint": "http://127.0.0.1:10000/acct", "timeout": "30s", "connectTimeout": 5}, "env": {"NX_OPEN_CACHE_TIMEOUT": "1e300"}}"#.to_owned(),
        r#"{"options": {"localMode": "read-only", "ciMode": "no-cache", "prefix": "team/web", "timeout": 1e300}, "env": {"CI": "1", "HOME": "/h", "NX_OPEN_CACHE_MODE": "read"}}"#.to_owned(),
        r#"{"options": {"backend": "http", "url": "https://user:fuzzPlantedPassw0rd-7f3a9c@cache.example.com/base?token=x"}, "env": {}}"#.to_owned(),
        r#"{"options": {"backend": "fs", "path": "../outside", "s3": {"bucket": "legacy"}}, "env": {"NX_OPEN_CACHE_REQUIRE_SIGNATURE": "maybe"}}"#.to_owned(),
    ];
    sets.into_iter().map(String::into_bytes).collect()
}

fn requests() -> Vec<Vec<u8>> {
    use super::router::{NAMESPACED_TOKEN, READ_ONLY_TOKEN, READ_WRITE_TOKEN};
    let nx = artifact(Format::Nx);
    let put = |token: &str, hash: &str, body: &[u8]| {
        let mut r = format!(
            "PUT /v1/cache/{hash} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\
             content-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let get = |token: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\r\n")
            .into_bytes()
    };
    let plain = |line: &str| format!("{line} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").into_bytes();
    vec![
        [
            put(READ_WRITE_TOKEN, "12345", &nx),
            get(READ_WRITE_TOKEN, "/v1/cache/12345"),
        ]
        .concat(),
        [
            put(READ_ONLY_TOKEN, "777", &nx),
            get(READ_ONLY_TOKEN, "/v1/cache/777"),
        ]
        .concat(),
        [
            put(NAMESPACED_TOKEN, "42", b"not an artifact"),
            get(NAMESPACED_TOKEN, "/v1/cache/42"),
            plain("GET /v1/cache/42"),
        ]
        .concat(),
        [
            plain("GET /healthz"),
            plain("GET /readyz"),
            plain("GET /metrics"),
            plain("GET /openapi.json"),
        ]
        .concat(),
        plain("GET /v1/cache/abc%0aforged%0d%1b[2J"),
        plain("BREW /v1/cache/1"),
        b"PUT /v1/cache/9 HTTP/1.1\r\nauthorization: Bearer fuzz-read-write-token-0123456789\r\n\
          transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
        format!(
            "PUT /v1/cache/8 HTTP/1.1\r\nauthorization: Bearer {READ_WRITE_TOKEN}\r\n\
             content-length: 2000000\r\n\r\nshort"
        )
        .into_bytes(),
        get("wrong", "/v1/cache/..%2f..%2fetc"),
    ]
}
