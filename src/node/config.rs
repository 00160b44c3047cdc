//! Bindings for the option schema and the units shown to people.

use crate::{config, number, units};
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// One plugin option, as `resolveConfig` checks it.
#[napi(object)]
pub struct OptionInfo {
    pub name: String,
    /// The JSON Schema type the option is written as: `string`, `boolean`, `number` or `array`.
    #[napi(
        js_name = "type",
        ts_type = "'string' | 'boolean' | 'number' | 'array'"
    )]
    pub json_type: String,
    /// Every JSON type `resolveConfig` accepts for it (e.g. `timeout`: a number or a string).
    pub accepts: Vec<String>,
    /// The backends it applies to; `["all"]` for every backend.
    pub backends: Vec<String>,
    /// Its default (`null`: unset, or from the cloud's own variables).
    #[napi(ts_type = "string | number | boolean | null")]
    pub default: serde_json::Value,
    /// The variable that overrides it, if any.
    pub env: Option<String>,
    /// The values it may take, when it is one of a list (else empty).
    pub choices: Vec<String>,
    pub description: String,
}

/// The plugin's options, backends and modes.
#[napi(object)]
pub struct OptionSchema {
    pub options: Vec<OptionInfo>,
    pub backends: Vec<String>,
    pub modes: Vec<String>,
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Every plugin option (name, JSON type, backends, default, variable, choices, description), the
/// backends and the modes: the table `resolveConfig` validates with.
#[napi(catch_unwind)]
pub fn option_schema() -> OptionSchema {
    OptionSchema {
        options: config::OPTIONS
            .iter()
            .map(|o| OptionInfo {
                name: o.name.to_owned(),
                json_type: o.json_type.schema_type().to_owned(),
                accepts: strings(o.json_type.accepts()),
                backends: if o.backends.is_empty() {
                    vec!["all".to_owned()]
                } else {
                    strings(o.backends)
                },
                default: o.default.to_json(),
                env: o.env.map(str::to_owned),
                choices: strings(o.choices),
                description: o.description.to_owned(),
            })
            .collect(),
        backends: strings(config::BACKENDS),
        modes: strings(config::MODES),
    }
}

/// A byte count in binary units, one decimal at most: `100 B`, `1.5 KiB`, `4 GiB`. Throws on a
/// negative, fractional or non-finite number.
#[napi(catch_unwind)]
pub fn format_bytes(n: f64) -> Result<String> {
    let bytes =
        number::whole("bytes", n, 0..=u64::MAX).map_err(|e| Error::new(Status::InvalidArg, e))?;
    Ok(units::format_bytes(bytes))
}
