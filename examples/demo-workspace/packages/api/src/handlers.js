// Framework-free handlers: (request) -> { status, body }.
const { createStore } = require('@demo/core');
const { sampleTasks, toCsv } = require('@demo/data');

function createHandlers(seed = sampleTasks) {
  const store = createStore();
  for (const t of seed) store.add(t);
  return {
    list() {
      return { status: 200, body: store.list() };
    },
    create(body) {
      try {
        return { status: 201, body: store.add(body) };
      } catch (err) {
        return { status: 400, body: { error: err.message } };
      }
    },
    move(id, state) {
      try {
        store.move(id, state);
        return { status: 204, body: null };
      } catch (err) {
        return { status: /no task/.test(err.message) ? 404 : 400, body: { error: err.message } };
      }
    },
    exportCsv() {
      return { status: 200, body: toCsv(store.list()) };
    },
  };
}

module.exports = { createHandlers };
