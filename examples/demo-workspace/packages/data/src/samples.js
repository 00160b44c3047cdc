// Fixture data used by the API and the CLI.

const sampleTasks = [
  { title: 'Set up the shared cache', state: 'done' },
  { title: 'Point CI at the cache directory', state: 'doing' },
  { title: 'Make pull-request builds read-only', state: 'todo' },
  { title: 'Measure cold vs warm builds', state: 'todo' },
  { title: 'Write the runbook, "cache is down"', state: 'todo' },
];

module.exports = { sampleTasks };
