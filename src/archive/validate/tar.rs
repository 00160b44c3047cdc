//! The tar header state machine: 512-byte headers and entry data pushed through as they are
//! inflated, every header checked, extension headers (GNU long names, PAX) read as the `tar`
//! crate reads them, and each entry handed to the path tree.

use super::tree::{Node, Tree};
use super::{Bound, Checked, Refusal, Rule, ValidationLimits};
use crate::archive::rules::{self, shown, EntryKind};
use crate::archive::{CODE_ENTRY, TERMINAL_OUTPUT_ENTRY};

const BLOCK: usize = 512;
/// Largest PAX extended header accepted (its records describe one entry).
const MAX_PAX_BYTES: u64 = 64 * 1024;

/// What the current entry's data is checked as.
enum Sink {
    Skip,
    Code(Vec<u8>),
    Terminal(Utf8),
    Ext(Ext, Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    LongName,
    LongLink,
    Pax,
}

impl Ext {
    fn name(self) -> &'static str {
        match self {
            Ext::LongName => "GNU long name",
            Ext::LongLink => "GNU long link name",
            Ext::Pax => "PAX",
        }
    }
}

/// What a step of [`Tar::process`] completed.
enum Event {
    Header,
    DataDone,
    Padded,
}

enum Stage {
    /// Filling the next 512-byte header block.
    Header,
    /// An entry's data (`left` bytes), then `pad` bytes up to the next block.
    Data { left: u64, pad: u64, sink: Sink },
    /// After the end-of-archive block: only zeros.
    End,
}

/// Values of the extension headers read for the next entry.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Pax>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_none()
    }
}

#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

/// The tar header state machine.
pub(super) struct Tar {
    stage: Stage,
    block: [u8; BLOCK],
    filled: usize,
    pending: Pending,
    /// Entries seen (extension headers not counted); numbers the entries in messages.
    entries: u64,
    files: u64,
    dirs: u64,
    symlinks: u64,
    pub(super) expanded: u64,
    bound: Bound,
    max_path: usize,
    max_terminal_output: u64,
    code: Option<u32>,
    terminal_output: Option<u64>,
    tree: Tree,
}

fn tar_refusal(reason: impl Into<String>) -> Refusal {
    Refusal::new(Rule::Tar, reason)
}

impl Tar {
    pub(super) fn new(limits: &ValidationLimits, bound: Bound) -> Tar {
        Tar {
            stage: Stage::Header,
            block: [0u8; BLOCK],
            filled: 0,
            pending: Pending::default(),
            entries: 0,
            files: 0,
            dirs: 0,
            symlinks: 0,
            expanded: 0,
            bound,
            max_path: limits.max_path_bytes,
            max_terminal_output: limits.max_terminal_output,
            code: None,
            terminal_output: None,
            tree: Tree::new(limits.max_entries),
        }
    }

    /// Takes the next inflated bytes. The expansion bound is enforced at the exact byte that
    /// crosses it, so the verdict does not depend on chunk sizes.
    pub(super) fn push(&mut self, data: &[u8]) -> Result<(), Refusal> {
        let room = self.bound.bytes.saturating_sub(self.expanded);
        if data.len() as u64 > room {
            let within = data.get(..room as usize).unwrap_or_default();
            self.expanded += within.len() as u64;
            self.process(within)?;
            return Err(self.bound.refusal());
        }
        self.expanded += data.len() as u64;
        self.process(data)
    }

    fn process(&mut self, mut data: &[u8]) -> Result<(), Refusal> {
        while !data.is_empty() {
            let (used, event) = match &mut self.stage {
                Stage::Header => {
                    let take = (BLOCK - self.filled).min(data.len());
                    for (slot, b) in self.block[self.filled..].iter_mut().zip(data) {
                        *slot = *b;
                    }
                    self.filled += take;
                    let full = self.filled == BLOCK;
                    (take, full.then_some(Event::Header))
                }
                Stage::Data { left, pad, sink } if *left > 0 => {
                    let take = (*left).min(data.len() as u64) as usize;
                    sink.take(data.get(..take).unwrap_or_default())?;
                    *left -= take as u64;
                    (take, (*left == 0).then_some(Event::DataDone))
                }
                Stage::Data { pad, .. } => {
                    let take = (*pad).min(data.len() as u64) as usize;
                    *pad -= take as u64;
                    (take, (*pad == 0).then_some(Event::Padded))
                }
                Stage::End => {
                    if data.iter().any(|b| *b != 0) {
                        return Err(tar_refusal("data follows the tar end-of-archive marker"));
                    }
                    (data.len(), None)
                }
            };
            match event {
                Some(Event::Header) => {
                    self.filled = 0;
                    self.header()?;
                }
                Some(Event::DataDone) => self.data_done()?,
                Some(Event::Padded) => self.stage = Stage::Header,
                None => {}
            }
            data = data.get(used..).unwrap_or_default();
        }
        Ok(())
    }

    /// The current entry's data is complete: act on what it held.
    fn data_done(&mut self) -> Result<(), Refusal> {
        let (sink, padded) = match &mut self.stage {
            Stage::Data { pad, sink, .. } => (std::mem::replace(sink, Sink::Skip), *pad == 0),
            _ => return Ok(()),
        };
        if padded {
            self.stage = Stage::Header;
        }
        match sink {
            Sink::Skip => Ok(()),
            Sink::Code(data) => {
                let code = rules::code_value(&data)
                    .map_err(|why| Refusal::entry(Rule::Layout, CODE_ENTRY.as_bytes(), why))?;
                self.code = Some(code);
                Ok(())
            }
            Sink::Terminal(utf8) => {
                if utf8.pending_len > 0 {
                    return Err(Refusal::entry(
                        Rule::Layout,
                        TERMINAL_OUTPUT_ENTRY.as_bytes(),
                        "not valid UTF-8 (Nx reads it as a string)",
                    ));
                }
                Ok(())
            }
            Sink::Ext(kind, data) => self.extension(kind, data),
        }
    }

    /// Starts the data of an entry of `size` bytes checked by `sink`.
    fn start_data(&mut self, size: u64, sink: Sink) -> Result<(), Refusal> {
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.stage = Stage::Data {
            left: size,
            pad,
            sink,
        };
        if size == 0 {
            self.data_done()?;
        }
        Ok(())
    }

    fn header(&mut self) -> Result<(), Refusal> {
        let b = self.block;
        if b.iter().all(|x| *x == 0) {
            if !self.pending.is_empty() {
                return Err(tar_refusal(
                    "an extension header (long name or PAX) has no entry after it",
                ));
            }
            self.stage = Stage::End;
            return Ok(());
        }
        let number = self.entries + 1;
        check_header_sum(&b).map_err(|why| tar_refusal(format!("entry #{number}: {why}")))?;
        let flag = b[156];
        let magic = &b[257..265];
        let extended = magic == b"ustar\x0000" || magic == b"ustar  \x00";
        let ext = match flag {
            b'L' if extended => Some(Ext::LongName),
            b'K' if extended => Some(Ext::LongLink),
            b'x' if extended => Some(Ext::Pax),
            _ => None,
        };
        let size = header_size(&b).map_err(|why| tar_refusal(format!("entry #{number}: {why}")))?;
        if let Some(ext) = ext {
            return self.start_extension(ext, size, number);
        }
        self.entries += 1;
        let pending = std::mem::take(&mut self.pending);
        let name = entry_name(&b, &pending, magic == b"ustar\x0000")
            .map_err(|why| tar_refusal(format!("entry #{number}: {why}")))?;
        let link = link_name(&b, &pending).map_err(|why| Refusal::entry(Rule::Tar, &name, why))?;
        let size = pending.pax.as_ref().and_then(|p| p.size).unwrap_or(size);
        self.entry(&name, &link, flag, size, &b)
    }

    fn start_extension(&mut self, ext: Ext, size: u64, number: u64) -> Result<(), Refusal> {
        let why = |why: String| tar_refusal(format!("entry #{number}: {why}"));
        if self.pending.pax.is_some() {
            return Err(why(format!(
                "a {} header follows a PAX header (the PAX header must come right before its entry)",
                ext.name()
            )));
        }
        let taken = match ext {
            Ext::LongName => self.pending.long_name.is_some(),
            Ext::LongLink => self.pending.long_link.is_some(),
            Ext::Pax => false,
        };
        if taken {
            return Err(why(format!("two {} headers for one entry", ext.name())));
        }
        let most = match ext {
            Ext::Pax => MAX_PAX_BYTES,
            _ => self.max_path as u64 + 1,
        };
        if size > most {
            return Err(why(format!(
                "a {} header of {size} bytes (at most {most})",
                ext.name()
            )));
        }
        self.start_data(size, Sink::Ext(ext, Vec::with_capacity(size as usize)))
    }

    fn extension(&mut self, kind: Ext, mut data: Vec<u8>) -> Result<(), Refusal> {
        let number = self.entries + 1;
        match kind {
            Ext::LongName | Ext::LongLink => {
                // As the tar crate (and so Nx) reads them: one trailing NUL is dropped.
                if data.last() == Some(&0) {
                    data.pop();
                }
                if kind == Ext::LongName {
                    self.pending.long_name = Some(data);
                } else {
                    self.pending.long_link = Some(data);
                }
            }
            Ext::Pax => {
                let pax = parse_pax(&data)
                    .map_err(|why| tar_refusal(format!("entry #{number}: PAX header: {why}")))?;
                self.pending.pax = Some(pax);
            }
        }
        Ok(())
    }

    /// A real entry: its name, type, mode and place in the tree.
    fn entry(
        &mut self,
        name: &[u8],
        link: &[u8],
        flag: u8,
        size: u64,
        b: &[u8; BLOCK],
    ) -> Result<(), Refusal> {
        let comps = rules::split_path(name, self.max_path)
            .map_err(|why| Refusal::entry(Rule::Path, name, why))?;
        if let [only] = comps.as_slice() {
            if *only == TERMINAL_OUTPUT_ENTRY.as_bytes() || *only == CODE_ENTRY.as_bytes() {
                return self.reserved_entry(name, only, flag, size);
            }
        }
        let kind =
            rules::entry_kind(flag).map_err(|why| Refusal::entry(Rule::EntryType, name, why))?;
        if kind != EntryKind::File && size != 0 {
            return Err(Refusal::entry(
                Rule::Tar,
                name,
                format!("{} with {size} bytes of data", kind.name()),
            ));
        }
        if kind != EntryKind::Dir && name.last() == Some(&b'/') {
            return Err(Refusal::entry(
                Rule::Path,
                name,
                format!("{} whose name ends with `/`", kind.name()),
            ));
        }
        if comps.is_empty() {
            if kind == EntryKind::Dir {
                // The archive's root (`./`): the restore directory itself.
                return Ok(());
            }
            return Err(Refusal::entry(
                Rule::Path,
                name,
                "only a directory can name the archive root",
            ));
        }
        check_mode(b, kind).map_err(|(rule, why)| Refusal::entry(rule, name, why))?;
        let target = if kind == EntryKind::Symlink {
            rules::check_link_target(link, self.max_path)
                .map_err(|why| Refusal::entry(Rule::Symlink, name, why))?;
            Some(link)
        } else {
            None
        };
        self.tree
            .insert(&comps, Node::from(kind), name, target)
            .map_err(|(rule, why)| Refusal::entry(rule, name, why))?;
        match kind {
            EntryKind::File => self.files += 1,
            EntryKind::Dir => self.dirs += 1,
            EntryKind::Symlink => self.symlinks += 1,
        }
        self.start_data(size, Sink::Skip)
    }

    /// `terminalOutput` or `code` at the root.
    fn reserved_entry(
        &mut self,
        name: &[u8],
        which: &[u8],
        flag: u8,
        size: u64,
    ) -> Result<(), Refusal> {
        let layout = |why: String| Refusal::entry(Rule::Layout, name, why);
        if name != which {
            return Err(layout(format!(
                "the root entry {} must be spelled exactly so (Nx matches it byte for byte)",
                shown(which)
            )));
        }
        if !matches!(flag, 0 | b'0') {
            return Err(layout("must be a regular file".into()));
        }
        self.tree
            .insert(&[which], Node::Reserved, name, None)
            .map_err(|(rule, why)| Refusal::entry(rule, name, why))?;
        if which == CODE_ENTRY.as_bytes() {
            if size != 4 {
                return Err(layout(format!("must be 4 bytes, not {size}")));
            }
            return self.start_data(size, Sink::Code(Vec::with_capacity(4)));
        }
        if size > self.max_terminal_output {
            return Err(Refusal::entry(
                Rule::Limit,
                name,
                format!("{size} bytes (at most {})", self.max_terminal_output),
            ));
        }
        self.terminal_output = Some(size);
        self.start_data(size, Sink::Terminal(Utf8::default()))
    }

    pub(super) fn finish(self, fed: u64) -> Result<Checked, Refusal> {
        match &self.stage {
            Stage::End => {}
            Stage::Header if self.filled == 0 => {
                return Err(tar_refusal(
                    "the tar archive has no end-of-archive marker (truncated)",
                ))
            }
            Stage::Header => {
                return Err(tar_refusal(
                    "the tar archive ends inside a header (truncated)",
                ))
            }
            Stage::Data { .. } => {
                return Err(tar_refusal(format!(
                    "the tar archive ends inside the data of entry #{} (truncated)",
                    self.entries.max(1)
                )))
            }
        }
        if self.terminal_output.is_none() {
            return Err(Refusal::new(
                Rule::Layout,
                format!("the archive has no `{TERMINAL_OUTPUT_ENTRY}` entry"),
            ));
        }
        let Some(code) = self.code else {
            return Err(Refusal::new(
                Rule::Layout,
                format!("the archive has no `{CODE_ENTRY}` entry"),
            ));
        };
        self.tree.check_links()?;
        Ok(Checked {
            entries: self.entries,
            files: self.files,
            dirs: self.dirs,
            symlinks: self.symlinks,
            compressed_bytes: fed,
            expanded_bytes: self.expanded,
            code,
            terminal_output_bytes: self.terminal_output.unwrap_or(0),
        })
    }
}

impl Sink {
    fn take(&mut self, data: &[u8]) -> Result<(), Refusal> {
        match self {
            Sink::Skip => Ok(()),
            Sink::Code(v) | Sink::Ext(_, v) => {
                v.extend_from_slice(data);
                Ok(())
            }
            Sink::Terminal(utf8) => utf8.push(data).map_err(|()| {
                Refusal::entry(
                    Rule::Layout,
                    TERMINAL_OUTPUT_ENTRY.as_bytes(),
                    "not valid UTF-8 (Nx reads it as a string)",
                )
            }),
        }
    }
}

/// UTF-8 checked across chunk boundaries: up to 3 bytes of an incomplete character are carried.
#[derive(Default)]
struct Utf8 {
    pending: [u8; 4],
    pending_len: usize,
}

impl Utf8 {
    fn push(&mut self, mut data: &[u8]) -> Result<(), ()> {
        while self.pending_len > 0 {
            let Some((&b, rest)) = data.split_first() else {
                return Ok(());
            };
            data = rest;
            if let Some(slot) = self.pending.get_mut(self.pending_len) {
                *slot = b;
            }
            self.pending_len += 1;
            match std::str::from_utf8(self.pending.get(..self.pending_len).unwrap_or_default()) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() || self.pending_len == 4 => return Err(()),
                Err(_) => {}
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(()),
            Err(e) => {
                let tail = data.get(e.valid_up_to()..).unwrap_or_default();
                for (slot, b) in self.pending.iter_mut().zip(tail) {
                    *slot = *b;
                }
                self.pending_len = tail.len();
                Ok(())
            }
        }
    }
}

fn check_header_sum(b: &[u8; BLOCK]) -> Result<(), String> {
    let stored = octal(&b[148..156]).ok_or("its header checksum field is not a number")?;
    let sum: u64 = b[..148]
        .iter()
        .chain(&b[156..])
        .map(|x| u64::from(*x))
        .sum::<u64>()
        + 8 * u64::from(b' ');
    if sum != stored {
        return Err("header checksum mismatch (corrupt, or not a tar archive)".into());
    }
    Ok(())
}

/// An octal number field: digits between optional spaces, ended by NUL or the field's end.
fn octal(field: &[u8]) -> Option<u64> {
    let end = field.iter().position(|c| *c == 0).unwrap_or(field.len());
    let digits = field.get(..end)?.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, c| match c {
        b'0'..=b'7' => n.checked_mul(8)?.checked_add(u64::from(c - b'0')),
        _ => None,
    })
}

/// The size field: octal, or GNU base-256 (first byte 0x80) for sizes of 8 GiB and more. Bytes
/// that readers disagree on (the rest of a base-256 prefix, a negative number) are refused.
fn header_size(b: &[u8; BLOCK]) -> Result<u64, String> {
    let field = &b[124..136];
    if field[0] & 0x80 != 0 {
        if field[0] != 0x80 || field[1..4].iter().any(|x| *x != 0) {
            return Err("its size field is a base-256 number out of range".into());
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&field[4..12]);
        return Ok(u64::from_be_bytes(n));
    }
    octal(field).ok_or_else(|| "its size field is not a number".into())
}

/// A header's NUL-terminated text field.
fn field(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    b.get(..end).unwrap_or_default()
}

/// The entry's path as the `tar` crate (and so Nx) reads it: GNU long name, else PAX `path`, else
/// the ustar prefix and name, else the name field.
fn entry_name(b: &[u8; BLOCK], pending: &Pending, ustar: bool) -> Result<Vec<u8>, String> {
    let pax = pending.pax.as_ref().and_then(|p| p.path.clone());
    match (&pending.long_name, pax) {
        (Some(_), Some(_)) => {
            Err("both a GNU long name and a PAX path (readers disagree on which applies)".into())
        }
        (Some(long), None) => Ok(long.clone()),
        (None, Some(path)) => Ok(path),
        (None, None) => {
            let name = field(&b[..100]);
            let prefix = if ustar { field(&b[345..500]) } else { &[] };
            if prefix.is_empty() {
                return Ok(name.to_vec());
            }
            let mut full = Vec::with_capacity(prefix.len() + 1 + name.len());
            full.extend_from_slice(prefix);
            full.push(b'/');
            full.extend_from_slice(name);
            Ok(full)
        }
    }
}

/// The entry's link target: GNU long link name, else PAX `linkpath`, else the link name field.
fn link_name(b: &[u8; BLOCK], pending: &Pending) -> Result<Vec<u8>, String> {
    let pax = pending.pax.as_ref().and_then(|p| p.linkpath.clone());
    match (&pending.long_link, pax) {
        (Some(_), Some(_)) => Err(
            "both a GNU long link name and a PAX linkpath (readers disagree on which applies)"
                .into(),
        ),
        (Some(long), None) => Ok(long.clone()),
        (None, Some(path)) => Ok(path),
        (None, None) => Ok(field(&b[157..257]).to_vec()),
    }
}

/// Parses PAX records (`<length> <key>=<value>\n`); keeps `path`, `linkpath` and `size`.
fn parse_pax(mut data: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    while !data.is_empty() {
        let space = data
            .iter()
            .take(20)
            .position(|c| *c == b' ')
            .ok_or("a record does not start with its length")?;
        let digits = data.get(..space).unwrap_or_default();
        let len = std::str::from_utf8(digits)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or("a record length is not a number")?;
        let record = data
            .get(..len)
            .filter(|r| r.len() > space + 1 && r.last() == Some(&b'\n'))
            .ok_or("a record's length does not match its contents")?;
        let body = record.get(space + 1..len - 1).unwrap_or_default();
        let eq = body
            .iter()
            .position(|c| *c == b'=')
            .ok_or("a record has no `=`")?;
        let (key, value) = (
            body.get(..eq).unwrap_or_default(),
            body.get(eq + 1..).unwrap_or_default(),
        );
        let twice = |k: &str| format!("the key `{k}` is given twice");
        match key {
            b"path" | b"linkpath" => {
                if value.is_empty() {
                    return Err(format!("an empty `{}`", String::from_utf8_lossy(key)));
                }
                let slot = if key == b"path" {
                    &mut pax.path
                } else {
                    &mut pax.linkpath
                };
                if slot.is_some() {
                    return Err(twice(if key == b"path" { "path" } else { "linkpath" }));
                }
                *slot = Some(value.to_vec());
            }
            b"size" => {
                if pax.size.is_some() {
                    return Err(twice("size"));
                }
                let n = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("`size` is not a number")?;
                pax.size = Some(n);
            }
            k if k.starts_with(b"GNU.sparse") => {
                return Err("sparse files are not supported".into());
            }
            _ => {}
        }
        data = data.get(len..).unwrap_or_default();
    }
    Ok(pax)
}

/// Mode rules; the error carries its rule. Every entry's mode field must be a number (the
/// restore reads it whatever the entry type) without setuid, setgid or sticky bits; the owner's
/// permissions matter for files and directories only (a symlink's own mode is never used).
fn check_mode(b: &[u8; BLOCK], kind: EntryKind) -> Result<(), (Rule, String)> {
    let mode = octal(&b[100..108])
        .ok_or((Rule::Tar, "its mode field is not a number".to_owned()))?
        & 0o7777;
    if mode & 0o7000 != 0 {
        return Err((
            Rule::Mode,
            format!("setuid, setgid and sticky bits are not allowed (mode {mode:04o})"),
        ));
    }
    if kind == EntryKind::Dir && mode & 0o700 != 0o700 {
        return Err((
            Rule::Mode,
            format!(
                "a directory its owner cannot read, write and search (mode {mode:04o}): \
                 restoring into it fails"
            ),
        ));
    }
    if kind == EntryKind::File && mode & 0o400 == 0 {
        return Err((
            Rule::Mode,
            format!("a file its owner cannot read (mode {mode:04o}): restoring it fails"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields() {
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"  755 \0"), Some(0o755));
        assert_eq!(octal(b"\0\0\0"), None);
        assert_eq!(octal(b"+17"), None);
        assert_eq!(octal(b"8"), None);
        assert_eq!(octal(b"77777777777777777777777"), None);
    }

    #[test]
    fn pax_records() {
        let p = parse_pax(b"16 path=a/b/cde\n9 size=7\n").unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"a/b/cde"[..]));
        assert_eq!(p.size, Some(7));
        assert!(parse_pax(b"15 path=a/b/cde\n").is_err());
        assert!(parse_pax(b"x path=a\n").is_err());
        assert!(parse_pax(b"9 path=a\n9 path=b\n").is_err());
        assert!(parse_pax(b"11 size=-1\n").is_err());
        assert!(parse_pax(b"22 GNU.sparse.major=1\n").is_err());
        assert!(parse_pax(b"13 mtime=1.5\n").is_ok());
    }

    #[test]
    fn utf8_across_chunks() {
        let s = "é€𝄞".as_bytes();
        for cut in 0..s.len() {
            let mut u = Utf8::default();
            u.push(&s[..cut]).unwrap();
            u.push(&s[cut..]).unwrap();
            assert_eq!(u.pending_len, 0, "cut {cut}");
        }
        let mut u = Utf8::default();
        assert!(u.push(b"\xe2\x82").is_ok());
        assert!(u.push(b"x").is_err());
    }
}
