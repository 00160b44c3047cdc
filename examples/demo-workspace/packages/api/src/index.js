// @demo/api: request handlers over the core store.
const { createHandlers } = require('./handlers');

function describe() {
  const api = createHandlers();
  return `api: ${Object.keys(api).sort().join(', ')} (seeded with ${api.list().body.length} tasks)`;
}

module.exports = { createHandlers, describe };
