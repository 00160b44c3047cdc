//! The fuzz corpora as regression tests: every file of `fuzz/corpus/<target>/` and every seed goes
//! through the same body as the libFuzzer target (`fuzz/src/targets/`, compiled into this test),
//! on stable Rust, without libFuzzer. A panic is a failure, named by target and file.
//!
//! `cargo test --test fuzz_corpus -- --ignored --exact write_seeds` (re)writes the seeds into the
//! corpus directories (`npm run fuzz` does it before fuzzing).

#[path = "../fuzz/src/targets/mod.rs"]
#[allow(dead_code)]
mod targets;

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs `inputs` through the body of `target`; returns how many ran.
fn run_all(target: &str, inputs: Vec<(String, Vec<u8>)>) -> usize {
    let body = targets::target(target).expect("a known target");
    let mut failed = Vec::new();
    let n = inputs.len();
    for (name, data) in inputs {
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "{target}: failing inputs {failed:?}");
    n
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            (path.display().to_string(), data)
        })
        .collect();
    files.sort();
    files
}

fn corpus_and_seeds(target: &str) {
    let from_corpus = run_all(target, corpus(target));
    assert!(from_corpus > 0, "{target}: the committed corpus is empty");
    run_all(target, targets::seeds::seeds(target));
}

#[test]
fn envelope_corpus_passes() {
    corpus_and_seeds("envelope");
}

#[test]
fn unpack_corpus_passes() {
    corpus_and_seeds("unpack");
}

#[test]
fn seal_open_corpus_passes() {
    corpus_and_seeds("seal_open");
}

#[test]
fn config_corpus_passes() {
    corpus_and_seeds("config");
}

#[test]
fn router_corpus_passes() {
    corpus_and_seeds("router");
}

#[test]
fn every_target_has_seeds_and_a_corpus_directory() {
    for (name, _) in targets::TARGETS {
        assert!(!targets::seeds::seeds(name).is_empty(), "{name}: no seeds");
        assert!(corpus_dir(name).is_dir(), "{name}: no corpus directory");
    }
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
#[ignore = "writes the seeds into fuzz/corpus/ (run by `npm run fuzz`)"]
fn write_seeds() {
    for (target, _) in targets::TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (name, data) in targets::seeds::seeds(target) {
            std::fs::write(dir.join(name), data).expect("write a seed");
        }
    }
}
