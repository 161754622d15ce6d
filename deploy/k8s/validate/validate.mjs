// Offline validation of drfm's Kubernetes manifests, without a cluster:
//  1. schema: every document is checked against the Kubernetes API schema of its apiVersion/kind
//     (kubernetes-models; monitoring.coreos.com/v1 from @kubernetes-models/prometheus-operator):
//     types, enums, required fields and formats, and, like `kubectl --validate=strict`, no field
//     the schema does not know (a misspelt `servic:` in a probe is an error, not silently ignored);
//  2. drfm's deployment rules: one replica with a PVC at /var/lib/drfm, gRPC probes, resources,
//     the restrictive securityContext, the token Secret passed with --token-file, Service ports,
//     ServiceMonitor / PodDisruptionBudget selecting the pods, and the PrometheusRule carrying
//     exactly the groups of deploy/prometheus/rules.yml.
//
//   node validate.mjs [--kustomization FILE] [--rendered FILE] [--rules FILE] [--self-test]
//   node validate.mjs --sync-rules     rewrite prometheusrule.yaml's groups from rules.yml
// --kustomization validates each file the kustomization lists (and fails on YAML files in its folder
// that it does not list); --rendered validates `kubectl kustomize` output. Exit status 1 when any
// document is invalid, 2 on bad usage.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import YAML from 'yaml';

const here = path.dirname(fileURLToPath(import.meta.url));
const k8sDir = path.resolve(here, '..');

// --- schema validation -------------------------------------------------------------------------

const schemaCache = new Map();
// The compiled validator of apiVersion/kind, or null when no model knows it.
async function schemaValidator(apiVersion, kind) {
  const key = `${apiVersion}/${kind}`;
  if (schemaCache.has(key)) return schemaCache.get(key);
  let modulePath;
  if (apiVersion === 'monitoring.coreos.com/v1') {
    modulePath = `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`;
  } else {
    modulePath = `kubernetes-models/${apiVersion}/${kind}`;
  }
  let Model;
  try {
    Model = (await import(modulePath))[kind];
  } catch (e) {
    if (e.code !== 'ERR_MODULE_NOT_FOUND' && e.code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED') throw e;
  }
  let validate = null;
  if (Model) {
    validate = (doc) => {
      try {
        new Model(doc).validate();
        return null;
      } catch (e) {
        return e.message;
      }
    };
    // The same compiled schema the model uses, for the unknown-field walk below. The packages do
    // not export _schemas/, so it is imported by its file (it sits next to the model's folders).
    const pkg = apiVersion === 'monitoring.coreos.com/v1'
      ? path.join('@kubernetes-models', 'prometheus-operator') : 'kubernetes-models';
    const file = path.join(here, 'node_modules', pkg, '_schemas', `${modelSchemaName(apiVersion, kind)}.mjs`);
    validate.raw = (await import(pathToFileURL(file).href)).validate;
    if (typeof validate.raw !== 'function') throw new Error(`${file} exports no validate function`);
  }
  schemaCache.set(key, validate);
  return validate;
}

// kubernetes-models' schema module names: IoK8sApiAppsV1StatefulSet, IoK8sApiCoreV1Service,
// IoK8sApiPolicyV1PodDisruptionBudget, MonitoringCoreosComV1ServiceMonitor.
function modelSchemaName(apiVersion, kind) {
  const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);
  if (apiVersion === 'monitoring.coreos.com/v1') return `MonitoringCoreosComV1${kind}`;
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['core', apiVersion];
  const groupName = group.replace(/\.k8s\.io$/, '').split('.').map(cap).join('');
  return `IoK8sApi${groupName}${cap(version)}${kind}`;
}

// Fields the schema does not know. The compiled validators read every property their schema
// declares (`data.replicas`) and enumerate the keys of maps (labels, resources.limits); a key of
// an object that was neither read nor enumerated is unknown to the schema. Found by running the
// validator over proxies that record those accesses.
function unknownFields(rawValidate, doc) {
  const touched = new Map();  // original object -> {keys: Set, enumerated: bool}
  const paths = new Map();    // original object -> JSON path
  const wrap = (value, where) => {
    if (value === null || typeof value !== 'object') return value;
    const record = { keys: new Set(), enumerated: false };
    touched.set(value, record);
    paths.set(value, where);
    const children = new Map();
    return new Proxy(value, {
      get(target, prop, receiver) {
        if (typeof prop === 'string') record.keys.add(prop);
        const v = Reflect.get(target, prop, receiver);
        if (typeof prop !== 'string' || v === null || typeof v !== 'object') return v;
        if (!children.has(prop)) children.set(prop, wrap(v, `${where}/${prop}`));
        return children.get(prop);
      },
      ownKeys(target) {
        record.enumerated = true;
        return Reflect.ownKeys(target);
      },
      has(target, prop) {
        if (typeof prop === 'string') record.keys.add(prop);
        return Reflect.has(target, prop);
      },
    });
  };
  rawValidate(wrap(doc, ''));
  const unknown = [];
  for (const [obj, record] of touched) {
    if (Array.isArray(obj) || record.enumerated) continue;
    for (const key of Object.keys(obj)) {
      if (!record.keys.has(key)) unknown.push(`${paths.get(obj)}/${key}`);
    }
  }
  return unknown;
}

// Problems of one document against its schema (empty when valid).
async function schemaProblems(doc) {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return ['not a YAML mapping'];
  const { apiVersion, kind } = doc;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return ['apiVersion and kind are required'];
  if (!doc.metadata || typeof doc.metadata.name !== 'string' || doc.metadata.name === '') {
    return ['metadata.name is required'];
  }
  const validate = await schemaValidator(apiVersion, kind);
  if (!validate) return [`no schema for ${apiVersion} ${kind} (unknown kind or API version)`];
  const problems = [];
  const message = validate(doc);
  if (message) problems.push(message);
  if (validate.raw) {
    for (const field of unknownFields(validate.raw, doc)) {
      problems.push(`unknown field ${field} (not in the ${apiVersion} ${kind} schema)`);
    }
  }
  return problems;
}

// --- loading -----------------------------------------------------------------------------------

// The documents of a YAML file: [{doc, where}]; YAML errors are thrown with the file name.
function loadDocuments(file) {
  const text = fs.readFileSync(file, 'utf8');
  const docs = YAML.parseAllDocuments(text, { prettyErrors: true, uniqueKeys: true });
  const out = [];
  docs.forEach((d, i) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    const value = d.toJS({ maxAliasCount: 0 });
    if (value === null || value === undefined) return;  // an empty document (e.g. after '---')
    const rel = path.relative(k8sDir, file);
    out.push({ doc: value, where: `${rel.startsWith('..') ? file : rel}#${i + 1}` });
  });
  return out;
}

// The resource files of a kustomization (only plain files: this project uses no remote bases).
function kustomizationResources(file) {
  const kust = YAML.parse(fs.readFileSync(file, 'utf8'));
  const dir = path.dirname(file);
  const problems = [];
  if (kust?.kind !== 'Kustomization') problems.push(`${file}: kind must be Kustomization`);
  const resources = (kust?.resources ?? []).map((r) => path.resolve(dir, r));
  for (const r of resources) {
    if (!fs.existsSync(r) || !fs.statSync(r).isFile()) problems.push(`${file}: resource ${r} is not a file`);
  }
  const listed = new Set(resources);
  for (const name of fs.readdirSync(dir)) {
    const full = path.resolve(dir, name);
    if (/\.ya?ml$/.test(name) && full !== path.resolve(file) && !listed.has(full)) {
      problems.push(`${file}: ${name} is not listed in resources (it would never be applied)`);
    }
  }
  return { resources, problems, kust };
}

// --- drfm's deployment rules -------------------------------------------------------------------

// JSON with sorted keys: kustomize reorders keys, which changes nothing.
const canonical = (v) => JSON.stringify(v, (k, x) =>
  x && typeof x === 'object' && !Array.isArray(x)
    ? Object.fromEntries(Object.keys(x).sort().map((key) => [key, x[key]])) : x);

const matches = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => (labels ?? {})[k] === v);

function deploymentProblems(docs, rulesFile) {
  const problems = [];
  const need = (cond, message) => { if (!cond) problems.push(message); };
  const byKind = (kind) => docs.filter((d) => d.doc.kind === kind).map((d) => d.doc);

  const sets = byKind('StatefulSet');
  need(sets.length === 1, `exactly one StatefulSet expected, found ${sets.length}`);
  const sts = sets[0];
  if (!sts) return problems;
  const spec = sts.spec ?? {};
  const pod = spec.template?.spec ?? {};
  const podLabels = spec.template?.metadata?.labels ?? {};
  need(spec.replicas === 1, 'StatefulSet: replicas must be 1 (the embedded store has a single writer)');
  need(matches(spec.selector?.matchLabels, podLabels), 'StatefulSet: selector does not match the pod labels');
  const claims = (spec.volumeClaimTemplates ?? []).map((c) => c.metadata?.name);
  const containers = pod.containers ?? [];
  const server = containers.find((c) => c.name === 'drfm-server');
  need(server, 'StatefulSet: container "drfm-server" missing');
  if (!server) return problems;
  const mounts = server.volumeMounts ?? [];
  const dataMount = mounts.find((m) => m.mountPath === '/var/lib/drfm');
  need(dataMount && claims.includes(dataMount.name),
    'StatefulSet: /var/lib/drfm must be mounted from a volumeClaimTemplate');

  const grpcPort = (probe) => probe?.grpc?.port;
  need(grpcPort(server.livenessProbe) === 50051, 'livenessProbe must be a gRPC probe on port 50051');
  need(grpcPort(server.startupProbe) === 50051, 'startupProbe must be a gRPC probe on port 50051');
  need(grpcPort(server.readinessProbe) === 50051 && server.readinessProbe.grpc.service === 'drfm.v1.JobService',
    'readinessProbe must be a gRPC probe on port 50051 for service drfm.v1.JobService');
  const ports = Object.fromEntries((server.ports ?? []).map((p) => [p.name, p.containerPort]));
  need(ports.grpc === 50051 && ports.metrics === 9464, 'container ports grpc: 50051 and metrics: 9464 expected');

  for (const kind of ['requests', 'limits']) {
    for (const r of ['cpu', 'memory']) {
      need(server.resources?.[kind]?.[r] !== undefined, `resources.${kind}.${r} must be set`);
    }
  }
  const psc = pod.securityContext ?? {};
  need(psc.runAsNonRoot === true, 'pod securityContext.runAsNonRoot must be true');
  need(Number.isInteger(psc.runAsUser) && psc.runAsUser > 0, 'pod securityContext.runAsUser must be a non-root uid');
  need(Number.isInteger(psc.fsGroup), 'pod securityContext.fsGroup must be set (the PVC must be writable)');
  need(psc.seccompProfile?.type === 'RuntimeDefault', 'pod seccompProfile must be RuntimeDefault');
  for (const c of [...containers, ...(pod.initContainers ?? [])]) {
    const sc = c.securityContext ?? {};
    need(sc.allowPrivilegeEscalation === false, `${c.name}: allowPrivilegeEscalation must be false`);
    need(sc.readOnlyRootFilesystem === true, `${c.name}: readOnlyRootFilesystem must be true`);
    need((sc.capabilities?.drop ?? []).includes('ALL'), `${c.name}: capabilities must drop ALL`);
    need(sc.privileged !== true, `${c.name}: must not be privileged`);
  }

  // --token-file=PATH (or --token-file PATH) with PATH inside a Secret volume.
  const args = [...(server.command ?? []), ...(server.args ?? [])];
  let tokenFile;
  args.forEach((a, i) => {
    if (a.startsWith('--token-file=')) tokenFile = a.slice('--token-file='.length);
    else if (a === '--token-file') tokenFile = args[i + 1];
  });
  need(tokenFile, 'drfm-server must be started with --token-file');
  if (tokenFile) {
    const mount = mounts.find((m) => tokenFile.startsWith(m.mountPath.replace(/\/?$/, '/')));
    const volume = mount && (pod.volumes ?? []).find((v) => v.name === mount.name);
    need(volume?.secret?.secretName, `--token-file ${tokenFile} must lie in a mounted Secret volume`);
    need(mount?.readOnly === true, 'the token Secret must be mounted readOnly');
  }

  // Services: the StatefulSet's governing one is headless; the client-facing one names its ports.
  const services = byKind('Service');
  const governing = services.find((s) => s.metadata.name === spec.serviceName);
  need(governing && governing.spec?.clusterIP === 'None',
    `StatefulSet serviceName "${spec.serviceName}" must name a headless Service`);
  const api = services.filter((s) => matches(s.spec?.selector, podLabels) && s.spec?.clusterIP !== 'None');
  need(api.length === 1, 'exactly one non-headless Service must select the drfm pods');
  const svc = api[0];
  if (svc) {
    const sp = Object.fromEntries((svc.spec.ports ?? []).map((p) => [p.name, p]));
    need(sp.grpc?.port === 50051, 'Service port "grpc" must be 50051');
    need(sp.metrics?.port === 9464, 'Service port "metrics" must be 9464');
    for (const p of Object.values(sp)) {
      const target = p.targetPort ?? p.port;
      need(typeof target === 'string' ? ports[target] !== undefined : Object.values(ports).includes(target),
        `Service port ${p.name}: targetPort ${target} is no container port`);
    }
  }

  // ServiceMonitor: selects the API Service (and only it: no double scrape), on its metrics port.
  const monitors = byKind('ServiceMonitor');
  need(monitors.length === 1, `exactly one ServiceMonitor expected, found ${monitors.length}`);
  for (const sm of monitors) {
    const selected = services.filter((s) => matches(sm.spec?.selector?.matchLabels, s.metadata.labels));
    need(selected.length === 1 && selected[0] === svc,
      `ServiceMonitor ${sm.metadata.name} must select exactly the Service ${svc?.metadata.name}` +
      ` (selects: ${selected.map((s) => s.metadata.name).join(', ') || 'none'})`);
    for (const ep of sm.spec?.endpoints ?? []) {
      need(svc && (svc.spec.ports ?? []).some((p) => p.name === ep.port),
        `ServiceMonitor endpoint port "${ep.port}" is not a port of the Service`);
    }
  }

  const pdbs = byKind('PodDisruptionBudget');
  need(pdbs.length === 1, `exactly one PodDisruptionBudget expected, found ${pdbs.length}`);
  for (const pdb of pdbs) {
    need(matches(pdb.spec?.selector?.matchLabels, podLabels), `PodDisruptionBudget ${pdb.metadata.name} does not select the drfm pods`);
  }

  const saName = pod.serviceAccountName;
  if (saName) {
    need(byKind('ServiceAccount').some((s) => s.metadata.name === saName), `ServiceAccount ${saName} is not defined`);
  }

  // PrometheusRule == rules.yml, and the alerts the deployment promises are there.
  const rules = byKind('PrometheusRule');
  need(rules.length === 1, `exactly one PrometheusRule expected, found ${rules.length}`);
  if (rules[0] && rulesFile) {
    const want = YAML.parse(fs.readFileSync(rulesFile, 'utf8')).groups;
    need(canonical(rules[0].spec?.groups) === canonical(want),
      `PrometheusRule ${rules[0].metadata.name}: spec.groups differ from ${rulesFile} ` +
      '(run node deploy/k8s/validate/validate.mjs --sync-rules)');
    const exprs = (rules[0].spec?.groups ?? []).flatMap((g) => g.rules ?? []).filter((r) => r.alert).map((r) => r.expr);
    for (const [what, re] of [
      ['queue backing up', /drfm_job_queue_depth/],
      ['jobs failing', /drfm_jobs_finished_total\{[^}]*state="failed"/],
      ['predict latency', /histogram_quantile\(.*drfm_predict_latency_seconds_bucket/s],
      ['server down', /\bup\{[^}]*\}\s*==\s*0|absent\(up/],
    ]) {
      need(exprs.some((e) => re.test(e)), `PrometheusRule: no alert for ${what}`);
    }
  }
  return problems;
}

// --- the command -------------------------------------------------------------------------------

async function validateDocuments(entries) {
  let bad = 0;
  for (const { doc, where } of entries) {
    const problems = await schemaProblems(doc);
    const name = `${doc?.kind ?? '?'} ${doc?.metadata?.name ?? '?'}`;
    if (problems.length) {
      bad++;
      console.log(`INVALID ${where} ${name}`);
      for (const p of problems) console.log(`  - ${p}`);
    } else {
      console.log(`ok      ${where} ${name}`);
    }
  }
  return bad;
}

// The validator must reject what a cluster would reject: broken copies of the real manifests.
async function selfTest(entries) {
  const sts = entries.find((e) => e.doc.kind === 'StatefulSet')?.doc;
  const sm = entries.find((e) => e.doc.kind === 'ServiceMonitor')?.doc;
  if (!sts || !sm) return ['self-test needs the StatefulSet and the ServiceMonitor'];
  const clone = (x) => structuredClone(x);
  const cases = [
    ['misspelt probe field', () => { const d = clone(sts); const p = d.spec.template.spec.containers[0].readinessProbe.grpc; p.servic = p.service; delete p.service; return d; }],
    ['unknown spec field', () => { const d = clone(sts); d.spec.replica = 1; return d; }],
    ['wrong type', () => { const d = clone(sts); d.spec.replicas = 'one'; return d; }],
    ['bad enum', () => { const d = clone(sts); d.spec.podManagementPolicy = 'Sometimes'; return d; }],
    ['missing required field', () => { const d = clone(sts); delete d.spec.selector; return d; }],
    ['unknown CRD field', () => { const d = clone(sm); d.spec.endpoints[0].intervall = '30s'; return d; }],
    ['unknown kind', () => { const d = clone(sm); d.kind = 'ServiceMonitorr'; return d; }],
  ];
  const failures = [];
  for (const [what, make] of cases) {
    const problems = await schemaProblems(make());
    if (problems.length === 0) failures.push(`self-test: a manifest with a ${what} was accepted`);
  }
  const rulesCases = [
    ['replicas 2', (d) => { d.find((e) => e.doc.kind === 'StatefulSet').doc.spec.replicas = 2; }],
    ['no readOnlyRootFilesystem', (d) => { d.find((e) => e.doc.kind === 'StatefulSet').doc.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem = false; }],
  ];
  for (const [what, mutate] of rulesCases) {
    const copy = clone(entries);
    mutate(copy);
    if (deploymentProblems(copy, null).length === 0) failures.push(`self-test: deployment rules accepted ${what}`);
  }
  // The real manifests pass the unknown-field walk, and it does find fields at depth.
  const walked = unknownFields((await schemaValidator('apps/v1', 'StatefulSet')).raw, cases[0][1]());
  if (!walked.some((f) => f.endsWith('/readinessProbe/grpc/servic'))) {
    failures.push(`self-test: the unknown-field walk missed readinessProbe.grpc.servic (found: ${walked.join(', ')})`);
  }
  return failures;
}

function syncRules(rulesFile, ruleManifest) {
  const groups = YAML.parse(fs.readFileSync(rulesFile, 'utf8')).groups;
  const doc = YAML.parseDocument(fs.readFileSync(ruleManifest, 'utf8'));
  doc.setIn(['spec', 'groups'], doc.createNode(groups));
  fs.writeFileSync(ruleManifest, doc.toString({ lineWidth: 0 }));
  console.log(`wrote spec.groups of ${ruleManifest} from ${rulesFile}`);
}

async function main(argv) {
  const opts = { kustomization: [], rendered: [], rules: path.resolve(k8sDir, '../prometheus/rules.yml'), selfTest: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--kustomization') opts.kustomization.push(argv[++i]);
    else if (a === '--rendered') opts.rendered.push(argv[++i]);
    else if (a === '--rules') opts.rules = argv[++i];
    else if (a === '--self-test') opts.selfTest = true;
    else if (a === '--sync-rules') opts.sync = true;
    else if (a === '-h' || a === '--help') { console.log(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\nimport ')[0]); return 0; }
    else { console.error(`validate.mjs: unknown argument ${a}`); return 2; }
  }
  if (opts.sync) { syncRules(opts.rules, path.join(k8sDir, 'prometheusrule.yaml')); return 0; }
  if (!opts.kustomization.length && !opts.rendered.length) opts.kustomization.push(path.join(k8sDir, 'kustomization.yaml'));

  let failed = 0;
  const sets = [];
  for (const k of opts.kustomization) {
    const { resources, problems } = kustomizationResources(k);
    for (const p of problems) { console.log(`INVALID ${p}`); failed++; }
    const entries = resources.filter((r) => fs.existsSync(r)).flatMap(loadDocuments);
    sets.push([`${k} (each resource file)`, entries]);
  }
  for (const r of opts.rendered) sets.push([`${r} (kustomize output)`, loadDocuments(r)]);

  for (const [label, entries] of sets) {
    console.log(`== ${label}: ${entries.length} documents`);
    failed += await validateDocuments(entries);
    const problems = deploymentProblems(entries, opts.rules);
    for (const p of problems) console.log(`INVALID deployment rule: ${p}`);
    if (!problems.length) console.log('ok      drfm deployment rules');
    failed += problems.length;
    if (opts.selfTest) {
      const st = await selfTest(entries);
      for (const p of st) console.log(`FAILED ${p}`);
      if (!st.length) console.log('ok      self-test: broken manifests are rejected');
      failed += st.length;
      opts.selfTest = false;  // once is enough
    }
  }
  console.log(failed ? `validate: ${failed} problem(s)` : 'validate: all documents valid');
  return failed ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
