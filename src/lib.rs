//! nx-open-cache: the core modules, and (feature `node`) the Node bindings in `node/`: conversions
//! only, the logic lives in the modules.

pub mod archive;
pub mod config;
pub mod doctor;
pub mod envelope;
pub mod hash;
pub mod host;
pub mod key;
pub mod number;
pub mod outputs;
pub mod proxy;
pub mod retention;
pub mod runtime;
pub mod seal;
pub mod serve;
pub mod server;
pub mod stats;
pub mod store;
pub mod units;
pub mod value;

#[cfg(feature = "node")]
pub mod node;
