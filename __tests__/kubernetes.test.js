'use strict';
/**
 * deploy/kubernetes: the manifests for `nx-open-cache-server` (object-storage: 2 replicas on a
 * bucket; fs: 1 replica on a PersistentVolumeClaim).
 *
 * - Every object is validated against the Kubernetes OpenAPI schemas with kubernetes-validate
 *   (PyPI, pinned in scripts/emulators.js) in strict mode (unknown fields are errors), for the newest
 *   Kubernetes version it ships schemas for and the oldest the manifests support (1.30). kustomize
 *   is not installed here: each file's objects are validated directly, and the kustomizations are
 *   checked to list every file but the *.example.yaml Secrets (apply must never overwrite a real
 *   Secret with placeholders).
 * - What a schema cannot say: no secret in any file (placeholders only, and serve refuses the
 *   token placeholders, so an unedited Secret fails closed), every option and NX_OPEN_CACHE_SERVER_*
 *   name is one serve knows, replicas / strategy / PDB / PVC per variant, the pod's hardening, probes
 *   and scrape annotations on the container's port.
 * - Then the real binary (target/release/nx-open-cache-server) is started with exactly each
 *   Deployment's args and env, only placeholders, mount paths, the listen address (127.0.0.1, port
 *   0) and the storage location (a temp directory; moto for S3) replaced by test values; the probe
 *   and scrape paths must answer 200, and the Secret's tokens must work as their roles say. As root,
 *   the server runs as the image's uid/gid 65532 (setpriv) on mounts made as fsGroup makes them,
 *   with a read-only HOME and working directory, and must write nowhere else; on S3 a 9 MiB
 *   artifact goes through the spool in the /tmp mount.
 *
 * No cluster runs here: scheduling, volumes, workload identity and the rollout are not exercised.
 * YAML is read with PyYAML from the same venv (a dependency of kubernetes-validate).
 */

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const emulators = require('../scripts/emulators.js');
const { request, withTimeout } = require('./helpers/serve-process.js');
const { sizedArtifact, nxArtifact } = require('./helpers/hostile-tar.js');

const REPO_ROOT = path.resolve(__dirname, '..');
const K8S_DIR = path.join(REPO_ROOT, 'deploy', 'kubernetes');
const VARIANTS = /** @type {const} */ (['object-storage', 'fs']);
/**
 * The newest Kubernetes version kubernetes-validate 1.37.0 ships schemas for, and the oldest the
 * manifests support: 1.30 (preStop `sleep`, beta and on by default from 1.30; the PDB's
 * unhealthyPodEvictionPolicy from 1.27).
 */
const K8S_VERSIONS = ['1.37.0', '1.30.0'];
const VENV_BIN = path.join(emulators.VENV, process.platform === 'win32' ? 'Scripts' : 'bin');
const VALIDATE = path.join(VENV_BIN, 'kubernetes-validate');
const PYTHON = path.join(VENV_BIN, process.platform === 'win32' ? 'python.exe' : 'python');
const SERVER_BIN = path.join(REPO_ROOT, 'target', 'release', `nx-open-cache-server${process.platform === 'win32' ? '.exe' : ''}`);
const IMAGE = 'ghcr.io/nx-open-cache/nx-open-cache-server:0.1.0';
/** uid/gid of the image's user. */
const IMAGE_UID = 65532;
/** `<...>`: a value the user replaces. */
const PLACEHOLDER = /<[^<>\n]+>/g;
/** Bounds for child processes. */
const RUN_TIMEOUT_MS = 120_000;
const BUILD_TIMEOUT_MS = 1_200_000;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 30_000;
/** A closed loopback port for credential chains that would otherwise reach a metadata service. */
const CLOSED = 'http://127.0.0.1:9';

/**
 * @typedef {{ apiVersion: string, kind: string, metadata: { name: string, namespace?: string, labels?: Record<string, string>, annotations?: Record<string, string> }, [key: string]: any }} K8sObject
 * @typedef {{ file: string, objects: K8sObject[] }} Manifest
 */

/** @param {string} dir @returns {string[]} the YAML files of `dir`, sorted */
function yamlFiles(dir) {
  return fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
}

/**
 * Every YAML file of every variant, parsed (one PyYAML run for all).
 * @returns {Record<string, Manifest[]>} by variant
 */
function loadAll() {
  const files = VARIANTS.flatMap((v) => yamlFiles(path.join(K8S_DIR, v)).map((f) => path.join(K8S_DIR, v, f)));
  const script = 'import json, sys, yaml\nprint(json.dumps([[d for d in yaml.safe_load_all(open(f, encoding="utf-8")) if d is not None] for f in sys.argv[1:]]))';
  const r = spawnSync(PYTHON, ['-c', script, ...files], { encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
  assert.equal(r.status, 0, `reading the manifests with PyYAML failed: ${r.error?.message ?? ''}${r.stderr}`);
  const docs = JSON.parse(r.stdout);
  /** @type {Record<string, Manifest[]>} */ const out = {};
  files.forEach((file, i) => {
    const variant = path.basename(path.dirname(file));
    (out[variant] ||= []).push({ file, objects: docs[i] });
  });
  return out;
}

/**
 * @param {Manifest[]} manifests
 * @param {string} kind
 * @returns {K8sObject[]}
 */
const ofKind = (manifests, kind) => manifests.flatMap((m) => m.objects).filter((o) => o.kind === kind);

/**
 * @param {Manifest[]} manifests
 * @param {string} kind
 * @returns {K8sObject} the one object of `kind`
 */
function one(manifests, kind) {
  const found = ofKind(manifests, kind);
  assert.equal(found.length, 1, `expected exactly one ${kind}, found ${found.length}`);
  return found[0];
}

/** @param {Manifest[]} manifests @returns {any} the Deployment's one container */
function container(manifests) {
  const containers = one(manifests, 'Deployment').spec.template.spec.containers;
  assert.equal(containers.length, 1, 'one container per pod');
  return containers[0];
}

/**
 * `--name=value` args as a map (the manifests always use the `=` form, so every value is unambiguous).
 * @param {string[]} args
 * @returns {Map<string, string>}
 */
function argMap(args) {
  const m = new Map();
  for (const a of args) {
    const match = /^--([a-z0-9-]+)=(.*)$/s.exec(a);
    assert.ok(match, `argument ${JSON.stringify(a)} is not of the form --name=value`);
    assert.ok(!m.has(match[1]), `--${match[1]} is given twice`);
    m.set(match[1], match[2]);
  }
  return m;
}

/**
 * The option keys serve knows, read from the one list in src/serve/config.rs (`opt("...")` and
 * `switch("...")` in OPTIONS), and the environment names it derives from them (`env_names`).
 * @returns {{ flags: Set<string>, envNames: Set<string> }}
 */
function serveOptions() {
  const src = fs.readFileSync(path.join(REPO_ROOT, 'src', 'serve', 'config.rs'), 'utf8');
  const block = /const OPTIONS: &\[OptionSpec\] = &\[([\s\S]*?)\];/.exec(src);
  assert.ok(block, 'OPTIONS not found in src/serve/config.rs');
  const keys = [...block[1].matchAll(/(?:opt|switch)\("([a-z0-9_]+)"\)/g)].map((m) => m[1]);
  assert.ok(keys.includes('storage') && keys.includes('listen'), `OPTIONS parsed as ${keys.join(', ')}`);
  const flags = new Set([...keys.map((k) => k.replace(/_/g, '-')), 'config']);
  const envNames = new Set([...keys, 'tokens', 'config'].map((k) => `NX_OPEN_CACHE_SERVER_${k.toUpperCase()}`));
  return { flags, envNames };
}

/**
 * The container's environment as the kubelet builds it: `envFrom` Secrets (every key), then `env`
 * (plain values and secretKeyRef), Secrets taken from `manifests`. Placeholders stay as written.
 * @param {Manifest[]} manifests
 * @returns {Record<string, string>}
 */
function containerEnv(manifests) {
  const c = container(manifests);
  const secrets = new Map(ofKind(manifests, 'Secret').map((s) => [s.metadata.name, s.stringData || {}]));
  /** @type {Record<string, string>} */ const env = {};
  for (const from of c.envFrom || []) {
    assert.ok(from.secretRef, `envFrom ${JSON.stringify(from)}: only Secrets are expected`);
    const data = secrets.get(from.secretRef.name);
    assert.ok(data, `envFrom names Secret ${from.secretRef.name}, which no file of this variant defines`);
    Object.assign(env, data);
  }
  for (const e of c.env || []) {
    if (e.valueFrom) {
      const ref = e.valueFrom.secretKeyRef;
      assert.ok(ref, `env ${e.name}: only secretKeyRef is expected in valueFrom`);
      const data = secrets.get(ref.name);
      assert.ok(data && typeof data[ref.key] === 'string', `env ${e.name} names key ${ref.key} of Secret ${ref.name}, which no file of this variant defines`);
      env[e.name] = data[ref.key];
    } else {
      env[e.name] = String(e.value);
    }
  }
  return env;
}

/** @param {string} text @returns {string} each placeholder replaced by a fresh random secret */
const fillPlaceholders = (text) => text.replace(PLACEHOLDER, () => crypto.randomBytes(24).toString('hex'));

/** The server binary, built (or found up to date: cargo does nothing then) before it runs. */
function ensureServerBinary() {
  const r = spawnSync('cargo', ['build', '--release', '--bin', 'nx-open-cache-server'], { cwd: REPO_ROOT, stdio: 'inherit', timeout: BUILD_TIMEOUT_MS });
  assert.equal(r.status, 0, `cargo build --release --bin nx-open-cache-server failed (${r.error?.message ?? `exit ${r.status}`})`);
}

/**
 * Starts the binary and resolves with its URL once it printed its startup line (`--log=json`: the
 * JSON line with "nx-open-cache serve started"); rejects with its output when it exits first.
 * @param {string[]} args
 * @param {Record<string, string>} env
 * @param {string} cwd
 */
function startServer(args, env, cwd) {
  // As root (CI containers, this machine): as the image's user, the way the pod runs it.
  const asImageUser = process.getuid?.() === 0;
  const [command, argv] = asImageUser
    ? ['setpriv', [`--reuid=${IMAGE_UID}`, `--regid=${IMAGE_UID}`, `--groups=${IMAGE_UID}`, '--', SERVER_BIN, ...args]]
    : [SERVER_BIN, args];
  const child = spawn(command, argv, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => (err += d));
  /** @type {Promise<{ code: number | null, signal: NodeJS.Signals | null }>} */
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const show = () => `\n--- stdout ---\n${out}\n--- stderr ---\n${err}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    return withTimeout(exited, STOP_TIMEOUT_MS, `the server did not exit after SIGTERM${show()}`, () => child.kill('SIGKILL'));
  };
  /** @type {Promise<{ url: string, stop: typeof stop, output: () => string }>} */
  const started = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      for (const line of out.split('\n')) {
        if (!line.startsWith('{') || !line.includes('"nx-open-cache serve started"')) continue;
        try {
          resolve({ url: JSON.parse(line).url, stop, output: () => out + err });
        } catch { /* the line is not complete yet */ }
      }
    });
    exited.then(({ code, signal }) => reject(new Error(`the server exited (code ${code}, signal ${signal}) before starting${show()}`)));
  });
  return withTimeout(started, START_TIMEOUT_MS, `the server did not start within ${START_TIMEOUT_MS} ms${show()}`, () => child.kill('SIGKILL'));
}

/**
 * Every path under `dir` but inside `skip` (mode, size, mtime): what the server may not change.
 * @param {string} dir
 * @param {string[]} skip
 * @returns {string[]}
 */
function snapshot(dir, skip) {
  return fs.readdirSync(dir, { recursive: true }).map(String).sort()
    .map((f) => path.join(dir, f))
    .filter((f) => !skip.some((s) => f === s || f.startsWith(`${s}${path.sep}`)))
    .map((f) => {
      const st = fs.lstatSync(f);
      return `${f} ${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`;
    });
}

/** @type {Record<string, Manifest[]>} */
let manifests = {};

before(() => {
  emulators.install({ log: () => undefined });
  manifests = loadAll();
});

describe('Kubernetes schemas (kubernetes-validate --strict)', () => {
  for (const version of K8S_VERSIONS) {
    test(`every object of every manifest is valid for Kubernetes ${version}`, () => {
      const files = VARIANTS.flatMap((v) => manifests[v].filter((m) => path.basename(m.file) !== 'kustomization.yaml'));
      const r = spawnSync(VALIDATE, ['--strict', '-k', version, ...files.map((m) => m.file)], { encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
      assert.equal(r.status, 0, `kubernetes-validate failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}${r.stderr}`);
      const passed = (r.stdout + r.stderr).split('\n').filter((l) => l.includes(' passed for resource ')).length;
      const objects = files.reduce((n, m) => n + m.objects.length, 0);
      assert.equal(passed, objects, `expected ${objects} objects to pass, the output says:\n${r.stdout}${r.stderr}`);
    });
  }

  test('the validator rejects what a cluster would (an unknown field, a wrong type): the check has teeth', (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-k8s-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const deployment = one(manifests['object-storage'], 'Deployment');
    const typo = structuredClone(deployment);
    typo.spec.template.spec.containers[0].livenessProbe.httpGet.paht = '/healthz';
    const wrongType = structuredClone(deployment);
    wrongType.spec.replicas = 'two';
    for (const [name, obj, expected] of /** @type {const} */ ([['typo', typo, /paht/], ['type', wrongType, /replicas|'two'/]])) {
      const file = path.join(dir, `${name}.json`); // JSON is YAML
      fs.writeFileSync(file, JSON.stringify(obj));
      const r = spawnSync(VALIDATE, ['--strict', '-k', K8S_VERSIONS[0], file], { encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
      assert.notEqual(r.status, 0, `${name}: kubernetes-validate accepted an invalid Deployment:\n${r.stdout}${r.stderr}`);
      assert.match(r.stdout + r.stderr, expected);
    }
  });
});

describe('what the schemas cannot check', () => {
  for (const variant of VARIANTS) {
    test(`${variant}: kustomization.yaml lists every manifest but the *.example.yaml Secrets (apply never overwrites a real Secret), in one namespace`, () => {
      const kustomization = manifests[variant].find((m) => path.basename(m.file) === 'kustomization.yaml');
      assert.ok(kustomization, `deploy/kubernetes/${variant}/kustomization.yaml is missing`);
      const k = kustomization.objects[0];
      assert.equal(k.kind, 'Kustomization');
      assert.equal(k.namespace, 'nx-cache');
      assert.equal(k.secretGenerator, undefined, 'no Secret generated by kustomize');
      const others = manifests[variant].map((m) => path.basename(m.file)).filter((f) => f !== 'kustomization.yaml');
      assert.deepEqual([...k.resources].sort(), others.filter((f) => !f.endsWith('.example.yaml')));
      for (const m of manifests[variant].filter((x) => x !== kustomization)) {
        const listed = k.resources.includes(path.basename(m.file));
        for (const o of m.objects) {
          if (o.kind === 'Secret') assert.ok(!listed, `${m.file}: Secret ${o.metadata.name} is in resources: \`kubectl apply -k\` would overwrite the real one with placeholders`);
          else assert.ok(listed, `${m.file}: ${o.kind} ${o.metadata.name} is not in resources`);
        }
      }
      for (const m of manifests[variant]) {
        for (const o of m.objects) assert.equal(o.metadata?.namespace, undefined, `${m.file}: ${o.kind} sets its own namespace`);
      }
    });

    test(`${variant}: no secret in any file: Secrets hold <placeholders> in stringData only`, () => {
      for (const s of ofKind(manifests[variant], 'Secret')) {
        assert.equal(s.data, undefined, `Secret ${s.metadata.name} has a data field (base64 values are real values)`);
        for (const [key, value] of Object.entries(s.stringData || {})) {
          if (key === 'NX_OPEN_CACHE_SERVER_TOKENS') {
            for (const entry of value.split(',')) {
              assert.match(entry, /^[a-z0-9-]+:(read-write|read-only):<[^<>]+>$/, `Secret ${s.metadata.name}: token entry ${JSON.stringify(entry)} is not name:role:<placeholder>`);
            }
          } else {
            assert.match(value, /^<[^<>]+>$/, `Secret ${s.metadata.name}: ${key} is not a <placeholder>`);
          }
        }
      }
      for (const m of manifests[variant]) {
        const text = fs.readFileSync(m.file, 'utf8').replace(PLACEHOLDER, '');
        // Random-looking material: long hex, long base64 with digits, AWS key ids, PEM blocks.
        const found = text.match(/\b[0-9a-f]{20,}\b|(?=[A-Za-z0-9+/]*\d)(?=[A-Za-z0-9+/]*[A-Z])[A-Za-z0-9+/]{32,}={0,2}|\bAKIA[0-9A-Z]{16}\b|-----BEGIN/g);
        assert.equal(found, null, `${m.file} holds what looks like a secret: ${found}`);
      }
    });

    test(`${variant}: every --option and NX_OPEN_CACHE_SERVER_* name is one serve knows`, () => {
      const { flags, envNames } = serveOptions();
      const c = container(manifests[variant]);
      for (const name of argMap(c.args).keys()) assert.ok(flags.has(name), `--${name} is not a serve option (known: ${[...flags].join(', ')})`);
      const names = Object.keys(containerEnv(manifests[variant])).filter((n) => n.startsWith('NX_OPEN_CACHE_'));
      assert.ok(names.includes('NX_OPEN_CACHE_SERVER_TOKENS'), 'the tokens come from the environment (a Secret)');
      for (const name of names) assert.ok(envNames.has(name), `${name} is not a variable serve reads (known: ${[...envNames].join(', ')})`);
    });

    test(`${variant}: the pod is hardened, sized, stops within serve's grace, and probes and scrapes the port serve listens on`, () => {
      const deployment = one(manifests[variant], 'Deployment');
      const pod = deployment.spec.template.spec;
      const c = container(manifests[variant]);
      assert.equal(c.image, IMAGE);
      assert.ok(fs.readFileSync(path.join(REPO_ROOT, 'Containerfile'), 'utf8').includes(`-t ${IMAGE} `), `the Containerfile builds ${IMAGE}`);
      assert.equal(c.command, undefined, 'the image entrypoint runs the binary; only args are set');
      assert.equal(pod.automountServiceAccountToken, false);
      assert.deepEqual(
        [pod.securityContext.runAsNonRoot, pod.securityContext.runAsUser, pod.securityContext.runAsGroup, pod.securityContext.seccompProfile?.type],
        [true, IMAGE_UID, IMAGE_UID, 'RuntimeDefault'],
      );
      assert.deepEqual(
        [c.securityContext.allowPrivilegeEscalation, c.securityContext.readOnlyRootFilesystem, c.securityContext.capabilities?.drop],
        [false, true, ['ALL']],
      );
      assert.equal(c.securityContext.capabilities.add, undefined);
      // Read-only root: /tmp (TMPDIR, serve's spool) is an emptyDir.
      const tmpMount = c.volumeMounts.find((/** @type {any} */ v) => v.mountPath === '/tmp');
      assert.ok(tmpMount, '/tmp is mounted');
      assert.ok(pod.volumes.find((/** @type {any} */ v) => v.name === tmpMount.name)?.emptyDir, '/tmp is an emptyDir');
      assert.equal(containerEnv(manifests[variant]).TMPDIR, '/tmp');
      // Memory sized (request <= limit), CPU requested.
      for (const k of ['cpu', 'memory']) assert.ok(c.resources.requests[k], `requests.${k}`);
      assert.ok(c.resources.limits.memory, 'limits.memory');
      const mi = (/** @type {string} */ q) => Number(/^(\d+)(Mi|Gi)$/.exec(q)?.[1]) * (q.endsWith('Gi') ? 1024 : 1);
      assert.ok(mi(c.resources.requests.memory) <= mi(c.resources.limits.memory), 'memory request <= limit');
      // The limit holds what serve's caps allow: 64 MiB base + uploads x 25 MiB (object storage:
      // multipart parts in flight; fs: 8 MiB) + the other connections x 8 MiB (a body in memory).
      const caps = argMap(c.args);
      const connections = Number(caps.get('max-connections'));
      const uploads = Math.min(connections, Number(caps.get('max-concurrent-uploads') ?? 64));
      assert.ok(connections > 0 && uploads > 0, `--max-connections (and --max-concurrent-uploads) are set: ${c.args}`);
      const perUpload = variant === 'fs' ? 8 : 25;
      const worst = 64 + uploads * perUpload + (connections - uploads) * 8;
      assert.ok(worst <= mi(c.resources.limits.memory), `limits.memory ${c.resources.limits.memory} < ${worst} MiB that ${connections} connections and ${uploads} uploads can hold`);
      assert.ok(c.resources.requests['ephemeral-storage'], 'requests.ephemeral-storage (the spool is invisible to sizeLimit)');
      // The grace covers the preStop sleep (serving while the endpoint removal spreads) and serve's
      // stop: SHUTDOWN_GRACE plus the 5 s bound it adds (src/server/mod.rs).
      const serverSrc = fs.readFileSync(path.join(REPO_ROOT, 'src', 'server', 'mod.rs'), 'utf8');
      const grace = Number(/pub const SHUTDOWN_GRACE: Duration = Duration::from_secs\((\d+)\);/.exec(serverSrc)?.[1]);
      assert.ok(grace > 0, 'SHUTDOWN_GRACE not found in src/server/mod.rs');
      const sleep = c.lifecycle?.preStop?.sleep?.seconds;
      assert.ok(sleep >= 5, `preStop sleep of at least 5 s (found ${sleep})`);
      assert.ok(pod.terminationGracePeriodSeconds >= sleep + grace + 5, `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} < preStop ${sleep} + SHUTDOWN_GRACE ${grace} + 5`);
      // serve listens on the container port; probes and Prometheus use it.
      const listen = argMap(c.args).get('listen');
      assert.equal(listen, '0.0.0.0:3000');
      const port = c.ports.find((/** @type {any} */ p) => p.name === 'http');
      assert.equal(port.containerPort, Number(listen?.split(':')[1]));
      assert.equal(c.livenessProbe.httpGet.path, '/healthz');
      assert.equal(c.readinessProbe.httpGet.path, '/readyz');
      for (const probe of [c.livenessProbe, c.readinessProbe]) assert.ok(probe.httpGet.port === 'http' || probe.httpGet.port === port.containerPort);
      const annotations = deployment.spec.template.metadata.annotations;
      assert.deepEqual(
        [annotations['prometheus.io/scrape'], annotations['prometheus.io/port'], annotations['prometheus.io/path']],
        ['true', String(port.containerPort), '/metrics'],
      );
      // The Service reaches these pods on that port.
      const service = one(manifests[variant], 'Service');
      const labels = deployment.spec.template.metadata.labels;
      for (const [k, v] of Object.entries(service.spec.selector)) assert.equal(labels[k], v, `Service selector ${k}=${v}`);
      assert.deepEqual(deployment.spec.selector.matchLabels, service.spec.selector);
      assert.ok(service.spec.ports.every((/** @type {any} */ p) => p.targetPort === 'http' || p.targetPort === port.containerPort));
    });
  }

  test('object-storage: 2 replicas, a rolling update that keeps both serving, a PodDisruptionBudget of one unavailable, spread over nodes', () => {
    const m = manifests['object-storage'];
    const deployment = one(m, 'Deployment');
    assert.equal(deployment.spec.replicas, 2);
    assert.deepEqual(deployment.spec.strategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    const pdb = one(m, 'PodDisruptionBudget');
    assert.deepEqual([pdb.spec.maxUnavailable, pdb.spec.minAvailable], [1, undefined]);
    assert.equal(pdb.spec.unhealthyPodEvictionPolicy, 'AlwaysAllow', 'unready pods never block a drain');
    assert.deepEqual(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels);
    const spread = deployment.spec.template.spec.topologySpreadConstraints;
    assert.ok(spread.some((/** @type {any} */ s) => s.topologyKey === 'kubernetes.io/hostname'), 'spread over nodes');
    for (const s of spread) {
      assert.deepEqual(s.labelSelector.matchLabels, deployment.spec.selector.matchLabels);
      assert.equal(s.whenUnsatisfiable, 'ScheduleAnyway', 'a node without the topology label still takes a replica');
    }
    assert.match(argMap(container(m).args).get('storage') || '', /^(s3|gs|az):\/\//);
    assert.equal(ofKind(m, 'PersistentVolumeClaim').length, 0, 'object storage needs no volume');
    assert.equal(one(m, 'ServiceAccount').metadata.name, deployment.spec.template.spec.serviceAccountName);
    const cloud = container(m).envFrom.find((/** @type {any} */ f) => f.secretRef?.name === 'nx-open-cache-cloud');
    assert.equal(cloud?.secretRef.optional, true, 'the cloud Secret is optional (workload identity needs none)');
  });

  test('fs: 1 replica, Recreate, the PersistentVolumeClaim at /data, fs:/data with --max-size', () => {
    const m = manifests.fs;
    const deployment = one(m, 'Deployment');
    assert.equal(deployment.spec.replicas, 1);
    assert.deepEqual(deployment.spec.strategy, { type: 'Recreate' });
    assert.equal(ofKind(m, 'PodDisruptionBudget').length, 0, 'a PDB of one replica would block node drains');
    const pvc = one(m, 'PersistentVolumeClaim');
    assert.deepEqual(pvc.spec.accessModes, ['ReadWriteOnce']);
    const pod = deployment.spec.template.spec;
    const volume = pod.volumes.find((/** @type {any} */ v) => v.persistentVolumeClaim?.claimName === pvc.metadata.name);
    assert.ok(volume, `no volume uses PVC ${pvc.metadata.name}`);
    const c = container(m);
    assert.equal(c.volumeMounts.find((/** @type {any} */ v) => v.name === volume.name)?.mountPath, '/data');
    assert.equal(pod.securityContext.fsGroup, IMAGE_UID, 'the volume is writable by the image user');
    const args = argMap(c.args);
    assert.equal(args.get('storage'), 'fs:/data');
    assert.match(args.get('max-size') || '', /^\d+(GiB|TiB|GB|TB)$/);
  });
});

describe('the real server with the manifests\' args and env', () => {
  before(() => ensureServerBinary());

  test('the unedited token placeholders are refused at start (exit 2), naming the token, never printing the placeholder', () => {
    const env = containerEnv(manifests.fs);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-k8s-'));
    try {
      const r = spawnSync(SERVER_BIN, ['--storage', `fs:${path.join(dir, 'data')}`, '--listen', '127.0.0.1:0'], {
        env: { PATH: process.env.PATH || '', HOME: dir, NX_OPEN_CACHE_SERVER_TOKENS: env.NX_OPEN_CACHE_SERVER_TOKENS },
        encoding: 'utf8',
        timeout: RUN_TIMEOUT_MS,
      });
      assert.equal(r.status, 2, `expected exit 2, got ${r.status}:\n${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /token "ci": the secret \(not shown\)/);
      assert.ok(!r.stderr.includes('openssl'), `the placeholder was printed:\n${r.stderr}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  /** @type {import('../scripts/emulators.js').Emulator | undefined} */
  let emu;
  after(async () => emu?.stop());

  for (const variant of VARIANTS) {
    test(`${variant}: the probe and scrape paths answer 200 and the Secret's tokens work as their roles say`, async (t) => {
      const m = manifests[variant];
      const deployment = one(m, 'Deployment');
      const pod = deployment.spec.template.spec;
      const c = container(m);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-k8s-'));
      t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
      fs.chmodSync(dir, 0o755);

      // Mount paths become directories under the temp dir, made as the kubelet makes them with
      // fsGroup (group 65532, setgid, group-writable); HOME and the working directory are
      // read-only, as the image's root filesystem is.
      /** @type {[string, string][]} */
      const mounts = c.volumeMounts.map((/** @type {any} */ v) => [v.mountPath, path.join(dir, v.name)]);
      for (const [, local] of mounts) {
        fs.mkdirSync(local);
        if (process.getuid?.() === 0) fs.chownSync(local, 0, IMAGE_UID);
        fs.chmodSync(local, 0o2775);
      }
      const home = path.join(dir, 'home');
      fs.mkdirSync(home);
      fs.chmodSync(home, 0o555);
      /** @param {string} value a path, `fs:<path>` or `--name=<either>` @returns {string} */
      const local = (value) => {
        const option = /^(--[a-z0-9-]+=)(.*)$/s.exec(value);
        if (option) return option[1] + local(option[2]);
        if (value.startsWith('fs:')) return `fs:${local(value.slice(3))}`;
        for (const [mountPath, to] of mounts) {
          if (value === mountPath || value.startsWith(`${mountPath}/`)) return to + value.slice(mountPath.length);
        }
        assert.ok(!value.startsWith('/'), `${value}: a path outside the pod's volumes (the root filesystem is read-only)`);
        return value;
      };
      /** @type {Record<string, string>} */ const manifestEnv = {};
      for (const [k, v] of Object.entries(containerEnv(m))) manifestEnv[k] = local(fillPlaceholders(v));

      // S3: the bucket is moto's on 127.0.0.1, its endpoint and keys replace the cloud Secret's.
      /** @type {Record<string, string>} */ let cloudEnv = {};
      if (argMap(c.args).get('storage')?.startsWith('s3://')) {
        emu = await emulators.start('s3');
        cloudEnv = { ...emu.env, NX_OPEN_CACHE_SERVER_S3_FORCE_PATH_STYLE: 'true' };
      }
      /** @type {string[]} */
      const args = c.args.map((/** @type {string} */ a) => {
        if (a.startsWith('--listen=')) return '--listen=127.0.0.1:0';
        const s3 = /^--storage=s3:\/\/[^/]+(\/.*)?$/.exec(a);
        if (s3) return `--storage=s3://${emu?.bucket}${s3[1] || ''}`;
        if (/^--[a-z0-9]+-endpoint=/.test(a)) {
          assert.ok(emu, `${a}: an endpoint without an emulator for it`);
          return `${a.slice(0, a.indexOf('=') + 1)}${emu.endpoint}`;
        }
        return local(a);
      });
      assert.ok(args.every((a) => !a.includes('<') && !a.includes('0.0.0.0')), `args still hold a placeholder or a non-loopback address: ${args}`);
      assert.ok(args.every((a) => !/(=|fs:)\//.test(a) || a.includes(`${dir}/`)), `args name a path outside the test's directory: ${args}`);

      const env = {
        PATH: process.env.PATH || '',
        HOME: home,
        // Credential chains must not reach a metadata service.
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_METADATA_ENDPOINT: CLOSED,
        GCE_METADATA_HOST: '127.0.0.1:9',
        ...manifestEnv,
        ...cloudEnv,
      };
      // Nothing reaches beyond loopback: every URL and host in args and env is 127.0.0.1.
      for (const value of [...args, ...Object.values(env)]) {
        for (const [, host] of value.matchAll(/\bhttps?:\/\/([^/:\s,]+)/g)) assert.equal(host, '127.0.0.1', `${value} leaves loopback`);
      }
      assert.match(env.GCE_METADATA_HOST, /^127\.0\.0\.1:/);
      const mountDirs = mounts.map(([, l]) => l);
      const untouched = snapshot(dir, mountDirs);
      const server = await startServer(args, env, home);
      /** @type {{ code: number | null, signal: NodeJS.Signals | null } | undefined} */
      let exit;
      try {
        for (const p of [c.livenessProbe.httpGet.path, c.readinessProbe.httpGet.path, deployment.spec.template.metadata.annotations['prometheus.io/path']]) {
          const r = await request(`${server.url}${p}`);
          assert.equal(r.status, 200, `GET ${p}: ${r.status} ${r.body}\n${server.output()}`);
        }
        const tokens = manifestEnv.NX_OPEN_CACHE_SERVER_TOKENS.split(',').map((e) => e.split(':'));
        const writer = tokens.find(([, role]) => role === 'read-write');
        const reader = tokens.find(([, role]) => role === 'read-only');
        assert.ok(writer && reader, 'the Secret has a read-write and a read-only token');
        const artifact = sizedArtifact(4096, 7);
        const hash = crypto.randomBytes(16).toString('hex');
        const put = await request(`${server.url}/v1/cache/${hash}`, { method: 'PUT', token: writer[2], body: artifact, headers: { 'content-type': 'application/octet-stream' } });
        assert.equal(put.status, 200, `PUT with ${writer[0]}'s token: ${put.status} ${put.body}`);
        const get = await request(`${server.url}/v1/cache/${hash}`, { token: reader[2] });
        assert.equal(get.status, 200, `GET with ${reader[0]}'s token: ${get.status}`);
        assert.deepEqual(get.body, artifact);
        const refused = await request(`${server.url}/v1/cache/${crypto.randomBytes(16).toString('hex')}`, { method: 'PUT', token: reader[2], body: artifact, headers: { 'content-type': 'application/octet-stream' } });
        assert.equal(refused.status, 403, `PUT with ${reader[0]}'s (read-only) token`);
        const anonymous = await request(`${server.url}/v1/cache/${hash}`);
        assert.equal(anonymous.status, 401, 'no token, no artifact');
        if (emu) assert.ok((await emu.listObjects()).some((k) => k.endsWith(hash)), 'the artifact is in the bucket');
        else {
          const data = mounts.find(([p]) => p === '/data')?.[1] || '';
          const stored = fs.readdirSync(data, { recursive: true }).map(String).find((f) => f.endsWith(hash));
          assert.ok(stored, 'the artifact is in /data');
          if (process.getuid?.() === 0) assert.equal(fs.statSync(path.join(data, stored)).uid, IMAGE_UID, 'the server ran as the image user');
        }
        if (emu) {
          // Over the 8 MiB in-memory limit: the body goes through the spool in /tmp (TMPDIR).
          const large = nxArtifact({ 'dist/large.bin': crypto.randomBytes(9 * 1024 * 1024) }, { level: 0 });
          const largeHash = crypto.randomBytes(16).toString('hex');
          const putLarge = await request(`${server.url}/v1/cache/${largeHash}`, { method: 'PUT', token: writer[2], body: large, headers: { 'content-type': 'application/octet-stream' } });
          assert.equal(putLarge.status, 200, `PUT of ${large.length} bytes: ${putLarge.status} ${putLarge.body}\n${server.output()}`);
          const getLarge = await request(`${server.url}/v1/cache/${largeHash}`, { token: reader[2] });
          assert.equal(getLarge.status, 200, `GET of ${large.length} bytes: ${getLarge.status}`);
          assert.ok(getLarge.body.equals(large), 'the large artifact reads back unchanged');
          const tmp = mounts.find(([p]) => p === '/tmp')?.[1] || '';
          const spool = fs.statSync(path.join(tmp, 'nx-open-cache-spool'));
          assert.ok(spool.isDirectory(), 'the spool was made in the /tmp mount');
          if (process.getuid?.() === 0) assert.equal(spool.uid, IMAGE_UID, 'the server ran as the image user');
        }
      } finally {
        exit = await server.stop();
      }
      assert.deepEqual(exit, { code: 0, signal: null }, 'SIGTERM stops the server cleanly');
      assert.deepEqual(snapshot(dir, mountDirs), untouched, 'the server wrote only to its volume mounts');
      if (emu) {
        await emu.stop();
        emu = undefined;
      }
    });
  }
});
