//! Azure Blob Storage: the builder from the configuration and the environment (AZURE_*
//! variables, a connection string), and the credential sources tried.

use super::{present, Cloud, Configured};
use crate::store::resilience::Resilience;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use std::collections::HashMap;

/// The Azure settings of the configuration.
pub(super) struct AzureSettings<'a> {
    pub container: &'a str,
    pub account_name: Option<&'a str>,
    pub endpoint: Option<&'a str>,
}

pub(super) fn configure(
    s: &AzureSettings<'_>,
    env: &HashMap<String, String>,
    resilience: &Resilience,
) -> Configured {
    let mut b = MicrosoftAzureBuilder::new();
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with("AZURE_")) {
        if let Ok(key) = k.to_ascii_lowercase().parse() {
            b = b.with_config(key, v);
        }
    }
    let mut account = s.account_name.map(str::to_owned).or_else(|| {
        env.get("AZURE_STORAGE_ACCOUNT_NAME")
            .filter(|a| !a.is_empty())
            .cloned()
    });
    let mut endpoint = s.endpoint.map(str::to_owned);
    if let Some(cs) = env
        .get("AZURE_STORAGE_CONNECTION_STRING")
        .filter(|c| !c.is_empty())
    {
        let cs = parse_connection_string(cs);
        if account.is_none() {
            account = cs.get("accountname").cloned();
        }
        if let Some(key) = cs.get("accountkey") {
            b = b.with_access_key(key);
        }
        if let Some(sas) = cs.get("sharedaccesssignature") {
            b = b.with_config(AzureConfigKey::SasKey, sas.trim_start_matches('?'));
        }
        if endpoint.is_none() {
            endpoint = cs.get("blobendpoint").cloned().or_else(|| {
                let a = account.as_deref()?;
                let suffix = cs.get("endpointsuffix")?;
                let proto = cs
                    .get("defaultendpointsprotocol")
                    .map(String::as_str)
                    .unwrap_or("https");
                Some(format!("{proto}://{a}.blob.{suffix}"))
            });
        }
    }
    let allow_http = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    if let Some(e) = &endpoint {
        // An explicit account URL wins over AZURE_STORAGE_USE_EMULATOR's fixed address.
        b = b
            .with_use_emulator(false)
            .with_endpoint(e.trim_end_matches('/').to_owned());
    }
    if let Some(a) = &account {
        b = b.with_account(a);
    }
    b = b
        .with_container_name(s.container)
        .with_retry(resilience.object.object_store());
    let shown = match &account {
        Some(a) => format!("{a}/{}", s.container),
        None => s.container.to_owned(),
    };
    Configured {
        cloud: Cloud::Azure,
        bucket: shown,
        detail: endpoint,
        credentials: credentials(env),
        clients: super::clients(
            b,
            allow_http,
            resilience,
            MicrosoftAzureBuilder::with_client_options,
            MicrosoftAzureBuilder::build,
        ),
    }
}

/// `key=value;key=value` of an Azure Storage connection string.
fn parse_connection_string(s: &str) -> HashMap<String, String> {
    s.split(';')
        .filter_map(|part| {
            let (k, v) = part.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

fn credentials(env: &HashMap<String, String>) -> String {
    let sources = [
        ("AZURE_STORAGE_CONNECTION_STRING", "the connection string"),
        ("AZURE_STORAGE_ACCOUNT_KEY", "the account key"),
        ("AZURE_STORAGE_SAS_KEY", "the SAS token"),
        ("AZURE_STORAGE_SAS_TOKEN", "the SAS token"),
        ("AZURE_FEDERATED_TOKEN_FILE", "workload identity"),
        ("AZURE_CLIENT_SECRET", "the client secret"),
    ];
    let tried: Vec<String> = sources
        .iter()
        .filter(|(name, _)| present(env, name))
        .map(|(name, what)| format!("{what} from {name}"))
        .collect();
    if tried.is_empty() {
        "no AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY or \
         workload identity (AZURE_FEDERATED_TOKEN_FILE) in the environment, so managed identity \
         was tried"
            .into()
    } else {
        format!("tried {}", tried.join(", then "))
    }
}
