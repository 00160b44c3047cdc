//! Fuzz targets of nx-open-cache: the bodies live in [`targets`] (shared with the main crate's
//! `tests/fuzz_corpus.rs`); `fuzz_targets/*.rs` are the libFuzzer entry points.

pub mod targets;
