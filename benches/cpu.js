'use strict';
/**
 * CPU time from /proc (Linux): what a server process spent serving, and what this process's reaped
 * children (an `nx` run and everything it waited for) spent. CPU time is less disturbed than wall
 * time by other jobs on a shared machine, so it complements the wall-clock figures. Returns NaN
 * where /proc is not available.
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');

const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number((r.stdout || '').trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

/**
 * The fields of /proc/<pid>/stat after the command name: index 0 is the state (field 3 in proc(5)).
 * @param {number | 'self'} pid
 * @returns {string[] | undefined}
 */
function statFields(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** utime + stime of one process (all its threads), in seconds. @param {number} pid */
function processCpu(pid) {
  const f = statFields(pid);
  return f ? (Number(f[11]) + Number(f[12])) / CLK_TCK : NaN;
}

/** cutime + cstime of this process: CPU of the children it has reaped, in seconds. */
function reapedChildrenCpu() {
  const f = statFields('self');
  return f ? (Number(f[13]) + Number(f[14])) / CLK_TCK : NaN;
}

/** A process and its direct children (nginx's master and workers), CPU seconds. @param {number} pid */
function processTreeCpu(pid) {
  let total = processCpu(pid);
  let entries;
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return NaN;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const f = statFields(Number(e));
    if (f && Number(f[1]) === pid) total += (Number(f[11]) + Number(f[12])) / CLK_TCK;
  }
  return total;
}

module.exports = { processCpu, processTreeCpu, reapedChildrenCpu, CLK_TCK };
