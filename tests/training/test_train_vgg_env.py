"""The multi-machine contract of training/train_vgg.py (pytest).

A launcher on several machines (torchrun, Kubeflow's PyTorchJob: see
deploy/k8s/training/) starts one train_vgg.py per rank with MASTER_ADDR,
MASTER_PORT, WORLD_SIZE, RANK and LOCAL_RANK set, and nothing else. Debian's
torchrun crashes in its elastic agent, so this test is the launcher: two
processes on this machine with those variables (gloo on the CPU) must write
the same weights, tensor by tensor, as the script's own ``--nproc 2``.
A few seconds: VGG11 at width 1/8, one epoch of 512 images.
"""

import json
import os
import socket
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "training", "train_vgg.py")

TINY = ["--depth", "11", "--width", "0.125", "--epochs", "1",
        "--batch-size", "64", "--train-subset", "512", "--val-subset", "128",
        "--test-subset", "128", "--threads", "1", "--no-export", "--quiet"]

# What a launcher may leave in the environment must not change the run.
LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK",
               "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")


def clean_env():
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on the CPU, like the reference
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state_dict(folder):
    ckpt = torch.load(str(folder / "checkpoint.pt"), map_location="cpu")
    return ckpt["state_dict"], json.loads(ckpt["manifest_json"])


def launch_ranks(out, world=2, timeout=300):
    """Start `world` train_vgg.py processes the way torchrun does; return
    their (returncode, stderr) in rank order."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = clean_env()
        env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                    "WORLD_SIZE": str(world), "RANK": str(rank),
                    "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world)})
        procs.append(subprocess.Popen(
            [sys.executable, SCRIPT, *TINY, "--out", str(out)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            results.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def test_env_ranks_write_the_weights_of_nproc(tmp_path):
    ref = tmp_path / "nproc"
    r = subprocess.run([sys.executable, SCRIPT, *TINY, "--nproc", "2",
                        "--out", str(ref)], env=clean_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    out = tmp_path / "env"
    for rank, (rc, err) in enumerate(launch_ranks(out)):
        assert rc == 0, "rank %d: %s" % (rank, err)

    want, want_manifest = state_dict(ref)
    got, got_manifest = state_dict(out)
    assert list(got) == list(want)
    assert len(got) > 10  # the whole VGG: convs, batch norms, classifier
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert torch.equal(got[name], want[name]), name

    t = got_manifest["training"]
    assert t["world_size"] == 2
    assert t["ddp"] == {"backend": "gloo", "max_param_diff_across_ranks": 0.0}
    ref_t = want_manifest["training"]
    assert t["hyperparameters"] == ref_t["hyperparameters"]
    assert t["test_accuracy"] == ref_t["test_accuracy"]
    # Only rank 0 writes: one folder, no temporary left by the other rank.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env", "nproc"]

