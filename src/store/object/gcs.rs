//! Google Cloud Storage: the builder from the configuration and the environment (GOOGLE_*
//! variables, `STORAGE_EMULATOR_HOST`), and the credential sources tried.

use super::{present, Cloud, Configured};
use crate::store::resilience::Resilience;
use object_store::gcp::GoogleCloudStorageBuilder;
use std::collections::HashMap;

pub(super) fn configure(
    bucket: &str,
    env: &HashMap<String, String>,
    resilience: &Resilience,
) -> Configured {
    let mut b = GoogleCloudStorageBuilder::new();
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with("GOOGLE_")) {
        if let Ok(key) = k.to_ascii_lowercase().parse() {
            b = b.with_config(key, v);
        }
    }
    // The Google SDKs' emulator convention: plain http to a local emulator.
    let allow_http = present(env, "STORAGE_EMULATOR_HOST");
    b = b
        .with_bucket_name(bucket)
        .with_retry(resilience.object.object_store());
    Configured {
        cloud: Cloud::Gcs,
        bucket: bucket.to_owned(),
        detail: None,
        credentials: credentials(env),
        clients: super::clients(
            b,
            allow_http,
            resilience,
            GoogleCloudStorageBuilder::with_client_options,
            GoogleCloudStorageBuilder::build,
        ),
    }
}

fn credentials(env: &HashMap<String, String>) -> String {
    for name in [
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_PATH",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ] {
        if present(env, name) {
            return format!("tried the credentials named by {name}");
        }
    }
    "no GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT in the environment, so application \
     default credentials (gcloud auth application-default login) and then the GCE metadata server \
     were tried"
        .into()
}
