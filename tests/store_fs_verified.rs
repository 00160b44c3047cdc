//! The fs store's memory of verified files: an object is hashed before it is served the first
//! time, then served without hashing while its file keeps the state that passed (device, inode,
//! size, mtime, ctime). Every change of that state (content rewritten with the same size, times
//! touched or set back, the file replaced by a rename) makes it verified again, so a corrupt one
//! is never served; a file changed while it is streamed cuts the response off.

mod common;

use common::{body, noise, read_all};
use nx_open_cache::config::Mode;
use nx_open_cache::key::{Prefix, TaskHash};
use nx_open_cache::server::{self, Auth, Limits, LogFormat, Role, ServerSettings, TokenSpec};
use nx_open_cache::stats::Stats;
use nx_open_cache::store::fs::FsStore;
use nx_open_cache::store::{ErrorKind, Store};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn hash(s: &str) -> TaskHash {
    TaskHash::parse(s).expect("valid test hash")
}

/// A state is remembered once its ctime is a second old (file times come from a coarse clock):
/// waiting that long lets the next read remember it.
const SETTLE: Duration = Duration::from_millis(1100);

/// The sizes that take each path: served from memory (small, then medium with the default inline
/// limit) and streamed from the file (inline limit 0).
const CASES: [(u64, usize); 3] = [(8 << 20, 1000), (8 << 20, 600 << 10), (0, 3 << 20)];

async fn stored(dir: &Path, inline: u64, size: usize, h: &TaskHash) -> (FsStore, Vec<u8>) {
    let s = FsStore::new(dir.join(format!("c{inline}-{size}")), Prefix::default())
        .with_inline_limit(inline);
    s.prepare().unwrap();
    let data = noise(size, size as u64);
    s.put(h, &mut body(&data, 65536), Some(size as u64))
        .await
        .unwrap();
    (s, data)
}

/// Reads the object until its state is remembered (bounded), checking every answer. Under
/// `portable-fallbacks` (as on Windows: no file identity, no ctime) nothing is ever remembered:
/// every read verifies, which the rest of each test then checks.
async fn remembered(s: &FsStore, h: &TaskHash, data: &[u8], case: &str) {
    if !cfg!(unix_native) {
        let got = s.get(h).await.unwrap().expect("hit");
        assert_eq!(read_all(got), data, "{case}: served intact");
        assert!(!s.remembers_verified(h), "{case}: nothing is remembered");
        return;
    }
    for _ in 0..2 {
        let got = s.get(h).await.unwrap().expect("hit");
        assert_eq!(read_all(got), data, "{case}: served intact");
        if s.remembers_verified(h) {
            return;
        }
        tokio::time::sleep(SETTLE).await;
    }
    panic!("{case}: the verified state was not remembered");
}

fn flip_in_place(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let at = len - 10;
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut byte = [0u8; 1];
    std::fs::read(path)
        .map(|b| byte[0] = b[at as usize] ^ 0xff)
        .unwrap();
    f.write_all(&byte).unwrap();
}

fn expect_corrupt(
    result: Result<Option<nx_open_cache::store::Artifact>, nx_open_cache::store::StoreError>,
    path: &Path,
    case: &str,
) {
    match result {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Corrupt, "{case}: {}", e.message);
            assert!(!path.exists(), "{case}: the corrupt object is removed");
        }
        Ok(found) => panic!(
            "{case}: a corrupt object was served ({:?} bytes)",
            found.map(|a| a.len)
        ),
    }
}

#[tokio::test]
async fn a_verified_object_rewritten_in_place_with_the_same_size_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    for (inline, size) in CASES {
        let case = format!("inline {inline}, {size} bytes");
        let h = hash("880001");
        let (s, data) = stored(dir.path(), inline, size, &h).await;
        remembered(&s, &h, &data, &case).await;
        let path = s.object_path(&h);
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        flip_in_place(&path);
        // The writer even sets the mtime back: the ctime still tells.
        filetime::set_file_mtime(&path, filetime::FileTime::from(mtime)).unwrap();
        assert!(!s.remembers_verified(&h), "{case}: the state changed");
        expect_corrupt(s.get(&h).await, &path, &case);
    }
}

#[tokio::test]
async fn a_verified_object_replaced_by_a_rename_is_verified_again() {
    let dir = tempfile::tempdir().unwrap();
    for (inline, size) in CASES {
        let case = format!("inline {inline}, {size} bytes");
        let h = hash("880002");
        let (s, data) = stored(dir.path(), inline, size, &h).await;
        remembered(&s, &h, &data, &case).await;
        let path = s.object_path(&h);
        // Same size, same times, one byte different, moved over the object.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let other = path.with_extension("new");
        std::fs::write(&other, &bytes).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        filetime::set_file_mtime(
            &other,
            filetime::FileTime::from_last_modification_time(&meta),
        )
        .unwrap();
        std::fs::rename(&other, &path).unwrap();
        expect_corrupt(s.get(&h).await, &path, &case);
    }
}

#[tokio::test]
async fn a_touched_object_is_verified_again_and_still_served() {
    let dir = tempfile::tempdir().unwrap();
    for (inline, size) in CASES {
        let case = format!("inline {inline}, {size} bytes");
        let h = hash("880003");
        let (s, data) = stored(dir.path(), inline, size, &h).await;
        remembered(&s, &h, &data, &case).await;
        let path = s.object_path(&h);
        filetime::set_file_mtime(&path, filetime::FileTime::now()).unwrap();
        assert!(
            !s.remembers_verified(&h),
            "{case}: touching changes the state"
        );
        let got = s.get(&h).await.unwrap().expect("still a hit");
        assert_eq!(read_all(got), data, "{case}: served intact after the check");
        // And it is remembered again once settled.
        remembered(&s, &h, &data, &case).await;
    }
}

#[tokio::test]
async fn an_object_written_moments_ago_is_hashed_on_every_read_until_settled() {
    let dir = tempfile::tempdir().unwrap();
    let h = hash("880004");
    let (s, data) = stored(dir.path(), 8 << 20, 1000, &h).await;
    let got = s.get(&h).await.unwrap().expect("hit");
    assert_eq!(read_all(got), data);
    // Its ctime is less than a second old: a write in the same clock tick could go unseen.
    assert!(!s.remembers_verified(&h));
}

/// A small object remembered as verified, then changed through the same file (appended to, or
/// rewritten with another good object, small or past the small size): the next read verifies
/// what the file holds now instead of trusting the state it remembers.
#[tokio::test]
async fn a_remembered_small_object_appended_to_or_rewritten_is_verified_again() {
    let h = hash("880006");
    let dir = tempfile::tempdir().unwrap();
    let (s, data) = stored(dir.path(), 8 << 20, 1000, &h).await;
    remembered(&s, &h, &data, "appended").await;
    let path = s.object_path(&h);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    assert!(!s.remembers_verified(&h), "appending changes the state");
    expect_corrupt(s.get(&h).await, &path, "appended");
    for size in [1500usize, 300 << 10] {
        let case = format!("rewritten with {size} bytes");
        let dir = tempfile::tempdir().unwrap();
        let (s, data) = stored(dir.path(), 8 << 20, 1000, &h).await;
        remembered(&s, &h, &data, &case).await;
        let path = s.object_path(&h);
        let other = noise(size, 7);
        // Truncated and written again: the same file, another state.
        std::fs::write(&path, nx_open_cache::envelope::seal(&other)).unwrap();
        assert!(!s.remembers_verified(&h), "{case}: the state changed");
        let got = s.get(&h).await.unwrap().expect("a hit");
        assert_eq!(read_all(got), other, "{case}: the bytes it holds now");
    }
}

const TOKEN: &str = "verified-secret-0123456789abcdef";

/// A streamed response whose file is written to while it is served ends before its
/// Content-Length: the client never gets a whole artifact with bytes that were not verified.
#[tokio::test]
async fn a_file_changed_while_streamed_cuts_the_response_off() {
    let dir = tempfile::tempdir().unwrap();
    let h = hash("880005");
    let size = 32usize << 20;
    let (store, data) = stored(dir.path(), 0, size, &h).await;
    let path = store.object_path(&h);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = server::serve_server(
        listener,
        ServerSettings {
            store: Arc::new(store) as Arc<dyn Store>,
            auth: Auth {
                tokens: vec![TokenSpec::new("t", Role::ReadWrite, TOKEN)],
                anonymous_read: None,
                oidc: None,
            },
            mode: Mode::ReadWrite,
            limits: Limits::server(),
            operations: false,
            log: LogFormat::Off,
            stats: Arc::new(Stats::default()),
        },
    )
    .unwrap();
    let mut tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let request = format!(
        "GET /v1/cache/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        h.as_str()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // The head and the first bytes arrive; the client then stops reading, so the server stops
    // once the socket buffers (a few MiB at most) are full, far from the object's end.
    let mut first = vec![0u8; 64 * 1024];
    let n = tcp.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    flip_in_place(&path);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut rest)).await;
    let total = n + rest.len();
    assert!(
        read.is_ok_and(|r| r.is_err() || total < size),
        "the response was cut off ({total} bytes of {size} and a head)"
    );
    drop(data);
    running.stop().await;
}
