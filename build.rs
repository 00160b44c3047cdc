fn main() {
    napi_build::setup();
    // `unix_native`: the Unix system calls (`openat2`, `renameat2`, `linkat`, `/proc`, file
    // modes, inode identity, ...) are used. Off on non-Unix targets, and on Unix too with the
    // `portable-fallbacks` feature, which compiles and runs the portable paths here (each
    // `#[cfg(unix_native)]` body sits next to its `#[cfg(not(unix_native))]` one).
    println!("cargo::rustc-check-cfg=cfg(unix_native)");
    let unix = std::env::var("CARGO_CFG_UNIX").is_ok();
    let forced = std::env::var("CARGO_FEATURE_PORTABLE_FALLBACKS").is_ok();
    if unix && !forced {
        println!("cargo::rustc-cfg=unix_native");
    }
}
