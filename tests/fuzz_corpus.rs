//! The fuzz corpora as regression tests: every file of `fuzz/corpus/<target>/` (minimized by
//! coverage), of `fuzz/regressions/<target>/` (inputs that once failed, kept by name) and every
//! seed goes through the same body as the libFuzzer target (`fuzz/src/targets/`, compiled into
//! this test), on stable Rust, without libFuzzer. A panic is a failure, named by target and file.
//!
//! `cargo test --test fuzz_corpus -- --ignored --exact write_seeds` writes the seeds into the
//! working corpora `fuzz/target/corpus/<target>/` (`npm run fuzz` does it before fuzzing; the
//! committed corpora change only when it merges with `--update-corpus`).

#[path = "../fuzz/src/targets/mod.rs"]
#[allow(dead_code)]
mod targets;

use std::path::{Path, PathBuf};

/// `fuzz/<under>/<target>` of this checkout.
fn dir(under: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(under)
        .join(target)
}

/// The inputs of `inputs` that make the body of `target` panic.
fn failing(target: &str, inputs: Vec<(String, Vec<u8>)>) -> Vec<String> {
    let body = targets::target(target).expect("a known target");
    inputs
        .into_iter()
        .filter(|(_, data)| std::panic::catch_unwind(|| body(data)).is_err())
        .map(|(name, _)| name)
        .collect()
}

/// The files of `dir`, sorted by name; none when it does not exist.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| {
            let path = e.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            (path.display().to_string(), data)
        })
        .collect();
    files.sort();
    files
}

/// Every target: its committed corpus is not empty, and no corpus file, regression or seed fails
/// its body.
#[test]
fn every_corpus_file_and_seed_passes_its_target() {
    let mut failed = Vec::new();
    for (target, _) in targets::TARGETS {
        let mut inputs = files(&dir("corpus", target));
        assert!(
            !inputs.is_empty(),
            "{target}: the committed corpus is empty"
        );
        inputs.extend(files(&dir("regressions", target)));
        let seeds = targets::seeds::seeds(target);
        assert!(!seeds.is_empty(), "{target}: no seeds");
        failed.extend(failing(target, inputs));
        failed.extend(
            failing(target, seeds)
                .into_iter()
                .map(|s| format!("{target} {s}")),
        );
    }
    assert!(failed.is_empty(), "failing inputs: {failed:#?}");
}

/// The bodies check successful results too (what an unpack restored, what an envelope opened
/// to): the seed artifact must reach those paths, or the corpus would only exercise refusals.
#[test]
fn the_seed_artifact_is_valid_so_the_success_checks_run() {
    use nx_open_cache::archive::Format;
    let nx = targets::seeds::artifact(Format::Nx);
    assert!(nx_open_cache::envelope::open(&nx_open_cache::envelope::seal(&nx)).is_ok());
    let dir = tempfile::tempdir().expect("tempdir");
    let unpacked = nx_open_cache::archive::unpack_bytes(&nx, &dir.path().join("out"));
    assert!(unpacked.is_ok(), "{unpacked:?}");
}

#[test]
#[ignore = "writes the seeds into fuzz/target/corpus/ (run by `npm run fuzz`)"]
fn write_seeds() {
    for (target, _) in targets::TARGETS {
        let work = dir("target/corpus", target);
        std::fs::create_dir_all(&work).expect("create the working corpus directory");
        for (name, data) in targets::seeds::seeds(target) {
            std::fs::write(work.join(name), data).expect("write a seed");
        }
    }
}
