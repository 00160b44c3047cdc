'use strict';
// Package entry: the Nx plugin hooks (Nx loads this module for `"plugin": "nx-open-cache"`) and the
// native API for users' own hooks and scripts.

const plugin = require('./plugin.js');

/** @type {Record<string, unknown>} */
let nativeApi = {};
/** Why the native addon could not be loaded on this platform, if it could not. @type {Error | undefined} */
let nativeLoadError;
try {
  nativeApi = require('../index.js');
} catch (e) {
  // The plugin must still load (and let Nx run uncached) where no native build exists; the hooks
  // report the reason. The native API is then absent and `nativeLoadError` says why.
  nativeLoadError = /** @type {Error} */ (e);
}

module.exports = {
  ...nativeApi,
  nativeLoadError,
  name: 'nx-open-cache',
  preTasksExecution: plugin.preTasksExecution,
  postTasksExecution: plugin.postTasksExecution,
};
