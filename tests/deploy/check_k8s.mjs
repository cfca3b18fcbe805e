// Validates Kubernetes objects against the Kubernetes OpenAPI schemas, as compiled by npm's
// kubernetes-models (its version is pinned in package-lock.json). Reads a JSON array of
// {"source": ..., "doc": {...}} on stdin (tests/deploy/check_deploy.py renders the manifests);
// prints one line per object and exits 1 if any fails. Core kinds are validated whole; the pod
// parts of the custom resources as core/v1 PodTemplateSpec (PyTorchJob replicas) and PodSpec
// (the InferenceService predictor without KServe's own fields, which deploy/schemas/ checks).
import { readFileSync } from "node:fs";

const KSERVE_FIELDS = ["minReplicas", "maxReplicas", "scaleMetric", "scaleTarget",
  "containerConcurrency", "timeout", "canaryTrafficPercent", "labels", "annotations"];

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
    return (await validator("IoK8sApiCoreV1PodSpec"))(pod).map((e) => ({ ...e, instancePath: "/spec/predictor" + e.instancePath }));
  }
  if (doc.kind === "PyTorchJob") {
    const v = await validator("IoK8sApiCoreV1PodTemplateSpec");
    return Object.entries(doc.spec.pytorchReplicaSpecs).flatMap(([role, r]) =>
      v(r.template).map((e) => ({ ...e, instancePath: `/spec/pytorchReplicaSpecs/${role}/template` + e.instancePath })));
  }
  const Cls = await modelClass(doc.apiVersion, doc.kind);
  try {
    new Cls(doc).validate();
    return [];
  } catch (e) {
    return e.errors || [{ instancePath: "", message: e.message }];
  }
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
    for (const e of errors) console.log(`FAIL ${what}: ${e.instancePath} ${e.message || e.keyword + " " + JSON.stringify(e.params)}`);
  } else {
    console.log(`ok   ${what}`);
  }
}
process.exit(failed ? 1 : 0);
