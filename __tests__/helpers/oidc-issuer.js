'use strict';
/**
 * Test harness: a local OpenID Connect issuer on 127.0.0.1 (port 0) with real signatures, and a
 * stand-in for GitHub Actions' ID-token endpoint. Nothing leaves the machine.
 *
 * - Keys are generated per run with node:crypto: RS256 (RSA 2048), ES256 (P-256), EdDSA (Ed25519),
 *   each with its own `kid`. `rotate()` replaces them with new keys and new kids (the old ones leave
 *   the JWKS).
 * - `GET <issuer>/.well-known/openid-configuration` is the discovery document ({issuer, jwks_uri,
 *   ...}); `GET <jwks_uri>` the public keys as a JWK Set ({keys: [{kty, kid, alg, use, ...}]}).
 *   `setDown(true)` makes both answer 503, `setDown('close')` drops the connection without an answer.
 * - `sign(claims, {alg, kid, header})` makes a compact JWS (ES256 in JOSE r||s form); `token()` fills
 *   iss/aud/iat/nbf/exp/jti first. Hostile tokens: `algNone()`, `hs256WithPublicKey()` (the RSA
 *   public key's PEM or JWK text as the HMAC secret), `tampered()` (the payload changed after
 *   signing), `unknownKid()` (signed by a key that no JWKS ever published).
 * - The GitHub stand-in: `GET /gh-token?api-version=2.0&audience=<aud>` with
 *   `Authorization: Bearer <requestToken>` answers `{"value": "<jwt>"}`; the claims and the lifetime
 *   come from `github.mint` (set by the test), every request is counted and recorded. A wrong or
 *   missing request token: 401. `github.env(audience)` gives the variables a job would see
 *   (ACTIONS_ID_TOKEN_REQUEST_URL / _TOKEN, NX_OPEN_CACHE_OIDC_AUDIENCE).
 *
 * Usage: `const issuer = await startIssuer(); ... await issuer.close();`
 */

const crypto = require('node:crypto');
const http = require('node:http');

/** @typedef {'RS256' | 'ES256' | 'EdDSA'} Alg */
/** The algorithms the issuer holds a key for. @type {readonly Alg[]} */
const ALGS = ['RS256', 'ES256', 'EdDSA'];

/**
 * @typedef {{ alg: Alg, kid: string, privateKey: crypto.KeyObject, publicKey: crypto.KeyObject,
 *   jwk: Record<string, unknown> }} SigningKey
 * @typedef {Record<string, unknown>} Claims
 * @typedef {{ alg?: Alg, kid?: string, header?: Record<string, unknown> }} SignOptions
 *   alg: default RS256; kid: default the current key of that alg (another kid must be a key this
 *   issuer holds or held, see `keyByKid`); header: merged over {alg, typ: 'JWT', kid} (a key set to
 *   undefined is removed)
 * @typedef {{ lifetime?: number, aud?: string | string[], now?: number } & SignOptions} TokenOptions
 *   lifetime: exp - iat in seconds (default 300); now: the iat in epoch seconds (default now)
 * @typedef {{ audience: string, n: number }} MintRequest  n: 1 for the first request, then 2, ...
 * @typedef {{ claims?: Claims, lifetime?: number, alg?: Alg }} MintResult
 * @typedef {{ at: number, audience: string | null, authorized: boolean }} GitHubRequest
 * @typedef {false | true | 'close'} DownMode  false: up; true: 503; 'close': the socket is dropped
 */

/**
 * @param {Buffer | string} data
 * @returns {string} base64url without padding
 */
function b64url(data) {
  return Buffer.from(data).toString('base64url');
}

/**
 * @param {unknown} value
 * @returns {string} the base64url of its JSON
 */
function b64json(value) {
  return b64url(JSON.stringify(value));
}

/**
 * Decodes a compact JWS without verifying it (for assertions).
 * @param {string} jwt
 * @returns {{ header: Record<string, unknown>, payload: Record<string, unknown>, signature: Buffer }}
 */
function decode(jwt) {
  const parts = jwt.split('.');
  if (parts.length !== 3) throw new Error(`not a compact JWS: ${parts.length} parts`);
  return {
    header: JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')),
    signature: Buffer.from(parts[2], 'base64url'),
  };
}

/** @returns {number} the current time in epoch seconds */
function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

/**
 * A new key pair for `alg` with a fresh kid, and its public JWK (kid, alg, use).
 * @param {Alg} alg
 * @returns {SigningKey}
 */
function generateKey(alg) {
  /** @type {{ publicKey: crypto.KeyObject, privateKey: crypto.KeyObject }} */
  let pair;
  if (alg === 'RS256') pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 0x10001 });
  else if (alg === 'ES256') pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  else pair = crypto.generateKeyPairSync('ed25519');
  const kid = `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
  const jwk = { ...pair.publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
  return { alg, kid, privateKey: pair.privateKey, publicKey: pair.publicKey, jwk };
}

/**
 * The signature of `signingInput` with `key`, as JWS wants it (ES256: r||s, 64 bytes).
 * @param {SigningKey} key
 * @param {string} signingInput
 * @returns {Buffer}
 */
function signWith(key, signingInput) {
  const data = Buffer.from(signingInput, 'ascii');
  if (key.alg === 'RS256') return crypto.sign('sha256', data, key.privateKey);
  if (key.alg === 'ES256') return crypto.sign('sha256', data, { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return crypto.sign(null, data, key.privateKey);
}

/**
 * Verifies a compact JWS with a public key (the helper's self-check, and for tests that want to
 * look at what the stand-in issued).
 * @param {string} jwt
 * @param {crypto.KeyObject} publicKey
 * @param {Alg} alg
 * @returns {boolean}
 */
function verify(jwt, publicKey, alg) {
  const [h, p, s] = jwt.split('.');
  const data = Buffer.from(`${h}.${p}`, 'ascii');
  const sig = Buffer.from(s, 'base64url');
  if (alg === 'RS256') return crypto.verify('sha256', data, publicKey, sig);
  if (alg === 'ES256') return crypto.verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig);
  return crypto.verify(null, data, publicKey, sig);
}

/**
 * Starts the issuer (and the GitHub stand-in) on 127.0.0.1, port 0.
 * @param {{ path?: string, audience?: string, requestToken?: string }} [opts]
 *   path: the issuer URL's path ('' by default, e.g. '/tenant-a'); audience: the default `aud` of
 *   `token()`; requestToken: the GitHub stand-in's request token (random by default)
 */
async function startIssuer(opts = {}) {
  const issuerPath = (opts.path || '').replace(/\/+$/, '');
  /** The keys in the JWKS (one per alg). @type {SigningKey[]} */
  let current = ALGS.map(generateKey);
  /** Every key ever made (rotated ones too), by kid. @type {Map<string, SigningKey>} */
  const everKid = new Map(current.map((k) => [k.kid, k]));
  /** @type {DownMode} */
  let down = false;
  const counts = { discovery: 0, jwks: 0, github: 0, githubRefused: 0, other: 0, refusedWhileDown: 0 };
  /** @type {GitHubRequest[]} */
  const githubRequests = [];
  const requestToken = opts.requestToken || `gh-request-${crypto.randomBytes(16).toString('hex')}`;

  const server = http.createServer((req, res) => {
    const u = new URL(req.url || '/', 'http://127.0.0.1');
    /** @param {number} status @param {unknown} body */
    const json = (status, body) => {
      const text = `${JSON.stringify(body)}\n`;
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    /** @param {number} status @param {string} text */
    const plain = (status, text) => {
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    if (req.method !== 'GET') return plain(405, 'method not allowed\n');
    const isDiscovery = u.pathname === `${issuerPath}/.well-known/openid-configuration`;
    const isJwks = u.pathname === `${issuerPath}/.well-known/jwks`;
    if (isDiscovery || isJwks) {
      if (isDiscovery) counts.discovery += 1;
      else counts.jwks += 1;
      if (down) {
        counts.refusedWhileDown += 1;
        if (down === 'close') {
          req.socket.destroy();
          return undefined;
        }
        return plain(503, 'issuer down (test)\n');
      }
      if (isDiscovery) return json(200, discoveryDocument());
      return json(200, jwks());
    }
    if (u.pathname === '/gh-token') {
      counts.github += 1;
      const authorized = req.headers.authorization === `Bearer ${requestToken}`;
      const audience = u.searchParams.get('audience');
      githubRequests.push({ at: Date.now(), audience, authorized });
      if (!authorized) {
        counts.githubRefused += 1;
        return json(401, { message: 'Bad credentials (test stand-in)' });
      }
      const n = githubRequests.filter((r) => r.authorized).length;
      const minted = github.mint({ audience: audience || '', n });
      const lifetime = minted.lifetime ?? 300;
      const value = token(minted.claims || {}, { lifetime, alg: minted.alg || 'RS256', aud: audience ?? undefined });
      return json(200, { count: 1, value });
    }
    counts.other += 1;
    return plain(404, 'not found\n');
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(undefined));
  });
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  const origin = `http://127.0.0.1:${address.port}`;
  const url = `${origin}${issuerPath}`;
  const jwksUri = `${url}/.well-known/jwks`;

  function discoveryDocument() {
    return {
      issuer: url,
      jwks_uri: jwksUri,
      subject_types_supported: ['public', 'pairwise'],
      response_types_supported: ['id_token'],
      claims_supported: ['sub', 'aud', 'exp', 'iat', 'iss', 'jti', 'nbf', 'ref', 'repository', 'repository_owner', 'event_name', 'workflow', 'actor'],
      id_token_signing_alg_values_supported: [...ALGS],
      scopes_supported: ['openid'],
    };
  }

  /** @returns {{ keys: Record<string, unknown>[] }} the public JWK Set as served now */
  function jwks() {
    return { keys: current.map((k) => ({ ...k.jwk })) };
  }

  /**
   * The key for `kid` (current or rotated out), or throws.
   * @param {string} kid
   */
  function keyByKid(kid) {
    const k = everKid.get(kid);
    if (!k) throw new Error(`oidc-issuer: no key with kid ${kid}`);
    return k;
  }

  /**
   * The current key for `alg`.
   * @param {Alg} alg
   */
  function keyFor(alg) {
    const k = current.find((c) => c.alg === alg);
    if (!k) throw new Error(`oidc-issuer: no current key for ${alg}`);
    return k;
  }

  /**
   * A compact JWS of `claims` exactly as given.
   * @param {Claims} claims
   * @param {SignOptions} [o]
   * @returns {string}
   */
  function sign(claims, o = {}) {
    const key = o.kid ? keyByKid(o.kid) : keyFor(o.alg || 'RS256');
    return signWithKey(key, claims, o.header);
  }

  /**
   * @param {SigningKey} key
   * @param {Claims} claims
   * @param {Record<string, unknown>} [headerOverrides]
   */
  function signWithKey(key, claims, headerOverrides = {}) {
    /** @type {Record<string, unknown>} */
    const header = { alg: key.alg, typ: 'JWT', kid: key.kid, ...headerOverrides };
    for (const [k, v] of Object.entries(header)) if (v === undefined) delete header[k];
    const input = `${b64json(header)}.${b64json(claims)}`;
    return `${input}.${b64url(signWith(key, input))}`;
  }

  /**
   * The registered claims a valid token carries: iss (this issuer), aud, iat/nbf (now), exp
   * (now + lifetime), jti.
   * @param {TokenOptions} [o]
   * @returns {Claims}
   */
  function standardClaims(o = {}) {
    const now = o.now ?? nowSeconds();
    /** @type {Claims} */
    const c = { iss: url, iat: now, nbf: now, exp: now + (o.lifetime ?? 300), jti: crypto.randomUUID() };
    const aud = o.aud ?? opts.audience;
    if (aud !== undefined) c.aud = aud;
    return c;
  }

  /**
   * A signed token: the standard claims, then `claims` over them (a claim set to undefined is
   * left out, e.g. `{ exp: undefined }`).
   * @param {Claims} claims
   * @param {TokenOptions} [o]
   * @returns {string}
   */
  function token(claims, o = {}) {
    /** @type {Claims} */
    const all = { ...standardClaims(o), ...claims };
    for (const [k, v] of Object.entries(all)) if (v === undefined) delete all[k];
    return sign(all, o);
  }

  /**
   * `alg: none`, an empty signature (and, with `withSignature`, the RS256 signature kept).
   * @param {Claims} claims full claims (see `standardClaims`)
   * @param {{ withSignature?: boolean, algText?: string }} [o] algText: e.g. 'None' or 'NONE'
   */
  function algNone(claims, o = {}) {
    const header = { alg: o.algText || 'none', typ: 'JWT' };
    const input = `${b64json(header)}.${b64json(claims)}`;
    return `${input}.${o.withSignature ? b64url(signWith(keyFor('RS256'), input)) : ''}`;
  }

  /**
   * HS256 with the RSA public key as the HMAC secret (the classic key-confusion attack): the
   * secret is the key's SPKI PEM text (`secret: 'pem'`, default), its PKCS#1 PEM, or its JWK JSON
   * as served. The header names the RSA key's kid.
   * @param {Claims} claims
   * @param {{ secret?: 'pem' | 'pkcs1' | 'jwk' }} [o]
   */
  function hs256WithPublicKey(claims, o = {}) {
    const rsa = keyFor('RS256');
    /** @type {string} */
    let secret;
    if (o.secret === 'jwk') secret = JSON.stringify(rsa.jwk);
    else if (o.secret === 'pkcs1') secret = String(rsa.publicKey.export({ format: 'pem', type: 'pkcs1' }));
    else secret = String(rsa.publicKey.export({ format: 'pem', type: 'spki' }));
    const header = { alg: 'HS256', typ: 'JWT', kid: rsa.kid };
    const input = `${b64json(header)}.${b64json(claims)}`;
    return `${input}.${b64url(crypto.createHmac('sha256', secret).update(input).digest())}`;
  }

  /**
   * A token whose payload was changed after signing: `changes` merged into `claims`, the signature
   * the one of the original payload.
   * @param {Claims} claims
   * @param {Claims} changes
   * @param {SignOptions} [o]
   */
  function tampered(claims, changes, o = {}) {
    const original = sign(claims, o).split('.');
    return `${original[0]}.${b64json({ ...claims, ...changes })}.${original[2]}`;
  }

  /**
   * Signed by a new key of `alg` that is in no JWKS (now or later, unless `publish()`ed).
   * @param {Claims} claims
   * @param {{ alg?: Alg }} [o]
   * @returns {{ jwt: string, key: SigningKey, publish: () => void }}
   */
  function unknownKid(claims, o = {}) {
    const key = generateKey(o.alg || 'RS256');
    everKid.set(key.kid, key);
    return {
      jwt: signWithKey(key, claims),
      key,
      /** Adds the key to the served JWKS (beside the current ones). */
      publish: () => {
        current = [...current, key];
      },
    };
  }

  /**
   * New keys with new kids for `algs` (default all); the old ones leave the JWKS.
   * @param {Alg[]} [algs]
   * @returns {Record<string, string>} alg -> the new kid
   */
  function rotate(algs = [...ALGS]) {
    /** @type {Record<string, string>} */
    const kids = {};
    current = current.filter((k) => !algs.includes(k.alg));
    for (const alg of algs) {
      const k = generateKey(alg);
      everKid.set(k.kid, k);
      current.push(k);
      kids[alg] = k.kid;
    }
    return kids;
  }

  /**
   * Discovery and JWKS down (true: 503; 'close': the connection dropped) or up (false).
   * @param {DownMode} mode
   */
  function setDown(mode) {
    down = mode;
  }

  /** The GitHub Actions token endpoint stand-in. */
  const github = {
    requestToken,
    /** ACTIONS_ID_TOKEN_REQUEST_URL (it holds a query, as GitHub's does: clients append `&audience=`). */
    requestUrl: `${origin}/gh-token?api-version=2.0`,
    /**
     * What the endpoint issues for a request (set by the test): claims over the standard ones, the
     * lifetime in seconds (default 300), the alg (default RS256).
     * @type {(req: MintRequest) => MintResult}
     */
    mint: (/** @type {MintRequest} */ _req) => ({ claims: {}, lifetime: 300 }),
    /** Every request: when, the audience asked for, whether the request token was right. */
    requests: githubRequests,
    /**
     * The variables of a GitHub Actions job with `id-token: write` (and the plugin's audience).
     * @param {string} audience
     * @param {{ requestToken?: string }} [o] another request token (to get 401s)
     * @returns {Record<string, string>}
     */
    env: (audience, o = {}) => ({
      ACTIONS_ID_TOKEN_REQUEST_URL: github.requestUrl,
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: o.requestToken ?? requestToken,
      NX_OPEN_CACHE_OIDC_AUDIENCE: audience,
    }),
  };

  return {
    /** The issuer identifier (`iss`), http://127.0.0.1:<port>[path]. */
    url,
    /** `<url>/.well-known/openid-configuration` */
    discoveryUrl: `${url}/.well-known/openid-configuration`,
    /** The JWKS URL the discovery document names. */
    jwksUri,
    counts,
    github,
    /** The current kid of `alg`. @param {Alg} alg */
    kid: (/** @type {Alg} */ alg) => keyFor(alg).kid,
    keyFor,
    keyByKid,
    jwks,
    discoveryDocument,
    standardClaims,
    sign,
    token,
    algNone,
    hs256WithPublicKey,
    tampered,
    unknownKid,
    rotate,
    setDown,
    /** The SPEC's name for `setDown`. */
    down: setDown,
    /** Stops listening and drops open connections. */
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve(undefined));
        server.closeAllConnections();
      }),
  };
}

/** @typedef {Awaited<ReturnType<typeof startIssuer>>} Issuer */

module.exports = { ALGS, startIssuer, decode, verify, nowSeconds, b64url };
