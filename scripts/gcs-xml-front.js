'use strict';
/**
 * A GCS XML-API front for fake-gcs-server, used by scripts/emulators.js.
 *
 * Why: object_store (the Rust crate behind the gcs backend) speaks Google Cloud Storage's XML API
 * for everything but authentication: `PUT /<bucket>/<object>` with `x-goog-if-generation-match`,
 * XML multipart uploads (`?uploads`, `?partNumber&uploadId`, `?uploadId`), copies with
 * `x-goog-copy-source`, and `GET /<bucket>?list-type=2` listings. fake-gcs-server 1.54 (the build
 * the PyPI wrapper bundles) implements the JSON API; of the XML API it serves object reads only,
 * answers every other XML write `400 invalid uploadType`, and ignores `ifGenerationMatch` on
 * JSON media uploads and copies (it honours it on JSON multipart uploads).
 *
 * What this front does: it listens on 127.0.0.1 and maps each XML call onto the JSON call with the
 * same meaning, so every object operation and every precondition is still carried out by
 * fake-gcs-server:
 * - object PUT            -> JSON multipart upload (`uploadType=multipart`, `ifGenerationMatch`)
 * - copy (PUT + x-goog-copy-source) -> read the source, JSON multipart upload of the destination
 *                             with the same precondition
 * - multipart upload      -> parts kept in temp files here (streamed, never in memory), then one
 *                             JSON multipart upload of their concatenation on completion
 * - bucket listing        -> JSON objects.list, answered as ListBucketResult XML
 * - object DELETE         -> JSON objects.delete
 * - object GET / HEAD and everything under /storage, /upload, /download: passed through untouched.
 * Anything else is answered `501 NotImplemented` (never silently accepted).
 *
 * With `auth` (fake-gcs-server checks no credentials), every request must carry the bearer token a
 * Google client signs itself with its service-account key (an RS256 JWT, as object_store sends
 * when the key file does not disable OAuth): signature checked against the account's public key,
 * issuer = the account's email, not expired. Anything else is `401 AuthenticationRequired`, as GCS
 * answers.
 */

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { pipeline } = require('node:stream/promises');

/** Passed through to fake-gcs-server as they are (its own JSON API). */
const PASS_PREFIXES = ['/storage/', '/upload/', '/download/', '/batch/', '/_internal/'];
/** Bounded: the size of a CompleteMultipartUpload document we accept. */
const MAX_COMPLETE_BODY = 1024 * 1024;
/** Bounded: parts per multipart upload (GCS allows 10,000). */
const MAX_PARTS = 10_000;
const UPSTREAM_TIMEOUT_MS = 120_000;

/** @param {string} s */
function xmlEscape(s) {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/**
 * @param {import('node:http').ServerResponse} res
 * @param {number} status
 * @param {string} code
 * @param {string} message
 */
function xmlError(res, status, code, message) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `<?xml version='1.0' encoding='UTF-8'?><Error><Code>${xmlEscape(code)}</Code><Message>${xmlEscape(message)}</Message></Error>`;
  res.writeHead(status, { 'Content-Type': 'application/xml; charset=UTF-8', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * @param {import('node:http').ServerResponse} res
 * @param {string} body
 * @param {Record<string, string>} [headers]
 */
function xmlOk(res, body, headers = {}) {
  const doc = `<?xml version='1.0' encoding='UTF-8'?>${body}`;
  res.writeHead(200, { ...headers, 'Content-Type': 'application/xml; charset=UTF-8', 'Content-Length': Buffer.byteLength(doc) });
  res.end(doc);
}

/** XML error code for a JSON API status. @param {number} status @param {string} what */
function codeFor(status, what) {
  if (status === 404) return what === 'bucket' ? 'NoSuchBucket' : 'NoSuchKey';
  if (status === 412) return 'PreconditionFailed';
  if (status === 400) return 'InvalidArgument';
  return 'InternalError';
}

/**
 * Reads a whole (small) response or request body.
 * @param {import('node:stream').Readable} stream
 * @param {number} limit
 * @returns {Promise<Buffer>}
 */
async function readAll(stream, limit) {
  /** @type {Buffer[]} */ const chunks = [];
  let size = 0;
  for await (const chunk of stream) {
    size += chunk.length;
    if (size > limit) throw new Error(`body larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * Why a bearer token is not a valid self-signed JWT of the account, or '' when it is.
 * @param {string | undefined} header  the Authorization header
 * @param {{ publicKey: crypto.KeyObject, email: string }} auth
 */
function tokenProblem(header, auth) {
  const m = /^Bearer (\S+)$/.exec(header || '');
  if (!m) return 'no bearer token';
  const parts = m[1].split('.');
  if (parts.length !== 3) return 'the bearer token is not a JWT';
  /** @type {any} */ let head;
  /** @type {any} */ let claims;
  try {
    head = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return 'the bearer token is not a JWT';
  }
  if (head.alg !== 'RS256') return `unexpected JWT algorithm ${JSON.stringify(head.alg)}`;
  const signed = crypto.verify('RSA-SHA256', Buffer.from(`${parts[0]}.${parts[1]}`), auth.publicKey, Buffer.from(parts[2], 'base64url'));
  if (!signed) return 'the token is not signed by the service account key';
  if (claims.iss !== auth.email) return `the token is issued by ${JSON.stringify(claims.iss)}, not the service account`;
  if (typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now()) return 'the token has expired';
  return '';
}

/**
 * Starts the front before fake-gcs-server at `backend` (e.g. http://127.0.0.1:4443).
 * @param {{ backend: string, tmpDir?: string, auth?: { publicKey: crypto.KeyObject, email: string } }} opts
 * @returns {Promise<{ url: string, close: () => Promise<void> }>}
 */
async function startGcsXmlFront(opts) {
  const backend = new URL(opts.backend);
  const partsRoot = fs.mkdtempSync(path.join(opts.tmpDir || os.tmpdir(), 'gcs-xml-front-'));
  /** uploadId -> { bucket, object, dir, parts: Map<number, { file, etag }> } */
  const uploads = new Map();

  /**
   * A request to fake-gcs-server.
   * @param {string} method
   * @param {string} pathAndQuery
   * @param {Record<string, string | number>} headers
   * @returns {{ req: import('node:http').ClientRequest, response: Promise<import('node:http').IncomingMessage> }}
   */
  function upstream(method, pathAndQuery, headers) {
    /** @type {import('node:http').ClientRequest} */
    let req;
    const response = new Promise((resolve, reject) => {
      req = http.request(
        { host: backend.hostname, port: backend.port, method, path: pathAndQuery, headers: { ...headers, host: backend.host }, timeout: UPSTREAM_TIMEOUT_MS },
        resolve,
      );
      req.on('timeout', () => req.destroy(new Error(`fake-gcs-server: no answer to ${method} ${pathAndQuery} within ${UPSTREAM_TIMEOUT_MS} ms`)));
      req.on('error', reject);
    });
    // @ts-ignore assigned synchronously by the Promise executor
    return { req, response };
  }

  /**
   * Uploads `sources` (streams, in order) as one object through a JSON multipart upload, with the
   * precondition (`ifGenerationMatch`) when given. Resolves with the JSON API's status and object.
   * @param {string} bucket
   * @param {string} object
   * @param {string} contentType
   * @param {string | undefined} ifGenerationMatch
   * @param {(() => import('node:stream').Readable)[]} sources
   */
  async function jsonUpload(bucket, object, contentType, ifGenerationMatch, sources) {
    const boundary = `nxoc-${crypto.randomBytes(12).toString('hex')}`;
    const q = new URLSearchParams({ uploadType: 'multipart' });
    if (ifGenerationMatch !== undefined) q.set('ifGenerationMatch', ifGenerationMatch);
    const { req, response } = upstream('POST', `/upload/storage/v1/b/${encodeURIComponent(bucket)}/o?${q}`, {
      'content-type': `multipart/related; boundary=${boundary}`,
      'transfer-encoding': 'chunked',
    });
    response.catch(() => undefined);
    const write = (/** @type {string | Buffer} */ data) =>
      new Promise((resolve, reject) => req.write(data, (err) => (err ? reject(err) : resolve(undefined))));
    /** @type {unknown} */
    let sendError;
    try {
      await write(
        `--${boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n${JSON.stringify({ name: object, contentType })}\r\n` +
          `--${boundary}\r\nContent-Type: ${contentType}\r\n\r\n`,
      );
      for (const source of sources) {
        await pipeline(source(), req, { end: false });
      }
      req.end(`\r\n--${boundary}--\r\n`);
    } catch (e) {
      // fake-gcs-server may answer (e.g. 412) before it has read the whole body.
      sendError = e;
    }
    /** @type {import('node:http').IncomingMessage} */
    let res;
    try {
      res = await response;
    } catch (e) {
      throw sendError || e;
    }
    const body = await readAll(res, 16 * 1024 * 1024);
    /** @type {any} */ let json = {};
    try {
      json = JSON.parse(body.toString('utf8') || '{}');
    } catch {
      json = { error: { message: body.toString('utf8').slice(0, 500) } };
    }
    return { status: res.statusCode || 0, json };
  }

  /**
   * Answers a JSON upload result the way the XML API answers a PUT.
   * @param {import('node:http').ServerResponse} res
   * @param {{ status: number, json: any }} r
   */
  function answerPut(res, r) {
    if (r.status === 200) {
      res.writeHead(200, {
        ETag: `"${r.json.etag || r.json.md5Hash || ''}"`,
        'x-goog-generation': String(r.json.generation || ''),
        'Content-Length': 0,
      });
      res.end();
      return;
    }
    xmlError(res, r.status, codeFor(r.status, 'object'), String(r.json?.error?.message || `fake-gcs-server answered ${r.status}`));
  }

  /**
   * @param {import('node:http').IncomingMessage} req
   * @param {import('node:http').ServerResponse} res
   */
  function passThrough(req, res) {
    const { req: up, response } = upstream(/** @type {string} */ (req.method), /** @type {string} */ (req.url), {
      .../** @type {Record<string, string>} */ (Object.fromEntries(Object.entries(req.headers).filter(([k, v]) => typeof v === 'string' && k !== 'host'))),
    });
    response.then(
      (r) => {
        res.writeHead(r.statusCode || 502, r.headers);
        pipeline(r, res).catch(() => res.destroy());
      },
      (e) => xmlError(res, 502, 'BadGateway', e.message),
    );
    pipeline(req, up).catch(() => up.destroy());
  }

  /**
   * GET /<bucket>?list-type=2 -> JSON objects.list -> ListBucketResult.
   * @param {string} bucket
   * @param {URLSearchParams} query
   * @param {import('node:http').ServerResponse} res
   */
  async function list(bucket, query, res) {
    const q = new URLSearchParams();
    const prefix = query.get('prefix') || '';
    if (prefix) q.set('prefix', prefix);
    if (query.get('delimiter')) q.set('delimiter', /** @type {string} */ (query.get('delimiter')));
    if (query.get('continuation-token')) q.set('pageToken', /** @type {string} */ (query.get('continuation-token')));
    const startAfter = query.get('start-after') || undefined;
    if (startAfter) q.set('startOffset', startAfter);
    const maxKeys = Number(query.get('max-keys') || 1000);
    q.set('maxResults', String(maxKeys));
    const { req, response } = upstream('GET', `/storage/v1/b/${encodeURIComponent(bucket)}/o?${q}`, {});
    req.end();
    const r = await response;
    const body = await readAll(r, 64 * 1024 * 1024);
    if (r.statusCode !== 200) {
      xmlError(res, r.statusCode || 502, codeFor(r.statusCode || 502, 'bucket'), body.toString('utf8').slice(0, 500));
      return;
    }
    const json = JSON.parse(body.toString('utf8'));
    const items = (json.items || []).filter((/** @type {any} */ o) => startAfter === undefined || o.name > startAfter);
    const contents = items
      .map(
        (/** @type {any} */ o) =>
          `<Contents><Key>${xmlEscape(o.name)}</Key><Generation>${xmlEscape(String(o.generation || ''))}</Generation>` +
          `<LastModified>${xmlEscape(new Date(o.updated || o.timeCreated).toISOString())}</LastModified>` +
          `<ETag>"${xmlEscape(String(o.etag || o.md5Hash || ''))}"</ETag><Size>${Number(o.size || 0)}</Size></Contents>`,
      )
      .join('');
    const prefixes = (json.prefixes || []).map((/** @type {string} */ p) => `<CommonPrefixes><Prefix>${xmlEscape(p)}</Prefix></CommonPrefixes>`).join('');
    const next = json.nextPageToken ? `<NextContinuationToken>${xmlEscape(json.nextPageToken)}</NextContinuationToken>` : '';
    xmlOk(
      res,
      `<ListBucketResult xmlns="http://doc.s3.amazonaws.com/2006-03-01"><Name>${xmlEscape(bucket)}</Name>` +
        `<Prefix>${xmlEscape(prefix)}</Prefix><KeyCount>${items.length}</KeyCount><MaxKeys>${maxKeys}</MaxKeys>` +
        `<IsTruncated>${json.nextPageToken ? 'true' : 'false'}</IsTruncated>${contents}${prefixes}${next}</ListBucketResult>`,
    );
  }

  /**
   * A streaming read of an object from fake-gcs-server (JSON API), or its status when it fails.
   * @param {string} bucket
   * @param {string} object
   */
  async function openObject(bucket, object) {
    const { req, response } = upstream('GET', `/storage/v1/b/${encodeURIComponent(bucket)}/o/${encodeURIComponent(object)}?alt=media`, {});
    req.end();
    return response;
  }

  /**
   * @param {import('node:http').IncomingMessage} req
   * @param {import('node:http').ServerResponse} res
   */
  async function handle(req, res) {
    const url = new URL(/** @type {string} */ (req.url), 'http://front.invalid');
    const raw = url.pathname;
    if (PASS_PREFIXES.some((p) => raw.startsWith(p))) return passThrough(req, res);
    const rest = raw.slice(1);
    const slash = rest.indexOf('/');
    const bucket = decodeURIComponent(slash === -1 ? rest : rest.slice(0, slash));
    const object = slash === -1 ? '' : decodeURIComponent(rest.slice(slash + 1));
    const q = url.searchParams;
    const method = req.method || 'GET';
    const precondition = typeof req.headers['x-goog-if-generation-match'] === 'string' ? req.headers['x-goog-if-generation-match'] : undefined;
    const contentType = typeof req.headers['content-type'] === 'string' ? req.headers['content-type'] : 'application/octet-stream';

    if (!bucket) return xmlError(res, 501, 'NotImplemented', 'listing buckets is not supported by this front');
    if (!object) {
      if (method === 'GET' && q.get('list-type') === '2') return list(bucket, q, res);
      return xmlError(res, 501, 'NotImplemented', `${method} /${bucket}?${q} is not supported by this front`);
    }

    // --- multipart uploads ----------------------------------------------------------------------
    if (method === 'POST' && q.has('uploads')) {
      const uploadId = crypto.randomBytes(16).toString('hex');
      const dir = fs.mkdtempSync(path.join(partsRoot, 'u-'));
      uploads.set(uploadId, { bucket, object, dir, contentType, parts: new Map() });
      req.resume();
      return xmlOk(
        res,
        `<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${xmlEscape(bucket)}</Bucket>` +
          `<Key>${xmlEscape(object)}</Key><UploadId>${uploadId}</UploadId></InitiateMultipartUploadResult>`,
      );
    }
    const uploadId = q.get('uploadId');
    if (uploadId !== null) {
      const upload = uploads.get(uploadId);
      if (!upload || upload.bucket !== bucket || upload.object !== object) {
        req.resume();
        return xmlError(res, 404, 'NoSuchUpload', `no multipart upload ${uploadId} for ${bucket}/${object}`);
      }
      if (method === 'PUT' && q.has('partNumber')) {
        const n = Number(q.get('partNumber'));
        if (!Number.isInteger(n) || n < 1 || n > MAX_PARTS) {
          req.resume();
          return xmlError(res, 400, 'InvalidArgument', `partNumber ${q.get('partNumber')}`);
        }
        const file = path.join(upload.dir, `part-${n}`);
        const md5 = crypto.createHash('md5');
        req.on('data', (c) => md5.update(c));
        await pipeline(req, fs.createWriteStream(file));
        const etag = md5.digest('hex');
        upload.parts.set(n, { file, etag });
        res.writeHead(200, { ETag: `"${etag}"`, 'Content-Length': 0 });
        return res.end();
      }
      if (method === 'DELETE') {
        uploads.delete(uploadId);
        fs.rmSync(upload.dir, { recursive: true, force: true });
        req.resume();
        res.writeHead(204);
        return res.end();
      }
      if (method === 'POST') {
        const doc = (await readAll(req, MAX_COMPLETE_BODY)).toString('utf8');
        /** @type {{ n: number, etag: string }[]} */ const listed = [];
        const re = /<Part>([\s\S]*?)<\/Part>/g;
        for (let m = re.exec(doc); m && listed.length <= MAX_PARTS; m = re.exec(doc)) {
          const n = /<PartNumber>(\d+)<\/PartNumber>/.exec(m[1]);
          const e = /<ETag>([^<]*)<\/ETag>/.exec(m[1]);
          if (!n || !e) return xmlError(res, 400, 'MalformedXML', 'a Part without PartNumber or ETag');
          listed.push({ n: Number(n[1]), etag: e[1].replace(/&quot;/g, '"').replace(/"/g, '') });
        }
        if (listed.length === 0) return xmlError(res, 400, 'MalformedXML', 'no parts listed');
        /** @type {string[]} */ const files = [];
        let last = 0;
        for (const { n, etag } of listed) {
          const part = upload.parts.get(n);
          if (!part || part.etag !== etag) return xmlError(res, 400, 'InvalidPart', `part ${n} (etag ${etag}) was not uploaded`);
          if (n <= last) return xmlError(res, 400, 'InvalidPartOrder', `part ${n} after part ${last}`);
          last = n;
          files.push(part.file);
        }
        const r = await jsonUpload(bucket, object, upload.contentType, precondition, files.map((f) => () => fs.createReadStream(f)));
        uploads.delete(uploadId);
        fs.rmSync(upload.dir, { recursive: true, force: true });
        if (r.status !== 200) {
          return xmlError(res, r.status, codeFor(r.status, 'object'), String(r.json?.error?.message || r.status));
        }
        return xmlOk(
          res,
          `<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Location>/${xmlEscape(bucket)}/${xmlEscape(object)}</Location>` +
            `<Bucket>${xmlEscape(bucket)}</Bucket><Key>${xmlEscape(object)}</Key><ETag>"${xmlEscape(String(r.json.etag || ''))}"</ETag></CompleteMultipartUploadResult>`,
          { 'x-goog-generation': String(r.json.generation || '') },
        );
      }
      req.resume();
      return xmlError(res, 501, 'NotImplemented', `${method} with uploadId is not supported by this front`);
    }

    // --- single objects -----------------------------------------------------------------------
    if (method === 'GET' || method === 'HEAD') return passThrough(req, res);
    if (method === 'PUT') {
      const copySource = req.headers['x-goog-copy-source'];
      if (typeof copySource === 'string') {
        req.resume();
        const src = copySource.replace(/^\//, '');
        const cut = src.indexOf('/');
        if (cut === -1) return xmlError(res, 400, 'InvalidArgument', `x-goog-copy-source ${copySource}`);
        const srcBucket = decodeURIComponent(src.slice(0, cut));
        const srcObject = decodeURIComponent(src.slice(cut + 1));
        const source = await openObject(srcBucket, srcObject);
        if (source.statusCode !== 200) {
          source.resume();
          return xmlError(res, source.statusCode || 502, codeFor(source.statusCode || 502, 'object'), `copy source ${srcBucket}/${srcObject}`);
        }
        const srcType = typeof source.headers['content-type'] === 'string' ? source.headers['content-type'] : 'application/octet-stream';
        const r = await jsonUpload(bucket, object, srcType, precondition, [() => source]);
        if (r.status !== 200) {
          return xmlError(res, r.status, codeFor(r.status, 'object'), String(r.json?.error?.message || r.status));
        }
        return xmlOk(
          res,
          `<CopyObjectResult><LastModified>${new Date().toISOString()}</LastModified><ETag>"${xmlEscape(String(r.json.etag || ''))}"</ETag></CopyObjectResult>`,
          { 'x-goog-generation': String(r.json.generation || '') },
        );
      }
      const r = await jsonUpload(bucket, object, contentType, precondition, [() => req]);
      return answerPut(res, r);
    }
    if (method === 'DELETE') {
      req.resume();
      const { req: up, response } = upstream('DELETE', `/storage/v1/b/${encodeURIComponent(bucket)}/o/${encodeURIComponent(object)}`, {});
      up.end();
      const r = await response;
      const body = await readAll(r, 1024 * 1024);
      if (r.statusCode === 204 || r.statusCode === 200) {
        res.writeHead(204);
        return res.end();
      }
      return xmlError(res, r.statusCode || 502, codeFor(r.statusCode || 502, 'object'), body.toString('utf8').slice(0, 500));
    }
    req.resume();
    return xmlError(res, 501, 'NotImplemented', `${method} on an object is not supported by this front`);
  }

  const server = http.createServer((req, res) => {
    const problem = opts.auth ? tokenProblem(req.headers.authorization, opts.auth) : '';
    if (problem) {
      req.resume();
      return xmlError(res, 401, 'AuthenticationRequired', `gcs-xml-front: ${problem}`);
    }
    handle(req, res).catch((e) => xmlError(res, 500, 'InternalError', `gcs-xml-front: ${e instanceof Error ? e.message : String(e)}`));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(undefined));
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve(undefined)));
      fs.rmSync(partsRoot, { recursive: true, force: true });
    },
  };
}

module.exports = { startGcsXmlFront };
