'use strict';
// Package entry: the Nx plugin hooks (Nx loads this module for `"plugin": "nx-open-cache"`) and the
// native API for users' own hooks and scripts.

const native = require('../index.js');
const plugin = require('./plugin.js');

module.exports = {
  ...native,
  name: 'nx-open-cache',
  preTasksExecution: plugin.preTasksExecution,
  postTasksExecution: plugin.postTasksExecution,
};
