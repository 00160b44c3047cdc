//! Artifact validation (`archive::validate`) on arbitrary bytes, held to what the module promises:
//!
//! - **one verdict, one reason, whatever the chunking**: `validate_slice`, a [`Validator`] fed
//!   the input 1 byte at a time and in pseudo-random cuts derived from the input, and
//!   `validate_reader` with the length known give the same `Result` (the same [`Checked`] or the
//!   same refusal, reason included). With the length unknown (a chunked upload) the ratio bound
//!   can only be checked at the end: the same acceptance and the same [`Checked`], and the same
//!   refusal unless the known-length check stopped at a bound first.
//! - **the store's paths agree**: `serve`'s upload path (a [`ValidatingStore`] over a store in
//!   memory, the body in pseudo-random chunks, with and without a declared length) stores the
//!   input exactly when it is valid, and refuses it with the same reason otherwise; its read path
//!   serves a stored valid object (in memory and as a file) and refuses and deletes an invalid
//!   one, with the same reason.
//! - **accepted means restorable**: `archive::unpack_bytes` of an accepted input into a fresh
//!   directory nested in a jail succeeds, writes nothing outside the destination, and every
//!   symlink it restores resolves inside (the checks of the `unpack` target); what it restores is
//!   what the validator saw (`code`, the length of `terminalOutput`, the number of files,
//!   directories and symlinks). Nx's own extraction (the `tar` crate: `terminalOutput` and `code`
//!   read, every other entry `unpack_in` the destination) also succeeds, into a jail of its own,
//!   with the same `code` and terminal output and no symlink out.
//! - never a panic, and bounded work: the limits are small (1,000 paths, 4 MiB inflated, ratio 200
//!   above 64 KiB, 1 MiB of terminal output).

use super::unpack;
use super::{block_on, MemoryStore};
use nx_open_cache::archive::{
    self, rules, validate::Rule, validate_reader, validate_slice, Checked, Refusal,
    ValidationLimits, Validator,
};
use nx_open_cache::key::TaskHash;
use nx_open_cache::store::validate::{ValidatingStore, ValidationPolicy};
use nx_open_cache::store::{BodyStream, ErrorKind, PutOutcome, Store};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The limits the target validates with.
pub fn limits() -> ValidationLimits {
    ValidationLimits {
        max_entries: 1000,
        max_expanded_bytes: 4 << 20,
        max_expansion_ratio: 200,
        ratio_floor_bytes: 64 << 10,
        max_path_bytes: rules::MAX_PATH_BYTES,
        max_terminal_output: 1 << 20,
    }
}

/// Inputs up to this size are also fed one byte at a time.
const BYTEWISE_MAX: usize = 256 * 1024;

const HASH: &str = "7f3a9c";

pub fn run(data: &[u8]) {
    let limits = limits();
    let verdict = validate_slice(data, &limits);
    if let Err(r) = &verdict {
        assert!(!r.reason().is_empty(), "an empty reason");
        assert!(
            r.to_string().starts_with("not a valid Nx artifact: "),
            "{r}"
        );
    }
    the_same_whatever_the_chunking(data, &limits, &verdict);
    the_store_agrees(data, &limits, &verdict);
    if let Ok(checked) = &verdict {
        restores_with_unpack(data, checked);
        restores_like_nx(data, checked);
    }
}

/// A small deterministic generator seeded from the input, for the cuts.
struct Cuts(u64);

impl Cuts {
    fn new(data: &[u8], salt: u64) -> Cuts {
        // FNV-1a, then never zero (xorshift's fixed point).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
        for b in data {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        Cuts(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The chunk lengths of `len` bytes, each in `1..=most`.
    fn split(&mut self, len: usize, most: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut left = len;
        while left > 0 {
            let n = (1 + (self.next() % most.max(1) as u64) as usize).min(left);
            out.push(n);
            left -= n;
        }
        out
    }
}

fn fed(data: &[u8], sizes: &[usize], limits: &ValidationLimits) -> Result<Checked, Refusal> {
    let mut v = Validator::new(limits.clone(), Some(data.len() as u64));
    let mut at = 0;
    for n in sizes {
        v.feed(&data[at..at + n])?;
        at += n;
    }
    v.finish()
}

fn the_same_whatever_the_chunking(
    data: &[u8],
    limits: &ValidationLimits,
    verdict: &Result<Checked, Refusal>,
) {
    let mut cuts = Cuts::new(data, 1);
    let mut chunkings: Vec<(&str, Vec<usize>)> = vec![
        ("small cuts", cuts.split(data.len(), 16)),
        ("medium cuts", cuts.split(data.len(), 1500)),
        ("large cuts", cuts.split(data.len(), data.len())),
    ];
    if data.len() <= BYTEWISE_MAX {
        chunkings.push(("1-byte chunks", vec![1; data.len()]));
    }
    for (how, sizes) in &chunkings {
        let got = fed(data, sizes, limits);
        assert!(
            got == *verdict,
            "fed in {how} ({:?}...): {got:?}, whole: {verdict:?}",
            &sizes[..sizes.len().min(8)]
        );
    }

    let read = validate_reader(data, limits, Some(data.len() as u64)).expect("reading a slice");
    assert!(
        read == *verdict,
        "validate_reader: {read:?}, whole: {verdict:?}"
    );

    let unknown = validate_reader(data, limits, None).expect("reading a slice");
    match (verdict, &unknown) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "length unknown: another result"),
        (Err(known), Err(_)) if known.rule() == Rule::Limit => {}
        (Err(known), Err(u)) => assert_eq!(known, u, "length unknown: another reason"),
        _ => panic!("length unknown: {unknown:?}, known: {verdict:?}"),
    }
}

fn body(data: &[u8], sizes: &[usize]) -> BodyStream<'static> {
    let mut chunks = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for n in sizes {
        chunks.push(Ok(bytes::Bytes::copy_from_slice(&data[at..at + n])));
        at += n;
    }
    Box::pin(futures_util::stream::iter(chunks))
}

/// `serve`'s upload and read paths give the verdict of `validate_slice`.
fn the_store_agrees(data: &[u8], limits: &ValidationLimits, verdict: &Result<Checked, Refusal>) {
    let hash = TaskHash::parse(HASH).expect("a valid hash");
    let mut cuts = Cuts::new(data, 2);
    for declared in [Some(data.len() as u64), None] {
        let inner = Arc::new(MemoryStore::new(None, None));
        let store = ValidatingStore::new(inner.clone(), ValidationPolicy::server(limits.clone()));
        let mut stream = body(data, &cuts.split(data.len(), 4096));
        let put = block_on(store.put(&hash, &mut stream, declared));
        match (verdict, put) {
            (Ok(_), Ok(PutOutcome::Stored(n))) => {
                assert_eq!(n, data.len() as u64);
                assert_eq!(inner.object().as_deref(), Some(data), "stored other bytes");
            }
            (Err(r), Err(e)) => {
                assert_eq!(e.kind, ErrorKind::Refused, "{e}");
                if declared.is_some() || r.rule() != Rule::Limit {
                    assert_eq!(e.message, r.to_string(), "upload: another reason");
                }
                assert!(inner.object().is_none(), "a refused upload was stored");
            }
            (v, put) => panic!("upload (declared {declared:?}): {put:?}, verdict: {v:?}"),
        }
    }

    let dir = super::scratch();
    for file_dir in [None, Some(dir.path().to_path_buf())] {
        let inner = Arc::new(MemoryStore::new(
            Some(bytes::Bytes::copy_from_slice(data)),
            file_dir.clone(),
        ));
        let store = ValidatingStore::new(inner.clone(), ValidationPolicy::server(limits.clone()));
        let got = block_on(store.get(&hash));
        let as_file = file_dir.is_some();
        match (verdict, got) {
            (Ok(_), Ok(Some(artifact))) => {
                assert_eq!(
                    super::read_artifact(artifact),
                    data,
                    "read (file {as_file})"
                );
            }
            (Err(r), Err(e)) => {
                assert_eq!(e.kind, ErrorKind::Refused, "{e}");
                assert!(
                    e.message.starts_with(&r.to_string()),
                    "read (file {as_file}): {e}, verdict: {r}"
                );
                assert!(inner.object().is_none(), "a refused object was kept");
            }
            (v, got) => panic!("read (file {as_file}): {got:?}, verdict: {v:?}"),
        }
    }
}

/// Our own restore of an accepted input succeeds, stays inside, and restores what was checked.
fn restores_with_unpack(data: &[u8], checked: &Checked) {
    let (jail, scratch) = unpack::jail();
    let dest = scratch.join("out");
    let unpacked = match archive::unpack_bytes(data, &dest) {
        Ok(u) => u,
        Err(e) => panic!("accepted ({checked:?}) but unpack refused: {e}"),
    };
    unpack::only_the_path_to(jail.path(), &scratch);
    assert_eq!(
        unpack::names(&scratch),
        unpack::set(&["out"]),
        "left beside the destination"
    );
    unpack::restored(data, &dest, &unpacked, &[]);

    assert_eq!(unpacked.code, checked.code, "another exit code");
    assert_eq!(
        unpacked.terminal_output.as_ref().map(|t| t.len() as u64),
        Some(checked.terminal_output_bytes),
        "another terminal output"
    );
    assert_eq!(
        unpacked.files.len() as u64,
        checked.files + checked.dirs + checked.symlinks,
        "restored {:?}, checked {checked:?}",
        unpacked.files
    );
    let (mut files, mut links) = (0u64, 0u64);
    for (_, meta) in unpack::walk(&dest) {
        if meta.file_type().is_symlink() {
            links += 1;
        } else if meta.is_file() {
            files += 1;
        }
    }
    assert_eq!(
        (files, links),
        (checked.files, checked.symlinks),
        "files and symlinks on disk"
    );
    unpack::make_traversable(jail.path());
}

/// Nx's extraction (the `tar` crate, as Nx's client reads an artifact) of an accepted input
/// succeeds and stays inside.
fn restores_like_nx(data: &[u8], checked: &Checked) {
    let (jail, scratch) = unpack::jail();
    let dest = scratch.join("out");
    std::fs::create_dir(&dest).expect("create the destination");
    let (terminal, code) = match nx_extract(data, &dest) {
        Ok(got) => got,
        Err(e) => panic!("accepted ({checked:?}) but Nx's extraction fails: {e}"),
    };
    unpack::only_the_path_to(jail.path(), &scratch);
    assert_eq!(code, Some(checked.code), "Nx reads another exit code");
    assert_eq!(
        terminal.map(|t| t.len() as u64),
        Some(checked.terminal_output_bytes),
        "Nx reads another terminal output"
    );
    unpack::make_traversable(&dest);
    for (rel, meta) in unpack::walk(&dest) {
        if meta.file_type().is_symlink() {
            assert!(
                unpack::resolves_inside(&dest, &rel),
                "Nx's extraction: symlink {rel:?} -> {:?} resolves outside",
                std::fs::read_link(dest.join(&rel))
            );
        }
    }
    unpack::make_traversable(jail.path());
}

/// What Nx's client does with an artifact it retrieved: `terminalOutput` and `code` read, every
/// other entry unpacked into `dest` with the `tar` crate's `unpack_in`.
fn nx_extract(data: &[u8], dest: &Path) -> std::io::Result<(Option<String>, Option<u32>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(data));
    let (mut terminal, mut code) = (None, None);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path_bytes().into_owned();
        if path == archive::TERMINAL_OUTPUT_ENTRY.as_bytes() {
            let mut s = String::new();
            entry.read_to_string(&mut s)?;
            terminal = Some(s);
        } else if path == archive::CODE_ENTRY.as_bytes() {
            let mut b = [0u8; 4];
            entry.read_exact(&mut b)?;
            code = Some(u32::from_be_bytes(b));
        } else {
            entry.unpack_in(dest)?;
        }
    }
    Ok((terminal, code))
}
