//! Artifact validation: every rule of `archive::validate` accepted and refused with crafted
//! archives (raw tar headers where the `tar` crate will not write the hostile shape), artifacts
//! made by `pack` (Format::Nx), by the `tar` crate as Nx's client writes them, and by a real Nx
//! run; limits; the same verdict whatever the chunk sizes; the `ValidatingStore` wrapper; and
//! `serve` end to end over HTTP (a hostile PUT is 400 with the reason, a hostile object a miss).

mod common;

use common::noise;
use nx_open_cache::archive::validate::Rule;
use nx_open_cache::archive::{
    pack_to_vec, unpack_bytes, validate_reader, validate_slice, Checked, Format, PackOptions,
    Refusal, ValidationLimits, Validator,
};
use std::io::Write;

// ------------------------------------------------------------------------------- archive makers

const GNU: &[u8; 8] = b"ustar  \0";
const USTAR: &[u8; 8] = b"ustar\x0000";

/// A raw tar header: every field written byte for byte, whatever it holds (as a hostile writer
/// would), then the checksum.
#[derive(Clone)]
struct H {
    name: Vec<u8>,
    flag: u8,
    link: Vec<u8>,
    mode: u32,
    size: u64,
    magic: [u8; 8],
    prefix: Vec<u8>,
}

impl H {
    fn new(name: &[u8], flag: u8, mode: u32, size: u64) -> H {
        H {
            name: name.to_vec(),
            flag,
            link: Vec::new(),
            mode,
            size,
            magic: *GNU,
            prefix: Vec::new(),
        }
    }

    fn block(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..self.name.len()].copy_from_slice(&self.name);
        b[100..108].copy_from_slice(format!("{:07o}\0", self.mode).as_bytes());
        b[108..116].copy_from_slice(b"0000000\0");
        b[116..124].copy_from_slice(b"0000000\0");
        b[124..136].copy_from_slice(format!("{:011o}\0", self.size).as_bytes());
        b[136..148].copy_from_slice(b"00000000000\0");
        b[156] = self.flag;
        b[157..157 + self.link.len()].copy_from_slice(&self.link);
        b[257..265].copy_from_slice(&self.magic);
        b[345..345 + self.prefix.len()].copy_from_slice(&self.prefix);
        sum(&mut b);
        b
    }

    /// The header block followed by `data` and its padding.
    fn with(&self, data: &[u8]) -> Vec<u8> {
        let mut out = self.block().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }
}

fn sum(b: &mut [u8; 512]) {
    b[148..156].copy_from_slice(b"        ");
    let s: u32 = b.iter().map(|x| u32::from(*x)).sum();
    b[148..156].copy_from_slice(format!("{s:06o}\0 ").as_bytes());
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    H::new(name.as_bytes(), b'0', 0o644, data.len() as u64).with(data)
}
fn dir(name: &str) -> Vec<u8> {
    H::new(name.as_bytes(), b'5', 0o755, 0).with(b"")
}
fn link(name: &str, target: &str) -> Vec<u8> {
    let mut h = H::new(name.as_bytes(), b'2', 0o777, 0);
    h.link = target.as_bytes().to_vec();
    h.with(b"")
}
fn typed(name: &str, flag: u8) -> Vec<u8> {
    H::new(name.as_bytes(), flag, 0o644, 0).with(b"")
}
fn moded(name: &str, flag: u8, mode: u32) -> Vec<u8> {
    H::new(name.as_bytes(), flag, mode, 0).with(b"")
}

/// `terminalOutput` and `code` as Nx's client writes them: old-style headers, only name, size
/// and checksum set.
fn old(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    sum(&mut b);
    let mut out = b.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}
fn terminal(text: &[u8]) -> Vec<u8> {
    old(b"terminalOutput", text)
}
fn code(c: u32) -> Vec<u8> {
    old(b"code", &c.to_be_bytes())
}
fn tail() -> Vec<u8> {
    [terminal(b"done\n"), code(0)].concat()
}

/// The tar stream of `entries` with its end-of-archive blocks.
fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An artifact of `entries` plus Nx's `terminalOutput` and `code`.
fn nx(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut all = entries.to_vec();
    all.push(tail());
    gz(&tar(&all))
}

// -------------------------------------------------------------------------------------- verdicts

fn limits() -> ValidationLimits {
    ValidationLimits::default()
}

/// Feeds `a` in chunks of `size` bytes.
fn chunked(a: &[u8], size: usize, limits: &ValidationLimits) -> Result<Checked, Refusal> {
    let mut v = Validator::new(limits.clone(), Some(a.len() as u64));
    for c in a.chunks(size.max(1)) {
        v.feed(c)?;
    }
    v.finish()
}

/// The verdict, checked to be the same for every chunking (1 byte, odd sizes, large, whole).
fn verdict_with(a: &[u8], limits: &ValidationLimits) -> Result<Checked, Refusal> {
    let whole = validate_slice(a, limits);
    let sizes: &[usize] = if a.len() <= 64 * 1024 {
        &[1, 3, 7, 509, 4096, 65_537]
    } else {
        &[4093, 65_537, 1 << 20]
    };
    for &size in sizes {
        assert_eq!(
            chunked(a, size, limits),
            whole,
            "fed in chunks of {size} bytes: another verdict"
        );
    }
    let read = validate_reader(std::io::Cursor::new(a), limits, None).unwrap();
    match (&whole, &read) {
        (Ok(w), Ok(r)) => assert_eq!(w, r),
        (Err(w), Err(r)) if w.rule() != Rule::Limit => assert_eq!(w, r),
        (Err(_), Err(_)) => {}
        _ => panic!("validate_reader: {read:?}, validate_slice: {whole:?}"),
    }
    whole
}

fn accepted(a: &[u8]) -> Checked {
    match verdict_with(a, &limits()) {
        Ok(c) => c,
        Err(r) => panic!("refused: {r}"),
    }
}

/// Checks the refusal's rule and that its message holds every word of `words`.
#[track_caller]
fn refused_with(a: &[u8], limits: &ValidationLimits, rule: Rule, words: &[&str]) -> String {
    let r = match verdict_with(a, limits) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(r) => r,
    };
    let msg = r.to_string();
    assert!(msg.starts_with("not a valid Nx artifact: "), "{msg}");
    assert_eq!(r.rule(), rule, "{msg}");
    for w in words {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
    msg
}

#[track_caller]
fn refused(a: &[u8], rule: Rule, words: &[&str]) -> String {
    refused_with(a, &limits(), rule, words)
}

// ------------------------------------------------------------------------------ accepted shapes

#[test]
fn a_minimal_nx_artifact_is_accepted() {
    let c = accepted(&nx(&[dir("dist/"), file("dist/a.js", b"x")]));
    assert_eq!((c.entries, c.files, c.dirs, c.symlinks), (4, 1, 1, 0));
    assert_eq!(c.code, 0);
    assert_eq!(c.terminal_output_bytes, 5);
    // dir, file + data, terminalOutput + data, code + data, two end blocks.
    assert_eq!(c.expanded_bytes, 512 * 9);
}

#[cfg(unix)]
#[test]
fn artifacts_made_by_pack_in_nx_format_are_accepted() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    std::fs::create_dir_all(root.join("dist/nested/deeper")).unwrap();
    std::fs::write(root.join("dist/index.js"), b"console.log(1)\n").unwrap();
    std::fs::write(root.join("dist/nested/deeper/n.md"), "ünï ✓\n").unwrap();
    std::fs::write(root.join("dist/empty"), b"").unwrap();
    std::fs::write(root.join("dist/big.bin"), noise(3 << 20, 9)).unwrap();
    std::os::unix::fs::symlink("index.js", root.join("dist/latest.js")).unwrap();
    std::os::unix::fs::symlink("nested/deeper", root.join("dist/docs")).unwrap();
    std::os::unix::fs::symlink("../node_modules/x", root.join("dist/nm")).unwrap();
    let long = format!("dist/{}/{}.txt", "d".repeat(120), "f".repeat(200));
    std::fs::create_dir_all(root.join(&long).parent().unwrap()).unwrap();
    std::fs::write(root.join(&long), b"long name").unwrap();
    let a = pack_to_vec(&PackOptions {
        root: root.to_path_buf(),
        files: vec!["dist".into()],
        terminal_output: "built ✓\n".into(),
        code: 3,
        format: Format::Nx,
        ..Default::default()
    })
    .unwrap();
    let c = accepted(&a);
    assert_eq!((c.files, c.symlinks, c.code), (5, 3, 3));
    assert_eq!(c.terminal_output_bytes, "built ✓\n".len() as u64);
}

#[cfg(unix)]
#[test]
fn artifacts_written_like_nx_store_are_accepted() {
    // Nx's store(): tar::Builder over GzEncoder (level 6), follow_symlinks(false),
    // append_dir_all("", <cacheDir>/<hash>), then old-style terminalOutput and code headers.
    let t = tempfile::tempdir().unwrap();
    let src = t.path();
    std::fs::create_dir_all(src.join("apps/a/dist/assets")).unwrap();
    std::fs::write(src.join("apps/a/dist/main.js"), b"main").unwrap();
    std::fs::write(src.join("apps/a/dist/assets/logo.svg"), b"<svg/>").unwrap();
    std::os::unix::fs::symlink("main.js", src.join("apps/a/dist/index.js")).unwrap();
    let deep = format!("apps/a/dist/{}", "x".repeat(150));
    std::fs::write(src.join(deep), b"long").unwrap();
    let a = common::nx_store_archive(Some(src), &[], b"hello\n", 1);
    let c = accepted(&a);
    assert_eq!((c.code, c.files, c.symlinks), (1, 3, 1));
}

/// Artifacts uploaded by real Nx 24.0.6 runs (captured from an fs store of the e2e workspace,
/// envelope removed): what Nx's own client writes, byte for byte.
#[test]
fn artifacts_made_by_real_nx_are_accepted() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nx-artifacts");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let a = std::fs::read(&path).unwrap();
        let c = accepted(&a);
        assert!(c.files >= 6 && c.dirs >= 3, "{}: {c:?}", path.display());
        seen += 1;
    }
    assert!(seen >= 1, "no captured Nx artifact in {}", dir.display());
}

#[test]
fn gzip_header_fields_and_trailing_zero_blocks_are_accepted() {
    let t = tar(&[file("a", b"1"), tail()]);
    let mut e = flate2::GzBuilder::new()
        .filename("artifact.tar")
        .comment("made elsewhere")
        .extra(vec![1, 2, 3, 4])
        .write(Vec::new(), flate2::Compression::best());
    e.write_all(&t).unwrap();
    accepted(&e.finish().unwrap());
    // GNU tar pads the archive to its blocking factor (10 KiB) with zeros.
    let mut padded = tar(&[file("a", b"1"), tail()]);
    padded.resize(10240, 0);
    accepted(&gz(&padded));
    // One end-of-archive block is an end (what the tar crate, and so Nx, stops at).
    let mut one = [file("a", b"1"), tail()].concat();
    one.extend_from_slice(&[0u8; 512]);
    accepted(&gz(&one));
}

#[test]
fn a_gzip_header_crc_is_checked() {
    let body = gz(&tar(&[tail()]));
    // Rebuild the member with FHCRC set: header bytes, its CRC-16, then the deflate data + trailer.
    let mut head = body[..10].to_vec();
    head[3] |= 0x02;
    let crc = crc16(&head);
    let mut good = head.clone();
    good.extend_from_slice(&crc.to_le_bytes());
    good.extend_from_slice(&body[10..]);
    accepted(&good);
    let mut bad = head;
    bad.extend_from_slice(&(crc ^ 1).to_le_bytes());
    bad.extend_from_slice(&body[10..]);
    refused(&bad, Rule::Gzip, &["header's CRC"]);
}

fn crc16(b: &[u8]) -> u16 {
    let mut c = flate2::Crc::new();
    c.update(b);
    (c.sum() & 0xffff) as u16
}

// ------------------------------------------------------------------------------------ gzip rules

#[test]
fn empty_garbage_and_other_formats_are_refused() {
    refused(b"", Rule::Gzip, &["empty (0 bytes)"]);
    refused(b"\x1f", Rule::Gzip, &["truncated", "1 byte)"]);
    refused(
        &noise(5000, 1),
        Rule::Gzip,
        &["not gzip", "a gzip stream starts with 1f 8b"],
    );
    let zip = refused(b"PK\x03\x04 zip", Rule::Gzip, &["starts with 50 4b"]);
    assert!(!zip.contains("sealed"), "{zip}");
    // What the plugin's seal layer stores (read without it, as `serve` does): named as such.
    let mut sealed = b"NXOS\x01\x02".to_vec();
    sealed.extend(noise(200, 3));
    refused(
        &sealed,
        Rule::Gzip,
        &[
            "starts with 4e 58",
            "sealed by the plugin (signed or encrypted)",
        ],
    );
    let zstd = zstd::stream::encode_all(&tar(&[tail()])[..], 3).unwrap();
    refused(&zstd, Rule::Gzip, &["starts with 28 b5"]);
    // A plain tar, not compressed.
    refused(&tar(&[tail()]), Rule::Gzip, &["not gzip"]);
}

#[test]
fn gzip_headers_that_nx_could_not_read_are_refused() {
    let good = nx(&[]);
    let mut method = good.clone();
    method[2] = 7;
    refused(&method, Rule::Gzip, &["method 7"]);
    let mut flags = good.clone();
    flags[3] = 0x20;
    refused(&flags, Rule::Gzip, &["reserved flags"]);
    refused(&good[..6], Rule::Gzip, &["header is truncated"]);
}

#[test]
fn truncated_gzip_is_refused_at_every_cut() {
    let a = nx(&[file("dist/a", &noise(3000, 2)), dir("dist/d/")]);
    for cut in 1..a.len() {
        let r = validate_slice(&a[..cut], &limits()).unwrap_err();
        assert!(
            matches!(r.rule(), Rule::Gzip | Rule::Tar | Rule::Layout),
            "cut at {cut}: {r}"
        );
        // Cut in 3 pieces: the same verdict.
        assert_eq!(
            chunked(&a[..cut], 97, &limits()),
            Err(r.clone()),
            "cut {cut}"
        );
    }
    refused(&a[..a.len() - 3], Rule::Gzip, &["trailer is incomplete"]);
    refused(&a[..a.len() / 2], Rule::Gzip, &["truncated"]);
}

#[test]
fn corrupt_gzip_data_and_trailers_are_refused() {
    let a = nx(&[file("dist/a", &noise(20_000, 3))]);
    let n = a.len();
    let mut crc = a.clone();
    crc[n - 8] ^= 1;
    refused(&crc, Rule::Gzip, &["CRC-32"]);
    let mut len = a.clone();
    len[n - 2] ^= 1;
    refused(&len, Rule::Gzip, &["length"]);
    let mut data = a.clone();
    data[n / 2] ^= 0x55;
    let r = validate_slice(&data, &limits()).unwrap_err();
    assert!(matches!(r.rule(), Rule::Gzip | Rule::Tar), "{r}");
    assert_eq!(verdict_with(&data, &limits()), Err(r));
}

#[test]
fn bytes_after_the_gzip_member_are_refused() {
    let a = nx(&[file("a", b"1")]);
    let mut junk = a.clone();
    junk.extend_from_slice(b"\0");
    refused(
        &junk,
        Rule::TrailingData,
        &["follow the end of the gzip stream"],
    );
    // A second member (Nx reads only the first).
    let mut two = a.clone();
    two.extend_from_slice(&gz(&tar(&[file("evil", b"x")])));
    refused(&two, Rule::TrailingData, &["first member"]);
}

// ------------------------------------------------------------------------------------- tar rules

#[test]
fn gzip_of_something_that_is_not_tar_is_refused() {
    refused(&gz(&noise(10_000, 4)), Rule::Tar, &["checksum"]);
    refused(&gz(b"hello world\n"), Rule::Tar, &["ends inside a header"]);
    refused(&gz(b""), Rule::Tar, &["no end-of-archive marker"]);
    refused(&gz(&[0u8; 4096]), Rule::Layout, &["no `terminalOutput`"]);
}

#[test]
fn broken_tar_framing_is_refused() {
    let mut bad_sum = file("a", b"1");
    bad_sum[0] = b'b';
    refused(
        &nx(&[bad_sum]),
        Rule::Tar,
        &["entry #1", "checksum mismatch"],
    );
    let mut size = H::new(b"a", b'0', 0o644, 1).block();
    size[124..136].copy_from_slice(b"12x4\0\0\0\0\0\0\0\0");
    sum(&mut size);
    refused(
        &nx(&[size.to_vec()]),
        Rule::Tar,
        &["size field is not a number"],
    );
    let mut b256 = H::new(b"a", b'0', 0o644, 1).block();
    b256[124..136].copy_from_slice(&[0xff; 12]);
    sum(&mut b256);
    refused(&nx(&[b256.to_vec()]), Rule::Tar, &["base-256"]);
    let mut mode = H::new(b"a", b'0', 0o644, 0).block();
    mode[100..108].copy_from_slice(b"rw-r--r-");
    sum(&mut mode);
    refused(&nx(&[mode.to_vec()]), Rule::Tar, &["`a`", "mode field"]);
    // Truncated inside an entry's data, and no end marker.
    let mut t = [file("a", b"1"), tail()].concat();
    refused(&gz(&t), Rule::Tar, &["no end-of-archive marker"]);
    t.extend_from_slice(&H::new(b"b", b'0', 0o644, 5000).block());
    t.extend_from_slice(&[1u8; 700]);
    refused(&gz(&t), Rule::Tar, &["ends inside the data of entry #4"]);
    // Something after the end-of-archive marker.
    let mut after = tar(&[file("a", b"1"), tail()]);
    after.extend_from_slice(&file("hidden", b"x"));
    refused(
        &gz(&after),
        Rule::Tar,
        &["data follows the tar end-of-archive marker"],
    );
    // Data on a directory or a symlink.
    refused(
        &nx(&[H::new(b"d", b'5', 0o755, 3).with(b"abc")]),
        Rule::Tar,
        &["`d`", "a directory with 3 bytes"],
    );
}

#[test]
fn base_256_sizes_are_read() {
    let mut h = H::new(b"a", b'0', 0o644, 0).block();
    let mut field = [0u8; 12];
    field[0] = 0x80;
    field[4..].copy_from_slice(&3u64.to_be_bytes());
    h[124..136].copy_from_slice(&field);
    sum(&mut h);
    let mut e = h.to_vec();
    e.extend_from_slice(b"abc");
    e.resize(1024, 0);
    assert_eq!(accepted(&nx(&[e])).files, 1);
}

// ---------------------------------------------------------------------------------- Nx's layout

#[test]
fn terminal_output_and_code_must_be_there_once_as_nx_writes_them() {
    refused(
        &gz(&tar(&[terminal(b"x")])),
        Rule::Layout,
        &["no `code` entry"],
    );
    refused(
        &gz(&tar(&[code(0)])),
        Rule::Layout,
        &["no `terminalOutput` entry"],
    );
    refused(
        &gz(&tar(&[terminal(b"x"), old(b"code", &[0, 0, 1])])),
        Rule::Layout,
        &["`code`", "must be 4 bytes, not 3"],
    );
    refused(
        &gz(&tar(&[terminal(b"x"), old(b"code", &[0, 0, 0, 0, 1])])),
        Rule::Layout,
        &["not 5"],
    );
    refused(
        &gz(&tar(&[terminal(b"x"), code(0), code(1)])),
        Rule::Duplicate,
        &["`code`", "duplicate"],
    );
    refused(
        &gz(&tar(&[terminal(b"x"), old(b"./code", &[0, 0, 0, 0])])),
        Rule::Layout,
        &["`./code`", "spelled exactly"],
    );
    refused(
        &gz(&tar(&[terminal(b"x"), moded("code", b'5', 0o755)])),
        Rule::Layout,
        &["regular file"],
    );
    refused(
        &gz(&tar(&[terminal(b"x"), link("code", "x")])),
        Rule::Layout,
        &["regular file"],
    );
    refused(
        &nx(&[file("code/x", b"1")]),
        Rule::Nesting,
        &["`code`", "lie below"],
    );
    refused(
        &gz(&tar(&[terminal(b"x"), code(0), file("code/x", b"1")])),
        Rule::Nesting,
        &["parent `code`"],
    );
    // The exit code is read as Nx reads it.
    let c = accepted(&gz(&tar(&[terminal(b""), code(0xdead_beef)])));
    assert_eq!((c.code, c.terminal_output_bytes), (0xdead_beef, 0));
}

#[test]
fn terminal_output_must_be_utf8_and_bounded() {
    refused(
        &gz(&tar(&[terminal(b"ok \xff"), code(0)])),
        Rule::Layout,
        &["`terminalOutput`", "UTF-8"],
    );
    // An incomplete character at its end (checked across chunk boundaries by verdict_with).
    refused(
        &gz(&tar(&[terminal("€".as_bytes().get(..2).unwrap()), code(0)])),
        Rule::Layout,
        &["UTF-8"],
    );
    accepted(&gz(&tar(&[
        terminal("✓ done 𝄞\n".repeat(500).as_bytes()),
        code(0),
    ])));
    let small = ValidationLimits {
        max_terminal_output: 10,
        ..limits()
    };
    refused_with(
        &gz(&tar(&[terminal(&[b'a'; 11]), code(0)])),
        &small,
        Rule::Limit,
        &["11 bytes (at most 10)"],
    );
}

// ----------------------------------------------------------------------------------- path rules

/// One refused shape: the entries of an artifact (Nx's layout is added), the rule it breaks, and
/// words its refusal holds.
type Case = (Vec<Vec<u8>>, Rule, &'static [&'static str]);

#[track_caller]
fn refused_each(cases: Vec<Case>) {
    for (entries, rule, words) in cases {
        refused(&nx(&entries), rule, words);
    }
}

#[test]
fn paths_that_leave_the_root_or_cannot_be_restored_are_refused() {
    let mut latin1 = H::new(b"caf\xe9", b'0', 0o644, 0).with(b"");
    latin1.truncate(512);
    let long_component = format!("dist/{}", "a".repeat(256));
    refused_each(vec![
        (
            vec![file("../escape", b"x")],
            Rule::Path,
            &["`../escape`", "`..`"],
        ),
        (vec![file("dist/../../escape", b"x")], Rule::Path, &["`..`"]),
        (vec![file("/etc/cron.d/x", b"x")], Rule::Path, &["absolute"]),
        (vec![file("a\\..\\..\\x", b"x")], Rule::Path, &["backslash"]),
        (vec![latin1], Rule::Path, &["`caf\\xe9`", "UTF-8"]),
        (
            vec![gnu_long(&long_component, b'0', b"")],
            Rule::Path,
            &["256 bytes"],
        ),
        (
            vec![typed(".", b'0')],
            Rule::Path,
            &["only a directory can name the archive root"],
        ),
        (vec![typed("./", b'0')], Rule::Path, &["ends with `/`"]),
        (vec![file("dist/a/", b"")], Rule::Path, &["ends with `/`"]),
    ]);
    let small = ValidationLimits {
        max_path_bytes: 20,
        ..limits()
    };
    refused_with(
        &nx(&[file("dist/abcdefghijklmnopqrstuvwxyz", b"")]),
        &small,
        Rule::Path,
        &["at most 20"],
    );
    // UTF-8 names, the archive root and `./` prefixes are fine.
    assert_eq!(accepted(&nx(&[file("caf\u{e9}", b"x")])).files, 1);
    let c = accepted(&nx(&[dir("./"), dir("./dist/"), file("./dist/a", b"a")]));
    assert_eq!(c.files, 1);
}

#[test]
fn a_ustar_prefix_is_part_of_the_path() {
    let mut h = H::new(b"x", b'0', 0o644, 1);
    h.magic = *USTAR;
    h.prefix = b"dist/sub".to_vec();
    assert_eq!(accepted(&nx(&[h.with(b"1")])).files, 1);
    h.prefix = b"../..".to_vec();
    refused(&nx(&[h.with(b"1")]), Rule::Path, &["`../../x`"]);
    // The prefix field means nothing in a GNU header.
    let mut g = H::new(b"x", b'0', 0o644, 1);
    g.prefix = b"../..".to_vec();
    accepted(&nx(&[g.with(b"1")]));
}

#[test]
fn names_in_refusals_are_escaped() {
    let msg = refused(
        &nx(&[file("dist/\x1b[2J\r\nforged line\u{202e}/../../x", b"")]),
        Rule::Path,
        &["\\u{1b}[2J\\u{d}\\u{a}forged line\\u{202e}"],
    );
    assert!(!msg.contains('\n') && !msg.contains('\r') && !msg.contains('\x1b'));
    assert!(!msg.contains('\u{202e}'));
}

// ----------------------------------------------------------------------------------- entry types

#[test]
fn hard_links_devices_fifos_sparse_and_unknown_types_are_refused() {
    let mut hard = H::new(b"dist/passwd", b'1', 0o644, 0);
    hard.link = b"/etc/passwd".to_vec();
    let mut global = H::new(b"pax_global_header", b'g', 0o644, 0);
    global.magic = *USTAR;
    // A GNU long name header in an old-style (v7) header is no extension: the tar crate, and so
    // Nx, reads it as an entry of an unknown type.
    let mut v7 = H::new(b"././@LongLink", b'L', 0o644, 4);
    v7.magic = [0; 8];
    refused_each(vec![
        (
            vec![hard.with(b"")],
            Rule::EntryType,
            &["`dist/passwd`", "hard links"],
        ),
        (vec![typed("dist/tty", b'3')], Rule::EntryType, &["device"]),
        (vec![typed("dist/sda", b'4')], Rule::EntryType, &["device"]),
        (vec![typed("dist/fifo", b'6')], Rule::EntryType, &["FIFO"]),
        (
            vec![typed("dist/sparse", b'S')],
            Rule::EntryType,
            &["sparse"],
        ),
        (
            vec![typed("dist/c", b'7')],
            Rule::EntryType,
            &["unsupported entry type 7"],
        ),
        (vec![typed("vol", b'V')], Rule::EntryType, &["unsupported"]),
        (
            vec![global.with(b"")],
            Rule::EntryType,
            &["unsupported entry type g"],
        ),
        (
            vec![v7.with(b"abc\0"), file("x", b"")],
            Rule::EntryType,
            &["type L"],
        ),
    ]);
}

#[test]
fn setuid_and_modes_a_restore_cannot_use_are_refused() {
    refused_each(vec![
        (
            vec![moded("dist/su", b'0', 0o4755)],
            Rule::Mode,
            &["setuid", "4755"],
        ),
        (vec![moded("dist/sg", b'0', 0o2755)], Rule::Mode, &["2755"]),
        (vec![moded("dist/tmp", b'5', 0o1777)], Rule::Mode, &["1777"]),
        (
            vec![moded("dist/ro", b'5', 0o555)],
            Rule::Mode,
            &["directory", "0555"],
        ),
        (
            vec![moded("dist/wo", b'0', 0o200)],
            Rule::Mode,
            &["cannot read", "0200"],
        ),
    ]);
    // Read-only files and private directories are fine; file type bits above 0o7777 are ignored.
    accepted(&nx(&[
        moded("dist/", b'5', 0o700),
        moded("dist/ro", b'0', 0o444),
    ]));
    accepted(&nx(&[moded("dist/x", b'0', 0o100644)]));
}

// --------------------------------------------------------------------------- one entry per path

#[test]
fn duplicates_and_entries_below_files_or_symlinks_are_refused_in_any_order() {
    refused_each(vec![
        (
            vec![file("a", b"1"), file("a", b"2")],
            Rule::Duplicate,
            &["`a`", "already a file"],
        ),
        (
            vec![dir("d/"), dir("d")],
            Rule::Duplicate,
            &["already a directory"],
        ),
        (vec![file("a", b"1"), dir("a/")], Rule::Duplicate, &[]),
        (
            vec![file("a", b"1"), file("./a", b"2")],
            Rule::Duplicate,
            &[],
        ),
        (
            vec![file("a", b"1"), file("a/b", b"2")],
            Rule::Nesting,
            &["parent `a` is a file"],
        ),
        (
            vec![file("a/b", b"2"), file("a", b"1")],
            Rule::Nesting,
            &["lie below"],
        ),
        // Through a symlink of the archive, before or after it (the directory swap).
        (
            vec![link("dist/out", "../.."), file("dist/out/pwned", b"x")],
            Rule::Nesting,
            &["`dist/out/pwned`", "parent `dist/out` is a symlink"],
        ),
        (
            vec![
                dir("dist/out/"),
                file("dist/out/pwned", b"x"),
                link("dist/out", "sub"),
            ],
            Rule::Duplicate,
            &["`dist/out`"],
        ),
        (
            vec![file("dist/out/pwned", b"x"), link("dist/out", "sub")],
            Rule::Nesting,
            &["a symlink here, but other entries"],
        ),
    ]);
}

// --------------------------------------------------------------------------------- symlink rules

#[test]
fn symlinks_inside_the_archive_are_accepted() {
    let c = accepted(&nx(&[
        dir("dist/"),
        dir("dist/v1/"),
        file("dist/v1/a.js", b"a"),
        link("dist/latest", "v1"),
        link("dist/a.js", "latest/a.js"),
        link("dist/chain", "a.js"),
        link("dist/nm", "../node_modules/pkg"),
        link("dist/self-dir", "."),
        link("dist/root", ".."),
        link("dist/up-and-down", "../dist/v1/./a.js"),
        link("dist/dangling", "v1/missing/deeper"),
    ]));
    assert_eq!(c.symlinks, 8);
}

#[test]
fn symlinks_that_escape_loop_or_reach_nx_layout_are_refused() {
    let chain = |n: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| link(&format!("l{i}"), &format!("l{}", i + 1)))
            .chain([file(&format!("l{n}"), b"end")])
            .collect()
    };
    refused_each(vec![
        (
            vec![link("dist/etc", "/etc")],
            Rule::Symlink,
            &["`dist/etc`", "absolute"],
        ),
        (
            vec![link("dist/c", "C:\\Windows")],
            Rule::Symlink,
            &["absolute"],
        ),
        (vec![link("dist/e", "")], Rule::Symlink, &["empty target"]),
        (
            vec![link("up", "..")],
            Rule::Symlink,
            &["`up`", "outside the archive"],
        ),
        (
            vec![dir("dist/"), link("dist/canary", "../../canary")],
            Rule::Symlink,
            &["`dist/canary`", "`../../canary`", "outside"],
        ),
        // A chain: each link looks harmless alone.
        (
            vec![
                dir("a/b/"),
                link("a/b/l1", "../l2"),
                link("a/l2", "../l3"),
                link("l3", "../x"),
            ],
            Rule::Symlink,
            &["outside the archive"],
        ),
        // Through a link that points up, then further up.
        (
            vec![dir("d/"), link("d/up", ".."), link("d/esc", "up/../x")],
            Rule::Symlink,
            &["outside"],
        ),
        (
            vec![link("a", "b"), link("b", "a")],
            Rule::Symlink,
            &["loop"],
        ),
        (vec![link("self", "self")], Rule::Symlink, &["loop"]),
        (vec![link("a", "a/x")], Rule::Symlink, &["loop"]),
        (chain(41), Rule::Symlink, &["more than 40 levels"]),
        (
            vec![link("dist/code", "../code")],
            Rule::Symlink,
            &["`code`", "Nx's layout"],
        ),
        (
            vec![link("dist/t", "../terminalOutput/x")],
            Rule::Symlink,
            &["`terminalOutput`"],
        ),
        // `..` out of a path the archive does not hold (a symlink there would decide where it
        // goes), or out of a file.
        (
            vec![dir("dist/"), link("dist/x", "../node_modules/pkg/../../..")],
            Rule::Symlink,
            &["not a directory of the archive"],
        ),
        (
            vec![file("dist/f", b""), link("dist/x", "f/..")],
            Rule::Symlink,
            &["not a directory of the archive"],
        ),
    ]);
    accepted(&nx(&chain(39)));
}

/// Found by an earlier fuzzing run (a small input for it in `fuzz/regressions/validate/`): a chain
/// listed end first was resolved link by link from the memo, each looking one level deep, and
/// accepted at any length. Links are counted as the kernel counts them before `ELOOP`: every link
/// followed, nested or one after another, the link itself included, at most 40.
#[test]
fn symlink_levels_are_counted_as_the_kernel_counts_them_in_any_order() {
    let chain = |n: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| link(&format!("l{i}"), &format!("l{}", i + 1)))
            .chain([file(&format!("l{n}"), b"end")])
            .collect()
    };
    let reversed = |n: usize| {
        let mut c = chain(n);
        c.reverse();
        c
    };
    let rotated = |n: usize| {
        let mut c = chain(n);
        c.rotate_left(n / 2);
        c
    };
    for entries in [chain(41), reversed(41), rotated(41), reversed(200)] {
        refused(&nx(&entries), Rule::Symlink, &["more than 40 levels"]);
    }
    for entries in [chain(40), reversed(40), rotated(40)] {
        accepted(&nx(&entries));
    }
    // One after another: `via` goes through `n` links to `.` (one-letter names: the target fits
    // the 100-byte link name field), and counts itself.
    let through = |n: usize| -> Vec<Vec<u8>> {
        let names: Vec<String> = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
            .chars()
            .take(n)
            .map(String::from)
            .collect();
        names
            .iter()
            .map(|name| link(name, "."))
            .chain([link("via", &names.join("/"))])
            .collect()
    };
    refused(
        &nx(&through(40)),
        Rule::Symlink,
        &["`via`", "more than 40 levels"],
    );
    accepted(&nx(&through(39)));
    // Our own restore draws the line at the same place.
    let dir = tempfile::tempdir().unwrap();
    for (i, entries) in [reversed(41), through(40)].into_iter().enumerate() {
        let e = unpack_bytes(&nx(&entries), &dir.path().join(format!("r{i}"))).unwrap_err();
        assert!(e.message().contains("too many levels of symlinks"), "{e}");
    }
    for (i, entries) in [reversed(40), through(39)].into_iter().enumerate() {
        unpack_bytes(&nx(&entries), &dir.path().join(format!("a{i}"))).unwrap();
    }
}

/// `entry` (a header block and its data) with the header bytes at `at` replaced by `bytes`, the
/// checksum made right again.
fn patched(mut entry: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    entry[at..at + bytes.len()].copy_from_slice(bytes);
    let mut b = [0u8; 512];
    b.copy_from_slice(&entry[..512]);
    sum(&mut b);
    entry[..512].copy_from_slice(&b);
    entry
}

/// Found by an earlier fuzzing run (a small input for it in `fuzz/regressions/validate/`): a
/// symlink's mode field was not read at all, so a symlink whose mode is not a number was accepted,
/// and `unpack`, which reads every entry's mode, refused the artifact.
#[test]
fn a_symlink_mode_field_must_be_a_number_without_special_bits() {
    let garbage = nx(&[patched(link("dist/l", "x"), 100, b"zzzzzzz\0")]);
    refused(
        &garbage,
        Rule::Tar,
        &["`dist/l`", "mode field is not a number"],
    );
    let dir = tempfile::tempdir().unwrap();
    let e = unpack_bytes(&garbage, &dir.path().join("out")).unwrap_err();
    assert!(e.message().contains("invalid mode"), "{e}");
    refused(
        &nx(&[patched(link("dist/l", "x"), 100, b"0004777\0")]),
        Rule::Mode,
        &["`dist/l`", "setuid", "4777"],
    );
    // A symlink's own permissions are never used: any of them is fine.
    for mode in [0o777, 0o755, 0o000, 0o120777] {
        let mut h = H::new(b"dist/l", b'2', mode, 0);
        h.link = b"x".to_vec();
        accepted(&nx(&[h.with(b"")]));
    }
}

/// Found by an earlier fuzzing run (a small input for it in `fuzz/regressions/validate/`): zlib-rs
/// may notice corrupt data in one call without failing it and fail the next call with "repeated
/// call with bad state", so the reason for a corrupt deflate stream depended on how the payload was
/// cut. Every corruption here is refused with one reason whatever the chunking (`verdict_with`
/// feeds whole, 1 byte, odd sizes).
#[test]
fn corrupt_deflate_data_is_refused_with_one_reason_whatever_the_chunking() {
    let lines: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("line {i} {}\n", i * 7919 % 1000).into_bytes())
        .collect();
    let a = nx(&[file("dist/log.txt", &lines)]);
    let mut gzip = 0;
    for i in 0..150 {
        let mut bad = a.clone();
        let at = 20 + (i * 7919) % (a.len() - 40);
        bad[at] ^= 1 << (i % 8);
        let Err(r) = verdict_with(&bad, &limits()) else {
            continue;
        };
        if r.rule() == Rule::Gzip {
            gzip += 1;
            assert!(
                !r.reason().contains("bad state"),
                "the decoder's state leaks into the reason: {r}"
            );
        }
    }
    assert!(gzip > 50, "only {gzip} corruptions refused as gzip");
}

// ---------------------------------------------------------------------------- extension headers

/// A GNU long-name (`L`) header for `name` followed by the entry (its own name field cut).
fn gnu_long(name: &str, flag: u8, data: &[u8]) -> Vec<u8> {
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    let l = H::new(b"././@LongLink", b'L', 0o644, n.len() as u64).with(&n);
    let cut = &name.as_bytes()[..name.len().min(100)];
    [l, H::new(cut, flag, 0o644, data.len() as u64).with(data)].concat()
}

fn pax(records: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = format!(" {k}={v}\n");
        let mut len = rest.len() + 1;
        while len.to_string().len() + rest.len() != len {
            len += 1;
        }
        body.extend_from_slice(format!("{len}{rest}").as_bytes());
    }
    let mut h = H::new(b"PaxHeaders/x", b'x', 0o644, body.len() as u64);
    h.magic = *USTAR;
    h.with(&body)
}

#[test]
fn long_names_and_pax_headers_are_read_and_checked() {
    let long = format!("dist/{}/file.js", "n".repeat(180));
    assert_eq!(accepted(&nx(&[gnu_long(&long, b'0', b"x")])).files, 1);
    let evil = format!("{}/../../../etc/x", "a".repeat(120));
    refused(&nx(&[gnu_long(&evil, b'0', b"")]), Rule::Path, &["`..`"]);
    // A NUL inside a long name (one trailing NUL is the terminator).
    refused(
        &nx(&[gnu_long("dist/a\0b", b'0', b"")]),
        Rule::Path,
        &["NUL"],
    );
    // A long link target (`K`).
    let target = format!("../{}", "t".repeat(150));
    let k = H::new(b"././@LongLink", b'K', 0o644, target.len() as u64 + 1)
        .with(format!("{target}\0").as_bytes());
    let mut l = H::new(b"dist/l", b'2', 0o777, 0);
    l.link = b"decoy".to_vec();
    accepted(&nx(&[dir("dist/"), [k.clone(), l.with(b"")].concat()]));
    let k_out = H::new(b"././@LongLink", b'K', 0o644, 9).with(b"../../x\0\0");
    refused(&nx(&[[k_out, l.with(b"")].concat()]), Rule::Symlink, &[]);
    // PAX path, linkpath and size.
    let long_pax = format!("dist/{}", "p".repeat(200));
    assert_eq!(
        accepted(&nx(&[
            [pax(&[("path", &long_pax)]), file("x", b"1")].concat()
        ]))
        .files,
        1
    );
    refused(
        &nx(&[[pax(&[("path", "../../etc/passwd")]), file("innocent", b"1")].concat()]),
        Rule::Path,
        &["`../../etc/passwd`"],
    );
    refused(
        &nx(&[[pax(&[("linkpath", "/etc")]), link("dist/l", "ok")].concat()]),
        Rule::Symlink,
        &["absolute"],
    );
    // PAX size overrides the header's: 3 bytes of data, not 0.
    let sized = [
        pax(&[("size", "3")]),
        H::new(b"a", b'0', 0o644, 0).block().to_vec(),
        b"abc".to_vec(),
        vec![0u8; 509],
    ]
    .concat();
    assert_eq!(accepted(&nx(&[sized])).files, 1);
    accepted(&nx(&[[
        pax(&[("mtime", "1.5"), ("SCHILY.xattr.user.x", "y")]),
        file("a", b""),
    ]
    .concat()]));
}

#[test]
fn ambiguous_extension_headers_are_refused() {
    let long = format!("dist/{}", "n".repeat(120));
    refused(
        &nx(&[[pax(&[("path", "a")]), gnu_long(&long, b'0', b"")].concat()]),
        Rule::Tar,
        &["follows a PAX header"],
    );
    let l = H::new(b"././@LongLink", b'L', 0o644, 2).with(b"a\0");
    refused(
        &nx(&[[l.clone(), l.clone(), file("x", b"")].concat()]),
        Rule::Tar,
        &["two GNU long name"],
    );
    refused(
        &nx(&[[l.clone(), pax(&[("path", "b")]), file("x", b"")].concat()]),
        Rule::Tar,
        &["both a GNU long name and a PAX path"],
    );
    refused(&gz(&tar(&[tail(), l])), Rule::Tar, &["no entry after it"]);
    refused(
        &nx(&[[pax(&[("path", "a"), ("path", "b")]), file("x", b"")].concat()]),
        Rule::Tar,
        &["`path` is given twice"],
    );
    refused(
        &nx(&[[pax(&[("GNU.sparse.major", "1")]), file("x", b"")].concat()]),
        Rule::Tar,
        &["sparse"],
    );
    refused(
        &nx(&[[pax(&[("size", "x")]), file("x", b"")].concat()]),
        Rule::Tar,
        &["`size`"],
    );
    let mut broken = H::new(b"PaxHeaders/x", b'x', 0o644, 8);
    broken.magic = *USTAR;
    refused(
        &nx(&[[broken.with(b"99 path\n"), file("x", b"")].concat()]),
        Rule::Tar,
        &["PAX"],
    );
}

// ------------------------------------------------------------------------------------------ limits

#[test]
fn entry_count_is_bounded_counting_implied_directories() {
    let few = ValidationLimits {
        max_entries: 5,
        ..limits()
    };
    // 3 files + terminalOutput + code: 5 paths.
    let five = nx(&[file("a", b""), file("b", b""), file("c", b"")]);
    assert!(verdict_with(&five, &few).is_ok());
    let six = nx(&[
        file("a", b""),
        file("b", b""),
        file("c", b""),
        file("d", b""),
    ]);
    refused_with(&six, &few, Rule::Limit, &["more than 5 paths"]);
    // One entry, but 6 directories implied by its path.
    refused_with(
        &nx(&[file("1/2/3/4/5/6", b"")]),
        &few,
        Rule::Limit,
        &["more than 5 paths"],
    );
}

#[test]
fn expansion_is_bounded_with_a_floor_for_small_artifacts() {
    let zeros = vec![0u8; 4 << 20];
    // 4 MiB of zeros compress ~1000:1, far beyond the ratio, but stay under the floor.
    let small = nx(&[file("dist/zeros", &zeros)]);
    assert!(small.len() < 8 << 10);
    accepted(&small);
    let tight = ValidationLimits {
        ratio_floor_bytes: 1 << 20,
        ..limits()
    };
    refused_with(
        &small,
        &tight,
        Rule::Limit,
        &["200 times its compressed size", "bomb"],
    );
    let capped = ValidationLimits {
        max_expanded_bytes: 1 << 20,
        ..limits()
    };
    refused_with(&small, &capped, Rule::Limit, &["more than 1048576 bytes"]);
}

#[test]
fn a_decompression_bomb_is_refused_after_inflating_at_most_the_bound() {
    // 1 GiB of zeros in one entry: about 1 MB compressed.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&H::new(b"dist/bomb", b'0', 0o644, 1 << 30).block())
        .unwrap();
    let block = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&block).unwrap();
    }
    enc.write_all(&tar(&[tail()])).unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    let started = std::time::Instant::now();
    let r = validate_slice(&bomb, &limits()).unwrap_err();
    assert_eq!(r.rule(), Rule::Limit, "{r}");
    assert!(r.to_string().contains("times its compressed size"), "{r}");
    eprintln!(
        "bomb of {} bytes refused in {:?}",
        bomb.len(),
        started.elapsed()
    );
    // Without the compressed length up front, the absolute bound still holds while inflating,
    // and the ratio is checked at the end.
    let capped = ValidationLimits {
        max_expanded_bytes: 300 << 20,
        ..limits()
    };
    let mut v = Validator::new(capped, None);
    let r = bomb
        .chunks(1 << 16)
        .try_for_each(|c| v.feed(c))
        .unwrap_err();
    assert!(r.to_string().contains("more than 314572800 bytes"), "{r}");
}

// ------------------------------------------------------------------------------ the API contract

#[test]
fn a_refused_validator_keeps_refusing_and_reader_errors_are_not_verdicts() {
    let mut v = Validator::new(limits(), None);
    let r = v.feed(b"garbage!").unwrap_err();
    assert_eq!(v.feed(&nx(&[])).unwrap_err(), r);
    assert_eq!(v.finish().unwrap_err(), r);
    struct Broken;
    impl std::io::Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk gone"))
        }
    }
    assert!(validate_reader(Broken, &limits(), None).is_err());
}

#[test]
fn the_same_verdict_for_every_chunking_of_every_shape() {
    // verdict_with compares 1-byte, odd and large chunks with the whole; here across shapes whose
    // refusal point falls at different places of the stream.
    let shapes: Vec<Vec<u8>> = vec![
        nx(&[file("dist/a", &noise(200_000, 5)), file("../x", b"")]),
        nx(&[
            file("dist/a", &noise(100_000, 6)),
            link("dist/l", "../../x"),
        ]),
        nx(&[
            dir("d/"),
            file("d/a", &vec![7u8; 300_000]),
            typed("d/p", b'6'),
        ]),
        gz(&[
            tar(&[file("a", &noise(70_000, 7)), tail()]),
            b"tail".to_vec(),
        ]
        .concat()),
    ];
    for s in &shapes {
        let _ = verdict_with(s, &limits());
    }
}

// ------------------------------------------------------------------------------ ValidatingStore

mod store {
    use super::*;
    use common::{artifact, body, object_files, read_all};
    use nx_open_cache::key::{Prefix, TaskHash};
    use nx_open_cache::store::fs::FsStore;
    use nx_open_cache::store::guard::{GuardPolicy, GuardedStore};
    use nx_open_cache::store::validate::{ValidatingStore, ValidationPolicy};
    use nx_open_cache::store::{ErrorKind, PutOutcome, Store};
    use std::sync::Arc;

    fn hash(h: &str) -> TaskHash {
        TaskHash::parse(h).unwrap()
    }

    /// A hostile payload: a tar.gz that writes outside the restore directory.
    fn hostile() -> Vec<u8> {
        nx(&[file("../../escape", b"pwned")])
    }

    fn fs_store(root: &std::path::Path, inline_limit: u64) -> Arc<FsStore> {
        let s = FsStore::new(root, Prefix::default()).with_inline_limit(inline_limit);
        s.prepare().unwrap();
        Arc::new(s)
    }

    fn checking(inner: Arc<FsStore>, policy: ValidationPolicy) -> ValidatingStore {
        ValidatingStore::new(inner, policy)
    }

    #[tokio::test]
    async fn uploads_are_checked_and_a_refused_one_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = checking(
            fs_store(dir.path(), 1 << 20),
            ValidationPolicy::server(limits()),
        );
        let good = artifact(300_000, 1);
        let n = good.len() as u64;
        assert_eq!(
            s.put(&hash("1"), &mut body(&good, 4096), Some(n)).await,
            Ok(PutOutcome::Stored(n))
        );
        assert_eq!(read_all(s.get(&hash("1")).await.unwrap().unwrap()), good);

        // Refused at the bad entry (mid-stream) and at the end (truncated): nothing stored.
        let bad = hostile();
        let mut truncated = artifact(100_000, 2);
        truncated.truncate(50_000);
        for (h, payload, words) in [
            ("2", &bad, "`../../escape`"),
            ("3", &truncated, "truncated"),
        ] {
            let e = s
                .put(
                    &hash(h),
                    &mut body(payload, 1000),
                    Some(payload.len() as u64),
                )
                .await
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Refused, "{e}");
            assert!(e.message.starts_with("not a valid Nx artifact: "), "{e}");
            assert!(e.message.contains(words), "{e}");
            assert!(
                !e.message.contains(h),
                "the reason never holds the hash: {e}"
            );
        }
        assert_eq!(object_files(dir.path()).len(), 1);
        // A body that does not match its Content-Length is the client's mistake, as before.
        let e = s
            .put(&hash("4"), &mut body(&good, 4096), Some(n + 10))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{e}");
        let e = s
            .put(&hash("4"), &mut body(&good, 4096), Some(n - 10))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{e}");
        assert_eq!(object_files(dir.path()).len(), 1);
        // First writer wins is untouched: the existing hash is not read again.
        assert_eq!(
            s.put(&hash("1"), &mut body(&bad, 100), Some(bad.len() as u64))
                .await,
            Ok(PutOutcome::AlreadyExists)
        );
    }

    #[tokio::test]
    async fn a_hostile_stored_object_is_refused_removed_and_replaceable() {
        for inline_limit in [8 << 20, 0] {
            let dir = tempfile::tempdir().unwrap();
            let raw = fs_store(dir.path(), inline_limit);
            let bad = hostile();
            raw.put(&hash("7"), &mut body(&bad, 512), Some(bad.len() as u64))
                .await
                .unwrap();
            let s = checking(raw.clone(), ValidationPolicy::server(limits()));
            let e = s.get(&hash("7")).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::Refused, "{e}");
            assert!(e.message.contains("`../../escape`"), "{e}");
            assert!(e.message.ends_with("; removed from the store"), "{e}");
            assert!(
                object_files(dir.path()).is_empty(),
                "inline limit {inline_limit}"
            );
            // The next correct upload of that hash is stored and served.
            let good = artifact(20_000, 3);
            let n = good.len() as u64;
            assert_eq!(
                s.put(&hash("7"), &mut body(&good, 999), Some(n)).await,
                Ok(PutOutcome::Stored(n))
            );
            assert_eq!(read_all(s.get(&hash("7")).await.unwrap().unwrap()), good);
        }
    }

    #[tokio::test]
    async fn a_large_valid_object_is_served_from_its_file_rewound_to_the_payload() {
        let dir = tempfile::tempdir().unwrap();
        let raw = fs_store(dir.path(), 0);
        let good = artifact(3 << 20, 4);
        raw.put(&hash("8"), &mut body(&good, 65536), Some(good.len() as u64))
            .await
            .unwrap();
        let s = checking(raw, ValidationPolicy::proxy(true, limits()));
        let a = s.get(&hash("8")).await.unwrap().unwrap();
        assert!(matches!(
            a.body,
            nx_open_cache::store::ArtifactBody::File { .. }
        ));
        assert_eq!(read_all(a), good);
    }

    #[tokio::test]
    async fn without_delete_refused_the_object_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let raw = fs_store(dir.path(), 8 << 20);
        let bad = gz(b"not a tar");
        raw.put(&hash("9"), &mut body(&bad, 512), Some(bad.len() as u64))
            .await
            .unwrap();
        let s = checking(raw, ValidationPolicy::proxy(false, limits()));
        let e = s.get(&hash("9")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused);
        assert!(!e.message.contains("removed"), "{e}");
        assert_eq!(object_files(dir.path()).len(), 1);
        // The proxy's policy does not check uploads (Nx's own).
        let n = bad.len() as u64;
        assert_eq!(
            s.put(&hash("10"), &mut body(&bad, 512), Some(n)).await,
            Ok(PutOutcome::Stored(n))
        );
    }

    #[tokio::test]
    async fn a_reader_with_lowered_limits_keeps_what_only_its_limits_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let raw = fs_store(dir.path(), 8 << 20);
        let (valid, bad) = (artifact(20_000, 6), hostile());
        for (h, payload) in [("12", &valid), ("13", &bad)] {
            raw.put(
                &hash(h),
                &mut body(payload, 512),
                Some(payload.len() as u64),
            )
            .await
            .unwrap();
        }
        let lowered = ValidationLimits {
            max_entries: 2,
            ..limits()
        };
        let s = checking(raw.clone(), ValidationPolicy::proxy(true, lowered));
        let e = s.get(&hash("12")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{e}");
        assert!(e.message.contains("more than 2 paths"), "{e}");
        assert!(
            e.message
                .ends_with("; kept in the store (over this machine's lowered limits only)"),
            "{e}"
        );
        // What breaks a rule is removed as before.
        let e = s.get(&hash("13")).await.unwrap_err();
        assert!(e.message.ends_with("; removed from the store"), "{e}");
        assert_eq!(object_files(dir.path()).len(), 1);
        // A reader with the defaults gets the kept artifact.
        let s = checking(raw, ValidationPolicy::proxy(true, limits()));
        assert_eq!(read_all(s.get(&hash("12")).await.unwrap().unwrap()), valid);
        // Raised limits are not lowered: over them, an object is removed.
        let raised = ValidationLimits {
            max_entries: 2_000_000,
            ..limits()
        };
        assert!(ValidationPolicy::proxy(true, raised).delete_over_limit);
    }

    #[tokio::test]
    async fn namespaced_views_are_checked_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = checking(
            fs_store(dir.path(), 1 << 20),
            ValidationPolicy::server(limits()),
        );
        let ns = s.with_namespace(&Prefix::parse("team/").unwrap()).unwrap();
        let bad = hostile();
        let e = ns
            .put(&hash("11"), &mut body(&bad, 100), Some(bad.len() as u64))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused);
        assert!(object_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn refusals_never_open_the_outage_breaker() {
        let dir = tempfile::tempdir().unwrap();
        let raw = fs_store(dir.path(), 8 << 20);
        let bad = hostile();
        for h in ["21", "22", "23", "24"] {
            raw.put(&hash(h), &mut body(&bad, 512), Some(bad.len() as u64))
                .await
                .unwrap();
        }
        let good = artifact(1000, 5);
        raw.put(&hash("25"), &mut body(&good, 512), Some(good.len() as u64))
            .await
            .unwrap();
        let guarded = GuardedStore::without_probe(
            Arc::new(checking(raw, ValidationPolicy::proxy(false, limits()))),
            GuardPolicy {
                failures_to_open: 1,
                ..GuardPolicy::default()
            },
        );
        for h in ["21", "22", "23", "24"] {
            let e = guarded.get(&hash(h)).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::Refused, "{e}");
        }
        assert_eq!(guarded.open_reason(), None);
        assert_eq!(
            read_all(guarded.get(&hash("25")).await.unwrap().unwrap()),
            good
        );
    }

    /// A store that hands out whatever payload it was given (in memory, or from a file when
    /// `file`), claiming `digest` for it.
    struct Claims {
        payload: std::sync::Mutex<Vec<u8>>,
        digest: Option<[u8; 32]>,
        file: bool,
    }

    impl Store for Claims {
        fn get<'a>(
            &'a self,
            _hash: &'a TaskHash,
        ) -> futures_util::future::BoxFuture<
            'a,
            Result<Option<nx_open_cache::store::Artifact>, nx_open_cache::store::StoreError>,
        > {
            let bytes = self.payload.lock().unwrap().clone();
            let len = bytes.len() as u64;
            let body = if self.file {
                use std::io::{Seek, Write};
                let mut f = tempfile::tempfile().unwrap();
                f.write_all(b"header").unwrap();
                f.write_all(&bytes).unwrap();
                f.seek(std::io::SeekFrom::Start(6)).unwrap();
                nx_open_cache::store::ArtifactBody::File { file: f, offset: 6 }
            } else {
                nx_open_cache::store::ArtifactBody::Memory(bytes.into())
            };
            Box::pin(async move {
                Ok(Some(nx_open_cache::store::Artifact {
                    len,
                    body,
                    digest: self.digest,
                }))
            })
        }
        fn put<'a>(
            &'a self,
            _hash: &'a TaskHash,
            _body: &'a mut nx_open_cache::store::BodyStream<'_>,
            _len: Option<u64>,
        ) -> futures_util::future::BoxFuture<'a, Result<PutOutcome, nx_open_cache::store::StoreError>>
        {
            Box::pin(async { Ok(PutOutcome::AlreadyExists) })
        }
        fn describe(&self) -> String {
            "claims".into()
        }
        fn with_namespace(
            &self,
            _ns: &Prefix,
        ) -> Result<Arc<dyn Store>, nx_open_cache::store::StoreError> {
            unreachable!("not used")
        }
    }

    #[tokio::test]
    async fn a_pass_is_remembered_by_the_digest_the_store_checked() {
        // The memory is process-wide per set of limits: limits of this test's own keep other
        // tests' passes out of its counts.
        let own = ValidationPolicy::proxy(
            false,
            ValidationLimits {
                max_entries: 1_000_003,
                ..ValidationLimits::default()
            },
        );
        // From the fs store (in memory and from a file), a pass is remembered once per payload;
        // a refusal is not.
        for (seed, inline_limit) in [(6, 8 << 20), (16, 0)] {
            let dir = tempfile::tempdir().unwrap();
            let raw = fs_store(dir.path(), inline_limit);
            let good = artifact(2 << 20, seed);
            raw.put(
                &hash("30"),
                &mut body(&good, 65536),
                Some(good.len() as u64),
            )
            .await
            .unwrap();
            let bad = hostile();
            raw.put(&hash("31"), &mut body(&bad, 512), Some(bad.len() as u64))
                .await
                .unwrap();
            let s = checking(raw, own.clone());
            let before = s.remembered();
            for _ in 0..3 {
                assert_eq!(read_all(s.get(&hash("30")).await.unwrap().unwrap()), good);
                assert_eq!(s.remembered(), before + 1, "inline limit {inline_limit}");
            }
            for _ in 0..2 {
                assert_eq!(
                    s.get(&hash("31")).await.unwrap_err().kind,
                    ErrorKind::Refused
                );
            }
            assert_eq!(s.remembered(), before + 1);
            // Another store with the same limits (the host's next run) shares the memory.
            let dir2 = tempfile::tempdir().unwrap();
            let next = checking(fs_store(dir2.path(), inline_limit), own.clone());
            assert_eq!(next.remembered(), before + 1);
        }

        // What the memory trusts: for bytes in memory (immutable once the store hashed them), the
        // store's claim. A store that lies about the digest gets its bytes through once the digest
        // has passed; a store that claims none is checked each time.
        let good = artifact(1000, 7);
        let sha = |b: &[u8]| {
            let mut h = nx_open_cache::envelope::PayloadDigest::new();
            h.update(b);
            h.finish().1
        };
        let d = sha(&good);
        let lying = Arc::new(Claims {
            payload: std::sync::Mutex::new(good.clone()),
            digest: Some(d),
            file: false,
        });
        let s = ValidatingStore::new(lying.clone(), own.clone());
        assert_eq!(read_all(s.get(&hash("32")).await.unwrap().unwrap()), good);
        *lying.payload.lock().unwrap() = hostile();
        assert!(
            s.get(&hash("32")).await.is_ok(),
            "the remembered digest is trusted"
        );

        let honest = Arc::new(Claims {
            payload: std::sync::Mutex::new(good.clone()),
            digest: None,
            file: false,
        });
        let s = ValidatingStore::new(honest.clone(), own.clone());
        let before = s.remembered();
        assert!(s.get(&hash("33")).await.is_ok());
        assert_eq!(s.remembered(), before);
        *honest.payload.lock().unwrap() = hostile();
        assert_eq!(
            s.get(&hash("33")).await.unwrap_err().kind,
            ErrorKind::Refused
        );

        // A file may be rewritten between the store's hashing pass and the check: a pass is
        // remembered only for the digest of the bytes the check read. A valid artifact read from
        // a file under another artifact's digest passes but is not remembered, so the other
        // artifact's digest later brings no unchecked bytes through.
        let other = artifact(1000, 8);
        let swapped = Arc::new(Claims {
            payload: std::sync::Mutex::new(good.clone()),
            digest: Some(sha(&other)),
            file: true,
        });
        let s = ValidatingStore::new(swapped.clone(), own.clone());
        let before = s.remembered();
        assert_eq!(read_all(s.get(&hash("34")).await.unwrap().unwrap()), good);
        assert_eq!(
            s.remembered(),
            before,
            "a digest that is not the bytes' is not remembered"
        );
        *swapped.payload.lock().unwrap() = hostile();
        assert_eq!(
            s.get(&hash("34")).await.unwrap_err().kind,
            ErrorKind::Refused
        );
        // From a file whose bytes are the claimed digest's, the pass is remembered.
        let honest_file = Arc::new(Claims {
            payload: std::sync::Mutex::new(other.clone()),
            digest: Some(sha(&other)),
            file: true,
        });
        let s = ValidatingStore::new(honest_file, own.clone());
        let before = s.remembered();
        assert_eq!(read_all(s.get(&hash("35")).await.unwrap().unwrap()), other);
        assert_eq!(s.remembered(), before + 1);
    }
}

// ------------------------------------------------------------------ the proxy and serve over HTTP

mod http {
    use super::*;
    use common::{artifact, body, object_files};
    use nx_open_cache::key::{Prefix, TaskHash};
    use nx_open_cache::store::fs::FsStore;
    use nx_open_cache::store::Store;
    use std::collections::HashMap;
    use std::path::Path;

    const RW: &str = "rw-secret-0123456789abcdef";

    /// Writes `payload` under `hash` straight into the fs storage at `root` (another writer of the
    /// storage, unchecked).
    async fn plant(root: &Path, hash: &str, payload: &[u8]) {
        let s = FsStore::new(root, Prefix::default());
        s.prepare().unwrap();
        s.put(
            &TaskHash::parse(hash).unwrap(),
            &mut body(payload, 4096),
            Some(payload.len() as u64),
        )
        .await
        .unwrap();
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    async fn serve(root: &Path, extra: &[&str]) -> nx_open_cache::serve::RunningServe {
        let mut args: Vec<String> = vec![
            "--storage".into(),
            format!("fs:{}", root.display()),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--log".into(),
            "off".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let e = env(&[(
            "NX_OPEN_CACHE_SERVER_TOKENS",
            &format!("ci:read-write:{RW}"),
        )]);
        let config = nx_open_cache::serve::config::resolve(&args, &e, root).unwrap();
        nx_open_cache::serve::start(&config, &e).unwrap()
    }

    async fn metrics(url: &str) -> String {
        reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_answers_a_hostile_put_400_with_the_reason_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let s = serve(&root, &[]).await;
        let client = reqwest::Client::new();
        let put = |hash: &str, payload: Vec<u8>| {
            client
                .put(format!("{}/v1/cache/{hash}", s.url))
                .bearer_auth(RW)
                .header("content-length", payload.len())
                .body(payload)
                .send()
        };
        for (hash, payload, words) in [
            ("100", Vec::new(), "empty"),
            ("101", noise(5000, 1), "not gzip"),
            ("102", hostile_symlink(), "`dist/canary`"),
        ] {
            let r = put(hash, payload).await.unwrap();
            assert_eq!(r.status(), 400, "{hash}");
            let text = r.text().await.unwrap();
            assert!(
                text.starts_with("nx-open-cache: not stored: not a valid Nx artifact: "),
                "{text}"
            );
            assert!(text.contains(words), "{text}");
        }
        assert!(object_files(&root).is_empty(), "{:?}", object_files(&root));
        let good = artifact(100_000, 9);
        assert_eq!(put("103", good.clone()).await.unwrap().status(), 200);
        let got = client
            .get(format!("{}/v1/cache/103", s.url))
            .bearer_auth(RW)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().to_vec(), good);
        let m = metrics(&s.url).await;
        assert!(
            m.contains("nx_open_cache_refused_total{operation=\"put\"} 3"),
            "{m}"
        );
        s.stop().await;
    }

    fn hostile_symlink() -> Vec<u8> {
        nx(&[
            dir("dist/"),
            link("dist/canary", "../../canary"),
            file("dist/canary/x", b""),
        ])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_answers_404_for_a_hostile_stored_object_counts_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        plant(&root, "200", &hostile_symlink()).await;
        plant(&root, "201", &gz(&[1u8; 100])).await;
        let s = serve(&root, &[]).await;
        let client = reqwest::Client::new();
        for hash in ["200", "201"] {
            let r = client
                .get(format!("{}/v1/cache/{hash}", s.url))
                .bearer_auth(RW)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{hash}");
        }
        let m = metrics(&s.url).await;
        assert!(
            m.contains("nx_open_cache_refused_total{operation=\"get\"} 2"),
            "{m}"
        );
        assert!(
            object_files(&root).is_empty(),
            "refused objects are removed"
        );
        s.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_takes_its_limits_from_options() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let s = serve(&root, &["--max-artifact-entries", "3"]).await;
        let r = reqwest::Client::new()
            .put(format!("{}/v1/cache/300", s.url))
            .bearer_auth(RW)
            .body(nx(&[dir("dist/"), file("dist/a", b"1")]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("more than 3 paths"));
        assert!(
            s.banner.ends_with("artifacts checked: uploads and reads"),
            "{}",
            s.banner
        );
        s.stop().await;
        // Uploads only (a server that is the only writer of its storage): what is read is served
        // as it is.
        plant(&root, "301", &gz(b"junk")).await;
        let s = serve(&root, &["--check-artifacts", "uploads"]).await;
        assert!(
            s.banner.ends_with("artifacts checked: uploads"),
            "{}",
            s.banner
        );
        let client = reqwest::Client::new();
        let got = client
            .get(format!("{}/v1/cache/301", s.url))
            .bearer_auth(RW)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        let put = client
            .put(format!("{}/v1/cache/302", s.url))
            .bearer_auth(RW)
            .body(gz(b"junk"))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 400);
        s.stop().await;
        let s = serve(&root, &["--check-artifacts", "off"]).await;
        assert!(s.banner.ends_with("artifacts checked: off"), "{}", s.banner);
        let put = client
            .put(format!("{}/v1/cache/302", s.url))
            .bearer_auth(RW)
            .body(gz(b"junk"))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
        s.stop().await;
        let bad = nx_open_cache::serve::config::resolve(
            &[
                "--storage".into(),
                "fs:/x".into(),
                "--max-expansion-ratio".into(),
                "0".into(),
            ],
            &env(&[(
                "NX_OPEN_CACHE_SERVER_TOKENS",
                &format!("ci:read-write:{RW}"),
            )]),
            tmp.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("--max-expansion-ratio") && bad.contains("\"0\""),
            "{bad}"
        );
        let ok = nx_open_cache::serve::config::resolve(
            &[
                "--storage".into(),
                "fs:/x".into(),
                "--max-expanded-size".into(),
                "2GiB".into(),
                "--max-expansion-ratio".into(),
                "50".into(),
            ],
            &env(&[(
                "NX_OPEN_CACHE_SERVER_TOKENS",
                &format!("ci:read-write:{RW}"),
            )]),
            tmp.path(),
        )
        .unwrap();
        assert_eq!(ok.validation.limits.max_expanded_bytes, 2 << 30);
        assert_eq!(ok.validation.limits.max_expansion_ratio, 50);
        assert_eq!(ok.validation.limits.max_entries, limits().max_entries);
        assert!(ok.validation.on_get && ok.validation.on_put);
    }

    fn proxy(dir: &Path, vars: &[(&str, &str)]) -> nx_open_cache::proxy::Proxy {
        let e = env(vars);
        let config =
            nx_open_cache::config::resolve(&serde_json::json!({"path": "store"}), &e, dir).unwrap();
        nx_open_cache::proxy::start(&config, &e).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_proxy_turns_a_hostile_object_into_a_miss_named_in_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        plant(&root, "400", &hostile_symlink()).await;
        plant(&root, "401", &hostile_symlink()).await;
        // A read-only run reports it and leaves the store alone.
        let ro = proxy(dir.path(), &[("NX_OPEN_CACHE_MODE", "read-only")]);
        let get = |p: &nx_open_cache::proxy::Proxy, hash: &str| {
            reqwest::Client::new()
                .get(format!("{}/v1/cache/{hash}", p.url))
                .bearer_auth(&p.token)
                .send()
        };
        assert_eq!(get(&ro, "400").await.unwrap().status(), 404);
        let s = ro.stop().await;
        assert_eq!((s.misses, s.refused_count, s.error_count), (1, 1, 0));
        assert_eq!(object_files(&root).len(), 2);
        // A read-write run removes what it refuses.
        let rw = proxy(dir.path(), &[]);
        assert_eq!(get(&rw, "400").await.unwrap().status(), 404);
        assert_eq!(get(&rw, "401").await.unwrap().status(), 404);
        let s = rw.stop().await;
        assert_eq!((s.misses, s.refused_count, s.error_count), (2, 2, 0));
        let r = &s.refusals[0];
        assert_eq!(r.hashes, ["400", "401"]);
        assert!(
            r.reason
                .starts_with("not a valid Nx artifact: entry `dist/canary"),
            "{r:?}"
        );
        assert!(r.reason.contains("removed from the store"), "{r:?}");
        assert!(object_files(&root).is_empty());
    }
}
