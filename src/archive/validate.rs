//! Is this a structurally valid Nx artifact? A push-based, streaming check of the tar.gz Nx's
//! client restores, run before any byte of it reaches Nx.
//!
//! Bytes are [`Validator::feed`]-ed as they arrive (from a store, from an upload), inflated into a
//! small buffer and walked by a tar header state machine: nothing is written anywhere, nothing is
//! read twice, memory is one 64 KiB buffer plus a map of the archive's paths (about 70 bytes per
//! entry) and the symlink targets. [`Validator::finish`] gives the verdict.
//!
//! # Rules
//!
//! A payload is refused ([`Refusal`]: "not a valid Nx artifact: <reason>", the reason naming the
//! entry and the rule) unless all of these hold. Each is one that Nx's own extraction (nx >= 20.8:
//! flate2 + the `tar` crate's `unpack_in`, then a copy into the workspace) needs to succeed, or one
//! that keeps writes inside the restored outputs:
//!
//! 1. **gzip, whole, alone**: one gzip member (method deflate, no reserved flag bits, header CRC
//!    checked when present), inflated to its end; its CRC-32 and length trailer match; nothing
//!    follows it (Nx reads only the first member, so bytes after it could only hide something).
//! 2. **tar, whole**: every header's checksum matches and its numbers parse; entry data is
//!    complete; the archive ends with an end-of-archive block, and only zero bytes follow it.
//! 3. **Nx's layout**: `terminalOutput` (UTF-8, at most [`ValidationLimits::max_terminal_output`])
//!    and `code` (exactly 4 bytes) are regular files at the root, each once, spelled exactly so
//!    (Nx matches the names byte for byte: `./code` would be extracted as an output and the exit
//!    code missed); nothing lies below them.
//! 4. **paths**: relative, no `..` component, no NUL, no backslash, UTF-8, components of at most
//!    255 bytes, at most [`ValidationLimits::max_path_bytes`] in all; only a directory may name the
//!    root (`./`); a name ending in `/` is a directory.
//! 5. **entry types**: regular files, directories and symlinks only; hard links, character and
//!    block devices, FIFOs, sparse files, PAX global headers and every other type are refused.
//! 6. **modes**: every entry's mode field is a number (symlinks included: `unpack` reads it for
//!    every entry), with no setuid, setgid or sticky bit; directories are readable, writable and
//!    searchable by their owner and files readable by their owner (otherwise the restore fails
//!    for a user who is not root).
//! 7. **one entry per path**: no duplicate (directories included), no entry below a file or a
//!    symlink of the archive, no symlink or file where other entries of the archive lie below
//!    (whatever the order of the entries).
//! 8. **symlinks**: the target is relative (no `/`, no drive letter), not empty, at most
//!    `max_path_bytes`; resolved from the link's directory, following the archive's other
//!    symlinks (chains; a loop, or more than 40 symlinks followed in all, the link itself
//!    included, as the kernel counts them before `ELOOP`, is refused, whatever the order of the
//!    entries), it stays inside the archive root and never reaches or goes through
//!    `terminalOutput` or `code`. `..` may only step out of a directory of the archive (not out
//!    of a path the archive does not hold, which could be a symlink on the machine that restores
//!    it).
//! 9. **extension headers**: GNU long names (`L`) and long link names (`K`), and PAX headers
//!    (`x`, keys `path`, `linkpath`, `size`; others ignored) are read and their values checked
//!    like the header fields they replace. Refused as ambiguous (readers disagree on them): a
//!    malformed PAX record, a PAX key given twice, both a GNU long name and a PAX path (or link)
//!    for one entry, two extension headers of one kind for one entry, an extension header after a
//!    PAX header, an extension header with no entry after it, PAX sparse keys (`GNU.sparse.*`).
//! 10. **bounds** ([`ValidationLimits`]): at most `max_entries` paths (entries and the directories
//!     their paths imply); the inflated tar stream is at most `max_expanded_bytes`, and at most
//!     `max_expansion_ratio` times the compressed length unless it stays under
//!     `ratio_floor_bytes`. A decompression bomb is refused as soon as it crosses the bound, after
//!     inflating at most that much.
//!
//! The verdict and the reason do not depend on how the bytes were cut into chunks.

mod gzip;
mod tar;
mod tree;

use super::rules::{self, shown};
use super::MAX_TERMINAL_OUTPUT;
use gzip::Gunzip;
use std::fmt;
use std::io::{self, Read};
use tar::Tar;

/// How far a payload may go before it is refused.
///
/// The defaults fit the outputs of large monorepos with room to spare and still bound what a
/// hostile payload can cost:
/// - `max_entries` 1,000,000: a single task's outputs of 100k+ files (a bundled app, a copied
///   `node_modules`) fit ten times over; the path map costs about 70 MB at the bound.
/// - `max_expanded_bytes` 32 GiB: Nx builds and restores an artifact whole in memory (compressed),
///   so real artifacts are a few GB compressed and rarely more than ten expanded.
/// - `max_expansion_ratio` 200 above `ratio_floor_bytes` 256 MiB: real outputs (code, source maps,
///   assets, many small files) inflate 2 to 20 times; only long runs of one byte go beyond 200,
///   and an artifact that expands to less than 256 MiB is never refused for its ratio. A gzip
///   bomb (about 1000:1) is refused after inflating 256 MiB, or 200 times its size.
/// - `max_path_bytes` 3840: Linux `PATH_MAX` (4096) less room for the directory Nx restores into.
/// - `max_terminal_output` 512 MiB: what `unpack` accepts too (Nx holds it in memory as a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationLimits {
    /// Most paths in one archive: its entries plus the directories their paths imply.
    pub max_entries: u64,
    /// Most bytes the tar stream may inflate to (headers and padding included).
    pub max_expanded_bytes: u64,
    /// Most times the inflated stream may be larger than the compressed payload...
    pub max_expansion_ratio: u64,
    /// ...once it is larger than this (below it, the ratio is not checked).
    pub ratio_floor_bytes: u64,
    /// Longest entry path or symlink target, in bytes.
    pub max_path_bytes: usize,
    /// Largest `terminalOutput` entry, in bytes.
    pub max_terminal_output: u64,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        ValidationLimits {
            max_entries: 1_000_000,
            max_expanded_bytes: 32 << 30,
            max_expansion_ratio: 200,
            ratio_floor_bytes: 256 << 20,
            max_path_bytes: rules::MAX_PATH_BYTES,
            max_terminal_output: MAX_TERMINAL_OUTPUT,
        }
    }
}

/// Which rule a payload broke (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Not gzip, a bad gzip header, corrupt or truncated compressed data, a checksum mismatch.
    Gzip,
    /// Bytes after the end of the gzip member.
    TrailingData,
    /// A tar header or its framing: checksum, numbers, truncation, end marker, extension headers.
    Tar,
    /// `terminalOutput` / `code` missing, misspelled, of the wrong type or size, not UTF-8.
    Layout,
    /// An entry path: absolute, `..`, NUL, backslash, not UTF-8, too long.
    Path,
    /// Hard link, device, FIFO, sparse or unknown entry type.
    EntryType,
    /// setuid / setgid / sticky, or owner permissions a restore cannot work with.
    Mode,
    /// The same path twice.
    Duplicate,
    /// An entry below a file or symlink of the archive, or a file or symlink with entries below.
    Nesting,
    /// A symlink target: absolute, empty, escaping, looping, reaching `terminalOutput`/`code`.
    Symlink,
    /// Entry count, expanded size or expansion ratio beyond [`ValidationLimits`].
    Limit,
}

/// Why a payload is not a valid Nx artifact. Displays as "not a valid Nx artifact: <reason>"; the
/// reason names the entry (control characters escaped) and the rule, never the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    rule: Rule,
    reason: String,
}

impl Refusal {
    fn new(rule: Rule, reason: impl Into<String>) -> Refusal {
        Refusal {
            rule,
            reason: reason.into(),
        }
    }

    fn entry(rule: Rule, name: &[u8], why: impl fmt::Display) -> Refusal {
        Refusal::new(rule, format!("entry {}: {why}", shown(name)))
    }

    /// The rule that was broken.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// The reason, without the "not a valid Nx artifact" prefix.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a valid Nx artifact: {}", self.reason)
    }
}

impl std::error::Error for Refusal {}

/// What a valid artifact holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Entries in the archive (files, directories, symlinks, `terminalOutput`, `code`).
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes fed (the compressed payload).
    pub compressed_bytes: u64,
    /// Bytes of the inflated tar stream.
    pub expanded_bytes: u64,
    /// The exit code in `code`.
    pub code: u32,
    /// Length of `terminalOutput` in bytes.
    pub terminal_output_bytes: u64,
}

/// A streaming check of one payload: [`feed`](Self::feed) it chunk by chunk, then
/// [`finish`](Self::finish). After a refusal every call returns the same refusal.
pub struct Validator {
    gz: Gunzip,
    tar: Tar,
    fed: u64,
    known_len: bool,
    limits: ValidationLimits,
    refused: Option<Refusal>,
}

impl Validator {
    /// A check with these limits; `compressed_len` is the payload's length when it is known in
    /// advance (a stored object, an upload's Content-Length), which lets the expansion ratio be
    /// enforced while inflating. Without it the ratio is checked at the end.
    pub fn new(limits: ValidationLimits, compressed_len: Option<u64>) -> Validator {
        let bound = match compressed_len {
            Some(len) => expansion_bound(&limits, len),
            None => Bound {
                bytes: limits.max_expanded_bytes,
                by_ratio: None,
            },
        };
        Validator {
            gz: Gunzip::new(),
            tar: Tar::new(&limits, bound),
            fed: 0,
            known_len: compressed_len.is_some(),
            limits,
            refused: None,
        }
    }

    /// Checks the next bytes of the payload.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), Refusal> {
        if let Some(r) = &self.refused {
            return Err(r.clone());
        }
        self.fed += data.len() as u64;
        let result = self.gz.feed(data, &mut self.tar);
        if let Err(r) = &result {
            self.refused = Some(r.clone());
        }
        result
    }

    /// The verdict, once every byte was fed.
    pub fn finish(mut self) -> Result<Checked, Refusal> {
        if let Some(r) = self.refused {
            return Err(r);
        }
        self.gz.finish(self.fed, &mut self.tar)?;
        if !self.known_len {
            let bound = expansion_bound(&self.limits, self.fed);
            if self.tar.expanded > bound.bytes {
                return Err(bound.refusal());
            }
        }
        self.tar.finish(self.fed)
    }
}

/// Checks a payload held in memory.
pub fn validate_slice(data: &[u8], limits: &ValidationLimits) -> Result<Checked, Refusal> {
    let mut v = Validator::new(limits.clone(), Some(data.len() as u64));
    v.feed(data)?;
    v.finish()
}

/// Checks a payload read from `r` to its end (`compressed_len`: its length, when known). The
/// outer error is a failure to read; the inner result is the verdict.
pub fn validate_reader<R: Read>(
    mut r: R,
    limits: &ValidationLimits,
    compressed_len: Option<u64>,
) -> io::Result<Result<Checked, Refusal>> {
    let mut v = Validator::new(limits.clone(), compressed_len);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Err(refusal) = v.feed(buf.get(..n).unwrap_or_default()) {
            return Ok(Err(refusal));
        }
    }
    Ok(v.finish())
}

const READ_CHUNK: usize = 256 * 1024;

/// The most the tar stream may inflate to, and whether the ratio set it.
#[derive(Debug, Clone, Copy)]
struct Bound {
    bytes: u64,
    /// `(ratio, compressed length)` when the ratio is the tighter bound.
    by_ratio: Option<(u64, u64)>,
}

impl Bound {
    fn refusal(&self) -> Refusal {
        match self.by_ratio {
            Some((ratio, len)) => Refusal::new(
                Rule::Limit,
                format!(
                    "it inflates to more than {ratio} times its compressed size of {len} bytes \
                     (a decompression bomb?)"
                ),
            ),
            None => Refusal::new(
                Rule::Limit,
                format!("it inflates to more than {} bytes", self.bytes),
            ),
        }
    }
}

fn expansion_bound(limits: &ValidationLimits, compressed: u64) -> Bound {
    let by_ratio = compressed
        .saturating_mul(limits.max_expansion_ratio)
        .max(limits.ratio_floor_bytes);
    if by_ratio < limits.max_expanded_bytes {
        Bound {
            bytes: by_ratio,
            by_ratio: Some((limits.max_expansion_ratio, compressed)),
        }
    } else {
        Bound {
            bytes: limits.max_expanded_bytes,
            by_ratio: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_bound_has_a_floor() {
        let l = ValidationLimits::default();
        assert_eq!(expansion_bound(&l, 10).bytes, l.ratio_floor_bytes);
        assert_eq!(expansion_bound(&l, 10 << 20).bytes, 2000 << 20);
        assert_eq!(expansion_bound(&l, 1 << 40).bytes, l.max_expanded_bytes);
    }
}
