// Validates Kubernetes objects against the Kubernetes OpenAPI schemas, as compiled by npm's
// kubernetes-models (its version is pinned in package-lock.json). Reads a JSON array of
// {"source": ..., "doc": {...}} on stdin (tests/deploy/check_deploy.py renders the manifests);
// prints one line per object and exits 1 if any fails. Core kinds are validated whole; the pod
// parts of the custom resources as core/v1 PodTemplateSpec (PyTorchJob replicas) and PodSpec
// (the InferenceService predictor without KServe's own fields, which deploy/schemas/ checks).
// The compiled validators check types, formats and required fields but let unknown fields
// through (a misspelt `readinessProbe` would pass), so a second walk refuses every field that
// the API's types, read from kubernetes-models' TypeScript declarations, do not have.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

const KSERVE_FIELDS = ["minReplicas", "maxReplicas", "scaleMetric", "scaleTarget",
  "containerConcurrency", "timeout", "canaryTrafficPercent", "labels", "annotations"];

// ==== Unknown fields, from the .d.ts declarations ====

const MODULES = resolve("node_modules");
const interfaces = new Map(); // .d.ts path -> {props: Map(name -> type text)} or null (a scalar alias)

function declFile(spec, from) {
  const base = spec.startsWith(".") ? resolve(dirname(from), spec) : join(MODULES, spec);
  const path = base.replace(/\.js$/, "") + ".d.ts";
  if (!existsSync(path)) throw new Error(`no declarations for ${spec} (from ${from})`);
  return path;
}

// The properties of the one interface a declaration file exports; their types stay text.
function parseDecl(path) {
  if (interfaces.has(path)) return interfaces.get(path);
  const text = readFileSync(path, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
  const imports = new Map();
  for (const m of text.matchAll(/import \{ (\w+) \} from "([^"]+)"/g)) imports.set(m[1], m[2]);
  const head = /export interface \w+[^{]*\{/.exec(text);
  let decl = null;
  if (head) {
    const props = new Map();
    let i = head.index + head[0].length, depth = 0, start = i;
    for (; depth >= 0 && i < text.length; i++) {
      const ch = text[i];
      if (ch === "{" || ch === "<" || ch === "(") depth++;
      else if (ch === "}" || ch === ">" || ch === ")") depth--;
      if ((ch === ";" && depth === 0) || depth < 0) {
        const m = /^\s*"([^"]+)"\??:\s*([\s\S]*?)\s*;?\s*$/.exec(text.slice(start, depth < 0 ? i : i + 1));
        if (m) props.set(m[1], m[2]);
        start = i + 1;
      }
    }
    decl = { path, props, imports };
  }
  interfaces.set(path, decl);
  return decl;
}

// Walks data against a type's text; pushes "path: unknown field" for every field it lacks.
function walkType(type, data, path, decl, out) {
  type = type.trim();
  let m;
  if (data === null || data === undefined) return;
  if ((m = /^Array<([\s\S]*)>$/.exec(type))) {
    if (Array.isArray(data)) data.forEach((d, i) => walkType(m[1], d, `${path}/${i}`, decl, out));
    return;
  }
  if ((m = /^\{\s*\[key: string\]:\s*([\s\S]*?);?\s*\}$/.exec(type))) {
    if (typeof data === "object") for (const [k, v] of Object.entries(data)) walkType(m[1], v, `${path}/${k}`, decl, out);
    return;
  }
  if (/^\w+$/.test(type) && decl.imports.has(type)) {
    const target = parseDecl(declFile(decl.imports.get(type), decl.path));
    if (target) walkObject(target, data, path, out);
  }
  // Anything else is a scalar, a union of literals or an alias of one (Quantity, IntOrString, Time).
}

function walkObject(decl, data, path, out) {
  if (typeof data !== "object" || Array.isArray(data)) return; // the validators report the type
  for (const [k, v] of Object.entries(data)) {
    if (!decl.props.has(k)) out.push({ instancePath: `${path}/${k}`, message: "unknown field" });
    else walkType(decl.props.get(k), v, `${path}/${k}`, decl, out);
  }
}

function unknownFields(declPath, data, path = "") {
  const out = [];
  walkObject(parseDecl(declPath), data, path, out);
  return out;
}

function kindDecl(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  return join(MODULES, "kubernetes-models", group, version, `${kind}.d.ts`);
}

// ==== The OpenAPI validators ====

async function validator(name) {
  const mod = await import(`kubernetes-models/_schemas/${name}`);
  return (data) => (mod.validate(data) ? [] : mod.validate.errors);
}

async function modelClass(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const path = group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
  return (await import(path))[kind];
}

async function check(doc) {
  if (doc.kind === "InferenceService") {
    const pod = { ...doc.spec.predictor };
    for (const f of KSERVE_FIELDS) delete pod[f];
    return [...(await validator("IoK8sApiCoreV1PodSpec"))(pod).map((e) => ({ ...e, instancePath: "/spec/predictor" + e.instancePath })),
            ...unknownFields(kindDecl("v1", "PodSpec"), pod, "/spec/predictor")];
  }
  if (doc.kind === "PyTorchJob") {
    const v = await validator("IoK8sApiCoreV1PodTemplateSpec");
    return Object.entries(doc.spec.pytorchReplicaSpecs).flatMap(([role, r]) =>
      [...v(r.template).map((e) => ({ ...e, instancePath: `/spec/pytorchReplicaSpecs/${role}/template` + e.instancePath })),
       ...unknownFields(kindDecl("v1", "PodTemplateSpec"), r.template, `/spec/pytorchReplicaSpecs/${role}/template`)]);
  }
  const Cls = await modelClass(doc.apiVersion, doc.kind);
  const unknown = unknownFields(kindDecl(doc.apiVersion, doc.kind), doc);
  try {
    new Cls(doc).validate();
    return unknown;
  } catch (e) {
    return [...(e.errors || [{ instancePath: "", message: e.message }]), ...unknown];
  }
}

// The compiled validators' errors carry no message: say it as ajv would.
function describe(e) {
  if (e.message) return e.message;
  if (e.keyword === "type") return `must be ${e.params.type}`;
  if (e.keyword === "required") return `must have required property '${e.params.missingProperty}'`;
  if (e.keyword === "enum") return `must be one of ${JSON.stringify(e.params.allowedValues)}`;
  return `${e.keyword} ${JSON.stringify(e.params)}`;
}

const items = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const { source, doc } of items) {
  let errors;
  try {
    errors = await check(doc);
  } catch (e) {
    errors = [{ instancePath: "", message: "no schema: " + e.message }];
  }
  const what = `${source}: ${doc.apiVersion} ${doc.kind} ${doc.metadata?.name}`;
  if (errors.length) {
    failed++;
    for (const e of errors) console.log(`FAIL ${what}: ${e.instancePath} ${describe(e)}`);
  } else {
    console.log(`ok   ${what}`);
  }
}
process.exit(failed ? 1 : 0);
