// @demo/core: the domain model (a tiny task tracker).
const { createStore } = require('./store');
const { validateTask } = require('./validate');
const { formatList } = require('@demo/shared-format');

function describe() {
  return `core: ${formatList(['createStore', 'validateTask'])}`;
}

module.exports = { createStore, validateTask, describe };
