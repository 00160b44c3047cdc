//! Bindings for `crate::doctor`: `doctor` / `doctorAsync`.

use super::JsOptions;
use crate::{config, doctor, runtime};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::collections::HashMap;
use std::path::Path;

/// One step of the doctor's check.
#[napi(object)]
pub struct DoctorCheck {
    /// `setup`, `read`, `write`, `read back` or `delete`.
    pub name: String,
    /// `ok`, `failed`, `skipped` or `warning` (refused with a setting for it: writes refused
    /// while reads work, fixed by read-only mode).
    pub outcome: String,
    /// How long the step took, in milliseconds.
    pub millis: i64,
    /// What was seen (the error on failure, the reason when skipped).
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

/// What `doctor` found.
#[napi(object)]
pub struct DoctorReport {
    pub backend: String,
    /// Where artifacts go, e.g. `s3 my-bucket/team (eu-west-1)`.
    pub location: String,
    /// `read-write`, `read-only` or `no-cache`.
    pub mode: String,
    /// Why this mode applies, e.g. `ciMode (CI detected)`.
    pub mode_source: String,
    pub checks: Vec<DoctorCheck>,
    /// True when the cache works: the store answers and, in read-write mode, an artifact can be
    /// written and read back (or writes are refused, a warning).
    pub works: bool,
    /// `ok`, `warning` (it works, but see the warnings and the checks with outcome `warning`) or
    /// `broken`.
    pub status: String,
    /// The keys by id, e.g. `signs with key a64d..., trusts a64d..., 9f1c...`; empty without
    /// signing or encryption.
    pub keys: String,
    /// The configuration's warnings: unknown `NX_OPEN_CACHE_*` variables, a signing key whose
    /// public key is not in `trustedKeys`.
    pub warnings: Vec<String>,
}

fn convert(r: doctor::Report) -> DoctorReport {
    DoctorReport {
        backend: r.backend,
        location: r.location,
        mode: r.mode,
        mode_source: r.mode_source,
        works: r.works,
        status: r.status.as_str().to_owned(),
        keys: r.keys,
        warnings: r.warnings,
        checks: r
            .checks
            .into_iter()
            .map(|c| DoctorCheck {
                name: c.name.to_owned(),
                outcome: c.outcome.as_str().to_owned(),
                millis: c.millis.try_into().unwrap_or(i64::MAX),
                detail: c.detail,
                fix: c.fix,
            })
            .collect(),
    }
}

fn run(
    workspace_root: &str,
    options: Option<serde_json::Value>,
    env: &HashMap<String, String>,
) -> Result<DoctorReport> {
    let cfg = config::resolve(
        &options.unwrap_or(serde_json::Value::Null),
        env,
        Path::new(workspace_root),
    )
    .map_err(|e| Error::new(Status::InvalidArg, e.to_string()))?;
    let rt = runtime::get().map_err(|e| Error::new(Status::GenericFailure, e))?;
    Ok(convert(rt.block_on(doctor::run(&cfg, env))))
}

pub struct DoctorTask {
    workspace_root: String,
    options: Option<serde_json::Value>,
    env: HashMap<String, String>,
}

impl Task for DoctorTask {
    type Output = DoctorReport;
    type JsValue = DoctorReport;

    fn compute(&mut self) -> Result<Self::Output> {
        super::unwind_safe(|| run(&self.workspace_root, self.options.take(), &self.env))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output)
    }
}

/// Checks the configured cache (plugin options + environment): sets up the store, looks up a
/// hash, and in read-write mode writes, reads back and deletes a probe artifact, timing each step.
/// Throws only on a configuration mistake (naming the option, the value and the allowed values);
/// storage faults are failed checks with a suggested fix. Blocks: prefer `doctorAsync`.
#[napi(
    ts_args_type = "workspaceRoot: string, options: any | undefined | null, env: Record<string, string>",
    catch_unwind
)]
pub fn doctor(
    workspace_root: String,
    options: JsOptions,
    env: HashMap<String, String>,
) -> Result<DoctorReport> {
    run(&workspace_root, Some(options.value()), &env)
}

/// `doctor` off the JS thread.
#[napi(
    ts_args_type = "workspaceRoot: string, options: any | undefined | null, env: Record<string, string>",
    ts_return_type = "Promise<DoctorReport>",
    catch_unwind
)]
pub fn doctor_async(
    workspace_root: String,
    options: JsOptions,
    env: HashMap<String, String>,
) -> AsyncTask<DoctorTask> {
    AsyncTask::new(DoctorTask {
        workspace_root,
        options: Some(options.value()),
        env,
    })
}
