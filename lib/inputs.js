'use strict';
/**
 * The files behind a task's fileset inputs. Nx gives the plugin hooks one hash per input
 * (`task.hashDetails.nodes`); for a fileset ('<project>:<globs>', 'workspace:[<globs>]') that hash
 * covers many files. To say which file changed between two runs, the per-file hashes of each
 * fileset value are kept, content-addressed by the node's hash, in `<history>/filesets/<hash>.json`:
 * a value seen before is never looked at again (a run whose inputs did not change costs one
 * `existsSync` per fileset node).
 *
 * Where the files come from: Nx's own file map (`<workspace-data>/file-map.json`, the per-file
 * hashes Nx hashed the run with), the paths selected by the node's globs with the native glob
 * engine (Nx's syntax and ignores); the file hashes on disk when the file map has no entry. A
 * captured list is checked against Nx's node hash, recomputed the way Nx computes it (project
 * files: xxh3 over each file's hash then path, in the file map's order; workspace files: path then
 * hash), and stored with `exact: true` only when they agree.
 */

const fs = require('node:fs');
const path = require('node:path');

const { SAFE_HASH, writeAtomically } = require('./fs-util.js');

/** @typedef {{ command?: string, nodes?: Record<string, string>, implicitDeps?: Record<string, string>, runtime?: Record<string, string> }} HashDetails */
/** @typedef {{ file: string, hash: string }} FileData */
/**
 * One stored fileset value.
 * @typedef {{ format: 'nx-open-cache-fileset', version: 1, node: string, hash: string, exact: boolean,
 *   source: 'file-map' | 'disk', files: Record<string, string> }} FilesetRecord
 */
/**
 * A fileset node key, read: a project's files or the workspace's.
 * @typedef {{ kind: 'project', project: string, globs: string[] } | { kind: 'workspace', globs: string[] }} FilesetNode
 */

const FORMAT = 'nx-open-cache-fileset';
/** Fileset nodes looked at per run at most (each new value costs a walk of its globs). */
const MAX_NEW_PER_RUN = 200;
/** A run's capture starts no new walk after this long; the values left are captured by a later run. */
const CAPTURE_DEADLINE_MS = 750;
/** The per-file lists put in one run's meta records together, at most (bytes of JSON). */
const META_FILES_BUDGET = 16 * 1024 * 1024;

/**
 * Splits Nx's comma-joined glob list, keeping commas inside `{a,b}` braces and `(a|b)` groups.
 * @param {string} joined
 * @returns {string[]}
 */
function splitGlobs(joined) {
  /** @type {string[]} */ const out = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < joined.length; i++) {
    const c = joined[i];
    if (c === '{' || c === '(' || c === '[') depth += 1;
    else if ((c === '}' || c === ')' || c === ']') && depth > 0) depth -= 1;
    else if (c === ',' && depth === 0) {
      out.push(joined.slice(start, i));
      start = i + 1;
    }
  }
  out.push(joined.slice(start));
  return out.filter((g) => g !== '');
}

/**
 * What a node key of `hashDetails.nodes` names when it is a fileset; undefined otherwise.
 * `projects`: the workspace's project names (a project name may hold a `:`; the longest that
 * prefixes the key wins). Without them, the key is split at its first `:`.
 * @param {string} key
 * @param {Iterable<string>} [projects]
 * @returns {FilesetNode | undefined}
 */
function parseFilesetKey(key, projects) {
  if (key.startsWith('workspace:[') && key.endsWith(']')) {
    const globs = splitGlobs(key.slice('workspace:['.length, -1)).flatMap((g) => {
      // Nx keeps only `{workspaceRoot}/...` entries (others are ignored with a warning).
      const negative = g.startsWith('!');
      const body = negative ? g.slice(1) : g;
      if (!body.startsWith('{workspaceRoot}/')) return [];
      return [`${negative ? '!' : ''}${body.slice('{workspaceRoot}/'.length)}`];
    });
    return { kind: 'workspace', globs };
  }
  if (key.startsWith('workspace:') || key.startsWith('env:') || key.startsWith('runtime:') || key.startsWith('npm:')) return undefined;
  let project;
  for (const p of projects || []) {
    if (key.startsWith(`${p}:`) && (!project || p.length > project.length)) project = p;
  }
  if (!project) {
    const i = key.indexOf(':');
    if (i <= 0) return undefined;
    project = key.slice(0, i);
  }
  const rest = key.slice(project.length + 1);
  // '<project>:ProjectConfiguration', '<project>:TsConfig' and task ids are not filesets.
  if (rest === '' || rest === 'ProjectConfiguration' || rest === 'TsConfig' || !/[/*.{}!?[]/.test(rest)) return undefined;
  return { kind: 'project', project, globs: splitGlobs(rest) };
}

/**
 * Whether a node key of `hashDetails.nodes` is a fileset whose per-file hashes may be kept (the one
 * predicate the capture, the meta and the history's dating share).
 * @param {string} key
 */
function isFilesetNodeKey(key) {
  return (key.startsWith('workspace:[') && key.endsWith(']')) || parseFilesetKey(key) !== undefined;
}

/**
 * Nx's workspace data directory (NX_WORKSPACE_DATA_DIRECTORY, default `.nx/workspace-data`).
 * @param {string} root
 */
function workspaceDataDir(root) {
  return process.env.NX_WORKSPACE_DATA_DIRECTORY
    ? path.resolve(root, process.env.NX_WORKSPACE_DATA_DIRECTORY)
    : path.join(root, '.nx', 'workspace-data');
}

/**
 * Nx's file map: per project and for the rest of the workspace, each file with Nx's hash;
 * undefined when missing or not of the expected shape.
 * @param {string} root
 * @returns {{ projectFileMap: Record<string, FileData[]>, nonProjectFiles: FileData[] } | undefined}
 */
function readFileMap(root) {
  try {
    const j = JSON.parse(fs.readFileSync(path.join(workspaceDataDir(root), 'file-map.json'), 'utf8'));
    const m = j && j.fileMap;
    if (!m || typeof m.projectFileMap !== 'object' || !Array.isArray(m.nonProjectFiles)) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

/**
 * Project roots by name, for Nx versions whose fileset keys keep `{projectRoot}` (Nx 20): the
 * run's tasks' own, then Nx's project graph (`<workspace-data>/project-graph.json`).
 * @param {string} root
 * @param {Record<string, { task?: { target?: { project?: string }, projectRoot?: string } }>} taskResults
 * @returns {Map<string, string>}
 */
function projectRoots(root, taskResults) {
  /** @type {Map<string, string>} */
  const roots = new Map();
  try {
    const g = JSON.parse(fs.readFileSync(path.join(workspaceDataDir(root), 'project-graph.json'), 'utf8'));
    for (const [name, node] of Object.entries((g && g.nodes) || {})) {
      const r = node && /** @type {any} */ (node).data && /** @type {any} */ (node).data.root;
      if (typeof r === 'string') roots.set(name, r);
    }
  } catch {
    // No project graph: the tasks' own roots only.
  }
  for (const r of Object.values(taskResults || {})) {
    const t = r && r.task;
    if (t && t.target && typeof t.target.project === 'string' && typeof t.projectRoot === 'string') roots.set(t.target.project, t.projectRoot);
  }
  return roots;
}

/**
 * A project fileset's globs with `{projectRoot}` and `{projectName}` replaced as Nx does (a root
 * of `.` drops the `{projectRoot}/` prefix); undefined when a token cannot be resolved.
 * @param {FilesetNode & { kind: 'project' }} node
 * @param {Map<string, string>} roots
 * @returns {string[] | undefined}
 */
function resolvedGlobs(node, roots) {
  if (!node.globs.some((g) => g.includes('{projectRoot}') || g.includes('{projectName}'))) return node.globs;
  const projectRoot = roots.get(node.project);
  if (projectRoot === undefined) return undefined;
  return node.globs.map((g) => {
    const r = projectRoot === '.' || projectRoot === '' ? g.replace('{projectRoot}/', '') : g;
    return r.split('{projectRoot}').join(projectRoot).split('{projectName}').join(node.project);
  });
}

/**
 * Nx's hash of a project fileset (hash_project_files.rs): xxh3 over every selected file's hash
 * then path, in the file map's order. Nx before 21 hashed the files' hashes alone; both are
 * tried by `matchesNode`.
 * @param {typeof import('../index')} addon
 * @param {FileData[]} files
 * @param {boolean} withPaths
 */
function projectFilesHash(addon, files, withPaths) {
  return addon.hashArray([files.map((f) => (withPaths ? f.hash + f.file : f.hash)).join('')]);
}

/**
 * Nx's hash of workspace files (hash_workspace_files.rs): xxh3 over every selected file's path
 * then hash, in path order.
 * @param {typeof import('../index')} addon
 * @param {FileData[]} files
 */
function workspaceFilesHash(addon, files) {
  return addon.hashArray([files.map((f) => f.file + f.hash).join('')]);
}

/**
 * Whether `files` give Nx's hash of the node.
 * @param {typeof import('../index')} addon
 * @param {FilesetNode} node
 * @param {FileData[]} files
 * @param {string} nodeHash
 */
function matchesNode(addon, node, files, nodeHash) {
  if (node.kind === 'workspace') return workspaceFilesHash(addon, files) === nodeHash;
  return projectFilesHash(addon, files, true) === nodeHash || projectFilesHash(addon, files, false) === nodeHash;
}

/** @param {string} a @param {string} b */
function byteOrder(a, b) {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return Buffer.compare(x, y);
}

/**
 * The files of one fileset node value, checked against Nx's hash of it: the file map's entries
 * (Nx's order and hashes) the globs select, else the same paths with their hashes on disk, else
 * what the globs select on disk.
 * @param {typeof import('../index')} addon
 * @param {string} root
 * @param {FilesetNode} node
 * @param {string} nodeHash
 * @param {() => ReturnType<typeof readFileMap>} fileMap
 * @returns {Promise<{ files: FileData[], exact: boolean, source: 'file-map' | 'disk' }>}
 */
async function filesetFiles(addon, root, node, nodeHash, fileMap) {
  const quick = withoutWalk(addon, node, nodeHash, fileMap());
  if (quick) return { files: quick, exact: true, source: 'file-map' };
  const onDisk = node.globs.some((g) => !g.startsWith('!'))
    ? (await addon.hashFilesAsync(root, node.globs)).files.map((f) => ({ file: f.path, hash: f.hash }))
    : [];
  const diskHash = new Map(onDisk.map((f) => [f.file, f.hash]));
  const map = fileMap();
  /** @type {FileData[] | undefined} */
  let candidates;
  if (map && node.kind === 'project') candidates = map.projectFileMap[node.project];
  else if (map) candidates = allFiles(map);
  if (candidates) {
    const selected = candidates.filter((f) => diskHash.has(f.file));
    if (matchesNode(addon, node, selected, nodeHash)) return { files: selected, exact: true, source: 'file-map' };
    const fresh = selected.map((f) => ({ file: f.file, hash: /** @type {string} */ (diskHash.get(f.file)) }));
    if (matchesNode(addon, node, fresh, nodeHash)) return { files: fresh, exact: true, source: 'disk' };
  }
  return { files: onDisk, exact: matchesNode(addon, node, onDisk, nodeHash), source: 'disk' };
}

/**
 * The file map's selection without walking the disk, when it reproduces Nx's hash: every file of
 * the project (the default input, all of the project root), or the named files when every glob is a plain
 * path (`{workspaceRoot}/nx.json`). Undefined otherwise.
 * @param {typeof import('../index')} addon
 * @param {FilesetNode} node
 * @param {string} nodeHash
 * @param {ReturnType<typeof readFileMap>} map
 * @returns {FileData[] | undefined}
 */
function withoutWalk(addon, node, nodeHash, map) {
  if (!map) return undefined;
  const candidates = node.kind === 'project' ? map.projectFileMap[node.project] : allFiles(map);
  if (!candidates) return undefined;
  if (node.kind === 'project' && matchesNode(addon, node, candidates, nodeHash)) return candidates;
  if (node.globs.every((g) => !/[*?[\]{}()!]/.test(g))) {
    const named = new Set(node.globs);
    const selected = candidates.filter((f) => named.has(f.file));
    if (matchesNode(addon, node, selected, nodeHash)) return selected;
  }
  return undefined;
}

/** @type {WeakMap<object, FileData[]>} */
const allFilesMemo = new WeakMap();
/**
 * Every file Nx knows, in path order (the list Nx hashes workspace filesets from).
 * @param {{ projectFileMap: Record<string, FileData[]>, nonProjectFiles: FileData[] }} map
 */
function allFiles(map) {
  let all = allFilesMemo.get(map);
  if (!all) {
    const byPath = new Map();
    for (const files of Object.values(map.projectFileMap)) for (const f of files) byPath.set(f.file, f);
    for (const f of map.nonProjectFiles) byPath.set(f.file, f);
    all = [...byPath.values()].sort((a, b) => byteOrder(a.file, b.file));
    allFilesMemo.set(map, all);
  }
  return all;
}

/**
 * Where the value `nodeHash` of a fileset is kept.
 * @param {string} historyDir
 * @param {string} nodeHash
 */
function filesetFile(historyDir, nodeHash) {
  return path.join(historyDir, 'filesets', `${nodeHash}.json`);
}

/**
 * Whether a node hash can name a file: Nx's hashes are decimal; anything else is not ours to store.
 * @param {unknown} h
 * @returns {h is string}
 */
function isNodeHash(h) {
  return typeof h === 'string' && SAFE_HASH.test(h);
}

/**
 * Stores the per-file hashes of every fileset node value in this run's tasks that is not stored
 * yet. Bounded: at most MAX_NEW_PER_RUN walks, and none started after `deadlineMs` (default
 * CAPTURE_DEADLINE_MS); a value left out is not stored, so a later run with it captures it.
 * Returns what it did, with the files it wrote (`written`: hash and bytes, for the history's
 * index); throws only on a failure to write.
 * @param {string} root  the workspace root
 * @param {Record<string, { task?: { hashDetails?: HashDetails, target?: { project?: string }, projectRoot?: string } }>} taskResults  Nx's, as given to postTasksExecution
 * @param {string} historyDir  `<pluginDataDir>/history`
 * @param {{ deadlineMs?: number, maxNew?: number }} [opts]
 * @returns {Promise<{ nodes: number, stored: number, exact: number, skipped: number, written: { hash: string, bytes: number }[] }>}
 */
async function captureFilesets(root, taskResults, historyDir, opts = {}) {
  const started = Date.now();
  const deadline = started + (opts.deadlineMs ?? CAPTURE_DEADLINE_MS);
  const maxNew = opts.maxNew ?? MAX_NEW_PER_RUN;
  /** @type {Map<string, string>} node hash -> key (one key per value: the files are the same) */
  const wanted = new Map();
  /** @type {Set<string>} */
  const seen = new Set();
  /** @type {Map<string, boolean>} keys repeat across tasks (a dependency's, the workspace's) */
  const isFileset = new Map();
  for (const r of Object.values(taskResults || {})) {
    const details = r && r.task && r.task.hashDetails;
    for (const [key, hash] of Object.entries((details && details.nodes) || {})) {
      if (!isNodeHash(hash) || seen.has(hash)) continue;
      let fileset = isFileset.get(key);
      if (fileset === undefined) isFileset.set(key, (fileset = isFilesetNodeKey(key)));
      if (!fileset) continue;
      seen.add(hash);
      if (!fs.existsSync(filesetFile(historyDir, hash))) wanted.set(hash, key);
    }
  }
  /** @type {{ nodes: number, stored: number, exact: number, skipped: number, written: { hash: string, bytes: number }[] }} */
  const result = { nodes: seen.size, stored: 0, exact: 0, skipped: 0, written: [] };
  if (wanted.size === 0) return result;
  const addon = /** @type {typeof import('../index')} */ (require('../index.js'));
  /** @type {ReturnType<typeof readFileMap> | null} */
  let fileMap = null;
  const lazyFileMap = () => {
    if (fileMap === null) fileMap = readFileMap(root);
    return fileMap;
  };
  fs.mkdirSync(path.join(historyDir, 'filesets'), { recursive: true });
  let looked = 0;
  /** @type {Map<string, string> | undefined} */
  let roots;
  for (const [hash, key] of wanted) {
    if (++looked > maxNew || Date.now() >= deadline) {
      result.skipped += 1;
      continue;
    }
    const map = lazyFileMap();
    const parsed = parseFilesetKey(key, map ? Object.keys(map.projectFileMap) : undefined);
    if (!parsed) continue;
    /** @type {FilesetNode} */
    let node = parsed;
    if (parsed.kind === 'project') {
      if (!roots) roots = projectRoots(root, taskResults);
      const globs = resolvedGlobs(parsed, roots);
      if (!globs) {
        result.skipped += 1;
        continue;
      }
      node = { ...parsed, globs };
    }
    let found;
    try {
      found = await filesetFiles(addon, root, node, hash, lazyFileMap);
    } catch {
      // An invalid glob or an unreadable file: this value stays without file details.
      result.skipped += 1;
      continue;
    }
    /** @type {FilesetRecord} */
    const record = {
      format: FORMAT, version: 1, node: key, hash, exact: found.exact, source: found.source,
      files: Object.fromEntries(found.files.map((f) => [f.file, f.hash])),
    };
    const text = JSON.stringify(record);
    writeAtomically(filesetFile(historyDir, hash), text);
    result.written.push({ hash, bytes: Buffer.byteLength(text) });
    result.stored += 1;
    if (found.exact) result.exact += 1;
  }
  return result;
}

/**
 * One stored fileset value; undefined when not stored or not of this format.
 * @param {string} historyDir
 * @param {string} nodeHash
 * @returns {FilesetRecord | undefined}
 */
function readFileset(historyDir, nodeHash) {
  return readFilesetSized(historyDir, nodeHash)?.record;
}

/**
 * @param {string} historyDir
 * @param {string} nodeHash
 * @returns {{ record: FilesetRecord, bytes: number } | undefined}
 */
function readFilesetSized(historyDir, nodeHash) {
  if (!isNodeHash(nodeHash)) return undefined;
  try {
    const text = fs.readFileSync(filesetFile(historyDir, nodeHash), 'utf8');
    const r = JSON.parse(text);
    if (!r || r.format !== FORMAT || r.version !== 1 || typeof r.files !== 'object' || r.files === null) return undefined;
    return { record: r, bytes: text.length };
  } catch {
    return undefined;
  }
}

/**
 * What one run's meta records share: the fileset values read so far (each read once per run), and
 * the bytes of file lists still allowed in them (META_FILES_BUDGET).
 * @typedef {{ dir: string, read: Map<string, { record: FilesetRecord, bytes: number } | null>, budget: number }} MetaFilesRun
 */

/**
 * @param {string} root  the workspace root
 * @param {string} [historyDir]
 * @param {number} [budget]
 * @returns {MetaFilesRun}
 */
function metaFilesRun(root, historyDir, budget = META_FILES_BUDGET) {
  return { dir: historyDir ?? path.join(workspaceDataDir(root), 'nx-open-cache', 'history'), read: new Map(), budget };
}

/**
 * The per-file hashes of a task's fileset inputs for its meta record: `files` is `{ nodeKey: {
 * path: hash } }` from the stored values, `inexact` the node keys whose list could not be checked
 * against Nx's hash (it may be incomplete). Nodes without a stored value are left out, and every
 * list once the run's budget is spent.
 * @param {MetaFilesRun} run
 * @param {HashDetails | undefined} details
 * @returns {{ files: Record<string, Record<string, string>>, inexact: string[] }}
 */
function metaFiles(run, details) {
  /** @type {Record<string, Record<string, string>>} */ const files = {};
  /** @type {string[]} */ const inexact = [];
  for (const [key, hash] of Object.entries((details && details.nodes) || {})) {
    if (run.budget <= 0) break;
    if (!isFilesetNodeKey(key)) continue;
    let got = run.read.get(hash);
    if (got === undefined) {
      got = readFilesetSized(run.dir, hash) ?? null;
      run.read.set(hash, got);
    }
    if (!got || got.bytes > run.budget) continue;
    run.budget -= got.bytes;
    files[key] = got.record.files;
    if (got.record.exact !== true) inexact.push(key);
  }
  return { files, inexact };
}

/**
 * The per-file hashes of a task's fileset inputs, for the artifact's metadata: `{ nodeKey: {
 * path: hash } }`, from the stored values (`captureFilesets` runs first). Nodes without a stored
 * value are left out. Takes the task's `hashDetails`, or the task itself; `historyDir` defaults to
 * the workspace's (`<workspace-data>/nx-open-cache/history`).
 * @param {string} root  the workspace root
 * @param {HashDetails | { hashDetails?: HashDetails } | undefined} hashDetails
 * @param {string} [historyDir]
 * @returns {Record<string, Record<string, string>>}
 */
function filesForMeta(root, hashDetails, historyDir) {
  const details = hashDetails && 'hashDetails' in hashDetails ? hashDetails.hashDetails : /** @type {HashDetails | undefined} */ (hashDetails);
  return metaFiles(metaFilesRun(root, historyDir, Infinity), details).files;
}

module.exports = {
  MAX_NEW_PER_RUN, CAPTURE_DEADLINE_MS, META_FILES_BUDGET,
  isFilesetNodeKey, captureFilesets, filesForMeta, metaFiles, metaFilesRun, readFileset, parseFilesetKey, splitGlobs, filesetFile,
  projectFilesHash, workspaceFilesHash, readFileMap,
};
