// In-memory task store with change listeners.
const { validateTask } = require('./validate');
const { groupBy } = require('@demo/shared-utils');

function createStore() {
  const tasks = new Map();
  const listeners = new Set();
  const emit = (event) => listeners.forEach((fn) => fn(event));
  return {
    add(input) {
      const result = validateTask(input);
      if (!result.ok) throw new Error(result.errors.join('; '));
      if (tasks.has(result.task.id)) throw new Error(`duplicate task ${result.task.id}`);
      tasks.set(result.task.id, result.task);
      emit({ type: 'added', task: result.task });
      return result.task;
    },
    move(id, state) {
      const task = tasks.get(id);
      if (!task) throw new Error(`no task ${id}`);
      const next = validateTask({ ...task, state });
      if (!next.ok) throw new Error(next.errors.join('; '));
      tasks.set(id, { ...task, state });
      emit({ type: 'moved', id, state });
    },
    list() {
      return [...tasks.values()];
    },
    byState() {
      return groupBy([...tasks.values()], (t) => t.state);
    },
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  };
}

module.exports = { createStore };
