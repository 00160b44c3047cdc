//! The rules an archive entry must follow, in one place: [`super::unpack`] applies them while it
//! extracts, [`super::validate`] while it checks an artifact before anything reaches Nx.
//!
//! Every reason here names the rule only; the caller puts the entry's name in front of it, shown
//! with [`shown`] (names come from whoever wrote the archive: control characters are escaped).

use std::fmt::Write as _;

/// The longest entry path or symlink target accepted, in bytes: Linux `PATH_MAX` (4096) less room
/// for the directory an archive is restored into.
pub const MAX_PATH_BYTES: usize = 3840;

/// The longest path component most filesystems accept (Linux `NAME_MAX`); a longer one fails the
/// restore with `ENAMETOOLONG`.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// The most symlinks followed to resolve one path, as the kernel counts them (Linux
/// `MAXSYMLINKS`: every link followed, nested or one after another, the first one included); one
/// more and the path fails with `ELOOP`.
pub const MAX_SYMLINK_LEVELS: u32 = 40;

/// What an entry is, once its type flag is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

impl EntryKind {
    /// `a file`, `a directory`, `a symlink`.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "a file",
            EntryKind::Dir => "a directory",
            EntryKind::Symlink => "a symlink",
        }
    }
}

/// Classifies a tar type flag (the header byte at offset 156). Extension headers (GNU long names,
/// PAX) are the reader's business and never reach this function.
pub fn entry_kind(flag: u8) -> Result<EntryKind, String> {
    match flag {
        b'0' | 0 => Ok(EntryKind::File),
        b'5' => Ok(EntryKind::Dir),
        b'2' => Ok(EntryKind::Symlink),
        b'1' => Err("hard links are not allowed".into()),
        b'3' | b'4' => Err("device files are not allowed".into()),
        b'6' => Err("FIFOs are not allowed".into()),
        b'S' => Err("sparse files are not supported".into()),
        other => Err(format!("unsupported entry type {}", escaped(&[other]))),
    }
}

/// Splits a raw entry path into its normal components (`""` and `.` dropped). Refused: an
/// absolute path, a `..` component, a NUL byte, a backslash (a separator for Windows readers), a
/// path that is not UTF-8 (Windows readers cannot name it), a component longer than
/// [`MAX_COMPONENT_BYTES`], a path longer than `max_bytes`; on Windows also `:`.
pub fn split_path(raw: &[u8], max_bytes: usize) -> Result<Vec<&[u8]>, String> {
    if raw.len() > max_bytes {
        return Err(format!(
            "the path is {} bytes long (at most {max_bytes})",
            raw.len()
        ));
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute paths are not allowed".into());
    }
    check_bytes(raw)?;
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(
                    "`..` components are not allowed (the path would leave the destination)".into(),
                )
            }
            name => {
                if name.len() > MAX_COMPONENT_BYTES {
                    return Err(format!(
                        "a path component is {} bytes long (at most {MAX_COMPONENT_BYTES})",
                        name.len()
                    ));
                }
                if cfg!(windows) && name.contains(&b':') {
                    return Err("`:` is not allowed in a path on Windows".into());
                }
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// Checks a symlink target as written (before it is resolved): not empty, relative (no leading
/// `/`, no drive letter), no NUL, no backslash, UTF-8, at most `max_bytes`.
pub fn check_link_target(target: &[u8], max_bytes: usize) -> Result<(), String> {
    if target.is_empty() {
        return Err("symlink with an empty target".into());
    }
    if target.first() == Some(&b'/') || has_drive_prefix(target) {
        return Err(format!(
            "symlink target {} is absolute (only relative targets are allowed)",
            shown(target)
        ));
    }
    if target.len() > max_bytes {
        return Err(format!(
            "symlink target is {} bytes long (at most {max_bytes})",
            target.len()
        ));
    }
    check_bytes(target).map_err(|why| format!("symlink target {}: {why}", shown(target)))
}

/// `C:...`: absolute (or drive-relative) on Windows.
pub fn has_drive_prefix(s: &[u8]) -> bool {
    s.len() >= 2 && s[0].is_ascii_alphabetic() && s[1] == b':'
}

fn check_bytes(raw: &[u8]) -> Result<(), String> {
    if raw.contains(&0) {
        return Err("NUL bytes are not allowed in a path".into());
    }
    if raw.contains(&b'\\') {
        return Err("backslashes are not allowed in a path (a separator on Windows)".into());
    }
    if std::str::from_utf8(raw).is_err() {
        return Err("the path is not valid UTF-8".into());
    }
    Ok(())
}

/// The exit code held by a `code` entry: exactly 4 bytes, big-endian.
pub fn code_value(data: &[u8]) -> Result<u32, String> {
    let b: [u8; 4] = data
        .try_into()
        .map_err(|_| format!("must be 4 bytes, not {}", data.len()))?;
    Ok(u32::from_be_bytes(b))
}

/// Longest name shown in a message, in characters (longer names are cut with `…`).
const SHOWN_CHARS: usize = 160;

/// A name from an archive as it appears in a message: between backticks, escaped by
/// [`escaped`].
pub fn shown(raw: &[u8]) -> String {
    format!("`{}`", escaped(raw))
}

/// A name from an archive made safe to print: control and invisible formatting characters written
/// as `\u{..}`, bytes that are not UTF-8 as `\x..`, a backslash as `\\`, cut with `…` after
/// [`SHOWN_CHARS`] characters. Nothing in it can move the cursor, start an escape sequence or
/// forge a line.
pub fn escaped(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len().min(SHOWN_CHARS));
    let mut count = 0usize;
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if count == SHOWN_CHARS {
                out.push('…');
                return out;
            }
            count += 1;
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() || is_invisible(c) {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            if count == SHOWN_CHARS {
                out.push('…');
                return out;
            }
            count += 1;
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Formatting characters that change how a line reads without being seen: bidirectional
/// overrides and isolates, zero-width characters, the byte order mark, line and paragraph
/// separators.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
            | '\u{061c}'
            | '\u{00ad}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_what_could_forge_a_line() {
        assert_eq!(shown(b"dist/a.js"), "`dist/a.js`");
        assert_eq!(shown(b"a\nb\r\x1b[2J"), "`a\\u{a}b\\u{d}\\u{1b}[2J`");
        assert_eq!(shown(b"x\xffy"), "`x\\xffy`");
        assert_eq!(shown("a\u{202e}b".as_bytes()), "`a\\u{202e}b`");
        assert_eq!(shown(b"a\\b"), "`a\\\\b`");
        let long = vec![b'a'; 1000];
        assert!(shown(&long).ends_with("…`"));
        assert!(shown(&long).chars().count() < 170);
    }

    #[test]
    fn paths_split_into_normal_components() {
        assert_eq!(
            split_path(b"./a//b/./c/", 100).unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert!(split_path(b"./", 100).unwrap().is_empty());
        for bad in [&b"/etc/x"[..], b"a/../b", b"..", b"a\0b", b"a\\b", b"\xff"] {
            assert!(split_path(bad, 100).is_err(), "{bad:?}");
        }
        assert!(split_path(&[b'a'; 256], 1000).is_err());
        assert!(split_path(&[b'a'; 255], 1000).is_ok());
        assert!(split_path(b"abcdef", 5).is_err());
    }

    #[test]
    fn link_targets_are_relative_and_clean() {
        assert!(check_link_target(b"../x", 100).is_ok());
        for bad in [&b""[..], b"/etc", b"C:\\x", b"a\0", b"a\\b", b"\xfe"] {
            assert!(check_link_target(bad, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entry_kinds() {
        assert_eq!(entry_kind(0), Ok(EntryKind::File));
        assert_eq!(entry_kind(b'0'), Ok(EntryKind::File));
        assert_eq!(entry_kind(b'5'), Ok(EntryKind::Dir));
        assert_eq!(entry_kind(b'2'), Ok(EntryKind::Symlink));
        for (flag, word) in [
            (b'1', "hard links"),
            (b'3', "device"),
            (b'4', "device"),
            (b'6', "FIFO"),
            (b'S', "sparse"),
            (b'7', "unsupported"),
            (b'g', "unsupported"),
            (0x1b, "\\u{1b}"),
        ] {
            let e = entry_kind(flag).unwrap_err();
            assert!(e.contains(word), "{flag}: {e}");
        }
    }

    #[test]
    fn code_is_four_bytes() {
        assert_eq!(code_value(&[0, 0, 0, 2]), Ok(2));
        assert!(code_value(&[0, 0, 2]).is_err());
        assert!(code_value(&[0, 0, 0, 0, 2]).is_err());
    }
}
