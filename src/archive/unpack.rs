//! Safe extraction (see the module documentation in `mod.rs` for the exact guarantee).

use super::rules::{self, EntryKind};
use super::{Error, Format, CODE_ENTRY, MAX_TERMINAL_OUTPUT, TERMINAL_OUTPUT_ENTRY};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// What `unpack` restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Every restored path (files, directories, symlinks), relative to `dest`, `/`-separated,
    /// sorted.
    pub files: Vec<String>,
    /// The terminal output (`None` when the archive has no `terminalOutput` entry).
    pub terminal_output: Option<String>,
    /// The exit code.
    pub code: u32,
    /// The archive's format, from its magic bytes.
    pub format: Format,
}

#[derive(Debug)]
enum Staged {
    Dir { mode: u32 },
    File { mode: u32 },
    Symlink { target: PathBuf },
}

impl Staged {
    fn name(&self) -> &'static str {
        match self {
            Staged::Dir { .. } => "a directory",
            Staged::File { .. } => "a file",
            Staged::Symlink { .. } => "a symlink",
        }
    }
}

#[cfg(unix_native)]
fn path_from_bytes(b: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(b)))
}

#[cfg(not(unix_native))]
fn path_from_bytes(b: &[u8]) -> Option<PathBuf> {
    std::str::from_utf8(b).ok().map(PathBuf::from)
}

/// Splits a raw entry path into its normal components (the shared path rules, `rules::split_path`).
fn entry_path(raw: &[u8], shown: &str) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    for name in
        rules::split_path(raw, rules::MAX_PATH_BYTES).map_err(|why| Error::entry(shown, why))?
    {
        let p = path_from_bytes(name)
            .ok_or_else(|| Error::entry(shown, "the path is not valid UTF-8"))?;
        out.push(p);
    }
    Ok(out)
}

fn shown(p: &Path) -> String {
    p.to_string_lossy().replace('\\', "/")
}

/// Removes the staging directory on drop unless disarmed.
struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            make_writable(&self.path);
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Gives the owner rwx on every directory below `p` so it can be removed (modes applied from the
/// archive may have taken them away).
fn make_writable(p: &Path) {
    let mut stack = vec![p.to_path_buf()];
    let mut bound = 0usize;
    while let Some(d) = stack.pop() {
        bound += 1;
        if bound > 10_000_000 {
            return;
        }
        let _ = set_mode(&d, 0o700);
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
    }
}

#[cfg(unix_native)]
fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix_native))]
fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    let mut perm = fs::metadata(p)?.permissions();
    perm.set_readonly(mode & 0o200 == 0);
    fs::set_permissions(p, perm)
}

/// A symbolic link (extraction only reaches here where links are allowed): Unix's one call, also
/// under `portable-fallbacks` (there is no system-neutral way to make a link). Windows needs the
/// kind of the target up front and a privilege (or Developer Mode); a file link is made.
#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn make_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

fn new_staging(parent: &Path, name: &std::ffi::OsStr) -> Result<Staging, Error> {
    for _ in 0..16 {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd)
            .map_err(|e| Error::new(format!("creating a staging directory: {e}")))?;
        let path = parent.join(format!(
            ".{}.unpack-{}",
            name.to_string_lossy(),
            hex::encode(rnd)
        ));
        match fs::create_dir(&path) {
            Ok(()) => return Ok(Staging { path, armed: true }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::new(format!(
                    "creating the staging directory {}: {e}",
                    path.display()
                )))
            }
        }
    }
    Err(Error::new(format!(
        "creating a staging directory in {}: too many name collisions",
        parent.display()
    )))
}

/// Resolves `dest` to (absolute parent, name), creating the parent if needed.
fn prepare_dest(dest: &Path) -> Result<(PathBuf, std::ffi::OsString), Error> {
    let derr = |e: io::Error| Error::new(format!("destination {}: {e}", dest.display()));
    let name = dest.file_name().ok_or_else(|| {
        Error::new(format!(
            "destination `{}`: must name a directory (not `/`, `.` or `..`)",
            dest.display()
        ))
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(derr)?;
    let parent = fs::canonicalize(&parent).map_err(derr)?;
    let abs = parent.join(name);
    match fs::symlink_metadata(&abs) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((parent, name.to_owned())),
        Err(e) => Err(derr(e)),
        Ok(m) if m.is_dir() => Ok((parent, name.to_owned())),
        Ok(m) if m.file_type().is_symlink() => {
            // The caller's own destination may be a symlink to a directory: use its target.
            let real = fs::canonicalize(&abs).map_err(derr)?;
            if !real.is_dir() {
                return Err(Error::new(format!(
                    "destination {}: not a directory",
                    dest.display()
                )));
            }
            match (real.parent(), real.file_name()) {
                (Some(p), Some(n)) => Ok((p.to_path_buf(), n.to_owned())),
                _ => Err(Error::new(format!(
                    "destination {}: resolves to `/`",
                    dest.display()
                ))),
            }
        }
        Ok(_) => Err(Error::new(format!(
            "destination {}: exists and is not a directory",
            dest.display()
        ))),
    }
}

/// What exists at `dest/<path>` before publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Absent,
    Dir,
    File,
    Symlink,
}

struct DestView {
    root: PathBuf,
    exists: bool,
    cache: HashMap<PathBuf, Existing>,
}

impl DestView {
    fn get(&mut self, rel: &Path) -> Result<Existing, Error> {
        if !self.exists {
            return Ok(Existing::Absent);
        }
        if let Some(e) = self.cache.get(rel) {
            return Ok(*e);
        }
        let abs = self.root.join(rel);
        let e = match fs::symlink_metadata(&abs) {
            Ok(m) if m.file_type().is_symlink() => Existing::Symlink,
            Ok(m) if m.is_dir() => Existing::Dir,
            Ok(_) => Existing::File,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(20 /* ENOTDIR */) =>
            {
                Existing::Absent
            }
            Err(e) => return Err(Error::new(format!("destination {}: {e}", abs.display()))),
        };
        self.cache.insert(rel.to_path_buf(), e);
        Ok(e)
    }

    fn read_link(&self, rel: &Path) -> Result<PathBuf, Error> {
        let abs = self.root.join(rel);
        fs::read_link(&abs).map_err(|e| Error::new(format!("destination {}: {e}", abs.display())))
    }
}

/// Resolves symlink targets against the archive's entries and what already exists in `dest`.
struct Resolver<'a> {
    entries: &'a BTreeMap<PathBuf, Staged>,
    implicit: &'a HashSet<PathBuf>,
    dest: &'a mut DestView,
}

impl Resolver<'_> {
    /// The symlink target at `p`, if `p` will be a symlink once published.
    fn link_at(&mut self, p: &Path) -> Result<Option<PathBuf>, Error> {
        match self.entries.get(p) {
            Some(Staged::Symlink { target }) => return Ok(Some(target.clone())),
            Some(_) => return Ok(None),
            None => {}
        }
        if self.implicit.contains(p) {
            return Ok(None);
        }
        if self.dest.get(p)? == Existing::Symlink {
            return Ok(Some(self.dest.read_link(p)?));
        }
        Ok(None)
    }

    /// Resolves `target` from directory `cur`; returns the resolved path and counts the archive
    /// symlinks it went through in `deps`.
    fn resolve(
        &mut self,
        mut cur: PathBuf,
        target: &Path,
        hops: &mut usize,
        deps: &mut usize,
    ) -> Result<Result<PathBuf, String>, Error> {
        let raw = target.to_string_lossy();
        if raw.starts_with('/') || raw.starts_with('\\') || rules::has_drive_prefix(raw.as_bytes())
        {
            return Ok(Err(format!("its target `{raw}` is absolute")));
        }
        for c in raw.split(['/', '\\']) {
            match c {
                "" | "." => {}
                ".." => {
                    if !cur.pop() {
                        return Ok(Err(format!(
                            "its target `{raw}` resolves outside the destination"
                        )));
                    }
                }
                name => {
                    cur.push(name);
                    if let Some(next) = self.link_at(&cur)? {
                        *hops += 1;
                        // The link being resolved counts too, as the kernel counts it.
                        if *hops + 1 > rules::MAX_SYMLINK_LEVELS as usize {
                            return Ok(Err(format!(
                                "its target `{raw}`: too many levels of symlinks"
                            )));
                        }
                        if matches!(self.entries.get(&cur), Some(Staged::Symlink { .. })) {
                            *deps += 1;
                        }
                        let via = shown(&cur);
                        cur.pop();
                        match self.resolve(cur, &next, hops, deps)? {
                            Ok(p) => cur = p,
                            Err(why) => {
                                return Ok(Err(format!(
                                    "its target `{raw}` goes through `{via}`, and {why}"
                                )))
                            }
                        }
                    }
                }
            }
        }
        Ok(Ok(cur))
    }
}

/// What an archive holds once read: its output entries (files and directories written to the
/// staging directory, symlinks waiting for the checks) and the task's result.
struct Contents {
    entries: BTreeMap<PathBuf, Staged>,
    terminal_output: Option<String>,
    code: u32,
}

/// Extracts a decompressed tar stream in four stages: read and stage, check against the
/// destination, order (and make) the links, publish. Nothing reaches `dest` before every check
/// has passed; on an error the staging directory is removed.
fn extract<R: Read>(decoded: R, format: Format, dest: &Path) -> Result<Unpacked, Error> {
    let (parent, name) = prepare_dest(dest)?;
    let dest_abs = parent.join(&name);
    let staging = new_staging(&parent, &name)?;

    let contents = read_and_stage(decoded, &staging.path)?;

    let implicit = implicit_dirs(&contents.entries);
    let mut view = DestView {
        root: dest_abs.clone(),
        exists: fs::symlink_metadata(&dest_abs).is_ok(),
        cache: HashMap::new(),
    };
    check_against_dest(&contents.entries, &implicit, &mut view)?;

    let links = order_links(&contents.entries, &implicit, &mut view)?;
    make_links(&staging.path, &links)?;

    publish(staging, &dest_abs, &contents.entries, &mut view)?;

    Ok(Unpacked {
        files: contents.entries.keys().map(|p| shown(p)).collect(),
        terminal_output: contents.terminal_output,
        code: contents.code,
        format,
    })
}

/// Reads every entry of the tar stream: the task's terminal output and exit code into memory,
/// files and directories into the staging directory `sroot`, symlinks as entries only (made once
/// checked). Then reads the compressed stream to its end, which verifies its checksum and
/// catches truncation.
fn read_and_stage<R: Read>(decoded: R, sroot: &Path) -> Result<Contents, Error> {
    let mut archive = tar::Archive::new(decoded);
    let mut entries: BTreeMap<PathBuf, Staged> = BTreeMap::new();
    let mut result = TaskResult::default();
    let mut buf = vec![0u8; 256 * 1024];

    let iter = archive
        .entries()
        .map_err(|e| Error::new(format!("reading the archive: {e}")))?;
    for (index, entry) in iter.enumerate() {
        let mut entry = entry
            .map_err(|e| Error::new(format!("reading the archive (entry #{}): {e}", index + 1)))?;
        let raw = entry.path_bytes().into_owned();
        let raw_shown = rules::escaped(&raw);
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let rel = entry_path(&raw, &raw_shown)?;
        if rel.as_os_str() == TERMINAL_OUTPUT_ENTRY || rel.as_os_str() == CODE_ENTRY {
            result.read(&mut entry, &rel, kind, &raw_shown)?;
            continue;
        }
        let staged = staged_kind(&entry, kind, &raw_shown)?;
        if rel.as_os_str().is_empty() {
            // The archive's root (`./`): the destination itself.
            if matches!(staged, Staged::Dir { .. }) {
                continue;
            }
            return Err(Error::entry(
                &raw_shown,
                "only a directory can name the root",
            ));
        }
        if let Some(prev) = entries.get(&rel) {
            let both_dirs =
                matches!(prev, Staged::Dir { .. }) && matches!(staged, Staged::Dir { .. });
            if !both_dirs {
                return Err(Error::entry(
                    &raw_shown,
                    format!("duplicate entry (already {})", prev.name()),
                ));
            }
        }
        stage(
            &mut entry,
            &staged,
            &sroot.join(&rel),
            &shown(&rel),
            &mut buf,
        )?;
        entries.insert(rel, staged);
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| Error::new(format!("reading the archive after its last entry: {e}")))?;

    let code = result.code.ok_or_else(|| {
        Error::new(format!(
            "the archive has no `{CODE_ENTRY}` entry (truncated, or not a task-output archive)"
        ))
    })?;
    Ok(Contents {
        entries,
        terminal_output: result.terminal_output,
        code,
    })
}

/// The two entries that hold the task's result rather than an output, each at most once.
#[derive(Default)]
struct TaskResult {
    terminal_output: Option<String>,
    code: Option<u32>,
}

impl TaskResult {
    /// Reads the `terminalOutput` or `code` entry at `rel`: a regular file within its size
    /// limit, read whole.
    fn read<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        kind: tar::EntryType,
        raw_shown: &str,
    ) -> Result<(), Error> {
        if !kind.is_file() {
            return Err(Error::entry(raw_shown, "must be a regular file"));
        }
        let is_code = rel.as_os_str() == CODE_ENTRY;
        let size = entry.size();
        let limit = if is_code { 4 } else { MAX_TERMINAL_OUTPUT };
        if size > limit {
            return Err(Error::entry(
                raw_shown,
                format!("{size} bytes is too large (at most {limit})"),
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| Error::entry(raw_shown, format!("reading it: {e}")))?;
        if data.len() as u64 != size {
            return Err(Error::entry(
                raw_shown,
                format!("truncated: {} of {size} bytes", data.len()),
            ));
        }
        if is_code {
            if self.code.is_some() {
                return Err(Error::entry(raw_shown, "duplicate entry"));
            }
            self.code = Some(rules::code_value(&data).map_err(|why| Error::entry(raw_shown, why))?);
        } else {
            if self.terminal_output.is_some() {
                return Err(Error::entry(raw_shown, "duplicate entry"));
            }
            self.terminal_output = Some(
                String::from_utf8(data)
                    .map_err(|e| Error::entry(raw_shown, format!("not valid UTF-8: {e}")))?,
            );
        }
        Ok(())
    }
}

/// What an output entry's header says it is: its kind (by the shared rules), its mode, and for
/// a symlink its checked target.
fn staged_kind<R: Read>(
    entry: &tar::Entry<'_, R>,
    kind: tar::EntryType,
    raw_shown: &str,
) -> Result<Staged, Error> {
    let mode = entry
        .header()
        .mode()
        .map_err(|e| Error::entry(raw_shown, format!("invalid mode: {e}")))?
        & 0o777;
    Ok(
        match rules::entry_kind(kind.as_byte()).map_err(|why| Error::entry(raw_shown, why))? {
            EntryKind::File => Staged::File { mode },
            EntryKind::Dir => Staged::Dir { mode },
            EntryKind::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::entry(raw_shown, "symlink without a target"))?
                    .into_owned();
                rules::check_link_target(&link, rules::MAX_PATH_BYTES)
                    .map_err(|why| Error::entry(raw_shown, why))?;
                let target = path_from_bytes(&link)
                    .ok_or_else(|| Error::entry(raw_shown, "symlink target is not UTF-8"))?;
                Staged::Symlink { target }
            }
        },
    )
}

/// Writes a directory or file entry at `target` in the staging directory (a symlink waits for
/// the checks, [`make_links`]).
fn stage<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    staged: &Staged,
    target: &Path,
    rel_shown: &str,
    buf: &mut [u8],
) -> Result<(), Error> {
    let werr = |e: io::Error| Error::entry(rel_shown, format!("writing it: {e}"));
    match staged {
        Staged::Dir { .. } => fs::create_dir_all(target).map_err(werr),
        Staged::File { mode } => {
            if let Some(p) = target.parent() {
                fs::create_dir_all(p).map_err(werr)?;
            }
            let size = entry.size();
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(target)
                .map_err(werr)?;
            let mut written: u64 = 0;
            loop {
                let n = match entry.read(buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::entry(rel_shown, format!("reading it: {e}"))),
                };
                f.write_all(&buf[..n]).map_err(werr)?;
                written += n as u64;
            }
            if written != size {
                return Err(Error::entry(
                    rel_shown,
                    format!("truncated: {written} of {size} bytes"),
                ));
            }
            set_file_mode(&f, *mode).map_err(werr)
        }
        Staged::Symlink { .. } => Ok(()),
    }
}

/// Every proper ancestor of an entry (a directory the archive implies without listing it).
fn implicit_dirs(entries: &BTreeMap<PathBuf, Staged>) -> HashSet<PathBuf> {
    let mut implicit: HashSet<PathBuf> = HashSet::new();
    for rel in entries.keys() {
        let mut a = rel.parent();
        while let Some(p) = a {
            if p.as_os_str().is_empty() || !implicit.insert(p.to_path_buf()) {
                break;
            }
            a = p.parent();
        }
    }
    implicit
}

/// No entry goes through a symlink of the archive, nor through (or replaces a directory with)
/// something already in the destination; a directory the archive implies is free or a
/// directory there.
fn check_against_dest(
    entries: &BTreeMap<PathBuf, Staged>,
    implicit: &HashSet<PathBuf>,
    view: &mut DestView,
) -> Result<(), Error> {
    for (rel, staged) in entries {
        let rs = shown(rel);
        check_parents_in_archive(entries, rel, &rs)?;
        check_parents_in_dest(view, rel, &rs)?;
        check_replacement(view, rel, staged, &rs)?;
    }
    for p in implicit {
        if entries.contains_key(p) {
            continue;
        }
        match view.get(p)? {
            Existing::Absent | Existing::Dir => {}
            _ => {
                return Err(Error::new(format!(
                    "archive directory `{}`: something other than a directory exists there in the destination",
                    shown(p)
                )))
            }
        }
    }
    Ok(())
}

/// No parent of `rel` is a symlink of the archive.
fn check_parents_in_archive(
    entries: &BTreeMap<PathBuf, Staged>,
    rel: &Path,
    rs: &str,
) -> Result<(), Error> {
    let mut a = rel.parent();
    while let Some(p) = a {
        if p.as_os_str().is_empty() {
            break;
        }
        if let Some(Staged::Symlink { .. }) = entries.get(p) {
            return Err(Error::entry(
                rs,
                format!("its parent `{}` is a symlink in the archive", shown(p)),
            ));
        }
        a = p.parent();
    }
    Ok(())
}

/// Each parent of `rel` that exists in the destination, from the top down, is a directory.
fn check_parents_in_dest(view: &mut DestView, rel: &Path, rs: &str) -> Result<(), Error> {
    let ancestors: Vec<&Path> = rel
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    for p in ancestors.into_iter().rev() {
        match view.get(p)? {
            Existing::Absent => break,
            Existing::Dir => {}
            Existing::Symlink => {
                return Err(Error::entry(
                    rs,
                    format!(
                        "its parent `{}` is an existing symlink in the destination",
                        shown(p)
                    ),
                ))
            }
            Existing::File => {
                return Err(Error::entry(
                    rs,
                    format!(
                        "its parent `{}` is an existing file in the destination",
                        shown(p)
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// What exists at `rel` in the destination may be replaced by `staged`: a directory only merges
/// into a directory, and nothing else replaces one.
fn check_replacement(
    view: &mut DestView,
    rel: &Path,
    staged: &Staged,
    rs: &str,
) -> Result<(), Error> {
    match (staged, view.get(rel)?) {
        (_, Existing::Absent) | (Staged::Dir { .. }, Existing::Dir) => Ok(()),
        (Staged::Dir { .. }, other) => Err(Error::entry(
            rs,
            format!(
                "a directory cannot replace the existing {} in the destination",
                if other == Existing::Symlink {
                    "symlink"
                } else {
                    "file"
                }
            ),
        )),
        (_, Existing::Dir) => Err(Error::entry(
            rs,
            format!(
                "{} cannot replace the existing directory in the destination",
                staged.name()
            ),
        )),
        _ => Ok(()),
    }
}

/// A symlink to make: how many archive symlinks its target goes through, its path, its target.
type Link = (usize, PathBuf, PathBuf);

/// Every symlink's target stays inside the destination; returns the links ordered so that each
/// comes after the archive links its target goes through.
fn order_links(
    entries: &BTreeMap<PathBuf, Staged>,
    implicit: &HashSet<PathBuf>,
    view: &mut DestView,
) -> Result<Vec<Link>, Error> {
    let mut links: Vec<Link> = Vec::new();
    let mut resolver = Resolver {
        entries,
        implicit,
        dest: view,
    };
    for (rel, staged) in entries {
        if let Staged::Symlink { target } = staged {
            let mut hops = 0;
            let mut deps = 0;
            let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            if let Err(why) = resolver.resolve(parent, target, &mut hops, &mut deps)? {
                return Err(Error::entry(&shown(rel), why));
            }
            links.push((deps, rel.clone(), target.clone()));
        }
    }
    links.sort();
    Ok(links)
}

/// Makes the checked symlinks in the staging directory `sroot`, in their order.
fn make_links(sroot: &Path, links: &[Link]) -> Result<(), Error> {
    for (_, rel, target) in links {
        let at = sroot.join(rel);
        let werr = |e: io::Error| Error::entry(&shown(rel), format!("creating the symlink: {e}"));
        if let Some(p) = at.parent() {
            fs::create_dir_all(p).map_err(werr)?;
        }
        make_symlink(target, &at).map_err(werr)?;
    }
    Ok(())
}

/// Moves the staged tree into the destination: in one rename when the destination is absent or
/// empty, otherwise merged entry by entry. Directory modes (which may forbid writing) are
/// applied last: before the rename, or after the merge to the directories it created.
fn publish(
    mut staging: Staging,
    dest_abs: &Path,
    entries: &BTreeMap<PathBuf, Staged>,
    view: &mut DestView,
) -> Result<(), Error> {
    // Deepest first.
    let dir_modes: Vec<(&PathBuf, u32)> = entries
        .iter()
        .rev()
        .filter_map(|(p, s)| match s {
            Staged::Dir { mode } => Some((p, *mode)),
            _ => None,
        })
        .collect();
    let empty = match fs::symlink_metadata(dest_abs) {
        Err(_) => true,
        Ok(_) => fs::read_dir(dest_abs)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false),
    };
    if empty && publish_whole(&staging.path, dest_abs, &dir_modes)? {
        staging.armed = false;
        return Ok(());
    }
    publish_merged(&staging.path, dest_abs, &dir_modes, view)
    // `staging` (now only emptied directories) is removed on drop.
}

/// Applies the directory modes and renames the staging directory to `dest_abs`. False when the
/// destination appeared or filled meanwhile (the staging directory is writable again, to merge).
fn publish_whole(
    sroot: &Path,
    dest_abs: &Path,
    dir_modes: &[(&PathBuf, u32)],
) -> Result<bool, Error> {
    for (p, mode) in dir_modes {
        set_mode(&sroot.join(p), *mode)
            .map_err(|e| Error::entry(&shown(p), format!("setting its mode: {e}")))?;
    }
    match fs::rename(sroot, dest_abs) {
        Ok(()) => Ok(true),
        Err(_) => {
            make_writable(sroot);
            Ok(false)
        }
    }
}

/// Merges the staging directory into `dest_abs`, then applies the modes of the directories the
/// merge created (those that were absent before).
fn publish_merged(
    sroot: &Path,
    dest_abs: &Path,
    dir_modes: &[(&PathBuf, u32)],
    view: &mut DestView,
) -> Result<(), Error> {
    fs::create_dir_all(dest_abs)
        .map_err(|e| Error::new(format!("destination {}: {e}", dest_abs.display())))?;
    let mut created_dirs: Vec<(&PathBuf, u32)> = Vec::new();
    for (p, mode) in dir_modes {
        if view.get(p)? == Existing::Absent {
            created_dirs.push((p, *mode));
        }
    }
    merge_dir(sroot, dest_abs)?;
    for (p, mode) in &created_dirs {
        let abs = dest_abs.join(p);
        if fs::symlink_metadata(&abs)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            set_mode(&abs, *mode)
                .map_err(|e| Error::entry(&shown(p), format!("setting its mode: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(unix_native)]
fn set_file_mode(f: &fs::File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix_native))]
fn set_file_mode(f: &fs::File, mode: u32) -> io::Result<()> {
    let mut perm = f.metadata()?.permissions();
    perm.set_readonly(mode & 0o200 == 0);
    f.set_permissions(perm)
}

/// Moves the contents of `staged` into `target` (an existing directory), entry by entry.
fn merge_dir(staged: &Path, target: &Path) -> Result<(), Error> {
    let merr = |p: &Path, e: io::Error| Error::new(format!("publishing {}: {e}", p.display()));
    set_mode(staged, 0o700).map_err(|e| merr(staged, e))?;
    let rd = fs::read_dir(staged).map_err(|e| merr(staged, e))?;
    for e in rd {
        let e = e.map_err(|e| merr(staged, e))?;
        let s = e.path();
        let t = target.join(e.file_name());
        let s_dir = e.file_type().map_err(|e| merr(&s, e))?.is_dir();
        match fs::symlink_metadata(&t) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::rename(&s, &t).map_err(|e| merr(&t, e))?
            }
            Err(err) => return Err(merr(&t, err)),
            Ok(m) if m.is_dir() && s_dir => merge_dir(&s, &t)?,
            Ok(m) if !m.is_dir() && !s_dir => fs::rename(&s, &t).map_err(|e| merr(&t, e))?,
            Ok(_) => {
                return Err(Error::new(format!(
                    "publishing {}: it changed in the destination while unpacking",
                    t.display()
                )))
            }
        }
    }
    Ok(())
}

/// Reads up to 4 bytes (fewer only at end of input).
fn read_head<R: Read>(r: &mut R) -> Result<Vec<u8>, Error> {
    let mut head = vec![0u8; 4];
    let mut n = 0;
    while n < 4 {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::new(format!("reading the archive: {e}"))),
        }
    }
    head.truncate(n);
    Ok(head)
}

fn not_an_archive(head: &[u8]) -> Error {
    Error::new(format!(
        "not a task-output archive: it starts with {} (expected gzip 1f 8b or zstd 28 b5 2f fd)",
        if head.is_empty() {
            "nothing (empty input)".to_owned()
        } else {
            head.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    ))
}

/// Unpacks an archive held in memory into `dest`.
pub fn unpack_bytes(data: &[u8], dest: &Path) -> Result<Unpacked, Error> {
    let head = &data[..data.len().min(4)];
    match Format::detect(head) {
        Some(Format::Zstd) => {
            let d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| Error::new(format!("reading the archive: {e}")))?;
            extract(d, Format::Zstd, dest)
        }
        Some(Format::Nx) => extract(flate2::bufread::GzDecoder::new(data), Format::Nx, dest),
        None => Err(not_an_archive(head)),
    }
}

/// Unpacks an archive read from `r` into `dest`.
pub fn unpack_reader<R: Read>(mut r: R, dest: &Path) -> Result<Unpacked, Error> {
    let head = read_head(&mut r)?;
    let format = Format::detect(&head).ok_or_else(|| not_an_archive(&head))?;
    let chained = io::BufReader::with_capacity(1 << 20, io::Cursor::new(head).chain(r));
    match format {
        Format::Zstd => {
            let d = zstd::stream::read::Decoder::with_buffer(chained)
                .map_err(|e| Error::new(format!("reading the archive: {e}")))?;
            extract(d, format, dest)
        }
        Format::Nx => extract(flate2::bufread::GzDecoder::new(chained), format, dest),
    }
}

/// Unpacks the archive file at `archive` into `dest`.
pub fn unpack_file(archive: &Path, dest: &Path) -> Result<Unpacked, Error> {
    let aerr = |e: io::Error| Error::new(format!("archive {}: {e}", archive.display()));
    let mut f = fs::File::open(archive).map_err(aerr)?;
    let head = read_head(&mut f)?;
    f.rewind().map_err(aerr)?;
    if Format::detect(&head).is_none() {
        return Err(Error::new(format!(
            "archive {}: {}",
            archive.display(),
            not_an_archive(&head)
        )));
    }
    unpack_reader(f, dest).map_err(|e| Error::new(format!("archive {}: {e}", archive.display())))
}
