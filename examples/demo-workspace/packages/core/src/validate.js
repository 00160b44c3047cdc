// Task validation.
const { slugify } = require('@demo/shared-utils');

const STATES = ['todo', 'doing', 'done'];

function validateTask(input) {
  const errors = [];
  if (typeof input.title !== 'string' || input.title.trim() === '') errors.push('title is required');
  if (input.state !== undefined && !STATES.includes(input.state)) {
    errors.push(`state must be one of ${STATES.join(', ')}`);
  }
  if (errors.length > 0) return { ok: false, errors };
  return {
    ok: true,
    task: { id: slugify(input.title), title: input.title.trim(), state: input.state || 'todo' },
  };
}

module.exports = { validateTask, STATES };
