'use strict';
/**
 * The test OIDC issuer (__tests__/helpers/oidc-issuer.js) checked on its own with node:crypto, so
 * that a failure of oidc.e2e.test.js points at the server or the plugin, never at the harness:
 * discovery and JWKS over HTTP, every served JWK imports as a public key and verifies what `sign`
 * made (ES256 as JOSE r||s), the hostile tokens fail that verification, rotation, down modes, the
 * GitHub token endpoint stand-in (request token, audience, counting).
 *
 * Run: node --test __tests__/oidc-issuer.test.js
 */

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { test, before, after } = require('node:test');

const { ALGS, startIssuer, decode, verify } = require('./helpers/oidc-issuer.js');
const { request } = require('./helpers/serve-process.js');

/** @type {import('./helpers/oidc-issuer.js').Issuer} */
let issuer;

before(async () => {
  issuer = await startIssuer({ audience: 'https://cache.test' });
});

after(async () => {
  await issuer.close();
});

/** @param {string} url */
async function getJson(url) {
  const r = await request(url);
  assert.equal(r.status, 200, `${url}: ${r.status} ${r.body}`);
  return JSON.parse(r.body.toString('utf8'));
}

/**
 * Verifies `jwt` against the JWKS served now (the key picked by kid), as a relying party would.
 * @param {string} jwt
 */
async function verifiesWithServedKeys(jwt) {
  const { keys } = await getJson(issuer.jwksUri);
  const { header } = decode(jwt);
  const jwk = keys.find((/** @type {any} */ k) => k.kid === header.kid);
  if (!jwk || !ALGS.includes(/** @type {any} */ (header.alg)) || jwk.alg !== header.alg) return false;
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  return verify(jwt, key, /** @type {any} */ (header.alg));
}

test('discovery names the issuer and the JWKS; every JWK imports, has kid/alg/use and no private part', async () => {
  const doc = await getJson(issuer.discoveryUrl);
  assert.equal(doc.issuer, issuer.url);
  assert.match(issuer.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(doc.jwks_uri, issuer.jwksUri);
  const { keys } = await getJson(doc.jwks_uri);
  assert.deepEqual(keys.map((/** @type {any} */ k) => k.alg).sort(), [...ALGS].sort());
  for (const k of keys) {
    assert.equal(k.use, 'sig');
    assert.equal(typeof k.kid, 'string');
    assert.equal(k.d, undefined, `${k.alg}: the JWK carries a private part`);
    const pub = crypto.createPublicKey({ key: k, format: 'jwk' });
    assert.equal(pub.type, 'public');
  }
  assert.deepEqual(
    keys.map((/** @type {any} */ k) => [k.alg, k.kty, k.crv]).sort(),
    [['ES256', 'EC', 'P-256'], ['EdDSA', 'OKP', 'Ed25519'], ['RS256', 'RSA', undefined]],
  );
  const rsa = keys.find((/** @type {any} */ k) => k.alg === 'RS256');
  assert.equal(Buffer.from(rsa.n, 'base64url').length, 256, 'RSA 2048');
});

test('tokens of every alg verify with the served keys; ES256 signatures are 64-byte r||s', async () => {
  for (const alg of ALGS) {
    const jwt = issuer.token({ sub: 'repo:acme/monorepo:ref:refs/heads/main' }, { alg, lifetime: 60 });
    const { header, payload, signature } = decode(jwt);
    assert.deepEqual(header, { alg, typ: 'JWT', kid: issuer.kid(alg) });
    assert.equal(payload.iss, issuer.url);
    assert.equal(payload.aud, 'https://cache.test');
    assert.equal(Number(payload.exp) - Number(payload.iat), 60);
    if (alg === 'ES256') assert.equal(signature.length, 64);
    assert.ok(await verifiesWithServedKeys(jwt), `${alg} token does not verify`);
  }
  const noExp = decode(issuer.token({ exp: undefined, extra: true })).payload;
  assert.ok(!('exp' in noExp) && noExp.extra === true);
  const hdr = decode(issuer.sign({ a: 1 }, { alg: 'ES256', header: { typ: undefined, cty: 'x' } })).header;
  assert.deepEqual(hdr, { alg: 'ES256', kid: issuer.kid('ES256'), cty: 'x' });
});

test('hostile tokens: none, HS256 keyed with the public key, tampered, unknown kid: none verify', async () => {
  const claims = issuer.standardClaims();
  const none = issuer.algNone(claims);
  assert.equal(decode(none).header.alg, 'none');
  assert.ok(none.endsWith('.'));
  assert.equal(await verifiesWithServedKeys(none), false);
  for (const secret of /** @type {const} */ (['pem', 'pkcs1', 'jwk'])) {
    const hs = issuer.hs256WithPublicKey(claims, { secret });
    const { header } = decode(hs);
    assert.equal(header.alg, 'HS256');
    assert.equal(header.kid, issuer.kid('RS256'));
    assert.equal(await verifiesWithServedKeys(hs), false);
  }
  // The HMAC really is keyed by the public PEM (an attacker can compute it).
  const hs = issuer.hs256WithPublicKey(claims).split('.');
  const pem = String(issuer.keyFor('RS256').publicKey.export({ format: 'pem', type: 'spki' }));
  assert.equal(hs[2], crypto.createHmac('sha256', pem).update(`${hs[0]}.${hs[1]}`).digest('base64url'));
  const t = issuer.tampered(claims, { ref: 'refs/heads/main' });
  assert.equal(decode(t).payload.ref, 'refs/heads/main');
  assert.equal(await verifiesWithServedKeys(t), false);
  assert.ok(await verifiesWithServedKeys(issuer.sign(claims)));
  const unknown = issuer.unknownKid(claims);
  assert.equal(await verifiesWithServedKeys(unknown.jwt), false);
  assert.ok(verify(unknown.jwt, unknown.key.publicKey, 'RS256'), 'signed by its own key');
});

test('rotate: new kids served, old ones gone (tokens of old keys still signable by kid); down modes; counters', async () => {
  const oldKid = issuer.kid('RS256');
  const oldToken = issuer.token({});
  const kids = issuer.rotate();
  assert.notEqual(kids.RS256, oldKid);
  const { keys } = await getJson(issuer.jwksUri);
  assert.deepEqual(keys.map((/** @type {any} */ k) => k.kid).sort(), Object.values(kids).sort());
  assert.equal(await verifiesWithServedKeys(oldToken), false);
  assert.equal(decode(issuer.sign({}, { kid: oldKid })).header.kid, oldKid);
  assert.ok(await verifiesWithServedKeys(issuer.token({})));

  const before = { ...issuer.counts };
  issuer.setDown(true);
  assert.equal((await request(issuer.jwksUri)).status, 503);
  assert.equal((await request(issuer.discoveryUrl)).status, 503);
  issuer.setDown('close');
  await assert.rejects(request(issuer.jwksUri));
  issuer.setDown(false);
  assert.equal((await request(issuer.jwksUri)).status, 200);
  assert.equal(issuer.counts.jwks - before.jwks, 3);
  assert.equal(issuer.counts.discovery - before.discovery, 1);
  assert.equal(issuer.counts.refusedWhileDown - before.refusedWhileDown, 3);
});

test('GitHub stand-in: request token checked, audience passed into aud, claims/lifetime from mint, requests counted', async () => {
  issuer.github.mint = ({ audience, n }) => ({ claims: { repository: 'acme/monorepo', n, audience }, lifetime: 5, alg: 'ES256' });
  const env = issuer.github.env('https://cache.test');
  assert.match(env.ACTIONS_ID_TOKEN_REQUEST_URL, /\?api-version=2\.0$/);
  const url = `${env.ACTIONS_ID_TOKEN_REQUEST_URL}&audience=${encodeURIComponent('https://cache.test')}`;
  const ok = await request(url, { token: env.ACTIONS_ID_TOKEN_REQUEST_TOKEN });
  assert.equal(ok.status, 200, ok.body.toString());
  const { value } = JSON.parse(ok.body.toString());
  const { header, payload } = decode(value);
  assert.equal(header.alg, 'ES256');
  assert.deepEqual([payload.aud, payload.repository, payload.n, Number(payload.exp) - Number(payload.iat)], ['https://cache.test', 'acme/monorepo', 1, 5]);
  assert.ok(await verifiesWithServedKeys(value));
  const bad = await request(url, { token: 'wrong-request-token' });
  assert.equal(bad.status, 401);
  const none = await request(url);
  assert.equal(none.status, 401);
  const again = JSON.parse((await request(url, { token: env.ACTIONS_ID_TOKEN_REQUEST_TOKEN })).body.toString());
  assert.equal(decode(again.value).payload.n, 2);
  assert.equal(issuer.counts.github, 4);
  assert.equal(issuer.counts.githubRefused, 2);
  assert.deepEqual(issuer.github.requests.map((r) => [r.audience, r.authorized]), [
    ['https://cache.test', true], ['https://cache.test', false], ['https://cache.test', false], ['https://cache.test', true],
  ]);
});

test('an issuer with a path: discovery under it, iss carries it', async () => {
  const other = await startIssuer({ path: '/tenant-a' });
  try {
    assert.match(other.url, /\/tenant-a$/);
    const doc = await getJson(`${other.url}/.well-known/openid-configuration`);
    assert.equal(doc.issuer, other.url);
    assert.equal((await getJson(doc.jwks_uri)).keys.length, 3);
    assert.equal(decode(other.token({})).payload.iss, other.url);
  } finally {
    await other.close();
  }
});
