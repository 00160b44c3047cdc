//! `nx-open-cache-server`: the standalone build of `nx-open-cache serve` (no Node). The same
//! options, `NX_OPEN_CACHE_SERVER_*` variables, config file and behaviour: configuration, start
//! and stop are [`nx_open_cache::serve`]'s, as for the Node entry point (`lib/serve.js`); this
//! file only reads the process's arguments, waits for SIGTERM/SIGINT and adds `healthcheck` for
//! container health checks.

use nx_open_cache::serve;
use std::collections::HashMap;
use std::process::ExitCode;

/// Exit status of a configuration mistake (as `nx-open-cache serve`).
const EXIT_CONFIG: u8 = 2;
/// The program's name in its messages.
const NAME: &str = "nx-open-cache-server";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: HashMap<String, String> = std::env::vars().collect();
    match args.first().map(String::as_str) {
        Some("--help" | "-h" | "help") => {
            println!("{}", help());
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            println!("{NAME} {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("healthcheck") => healthcheck(&args[1..], &env),
        _ if args
            .iter()
            .any(|a| a == serve::explain::FLAG || a.starts_with("--explain-token=")) =>
        {
            explain(&args, &env)
        }
        _ if args.iter().any(|a| a == "--help" || a == "-h") => {
            println!("{}", help());
            ExitCode::SUCCESS
        }
        _ => run(&args, &env),
    }
}

/// `serve`'s help with this program's usage line, and `healthcheck`.
fn help() -> String {
    let text = serve::config::help().replacen(
        "Usage: nx-open-cache serve --storage <url> [options]",
        &format!(
            "Usage: {NAME} --storage <url> [options]\n       {NAME} healthcheck [<url>]\n       \
             {NAME} --version\n\nThe standalone build of `nx-open-cache serve`: the same options, \
             environment and config file."
        ),
        1,
    );
    format!(
        "{text}\n\n{NAME} healthcheck [<url>]\n    Exits 0 when GET <url> answers 200 within 5 s, 1 otherwise (for container health\n    checks). Default: the /healthz of the address serve would listen on with this\n    environment and config file (NX_OPEN_CACHE_SERVER_LISTEN, NX_OPEN_CACHE_SERVER_CONFIG,\n    https with NX_OPEN_CACHE_SERVER_TLS_*; 0.0.0.0 and :: probed on loopback), else\n    http://127.0.0.1:3000/healthz. Options given on serve's command line are not seen:\n    set the port in the environment or the config file."
    )
}

/// How the messages of a run begin: the same words as `nx-open-cache serve`'s (its startup line,
/// warnings, errors and stop messages), so that logs, alerts and docs read the same whichever
/// entry point runs the server; only the `--help` hint names this program.
const PREFIX: &str = "nx-open-cache serve";

/// `--explain-token`: prints what the configured server would do with the token; exits 0 when it
/// is accepted, 1 when refused, 2 on a configuration mistake.
fn explain(args: &[String], env: &HashMap<String, String>) -> ExitCode {
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{PREFIX}: cannot read the current directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serve::explain::run(args, env, &cwd) {
        Ok(Some(e)) => {
            println!("{}", e.text);
            if e.accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(None) => run(args, env),
        Err(Ok(config)) => {
            eprintln!("{}", config.shown_by("serve"));
            eprintln!("Run `{NAME} --help` for the options.");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Err(e)) => {
            eprintln!("{PREFIX}: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Starts the server and runs until SIGTERM or SIGINT, then stops gracefully (requests in flight
/// finish, bounded); a second signal exits at once.
fn run(args: &[String], env: &HashMap<String, String>) -> ExitCode {
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{PREFIX}: cannot read the current directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match serve::config::resolve(args, env, &cwd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", e.shown_by("serve"));
            eprintln!("Run `{NAME} --help` for the options.");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = serve::validate(&config) {
        eprintln!("{PREFIX}: {e}");
        eprintln!("Run `{NAME} --help` for the options.");
        return ExitCode::from(EXIT_CONFIG);
    }
    // Before the runtime's threads start (as `serve::start` would otherwise do it).
    nx_open_cache::runtime::limit_malloc_arenas();
    let runtime = match nx_open_cache::runtime::get() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{PREFIX}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Listening for the signals before the server starts: a SIGTERM that arrives right after the
    // startup line stops it gracefully instead of killing the process (the default action).
    let mut signals = match runtime.block_on(async { Signals::new() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{PREFIX}: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match serve::start(&config, env) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{PREFIX}: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signal = signals.next().await;
        eprintln!("{PREFIX}: {signal}: stopping, letting requests in flight finish");
        tokio::select! {
            () = running.stop() => {
                eprintln!("{PREFIX}: stopped");
                ExitCode::SUCCESS
            }
            again = signals.next() => {
                eprintln!("{PREFIX}: {again} again, exiting without waiting");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM and SIGINT (Ctrl-C on Windows), listened for from creation on: one received before
/// [`Signals::next`] is asked is not lost.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(not(unix))]
    ctrl_c: tokio::signal::windows::CtrlC,
}

impl Signals {
    /// Registers the handlers (inside the runtime).
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {
                ctrl_c: tokio::signal::windows::ctrl_c()?,
            })
        }
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            self.ctrl_c.recv().await;
            "Ctrl-C"
        }
    }
}

/// `healthcheck [<url>]`: GET the URL (default: this host's `/healthz` on the configured port),
/// exit 0 on 200, else 1 (also for a usage mistake: container engines reserve 2). A server with TLS is probed over https without checking its certificate: the
/// probe only asks whether the local process answers, it sends no secret.
fn healthcheck(args: &[String], env: &HashMap<String, String>) -> ExitCode {
    let url = match args {
        [] => {
            let cwd = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("/"));
            match serve::config::local_url(&[], env, &cwd) {
                Ok(base) => format!("{base}/healthz"),
                Err(e) => {
                    eprintln!(
                        "{NAME} healthcheck: cannot tell where the server listens: {}",
                        e.message
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        [url] => url.clone(),
        _ => {
            eprintln!("{NAME} healthcheck: expected at most one URL, got {args:?}");
            return ExitCode::FAILURE;
        }
    };
    match nx_open_cache::serve::health::probe(&url, std::time::Duration::from_secs(5)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NAME} healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}
