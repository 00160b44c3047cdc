'use strict';
/**
 * `nx-open-cache keygen [--encryption] [--json]`: prints a new Ed25519 key pair for signed
 * artifacts (public key for `trustedKeys`, secret key for NX_OPEN_CACHE_SIGNING_KEY), or with
 * `--encryption` a new key for NX_OPEN_CACHE_ENCRYPTION_KEY. Keys come from the native addon (the
 * system's random number generator); nothing is written to disk.
 */

const { commandArgs } = require('./args.js');

const HELP = `Usage: nx-open-cache keygen [--encryption] [--json]

Prints a new key pair for signed artifacts:
  public key  -> "trustedKeys" in the nx-open-cache plugin options (safe to commit)
  secret key  -> NX_OPEN_CACHE_SIGNING_KEY, a CI secret of trusted builds only (never commit it)
With --encryption, prints a new key for NX_OPEN_CACHE_ENCRYPTION_KEY instead (a secret of every
machine that reads or writes the cache; for rotation list "new,old").
--json prints the keys as JSON. Nothing is written to disk.`;

/**
 * @param {string[]} args
 * @param {{ keygen: () => { publicKey: string, secretKey: string, keyId: string }, encryptionKeygen: () => { key: string, keyId: string } }} [native]
 * @param {(line: string) => void} [out]
 * @returns {number}
 */
function keygenCommand(args, native, out = (line) => console.log(line)) {
  const usage = { command: 'keygen', usage: HELP, errorCode: 1, usageOnError: true, log: out };
  const parsed = commandArgs(usage, args, { encryption: { type: 'boolean' }, json: { type: 'boolean' } });
  if (typeof parsed === 'number') return parsed;
  const addon = native ?? require('../index.js');
  const json = parsed.values.json === true;
  if (parsed.values.encryption === true) {
    const k = addon.encryptionKeygen();
    if (json) {
      out(JSON.stringify({ encryptionKey: k.key, keyId: k.keyId }, null, 2));
    } else {
      out(`# Encryption key (key id ${k.keyId}): set NX_OPEN_CACHE_ENCRYPTION_KEY to it on every machine`);
      out('# that uses the cache (a secret; to rotate, set "<new key>,<old key>" until old artifacts expire):');
      out(k.key);
    }
    return 0;
  }
  const k = addon.keygen();
  if (json) {
    out(JSON.stringify({ publicKey: k.publicKey, secretKey: k.secretKey, keyId: k.keyId }, null, 2));
  } else {
    out(`# Signing key pair (key id ${k.keyId})`);
    out('# Public key: add it to "trustedKeys" in the nx-open-cache plugin options of nx.json (safe to commit):');
    out(k.publicKey);
    out('# Secret key: NX_OPEN_CACHE_SIGNING_KEY, a CI secret of trusted (main-branch) builds only; never commit it:');
    out(k.secretKey);
  }
  return 0;
}

module.exports = { keygenCommand, HELP };
