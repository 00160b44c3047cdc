#!/usr/bin/env node
'use strict';
/**
 * The nx-open-cache proxy on its own, for the HTTP benchmark: `node benches/proxy-server.js
 * <workspaceRoot> <storePath>` starts `CacheProxy` on the fs store and prints `{"url", "token"}` as
 * one JSON line; when stdin closes (the bench is done, or died) it stops the proxy, prints its
 * counters as one JSON line and exits. A process of its own, like nginx, so that its CPU time can be
 * read from /proc and it does not share an event loop or heap with the client.
 */
const path = require('node:path');

const [workspaceRoot, storePath] = process.argv.slice(2);
if (!workspaceRoot || !storePath) {
  console.error('usage: node benches/proxy-server.js <workspaceRoot> <storePath>');
  process.exit(2);
}
const native = require(path.join(__dirname, '..', 'index.js'));
/** @type {Record<string, string>} */
const env = {};
for (const [k, v] of Object.entries(process.env)) if (typeof v === 'string') env[k] = v;
const proxy = native.CacheProxy.start(workspaceRoot, { path: storePath }, env);
process.stdout.write(`${JSON.stringify({ url: proxy.url, token: proxy.token, pid: process.pid })}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  proxy.stop().then(
    (stats) => {
      process.stdout.write(`${JSON.stringify(stats)}\n`, () => process.exit(0));
    },
    (err) => {
      console.error(`proxy-server: stop failed: ${err}`);
      process.exit(1);
    },
  );
});
