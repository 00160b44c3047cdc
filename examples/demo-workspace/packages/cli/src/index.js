// @demo/cli: prints the board of sample tasks.
const { renderBoard } = require('./board');

function describe() {
  return '\n' + renderBoard();
}

module.exports = { renderBoard, describe };
