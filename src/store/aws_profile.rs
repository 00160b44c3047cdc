//! AWS shared configuration files (`~/.aws/credentials`, `~/.aws/config`): the static keys and the
//! region of the selected profile, for the S3 backend (the object_store client reads environment
//! variables, web identity, container credentials and instance metadata, but no profiles).
//!
//! Order, as the AWS SDKs: keys in the environment win; otherwise the profile named by
//! `AWS_PROFILE` (or `AWS_DEFAULT_PROFILE`, else `default`) is looked up in the credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) and then in the config file
//! (`AWS_CONFIG_FILE`, else `~/.aws/config`, where sections read `[profile NAME]`). Only static keys
//! (`aws_access_key_id`, `aws_secret_access_key`, optional `aws_session_token`) are used; SSO,
//! `credential_process` and `role_arn` profiles are reported as not supported.

use std::collections::HashMap;
use std::path::PathBuf;

/// What the profile lookup found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProfileLookup {
    /// Variables to add to the client's environment (`AWS_ACCESS_KEY_ID`, ..., `AWS_REGION`).
    pub env: HashMap<String, String>,
    /// A line for error messages: which profile and file were used or why none was.
    pub note: Option<String>,
}

fn home(env: &HashMap<String, String>) -> Option<PathBuf> {
    env.get("HOME")
        .or_else(|| env.get("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn file(env: &HashMap<String, String>, var: &str, default: &str) -> Option<PathBuf> {
    match env.get(var).filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => home(env).map(|h| h.join(".aws").join(default)),
    }
}

/// The keys of one INI section (`[name]`), lower-cased; `None` when the section is absent.
fn section(text: &str, name: &str) -> Option<HashMap<String, String>> {
    let mut current: Option<String> = None;
    let mut found: Option<HashMap<String, String>> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let head = head.trim().to_owned();
            if head == name {
                found.get_or_insert_with(HashMap::new);
            }
            current = Some(head);
            continue;
        }
        if current.as_deref() != Some(name) {
            continue;
        }
        if let (Some((k, v)), Some(map)) = (line.split_once('='), found.as_mut()) {
            map.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    found
}

/// Looks up the selected profile when the environment carries no keys of its own.
pub fn lookup(env: &HashMap<String, String>) -> ProfileLookup {
    let has = |k: &str| env.get(k).is_some_and(|v| !v.is_empty());
    if has("AWS_ACCESS_KEY_ID") {
        return ProfileLookup::default();
    }
    let explicit = env
        .get("AWS_PROFILE")
        .or_else(|| env.get("AWS_DEFAULT_PROFILE"))
        .filter(|p| !p.is_empty())
        .cloned();
    let name = explicit.clone().unwrap_or_else(|| "default".to_owned());
    let creds_path = file(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config_path = file(env, "AWS_CONFIG_FILE", "config");
    let read = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    let creds_text = read(&creds_path);
    let config_text = read(&config_path);
    let config_section_name = if name == "default" {
        "default".to_owned()
    } else {
        format!("profile {name}")
    };
    let from_creds = creds_text.as_deref().and_then(|t| section(t, &name));
    let from_config = config_text
        .as_deref()
        .and_then(|t| section(t, &config_section_name));

    let mut out = ProfileLookup::default();
    if let Some(region) = from_config.as_ref().and_then(|c| c.get("region")) {
        if !has("AWS_REGION") && !has("AWS_DEFAULT_REGION") && !region.is_empty() {
            out.env.insert("AWS_REGION".into(), region.clone());
        }
    }
    let keys = [from_creds.as_ref(), from_config.as_ref()]
        .into_iter()
        .flatten()
        .zip([&creds_path, &config_path])
        .find(|(s, _)| {
            s.contains_key("aws_access_key_id") && s.contains_key("aws_secret_access_key")
        });
    match keys {
        Some((s, path)) => {
            out.env
                .insert("AWS_ACCESS_KEY_ID".into(), s["aws_access_key_id"].clone());
            out.env.insert(
                "AWS_SECRET_ACCESS_KEY".into(),
                s["aws_secret_access_key"].clone(),
            );
            if let Some(token) = s.get("aws_session_token").filter(|t| !t.is_empty()) {
                out.env.insert("AWS_SESSION_TOKEN".into(), token.clone());
            }
            let shown = path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.note = Some(format!("profile {name} from {shown}"));
        }
        None => {
            let kinds: Vec<&str> = [from_creds.as_ref(), from_config.as_ref()]
                .into_iter()
                .flatten()
                .flat_map(|s| {
                    [
                        "sso_session",
                        "sso_start_url",
                        "credential_process",
                        "role_arn",
                    ]
                    .into_iter()
                    .filter(|k| s.contains_key(*k))
                })
                .collect();
            if !kinds.is_empty() {
                out.note = Some(format!(
                    "profile {name} uses {} (not supported: export its credentials with \
                     `aws configure export-credentials --profile {name} --format env`)",
                    kinds.join(", ")
                ));
            } else if explicit.is_some() {
                out.note = Some(format!(
                    "profile {name} has no aws_access_key_id/aws_secret_access_key in {} or {}",
                    creds_path
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    config_path
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn home_with(creds: &str, config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join(".aws")).expect("mkdir");
        std::fs::write(dir.path().join(".aws/credentials"), creds).expect("write");
        std::fs::write(dir.path().join(".aws/config"), config).expect("write");
        dir
    }

    #[test]
    fn default_profile_keys_and_region() {
        let h = home_with(
            "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s3cr3t\n",
            "[default]\nregion = eu-west-3\n",
        );
        let home = h.path().to_string_lossy().into_owned();
        let got = lookup(&env(&[("HOME", &home)]));
        assert_eq!(got.env["AWS_ACCESS_KEY_ID"], "AKIADEFAULT");
        assert_eq!(got.env["AWS_SECRET_ACCESS_KEY"], "s3cr3t");
        assert_eq!(got.env["AWS_REGION"], "eu-west-3");
        assert!(!got.env.contains_key("AWS_SESSION_TOKEN"));
        assert!(got.note.unwrap().contains("profile default"));
    }

    #[test]
    fn named_profile_from_config_file_with_token() {
        let h = home_with(
            "[default]\naws_access_key_id = A\naws_secret_access_key = B\n",
            "[profile ci]\nregion = us-west-2\naws_access_key_id = AKIACI\n\
             aws_secret_access_key = x\naws_session_token = tok\n",
        );
        let home = h.path().to_string_lossy().into_owned();
        let got = lookup(&env(&[("HOME", &home), ("AWS_PROFILE", "ci")]));
        assert_eq!(got.env["AWS_ACCESS_KEY_ID"], "AKIACI");
        assert_eq!(got.env["AWS_SESSION_TOKEN"], "tok");
        assert_eq!(got.env["AWS_REGION"], "us-west-2");
    }

    #[test]
    fn environment_keys_win_and_explicit_region_is_kept() {
        let h = home_with(
            "[default]\naws_access_key_id = A\naws_secret_access_key = B\n",
            "[default]\nregion = eu-west-3\n",
        );
        let home = h.path().to_string_lossy().into_owned();
        assert_eq!(
            lookup(&env(&[("HOME", &home), ("AWS_ACCESS_KEY_ID", "ENV")])),
            ProfileLookup::default()
        );
        let got = lookup(&env(&[("HOME", &home), ("AWS_REGION", "ap-south-1")]));
        assert!(!got.env.contains_key("AWS_REGION"));
    }

    #[test]
    fn unsupported_and_missing_profiles_are_explained() {
        let h = home_with(
            "",
            "[profile sso]\nsso_session = corp\nregion = eu-west-1\n",
        );
        let home = h.path().to_string_lossy().into_owned();
        let got = lookup(&env(&[("HOME", &home), ("AWS_PROFILE", "sso")]));
        assert!(!got.env.contains_key("AWS_ACCESS_KEY_ID"));
        assert!(got.note.unwrap().contains("sso_session"));
        let got = lookup(&env(&[("HOME", &home), ("AWS_PROFILE", "nope")]));
        assert!(got
            .note
            .unwrap()
            .contains("profile nope has no aws_access_key_id"));
        // No files at all, no explicit profile: nothing to say.
        let empty = tempfile::tempdir().expect("tempdir");
        let e = empty.path().to_string_lossy().into_owned();
        assert_eq!(lookup(&env(&[("HOME", &e)])), ProfileLookup::default());
    }

    #[test]
    fn files_named_by_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = dir.path().join("c.ini");
        std::fs::write(
            &creds,
            "# comment\n[team]\n aws_access_key_id=K \naws_secret_access_key=S\n",
        )
        .expect("write");
        let c = creds.to_string_lossy().into_owned();
        let got = lookup(&env(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &c),
            ("AWS_PROFILE", "team"),
        ]));
        assert_eq!(got.env["AWS_ACCESS_KEY_ID"], "K");
        assert!(got.note.unwrap().contains("c.ini"));
    }
}
