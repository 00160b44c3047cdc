//! The Node bindings (feature `node`): JS values in, core calls, JS values out. One file per area;
//! no logic lives here.

pub mod archive;
pub mod doctor;
pub mod hash;
pub mod host;
pub mod outputs;
pub mod proxy;
pub mod retention;
pub mod seal;
pub mod serve;
