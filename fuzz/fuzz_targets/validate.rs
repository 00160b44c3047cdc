#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nx_open_cache_fuzz::targets::validate::run(data));
