"""Checks of deploy/ (ctest deploy_*): offline, from a fresh clone, in seconds.

Usage: check_deploy.py GROUP   (GROUP: kustomize, schemas, compose, systemd, metrics, settings)

  kustomize  `kubectl kustomize` renders every kustomization under deploy/k8s
  schemas    the rendered objects against the Kubernetes OpenAPI schemas (check_k8s.mjs, npm's
             kubernetes-models: types, formats, required fields, and no unknown field; needs
             LOUPE_NODE_DIR), and the InferenceService and
             PyTorchJob against deploy/schemas/ (python3-jsonschema)
  compose    deploy/compose parsed (python3-yaml): services, ports, the health check through
             `loupe probe`, volumes and mounted files that exist, the stop grace over the drain
  systemd    `systemd-analyze verify` of deploy/systemd/loupe.service (with ExecStart pointed at
             the built binary), its hardening, ExecReload by SIGHUP, TimeoutStopSec over the drain
  metrics    every metric name (and label) in the Grafana dashboard and the Prometheus rules is
             in a live `loupe serve`'s /metrics
  settings   every LOUPE_* variable and probe path used in deploy/ exists in `loupe serve --help`
             and the route table; each overlay's preStop + LOUPE_DRAIN_GRACE + LOUPE_DRAIN_TIMEOUT
             fits in terminationGracePeriodSeconds

Environment: LOUPE_BIN (the built loupe), LOUPE_NODE_DIR (the folder where `npm ci` installed
tests/deploy/package-lock.json; check_k8s.mjs is copied there and run, since node resolves an ES
module's imports from the module's own folder, never from NODE_PATH).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
COMPOSE = os.path.join(DEPLOY, "compose")
UNIT = os.path.join(DEPLOY, "systemd", "loupe.service")
HERE = os.path.dirname(os.path.abspath(__file__))
LOUPE = os.environ.get("LOUPE_BIN", os.path.join(ROOT, "build", "cli", "loupe"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def kustomizations():
    """Every folder under deploy/k8s with a kustomization.yaml, relative to deploy/k8s."""
    found = glob.glob(os.path.join(K8S, "**", "kustomization.yaml"), recursive=True)
    return sorted(os.path.relpath(os.path.dirname(p), K8S) for p in found)


def render(rel):
    r = subprocess.run(["kubectl", "kustomize", os.path.join(K8S, rel)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("kubectl kustomize %s: %s" % (rel, r.stderr))
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def serve_help():
    r = subprocess.run([LOUPE, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def deploy_files():
    for dirpath, _, files in os.walk(DEPLOY):
        for f in files:
            if f.endswith((".yaml", ".yml", ".json", ".env", ".service", ".md")):
                yield os.path.join(dirpath, f)


def run_check_k8s(items):
    """check_k8s.mjs on these items, from the folder that holds node_modules."""
    work = os.environ.get("LOUPE_NODE_DIR", HERE)
    script = os.path.join(work, "check_k8s.mjs")
    if os.path.abspath(work) != HERE:
        shutil.copyfile(os.path.join(HERE, "check_k8s.mjs"), script)
    return subprocess.run(["node", script], input=json.dumps(items), capture_output=True,
                          text=True, timeout=120, cwd=work)


def seconds_of_sleep(command):
    """The N of a preStop exec ["sleep", "N"]."""
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


# ==== kubectl kustomize ====

class Kustomize(unittest.TestCase):
    def test_every_kustomization_renders(self):
        rels = kustomizations()
        for want in ("base", "overlays/dev", "overlays/prod", "kserve", "training"):
            self.assertIn(want, rels)
        for rel in rels:
            with self.subTest(rel):
                docs = render(rel)
                self.assertTrue(docs)
                for d in docs:
                    self.assertIn("apiVersion", d)
                    self.assertTrue(d["metadata"]["name"])

    def test_overlays_hold_the_whole_app(self):
        for rel in ("base", "overlays/dev", "overlays/prod"):
            with self.subTest(rel):
                kinds = sorted(d["kind"] for d in render(rel))
                self.assertEqual(kinds, ["ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                                         "PersistentVolumeClaim", "PodDisruptionBudget", "Service"])

    def test_selectors_match_the_pods(self):
        for rel in ("base", "overlays/dev", "overlays/prod"):
            docs = render(rel)
            dep = by_kind(docs, "Deployment")[0]
            labels = dep["spec"]["template"]["metadata"]["labels"]
            for d in [dep, *by_kind(docs, "PodDisruptionBudget")]:
                sel = d["spec"]["selector"]["matchLabels"]
                self.assertTrue(sel.items() <= labels.items(), (rel, d["kind"]))
            svc = by_kind(docs, "Service")[0]
            self.assertTrue(svc["spec"]["selector"].items() <= labels.items(), rel)
            hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]
            self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], dep["metadata"]["name"])
            self.assertNotIn("replicas", dep["spec"])  # the HPA's to set
            # The hashed ConfigMap name is the one the pods read.
            cm = by_kind(docs, "ConfigMap")[0]["metadata"]["name"]
            refs = [e["configMapRef"]["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["envFrom"]]
            self.assertEqual(refs, [cm])

    def test_pod_security_and_probes(self):
        for rel in ("base", "overlays/dev", "overlays/prod"):
            with self.subTest(rel):
                pod = by_kind(render(rel), "Deployment")[0]["spec"]["template"]["spec"]
                self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
                c = pod["containers"][0]
                sc = c["securityContext"]
                self.assertIs(sc["readOnlyRootFilesystem"], True)
                self.assertIs(sc["allowPrivilegeEscalation"], False)
                self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
                self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")
                self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
                self.assertIn("requests", c["resources"])
                self.assertIn("memory", c["resources"]["limits"])
                mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
                vols = {v["name"]: v for v in pod["volumes"]}
                self.assertIn("emptyDir", vols[mounts["/tmp"]["name"]])
                self.assertEqual(vols[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"],
                                 "loupe-models")

    def test_training_writes_where_the_servers_read(self):
        job = by_kind(render("training"), "PyTorchJob")[0]
        base = render("base")
        claim = by_kind(base, "PersistentVolumeClaim")[0]
        self.assertIn("ReadWriteMany", claim["spec"]["accessModes"])
        models = [e for e in by_kind(base, "ConfigMap")[0]["data"].items() if e[0] == "LOUPE_MODELS"][0][1]
        for role in ("Master", "Worker"):
            pod = job["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]
            vols = {v["name"]: v for v in pod["volumes"]}
            c = [c for c in pod["containers"] if c["name"] == "pytorch"][0]
            self.assertTrue(c["image"].endswith(":trainer"), c["image"])
            mount = [m for m in c["volumeMounts"] if m["mountPath"] == models][0]
            self.assertEqual(vols[mount["name"]]["persistentVolumeClaim"]["claimName"],
                             claim["metadata"]["name"])
            out = [a for a in c["args"] if a.startswith("--out=")][0][len("--out="):]
            self.assertEqual(os.path.dirname(out), models)
            self.assertTrue(c["command"][-1].endswith("train_vgg.py"))
        self.assertGreaterEqual(job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"], 1)

    def test_inference_service_reads_mnt_models(self):
        isvc = by_kind(render("kserve"), "InferenceService")[0]
        c = isvc["spec"]["predictor"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        self.assertEqual(env["LOUPE_MODELS"], "/mnt/models")
        self.assertIn("STORAGE_URI", env)
        self.assertEqual(env.get("LOUPE_PORT", "8080"), "8080")
        self.assertEqual([p["containerPort"] for p in c["ports"]], [8080])


# ==== Schemas ====

class Schemas(unittest.TestCase):
    def test_kubernetes_openapi(self):
        items = [{"source": rel, "doc": d} for rel in kustomizations() for d in render(rel)]
        kinds = {d["doc"]["kind"] for d in items}
        self.assertTrue({"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                         "ConfigMap", "PersistentVolumeClaim", "InferenceService", "PyTorchJob"} <= kinds)
        r = run_check_k8s(items)
        sys.stdout.write(r.stdout)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.count("\nok ") + r.stdout.startswith("ok "), len(items))

    def test_openapi_check_refuses_a_bad_object(self):
        """The validator is alive: wrong types and misspelt fields, at any depth, are refused."""
        dep = by_kind(render("base"), "Deployment")[0]
        c = dep["spec"]["template"]["spec"]["containers"][0]
        c["ports"][0]["containerPort"] = "8080"
        c["readinesProbe"] = c.pop("readinessProbe")
        c["securityContext"]["capabilities"]["dropp"] = ["ALL"]
        job = by_kind(render("training"), "PyTorchJob")[0]
        worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
        worker["containers"][0]["resources"] = "4"
        worker["volumes"][0]["persistentVolumeClaim"]["claimname"] = "x"
        isvc = by_kind(render("kserve"), "InferenceService")[0]
        isvc["spec"]["predictor"]["containers"][0]["env"][0]["valu"] = "x"
        items = [{"source": "bad", "doc": d} for d in (dep, job, isvc)]
        r = run_check_k8s(items)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        for want in ("containers/0/ports/0/containerPort must be integer",
                     "containers/0/readinesProbe unknown field",
                     "capabilities/dropp unknown field",
                     "Worker/template/spec/containers/0/resources must be object",
                     "Worker/template/spec/volumes/0/persistentVolumeClaim/claimname unknown field",
                     "/spec/predictor/containers/0/env/0/valu unknown field"):
            self.assertIn(want, r.stdout)
        self.assertEqual(r.stdout.count("FAIL"), 6, r.stdout)

    def crd_schema(self, name):
        import jsonschema
        with open(os.path.join(DEPLOY, "schemas", name)) as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schema)
        return jsonschema.Draft202012Validator(schema)

    def test_inference_service(self):
        v = self.crd_schema("kserve-inferenceservice-v1beta1.json")
        isvc = by_kind(render("kserve"), "InferenceService")[0]
        errors = [e.message for e in v.iter_errors(isvc)]
        self.assertEqual(errors, [])
        isvc["spec"]["predictor"]["minReplica"] = 1  # a typo is refused
        self.assertTrue(list(v.iter_errors(isvc)))

    def test_pytorch_job(self):
        v = self.crd_schema("kubeflow-pytorchjob-v1.json")
        job = by_kind(render("training"), "PyTorchJob")[0]
        errors = [e.message for e in v.iter_errors(job)]
        self.assertEqual(errors, [])
        job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
        self.assertTrue(list(v.iter_errors(job)))


# ==== Compose ====

class Compose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(COMPOSE, "docker-compose.yml")) as f:
            cls.c = yaml.safe_load(f)

    def test_services(self):
        self.assertEqual(set(self.c["services"]), {"loupe", "prometheus", "grafana"})
        for name, s in self.c["services"].items():
            self.assertTrue("image" in s or "build" in s, name)

    def test_loupe_is_built_from_the_repository(self):
        s = self.c["services"]["loupe"]
        ctx = os.path.normpath(os.path.join(COMPOSE, s["build"]["context"]))
        self.assertEqual(ctx, ROOT)
        self.assertEqual(s["build"].get("dockerfile", "Dockerfile"), "Dockerfile")
        self.assertIn("8080:8080", s["ports"])
        self.assertIs(s["read_only"], True)
        self.assertIn("/tmp", s["tmpfs"])
        self.assertEqual(s["cap_drop"], ["ALL"])
        self.assertIn("models:/models", s["volumes"])

    def test_healthcheck_uses_loupe_probe(self):
        hc = self.c["services"]["loupe"]["healthcheck"]["test"]
        self.assertEqual(hc[:3], ["CMD", "loupe", "probe"])
        self.assertRegex(hc[3], r"^http://127\.0\.0\.1:8080/readyz$")

    def test_stop_grace_covers_the_drain(self):
        s = self.c["services"]["loupe"]
        env = s["environment"]
        grace = float(env["LOUPE_DRAIN_GRACE"]) + float(env["LOUPE_DRAIN_TIMEOUT"])
        self.assertEqual(s.get("stop_signal", "SIGTERM"), "SIGTERM")
        self.assertGreater(float(s["stop_grace_period"].rstrip("s")), grace)

    def test_mounted_files_exist_and_volumes_are_declared(self):
        named = set(self.c.get("volumes", {}))
        for name, s in self.c["services"].items():
            for v in s.get("volumes", []):
                src = v.split(":")[0]
                if src.startswith("."):
                    self.assertTrue(os.path.exists(os.path.join(COMPOSE, src)), (name, src))
                else:
                    self.assertIn(src, named, name)

    def test_prometheus_scrapes_loupe(self):
        with open(os.path.join(COMPOSE, "prometheus.yml")) as f:
            p = yaml.safe_load(f)
        job = [j for j in p["scrape_configs"] if j["job_name"] == "loupe"][0]
        self.assertEqual(job.get("metrics_path", "/metrics"), "/metrics")
        self.assertEqual(job["static_configs"][0]["targets"], ["loupe:8080"])
        mounted = self.c["services"]["prometheus"]["volumes"]
        for rule in p["rule_files"]:
            self.assertTrue(any(m.split(":")[1] == rule for m in mounted), rule)

    def test_grafana_provisioning(self):
        with open(os.path.join(COMPOSE, "grafana/provisioning/datasources/prometheus.yml")) as f:
            ds = yaml.safe_load(f)["datasources"][0]
        self.assertEqual(ds["url"], "http://prometheus:9090")
        with open(os.path.join(COMPOSE, "grafana/provisioning/dashboards/loupe.yml")) as f:
            prov = yaml.safe_load(f)["providers"][0]
        self.assertIn("./grafana/dashboards:%s:ro" % prov["options"]["path"],
                      self.c["services"]["grafana"]["volumes"])
        with open(os.path.join(COMPOSE, "grafana/dashboards/loupe.json")) as f:
            dash = json.load(f)
        for p in dash["panels"]:
            self.assertEqual(p["datasource"]["uid"], ds["uid"], p["title"])


# ==== systemd ====

class Systemd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(UNIT) as f:
            cls.text = f.read()
        cls.keys = {}
        for line in cls.text.splitlines():
            m = re.match(r"^(\w+)=(.*)$", line)
            if m:
                cls.keys.setdefault(m.group(1), []).append(m.group(2))

    def verify(self, text):
        """systemd-analyze verify on a copy of the unit whose ExecStart runs the built loupe."""
        d = tempfile.mkdtemp(prefix="loupe-unit-")
        try:
            path = os.path.join(d, "loupe.service")
            with open(path, "w") as f:
                f.write(re.sub(r"^ExecStart=\S+", "ExecStart=" + os.path.abspath(LOUPE), text, flags=re.M))
            r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True,
                               timeout=60)
            sec = subprocess.run(["systemd-analyze", "security", "--offline=true", path],
                                 capture_output=True, text=True, timeout=60)
            return r, sec
        finally:
            shutil.rmtree(d)

    def test_verify(self):
        r, sec = self.verify(self.text)
        # Only what concerns this unit: on a host with systemd running, verify also loads the
        # units it names (network-online.target...) and may warn about the host's own.
        ours = [l for l in (r.stdout + r.stderr).splitlines() if "loupe" in l]
        self.assertEqual((r.returncode, ours), (0, []), r.stdout + r.stderr)
        m = re.search(r"Overall exposure level for loupe\.service: ([\d.]+)", sec.stdout)
        self.assertTrue(m, sec.stdout + sec.stderr)
        print("systemd-analyze security: exposure %s" % m.group(1))
        self.assertLessEqual(float(m.group(1)), 2.0)

    def test_verify_refuses_a_bad_unit(self):
        """The verifier is alive: an unknown key and a relative command are reported."""
        r, _ = self.verify(self.text.replace("[Service]\n", "[Service]\nProtectSystm=strict\n")
                           .replace("ExecReload=/bin/kill", "ExecReload=kill"))
        self.assertIn("ProtectSystm", r.stderr)

    def test_hardening(self):
        want = {"DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
                "PrivateTmp": "yes", "ProtectHome": "yes", "CapabilityBoundingSet": "",
                "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}
        for k, v in want.items():
            self.assertEqual(self.keys[k], [v], k)
        self.assertIn("@system-service", self.keys["SystemCallFilter"])
        self.assertTrue(self.keys.get("StateDirectory") or self.keys.get("ReadWritePaths"))
        self.assertEqual(self.keys["EnvironmentFile"], ["-/etc/loupe/loupe.env"])

    def test_reload_and_stop(self):
        self.assertEqual(self.keys["ExecReload"], ["/bin/kill -HUP $MAINPID"])
        self.assertEqual(self.keys.get("KillSignal", ["SIGTERM"]), ["SIGTERM"])
        env = dict(kv.split("=", 1) for line in self.keys["Environment"] for kv in line.split())
        drain = float(env["LOUPE_DRAIN_GRACE"]) + float(env["LOUPE_DRAIN_TIMEOUT"])
        self.assertGreater(float(self.keys["TimeoutStopSec"][0]), drain)
        models = env["LOUPE_MODELS"]
        state = ["/var/lib/" + d for d in self.keys["StateDirectory"][0].split()]
        self.assertIn(models, state)


# ==== Metrics ====

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "inf", "nan"}


def promql_names(expr):
    """(metric names, label names) an expression uses."""
    labels = set()
    for m in re.finditer(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", m.group(1)))
    for m in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    metrics = {w for w in re.findall(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare)
               if w.lower() not in PROMQL_WORDS}
    return metrics, labels


def dashboard_exprs():
    with open(os.path.join(COMPOSE, "grafana/dashboards/loupe.json")) as f:
        dash = json.load(f)
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def rule_exprs():
    with open(os.path.join(COMPOSE, "alerts.yml")) as f:
        rules = yaml.safe_load(f)
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


class Metrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import numpy as np
        import loupe_fixture as fx
        from prometheus_client.parser import text_string_to_metric_families
        cls.store = tempfile.mkdtemp(prefix="loupe-deploy-store-")
        fx.write_zero_model(os.path.join(cls.store, "zero"))
        d = fx.Daemon(LOUPE, cls.store)
        try:
            # One prediction, so that the per-model series (batch sizes, inference time) exist.
            body, ctype = fx.multipart("image", fx.png_gray(np.zeros((28, 28), np.uint8)))
            status, _, _ = d.request("POST", "/predict", body, {"Content-Type": ctype})
            assert status == 200, status
            _, _, text = d.request("GET", "/metrics")
        finally:
            d.stop()
        cls.series = {}  # sample name -> label names
        for fam in text_string_to_metric_families(text.decode()):
            for s in fam.samples:
                cls.series.setdefault(s.name, set()).update(s.labels)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.store, ignore_errors=True)

    def check(self, where, expr, synthetic=()):
        metrics, labels = promql_names(expr)
        self.assertTrue(metrics, (where, expr))
        known = set()
        for m in metrics:
            if m in synthetic:
                known |= {"job", "instance"}
                continue
            self.assertIn(m, self.series, "%s: %s is not in /metrics" % (where, m))
            known |= self.series[m] | {"job", "instance"}
        self.assertTrue(labels <= known, "%s: labels %s not on %s" % (where, labels - known, metrics))
        return metrics

    def test_dashboard(self):
        used = set()
        for title, expr in dashboard_exprs():
            used |= self.check(title, expr)
        # What the dashboard must show (issue 10).
        for m in ("loupe_http_requests_total", "loupe_http_request_duration_seconds_bucket",
                  "loupe_queue_rejected_total", "loupe_batch_size_bucket", "loupe_models_loaded",
                  "process_resident_memory_bytes"):
            self.assertIn(m, used)

    def test_rules(self):
        for alert, expr in rule_exprs():
            self.check(alert, expr, synthetic=("up",))

    def test_the_parser_sees_names(self):
        m, l = promql_names('histogram_quantile(0.9, sum by (le, route) (rate(x_bucket{status=~"5.."}[5m]))) / y')
        self.assertEqual((m, l), ({"x_bucket", "y"}, {"le", "route", "status"}))


# ==== Settings ====

class Settings(unittest.TestCase):
    def test_loupe_variables_exist(self):
        known = set(re.findall(r"\bLOUPE_[A-Z_]+\b", serve_help()))
        used = {}
        for path in deploy_files():
            with open(path) as f:
                for v in re.findall(r"\bLOUPE_[A-Z0-9_]+\b", f.read()):
                    used.setdefault(v, set()).add(os.path.relpath(path, ROOT))
        self.assertGreater(len(used), 10)
        unknown = {v: sorted(p) for v, p in used.items() if v not in known}
        self.assertEqual(unknown, {})

    def test_rendered_config_maps_use_known_variables(self):
        known = set(re.findall(r"\bLOUPE_[A-Z_]+\b", serve_help()))
        for rel in ("base", "overlays/dev", "overlays/prod"):
            cm = by_kind(render(rel), "ConfigMap")[0]["data"]
            self.assertTrue(set(cm) <= known, (rel, set(cm) - known))

    def test_probe_paths_are_routes(self):
        """The probe paths answer 200 on a live daemon with a model."""
        import loupe_fixture as fx
        paths = set()
        for rel in kustomizations():
            for d in render(rel):
                pods = []
                if d["kind"] == "Deployment":
                    pods = [d["spec"]["template"]["spec"]]
                elif d["kind"] == "InferenceService":
                    pods = [d["spec"]["predictor"]]
                for pod in pods:
                    for c in pod["containers"]:
                        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                            if probe in c:
                                paths.add(c[probe]["httpGet"]["path"])
        with open(os.path.join(COMPOSE, "docker-compose.yml")) as f:
            hc = yaml.safe_load(f)["services"]["loupe"]["healthcheck"]["test"]
        paths.add(re.sub(r"^http://[^/]+", "", hc[3]))
        self.assertTrue({"/healthz", "/readyz", "/v2/health/ready", "/v2/health/live"} <= paths, paths)
        store = tempfile.mkdtemp(prefix="loupe-deploy-store-")
        try:
            fx.write_zero_model(os.path.join(store, "zero"))
            d = fx.Daemon(LOUPE, store)
            try:
                for p in sorted(paths):
                    self.assertEqual(d.request("GET", p)[0], 200, p)
                    # ... and through the image's own health check command.
                    r = subprocess.run([LOUPE, "probe", "http://127.0.0.1:%d%s" % (d.port, p)],
                                       capture_output=True, timeout=30)
                    self.assertEqual(r.returncode, 0, p)
            finally:
                self.assertEqual(d.stop(), 0)
        finally:
            shutil.rmtree(store)

    def test_termination_grace_covers_the_drain(self):
        """SIGKILL must not come before preStop + drain grace + drain timeout are over."""
        for rel in ("base", "overlays/dev", "overlays/prod"):
            with self.subTest(rel):
                docs = render(rel)
                env = by_kind(docs, "ConfigMap")[0]["data"]
                pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
                self.assert_grace(pod, pod["containers"][0], env)
        isvc = by_kind(render("kserve"), "InferenceService")[0]["spec"]["predictor"]
        c = isvc["containers"][0]
        self.assert_grace(isvc, c, {e["name"]: e["value"] for e in c["env"]})

    def assert_grace(self, pod, c, env):
        pre = seconds_of_sleep(c["lifecycle"]["preStop"]["exec"]["command"])
        # Unset, the daemon's defaults (loupe serve --help) apply.
        defaults = dict(re.findall(r"(LOUPE_DRAIN_\w+)\s+.*\(default (\d+)\)", serve_help()))
        grace = float(env.get("LOUPE_DRAIN_GRACE", defaults["LOUPE_DRAIN_GRACE"]))
        timeout = float(env.get("LOUPE_DRAIN_TIMEOUT", defaults["LOUPE_DRAIN_TIMEOUT"]))
        total = pod.get("terminationGracePeriodSeconds", 30)
        self.assertGreater(total, pre + grace + timeout)
        # ... but not far over it: a stuck pod should not hold a rollout for minutes.
        self.assertLessEqual(total, pre + grace + timeout + 15)
        self.assertGreater(pre, 0)


GROUPS = {"kustomize": Kustomize, "schemas": Schemas, "compose": Compose, "systemd": Systemd,
          "metrics": Metrics, "settings": Settings}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in GROUPS:
        sys.exit("usage: check_deploy.py %s" % "|".join(GROUPS))
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(GROUPS[sys.argv[1]])
    ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    sys.exit(0 if ok else 1)
