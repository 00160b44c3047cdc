'use strict';
/**
 * `nx-open-cache serve`: runs the Nx remote-cache server until SIGTERM/SIGINT. Options are parsed
 * by the native core (command line, NX_OPEN_CACHE_SERVER_* environment, config file); this file
 * only starts, waits and stops.
 */

/** Exit status of a configuration mistake. */
const EXIT_CONFIG = 2;

/**
 * Starts the server. Returns an exit status when it did not start (0 for --help); `undefined`
 * when it runs: the process then exits 0 after a graceful stop on SIGTERM or SIGINT.
 * @param {string[]} args the words after `serve`
 * @returns {number | undefined}
 */
function run(args) {
  const native = require('../index.js');
  if (args.includes('--help') || args.includes('-h')) {
    console.log(native.serveHelp());
    return 0;
  }
  if (args.some((a) => a === '--explain-token' || a.startsWith('--explain-token='))) {
    return explain(native, args);
  }
  /** @type {import('../index.js').ServerHandle | undefined} */
  let handle;
  /** @type {NodeJS.Timeout | undefined} */
  let keepAlive;
  let stopping = false;
  /** @param {NodeJS.Signals} signal */
  const onSignal = (signal) => {
    if (!handle) return; // not started (the start failed): the process is exiting anyway
    if (stopping) {
      console.error(`nx-open-cache serve: ${signal} again, exiting without waiting`);
      process.exit(1);
    }
    stopping = true;
    console.error(`nx-open-cache serve: ${signal}: stopping, letting requests in flight finish`);
    handle.stop().then(
      () => {
        clearInterval(keepAlive);
        console.error('nx-open-cache serve: stopped');
        process.exit(0);
      },
      (/** @type {Error} */ e) => {
        console.error(`nx-open-cache serve: stop failed: ${e.message}`);
        process.exit(1);
      },
    );
  };
  // Before starting: a signal that arrives right after the startup line (while startServer is
  // still returning) is then handled as soon as it has, instead of killing the process.
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    handle = native.startServer(args, /** @type {Record<string, string>} */ ({ ...process.env }));
  } catch (e) {
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
    const err = /** @type {Error & { code?: string }} */ (e);
    console.error(err.message);
    if (err.code === 'InvalidArg') {
      console.error('Run `nx-open-cache serve --help` for the options.');
      return EXIT_CONFIG;
    }
    return 1;
  }
  // The server runs on native threads, which do not keep Node's event loop alive: this does.
  keepAlive = setInterval(() => {}, 1 << 30);
  return undefined;
}

/**
 * `serve ... --explain-token <jwt|->`: prints what the configured server would do with the token
 * (never the token); 0 when accepted, 1 when refused, 2 on a configuration mistake.
 * @param {typeof import('../index.js')} native
 * @param {string[]} args
 * @returns {number}
 */
function explain(native, args) {
  try {
    const found = native.explainToken(args, /** @type {Record<string, string>} */ ({ ...process.env }));
    if (!found) return EXIT_CONFIG;
    console.log(found.text);
    return found.accepted ? 0 : 1;
  } catch (e) {
    console.error(/** @type {Error} */ (e).message);
    console.error('Run `nx-open-cache serve --help` for the options.');
    return EXIT_CONFIG;
  }
}

module.exports = { run, EXIT_CONFIG };
