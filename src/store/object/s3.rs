//! Amazon S3 and S3-compatible stores: the builder from the configuration and the environment
//! (AWS_* variables, the selected AWS profile's static keys), and the credential sources tried.

use super::{present, Cloud, Configured};
use crate::store::aws_profile::{self, ProfileLookup};
use crate::store::resilience::Resilience;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut, S3CopyIfNotExists};
use std::collections::HashMap;

/// The S3 settings of the configuration.
pub(super) struct S3Settings<'a> {
    pub bucket: &'a str,
    pub region: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub force_path_style: bool,
}

pub(super) fn configure(
    s: &S3Settings<'_>,
    env: &HashMap<String, String>,
    resilience: &Resilience,
) -> Configured {
    // Keys (and region) of the selected AWS profile, when the environment has none.
    let profile = aws_profile::lookup(env);
    let merged: HashMap<String, String>;
    let env = if profile.env.is_empty() {
        env
    } else {
        merged = env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(profile.env.clone())
            .collect();
        &merged
    };
    let mut b = AmazonS3Builder::new();
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with("AWS_")) {
        if let Ok(key) = k.to_ascii_lowercase().parse() {
            b = b.with_config(key, v);
        }
    }
    let region = s
        .region
        .map(str::to_owned)
        .or_else(|| env.get("AWS_REGION").cloned())
        .or_else(|| env.get("AWS_DEFAULT_REGION").cloned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = s.endpoint.map(str::to_owned).or_else(|| {
        env.get("AWS_ENDPOINT_URL")
            .or_else(|| env.get("AWS_ENDPOINT"))
            .filter(|e| !e.is_empty())
            .cloned()
    });
    let allow_http = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"))
        || crate::value::truthy(env, "AWS_ALLOW_HTTP");
    b = b
        .with_bucket_name(s.bucket)
        .with_region(&region)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
        .with_retry(resilience.object.object_store());
    b = match &endpoint {
        Some(e) if s.force_path_style => {
            b.with_endpoint(e).with_virtual_hosted_style_request(false)
        }
        Some(e) => b
            .with_endpoint(virtual_hosted_endpoint(e, s.bucket))
            .with_virtual_hosted_style_request(true),
        None => b.with_virtual_hosted_style_request(!s.force_path_style),
    };
    let detail = match &endpoint {
        Some(e) => format!("{region}, {e}"),
        None => region,
    };
    Configured {
        cloud: Cloud::S3,
        bucket: s.bucket.to_owned(),
        detail: Some(detail),
        credentials: credentials(env, &profile),
        clients: super::clients(
            b,
            allow_http,
            resilience,
            AmazonS3Builder::with_client_options,
            AmazonS3Builder::build,
        ),
    }
}

/// Inserts the bucket into an endpoint's host for virtual-hosted requests, as the AWS SDKs do:
/// `https://minio:9000` → `https://<bucket>.minio:9000`.
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => format!("{bucket}.{endpoint}"),
    }
}

/// What the S3 credential chain had to go on, for error messages. `profile` is what the AWS profile
/// lookup found (its keys are already merged into `env`).
fn credentials(env: &HashMap<String, String>, profile: &ProfileLookup) -> String {
    let mut tried = Vec::new();
    let from_profile = profile.env.contains_key("AWS_ACCESS_KEY_ID");
    if let (false, Some(note)) = (from_profile, &profile.note) {
        tried.push(note.clone());
    }
    if present(env, "AWS_ACCESS_KEY_ID") {
        let id: String = env["AWS_ACCESS_KEY_ID"].chars().take(4).collect();
        let source = match (&profile.note, from_profile) {
            (Some(note), true) => note.clone(),
            _ => "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".to_owned(),
        };
        tried.push(format!(
            "access key {id}... from {source}{}",
            if present(env, "AWS_SESSION_TOKEN") {
                " (+AWS_SESSION_TOKEN)"
            } else {
                ""
            }
        ));
    }
    if present(env, "AWS_WEB_IDENTITY_TOKEN_FILE") {
        tried.push("web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN)".into());
    }
    if present(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || present(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI")
    {
        tried.push("ECS/EKS container credentials".into());
    }
    if tried.is_empty() {
        "no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS profile with static keys, \
         AWS_WEB_IDENTITY_TOKEN_FILE or container credentials, so the EC2 instance metadata service \
         was tried"
            .into()
    } else {
        format!("tried {}", tried.join(", then "))
    }
}
