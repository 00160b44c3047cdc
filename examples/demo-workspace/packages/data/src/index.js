// @demo/data: (de)serialisation of task lists.
const { toCsv, fromCsv } = require('./csv');
const { sampleTasks } = require('./samples');

function describe() {
  return `data: toCsv, fromCsv, ${sampleTasks.length} sample tasks`;
}

module.exports = { toCsv, fromCsv, sampleTasks, describe };
