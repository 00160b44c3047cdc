//! The in-process cache proxy the Nx plugin starts for each run: resolved config in, a loopback
//! server with a random port and bearer token out.

use crate::config::{Backend, CacheConfig, Mode};
use crate::server::{self, Auth, Limits, LogFormat, RunningProxy, ServerSettings, TokenSpec};
use crate::stats::{Snapshot, Stats};
use crate::store::fs::FsStore;
use crate::store::guard::GuardedStore;
use crate::store::http::{HttpOptions, HttpStore};
use crate::store::object::ObjectStoreBackend;
use crate::store::resilience::Resilience;
use crate::store::unavailable::UnavailableStore;
use crate::store::validate::{self, ValidationPolicy};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Arc;

pub struct Proxy {
    running: RunningProxy,
    pub url: String,
    pub token: String,
    /// e.g. `fs /mnt/nx-cache`.
    pub location: String,
    pub mode: Mode,
}

/// Builds the configured store; cloud credentials come from `env` (the caller's environment, which
/// the plugin may extend for this proxy only). A client that cannot be built becomes a store that
/// answers every call with the reason, recorded in `stats` (the proxy then answers misses) instead
/// of failing: a cache outage never fails a build. Whether the store works is `Store::check`'s
/// business (the guard's start-up probe).
pub fn open_store(
    config: &CacheConfig,
    env: &HashMap<String, String>,
    stats: &Arc<Stats>,
) -> Arc<dyn Store> {
    open_store_with(config, &Resilience::from_config(config), env, stats)
}

/// [`open_store`] with the run's resilience policy, already resolved.
pub fn open_store_with(
    config: &CacheConfig,
    resilience: &Resilience,
    env: &HashMap<String, String>,
    stats: &Arc<Stats>,
) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = match &config.backend {
        Backend::Fs { path } => {
            let store = FsStore::new(path.clone(), config.prefix.clone());
            if config.mode != Mode::NoCache {
                // Creates the directory when it can; when it cannot, the guard's start-up check
                // (`start`) or doctor's setup step reports why.
                let _ = store.prepare();
            }
            Arc::new(store)
        }
        Backend::Http { url } => match HttpStore::new(
            url,
            env.get("NX_OPEN_CACHE_TOKEN").map(String::as_str),
            HttpOptions::new(resilience.clone(), env),
        ) {
            Ok(store) => {
                if config.mode != Mode::NoCache {
                    // Warnings (extra CA file unreadable, verification off): one line each, and in
                    // the run summary.
                    for w in store.warnings() {
                        if stats.error(w) {
                            eprintln!("nx-open-cache: {w}");
                        }
                    }
                }
                Arc::new(store)
            }
            Err(e) => {
                if config.mode != Mode::NoCache {
                    stats.error(&e.message);
                }
                Arc::new(UnavailableStore::new(format!("http {url}"), e.message))
            }
        },
        Backend::S3 { .. } | Backend::Gcs { .. } | Backend::Azure { .. } => {
            match ObjectStoreBackend::from_config_with(
                &config.backend,
                config.prefix.clone(),
                env,
                resilience,
            ) {
                // The bucket and the credentials are checked by the guard's start-up probe
                // (`start`) or by doctor's first step.
                Ok(store) => Arc::new(store),
                Err(e) => {
                    if config.mode != Mode::NoCache {
                        stats.error(&e.message);
                    }
                    let location =
                        format!("{} {}", config.backend.name(), config.backend.location());
                    Arc::new(UnavailableStore::new(location, e.message))
                }
            }
        }
    };
    // Signatures and encryption (`trustedKeys`, `NX_OPEN_CACHE_SIGNING_KEY`, ...): a layer in
    // front of the backend, namespaces included; nothing changes when none is set.
    crate::seal::wrap(store, &config.seal)
}

/// Starts a proxy on 127.0.0.1 (random port) on the shared runtime; `env` is the environment the
/// storage client reads its credentials from.
pub fn start(config: &CacheConfig, env: &HashMap<String, String>) -> Result<Proxy, String> {
    let runtime = crate::runtime::get()?;
    let stats = Arc::new(Stats::default());
    // Every timeout, retry and breaker setting of this run, resolved once.
    let resilience = Resilience::from_config(config);
    let opened = open_store_with(config, &resilience, env, &stats);
    let store: Arc<dyn Store> = if config.mode == Mode::NoCache {
        opened
    } else {
        // backend -> seal -> validating -> guard: what is read is checked to be a valid Nx
        // artifact before Nx gets it (Nx's own uploads are not checked).
        let checked = validate::wrap(
            opened,
            ValidationPolicy::proxy(config.mode == Mode::ReadWrite, config.limits.clone()),
        );
        let _inside = runtime.enter();
        Arc::new(GuardedStore::new(checked, resilience.guard))
    };
    let location = if config.namespaces.is_default() {
        store.describe()
    } else {
        format!("{}; {}", store.describe(), config.namespaces.describe())
    };
    let token = server::random_token()?;
    let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot configure the proxy socket: {e}"))?;
    let _guard = runtime.enter();
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| format!("cannot register the proxy socket: {e}"))?;
    let running = server::serve_server(listener, proxy_settings(config, store, &token, stats))
        .map_err(|e| format!("cannot start the proxy: {e}"))?;
    Ok(Proxy {
        url: format!("http://{}", running.addr),
        running,
        token,
        location,
        mode: config.mode,
    })
}

/// The proxy's server: one token (Nx's), whose namespace is the configured trust namespaces
/// (`writePrefix` / `readPrefixes`; by default the store root), proxy limits, no operations routes.
pub fn proxy_settings(
    config: &CacheConfig,
    store: Arc<dyn Store>,
    token: &str,
    stats: Arc<Stats>,
) -> ServerSettings {
    let mut spec = TokenSpec::new("proxy", server::Role::ReadWrite, token);
    spec.write_prefix = config.namespaces.write.clone();
    spec.read_prefixes = config.namespaces.read.clone();
    ServerSettings {
        store,
        auth: Auth {
            tokens: vec![spec],
            anonymous_read: None,
        },
        mode: config.mode,
        limits: Limits::proxy(),
        operations: false,
        log: if config.debug {
            LogFormat::Debug
        } else {
            LogFormat::Off
        },
        stats,
    }
}

impl Proxy {
    pub fn stats(&self) -> Snapshot {
        self.running.stats.snapshot()
    }

    /// Stops the server (requests in flight finish) and returns the final counters.
    pub async fn stop(self) -> Snapshot {
        let stats = self.running.stats.clone();
        self.running.stop().await;
        stats.snapshot()
    }
}
