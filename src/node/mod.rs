//! The Node bindings (feature `node`): JS values in, core calls, JS values out. One file per area;
//! no logic lives here.
//!
//! No panic crosses into Node: every exported function and method is `#[napi(catch_unwind)]` (a
//! panic becomes a thrown JS error), every `Task::compute` (run on the libuv pool, where a panic
//! would abort the process) goes through [`unwind_safe`] (a panic rejects the promise), and napi's
//! `async fn` futures run as tokio tasks, whose panics napi turns into rejections.

pub mod archive;
pub mod config;
pub mod doctor;
pub mod hash;
pub mod host;
pub mod outputs;
pub mod proxy;
pub mod retention;
pub mod seal;
pub mod serve;

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Runs `f` and turns a panic into an error (with the panic's message).
pub(crate) fn unwind_safe<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(panic_to_error)
        .and_then(|r| r)
}

/// Plugin options from JavaScript, as JSON. A top-level number JSON cannot hold (`Infinity`,
/// `NaN`: what `JSON.parse` makes of `1e309` in nx.json) is a configuration error naming the
/// option, instead of napi's "Failed to convert js number".
pub struct JsOptions(pub Option<serde_json::Value>);

impl TypeName for JsOptions {
    fn type_name() -> &'static str {
        "Object"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for JsOptions {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        // SAFETY (both calls): `env` and `value` come from napi for this argument.
        let converted = unsafe { Option::<serde_json::Value>::from_napi_value(env, value) };
        converted.map(JsOptions).map_err(|e| {
            let Ok(object) = (unsafe { Object::from_napi_value(env, value) }) else {
                return e;
            };
            let non_finite = Object::keys(&object).ok().and_then(|keys| {
                keys.into_iter()
                    .find_map(|key| match object.get::<f64>(&key) {
                        Ok(Some(n)) if !n.is_finite() => Some((key, n)),
                        _ => None,
                    })
            });
            match non_finite {
                Some((key, n)) => Error::new(
                    Status::InvalidArg,
                    crate::config::non_finite_option(&key, &crate::number::show(n)).to_string(),
                ),
                None => e,
            }
        })
    }
}

impl JsOptions {
    /// The options, `null` when none were given.
    pub fn value(self) -> serde_json::Value {
        self.0.unwrap_or(serde_json::Value::Null)
    }
}

/// Test only, not part of the API: panics on purpose, to prove that a panic becomes a JS error.
#[napi(js_name = "__panicForTest", skip_typescript, catch_unwind)]
pub fn panic_for_test(message: String) -> Result<()> {
    panic!("{message}")
}

/// The `AsyncTask` form of [`panic_for_test`]: panics in `compute`, on the libuv pool.
pub struct PanicTask {
    message: String,
}

impl Task for PanicTask {
    type Output = ();
    type JsValue = ();
    fn compute(&mut self) -> Result<()> {
        unwind_safe(|| panic!("{}", self.message))
    }
    fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
        Ok(())
    }
}

/// Test only, not part of the API: a promise whose work panics on the libuv pool.
#[napi(js_name = "__panicForTestAsync", skip_typescript, catch_unwind)]
pub fn panic_for_test_async(message: String) -> AsyncTask<PanicTask> {
    AsyncTask::new(PanicTask { message })
}

/// Test only, not part of the API: an `async fn` (a tokio task) that panics.
#[napi(js_name = "__panicForTestFuture", skip_typescript, catch_unwind)]
pub async fn panic_for_test_future(message: String) -> Result<()> {
    panic!("{message}")
}
