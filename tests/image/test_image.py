"""Runs a built Loupe image the way a container runtime would, without one (scripts/test-image.sh).

    /usr/bin/python3 tests/image/test_image.py TAG [--kind serve|trainer]

Needs root and podman (the image is in podman's store). `podman run` cannot start containers on
these machines, so this reads the image's configuration (User, Entrypoint, Cmd, Env, WorkingDir,
ExposedPorts, Healthcheck) from `podman image inspect` and carries it out itself:

- the image's file system is mounted read-only (a read-only bind of `podman image mount`), with a
  tmpfs on /tmp and /reports, /proc and /dev mounted: a read-only root file system as Kubernetes'
  readOnlyRootFilesystem gives it, so any write outside /tmp and /reports fails;
- Entrypoint + Cmd run chrooted there, as the image's user, with only the image's environment;
- the HEALTHCHECK command runs the same way until it exits 0 (the time to that is printed);
- a Fashion-MNIST test image posted to /predict as a PNG gets the right class;
- the serving process is the entrypoint itself (exec form) and runs as the image's user;
- SIGTERM: the daemon drains and exits 0;
- with --mount-model DIR, a store holding DIR mounted read-only over /models replaces the image's
  (for the libtorch image: a TorchScript CNN loads and predicts).
--kind trainer: the entrypoint's --help, torch and torchvision import, and a tiny VGG trained into a
volume at /models under the read-only root, as the image's user (what a PyTorchJob does).

Run it inside its own network namespace (scripts/test-image.sh does: `unshare --net`), so that the
image's port 8080 cannot clash with anything else on the machine.
"""
import argparse
import errno
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import loupe_fixture as fx  # noqa: E402

# What Docker and containerd put on PATH when the image does not set it.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg):
    print("test-image: " + msg, flush=True)


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()


def inspect(tag):
    """The image's configuration as `podman image inspect` gives it (Docker's field names)."""
    info = json.loads(sh("podman", "image", "inspect", tag))[0]
    cfg = info.get("Config") or {}
    hc = cfg.get("Healthcheck") or info.get("Healthcheck") or info.get("HealthCheck")
    return cfg, hc, int(info["Size"])


class Rootfs:
    """The image's file system, read-only, with what a runtime mounts on it."""

    def __init__(self, tag):
        self.tag = tag
        self.mounts = []
        self.tmp = tempfile.mkdtemp(prefix="loupe-image-")
        self.root = os.path.join(self.tmp, "root")
        os.mkdir(self.root)
        try:
            self._mount_all()
        except BaseException:
            self.close()
            raise

    def _mount_all(self):
        src = sh("podman", "image", "mount", self.tag)
        self.mount("--bind", src, self.root)
        sh("mount", "-o", "remount,bind,ro", self.root)
        self.mount("-t", "proc", "proc", self.path("/proc"))
        self.mount("--bind", "/dev", self.path("/dev"))
        try:  # the root is read-only, even for root
            open(self.path("/models/.probe"), "w").close()
            raise AssertionError("the image's root is writable")
        except OSError as e:
            require(e.errno == errno.EROFS, str(e))
        for d in ("/tmp", "/reports"):
            if os.path.isdir(self.path(d)):
                self.mount("-t", "tmpfs", "-o", "mode=1777,size=64m", "tmpfs", self.path(d))

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    def mount(self, *args):
        sh("mount", *args)
        self.mounts.append(args[-1])

    def close(self):
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", m], capture_output=True)
        subprocess.run(["podman", "image", "unmount", self.tag], capture_output=True)
        # rmdir, never a recursive delete: were an unmount to fail, the host's /dev would be under it.
        for d in (self.root, self.tmp):
            try:
                os.rmdir(d)
            except OSError as e:
                log("left %s: %s" % (d, e))


def ids_of(rootfs, user):
    """uid, gid of the image's USER ("name", "uid", "name:group", "uid:gid"), read from its /etc files."""
    name, _, group = (user or "0").partition(":")

    def lookup(file, key):
        if key.isdigit():
            return int(key), None
        with open(rootfs.path(file)) as f:
            for line in f:
                parts = line.split(":")
                if parts[0] == key:
                    return int(parts[2]), int(parts[3]) if file == "/etc/passwd" else None
        raise AssertionError("user or group %r is not in the image's %s" % (key, file))

    uid, gid = lookup("/etc/passwd", name)
    if group:
        gid = lookup("/etc/group", group)[0]
    elif gid is None:
        gid = uid
    return uid, gid


class Runner:
    """Starts commands in the image as its user, with its environment and working folder."""

    def __init__(self, rootfs, cfg):
        self.rootfs = rootfs
        self.uid, self.gid = ids_of(rootfs, cfg.get("User"))
        self.env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
        self.env.setdefault("PATH", DEFAULT_PATH)
        self.workdir = cfg.get("WorkingDir") or "/"

    def _enter(self):
        os.chroot(self.rootfs.root)
        os.chdir(self.workdir)
        os.setgroups([])
        os.setgid(self.gid)
        os.setuid(self.uid)

    def popen(self, argv, **kw):
        return subprocess.Popen(argv, env=self.env, preexec_fn=self._enter, **kw)

    def run(self, argv, timeout=60):
        p = self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out.decode(errors="replace")


def health_argv(hc):
    test = (hc or {}).get("Test") or []
    require(test and test[0] in ("CMD", "CMD-SHELL"), "no HEALTHCHECK: %r" % hc)
    return test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]


require = fx.require


class Container:
    """The image's entrypoint + command, started as a runtime starts it; ready once its HEALTHCHECK passes."""

    def __init__(self, rootfs, run, cfg, hc):
        self.run = run
        self.logf = tempfile.TemporaryFile()
        argv = (cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])
        t0 = time.monotonic()
        self.proc = run.popen(argv, stdout=self.logf, stderr=self.logf)
        try:
            probe = health_argv(hc)
            deadline = t0 + 120
            while True:
                rc, out = run.run(probe, timeout=30)
                if rc == 0:
                    break
                require(self.proc.poll() is None, "the daemon exited %s:\n%s" % (self.proc.returncode, self.log()))
                require(time.monotonic() < deadline, "HEALTHCHECK never passed: %s" % out)
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        self.ready = time.monotonic() - t0
        log("HEALTHCHECK %s passed %.1f s after the start" % (probe, self.ready))

    def log(self):
        self.logf.seek(0)
        return self.logf.read().decode(errors="replace")

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=60)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def terminate(self):
        """SIGTERM straight to the entrypoint: it drains and exits 0."""
        t1 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(90)
        require(rc == 0, "exit status %d after SIGTERM" % rc)
        log("SIGTERM: exit 0 after %.1f s" % (time.monotonic() - t1))

    def stop(self):
        """Kill what is left; the log's last lines; no write may have met the read-only root."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        text = self.log()
        log("daemon log:\n" + "\n".join("  | " + line for line in text.splitlines()[-8:]))
        require("Read-only file system" not in text, "a write outside /tmp and /reports")


def check_serving(rootfs, cfg, hc):
    require(cfg.get("Entrypoint") == ["loupe"], "ENTRYPOINT %r" % cfg.get("Entrypoint"))
    require("8080/tcp" in (cfg.get("ExposedPorts") or {}), "EXPOSE %r" % cfg.get("ExposedPorts"))
    run = Runner(rootfs, cfg)
    require(run.uid != 0, "the image runs as root")
    log("user %s (uid %d, gid %d), env %s" % (cfg.get("User"), run.uid, run.gid, sorted(run.env)))
    for lib in ("/usr/local/bin/loupe", "/usr/local/lib/loupe/libloupe_shim_torch.so"):
        if os.path.exists(rootfs.path(lib)):
            rc, out = run.run(["ldd", lib])
            require(rc == 0 and "not found" not in out, "libraries missing:\n" + out)

    c = Container(rootfs, run, cfg, hc)
    try:
        # The serving process is the entrypoint itself, as the image's user.
        pid = c.proc.pid
        with open("/proc/%d/status" % pid) as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        # (its name may read "exe": the binary re-executes itself through /proc/self/exe to set BLAS up)
        exe = os.readlink("/proc/%d/exe" % pid)
        require(exe == rootfs.path("/usr/local/bin/loupe"), "pid %d runs %s, not loupe" % (pid, exe))
        require(status["Uid"].split()[:2] == [str(run.uid)] * 2, "Uid: " + status["Uid"])
        require(status["Gid"].split()[:2] == [str(run.gid)] * 2, "Gid: " + status["Gid"])
        require(status["Groups"].strip() == "", "supplementary groups: " + status["Groups"])

        # The page, from the installed share/loupe/static (found through /proc/self/exe).
        st, page = c.request("GET", "/")
        with open(rootfs.path("/usr/local/share/loupe/static/index.html"), "rb") as f:
            require(st == 200 and page == f.read(), "GET /: %d %r" % (st, page[:200]))

        # Fashion-MNIST test images as PNG: the default model gets the first right and most of 100.
        images, labels = fx.test_set()
        right = 0
        for i in range(100):
            st, data = c.request("POST", "/predict", fx.png_gray(images[i]), {"Content-Type": "image/png"})
            body = json.loads(data)
            require(st == 200, "predict: %d %s" % (st, body))
            require(body["class"] == fx.CLASSES[body["index"]], body)
            if i == 0:
                require(body["index"] == labels[0], "first test image: %s, label %d" % (body, labels[0]))
                log("POST /predict of test image 0: %s (%s), model %s" % (body["class"], body["index"],
                                                                           body.get("model")))
            right += body["index"] == labels[i]
        require(right >= 80, "only %d of 100 test images right" % right)
        log("%d of the first 100 test images right" % right)
        c.terminate()
    finally:
        c.stop()
    return c.ready


def check_mounted_store(rootfs, cfg, hc, model):
    """A store mounted over /models (read-only) replaces the image's: here one folder, e.g. a
    TorchScript CNN for the libtorch image, which must load and predict."""
    name = os.path.basename(os.path.normpath(model))
    store = tempfile.mkdtemp(prefix="loupe-image-store-")
    try:
        subprocess.run(["cp", "-r", model, os.path.join(store, name)], check=True)
        subprocess.run(["chmod", "-R", "a+rX", store], check=True)
        target = rootfs.path("/models")
        sh("mount", "--bind", store, target)
        try:
            sh("mount", "-o", "remount,bind,ro", target)
            run = Runner(rootfs, cfg)
            c = Container(rootfs, run, cfg, hc)
            try:
                st, data = c.request("GET", "/v1/models")
                models = json.loads(data)
                require(st == 200 and [m["name"] for m in models["models"]] == [name], models)
                images, labels = fx.test_set()
                st, data = c.request("POST", "/v1/models/%s/predict" % name, fx.png_gray(images[0]),
                                     {"Content-Type": "image/png"})
                body = json.loads(data)
                require(st == 200 and body["class"] == fx.CLASSES[body["index"]], "%d %s" % (st, body))
                log("mounted store: %s (%s) predicts %s for test image 0" % (
                    name, models["models"][0].get("kind"), body["class"]))
                c.terminate()
            finally:
                c.stop()
        finally:
            subprocess.run(["umount", "-l", target], capture_output=True)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", store], check=False)


def check_trainer(rootfs, cfg):
    run = Runner(rootfs, cfg)
    require(run.uid != 0, "the image runs as root")
    argv = (cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])
    rc, out = run.run(argv, timeout=300)
    require(rc == 0 and "--out" in out, "%s: %d\n%s" % (argv, rc, out))
    rc, out = run.run(["/usr/bin/python3", "-c", "import torch, torchvision, tqdm, numpy; print(torch.__version__)"],
                      timeout=300)
    require(rc == 0, out)
    log("trainer: %s --help ok, torch %s, as uid %d" % (argv[1], out.strip(), run.uid))
    rc, out = run.run(["loupe", "train-mlp", "--help"])
    require(rc == 0, out)
    # What a PyTorchJob does with it: train (a tiny VGG, one epoch on a subset) into a volume at
    # /models, under the read-only root (caches on /tmp).
    target = rootfs.path("/models")
    sh("mount", "-t", "tmpfs", "-o", "mode=0755,uid=%d,gid=%d,size=256m" % (run.uid, run.gid), "tmpfs", target)
    try:
        t0 = time.monotonic()
        rc, out = run.run(cfg["Entrypoint"] + ["--width", "0.0625", "--epochs", "1", "--train-subset", "256",
                                               "--val-subset", "64", "--test-subset", "64", "--threads", "1",
                                               "--quiet", "--out", "/models/tiny-vgg"], timeout=600)
        require(rc == 0, out)
        made = sorted(os.listdir(os.path.join(target, "tiny-vgg")))
        require({"model.json", "model.ts"} <= set(made), made)
        log("trainer: a tiny VGG trained into /models/tiny-vgg in %.0f s: %s" % (time.monotonic() - t0, made))
    finally:
        subprocess.run(["umount", "-l", target], capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tag", help="the image, e.g. localhost/loupe:slim")
    ap.add_argument("--kind", choices=("serve", "trainer"), default="serve", help="what the image does")
    ap.add_argument("--mount-model", metavar="DIR",
                    help="also serve this model folder from a store mounted over /models (e.g. a TorchScript CNN)")
    args = ap.parse_args()
    cfg, hc, size = inspect(args.tag)
    log("%s: %.0f MB; User %r Entrypoint %r Cmd %r Healthcheck %r" % (
        args.tag, size / 1e6, cfg.get("User"), cfg.get("Entrypoint"), cfg.get("Cmd"), (hc or {}).get("Test")))
    sh("ip", "link", "set", "lo", "up")
    rootfs = Rootfs(args.tag)
    try:
        if args.kind == "serve":
            check_serving(rootfs, cfg, hc)
            if args.mount_model:
                check_mounted_store(rootfs, cfg, hc, args.mount_model)
        else:
            check_trainer(rootfs, cfg)
    finally:
        rootfs.close()
    log("ok")


if __name__ == "__main__":
    main()
