"""Plain functions shared by several test modules (imported as `helpers`: pytest puts tests/ on sys.path).

Re-ID evaluation: a plain NumPy reference of the protocol and random cases with exact ties
(test_evaluation, test_ranking). Distillation: a small fake network, batches, a distiller built from
the config, and plain-Python maths for golden values (test_distill_methods, test_distill_gird). The
command line in this process, under a time limit, and its one-line errors (test_user_errors*). A run's
metrics.json as a leaderboard reads it, without training (test_tune, test_summary).
"""
from __future__ import annotations

import math
import signal
import subprocess
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from torch import nn

from reid_kd.cli import main
from reid_kd.distill.base import build_distiller
from reid_kd.engine.configs import load_config
from reid_kd.models.reid_model import ModelOutput
from reid_kd.models.weights import imagenet_file

# ---------------------------------------------------------------------------------------- command line

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def within(seconds: int):
    """Fail with TimeoutError where the block still runs after `seconds` (a hang becomes a failure)."""
    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cli(*args, timeout: int = 300):
    """`reidkd ARGS` in this process (click's CliRunner), stopped after `timeout` seconds. What a run sets for its
    process (`experiment.threads`, `experiment.deterministic`) is undone after it, as the process's end would."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        with within(timeout):
            return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def reidkd_process(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """`reidkd ARGS` as a user starts it, in its own process from the repository's root (for the tests of the
    process itself: its entry point, its workers, its exit status)."""
    return subprocess.run([sys.executable, "-m", "reid_kd.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def reidkd(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """`reidkd ARGS` run in this process, returned as the finished process would be (returncode, stdout, stderr;
    an unexpected exception's traceback on stderr). A command's subprocess costs seconds of imports, so only the
    tests of the process itself (its kill, its workers, its console) start one."""
    result = cli(*args, timeout=timeout)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, stderr)


def assert_one_line(result, *words):
    """Exit status 2, one line on stderr holding every word, no traceback; returns the line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------------- evaluation

def reference(qf, gf, q_pids, g_pids, q_cams, g_cams, metric, max_rank):
    """Deliberately plain: full distance matrix, stable argsort of every row, loops over queries.
    (mAP, mINP, CMC, valid queries, each query's AP with NaN where it has no positive)."""
    if metric == "cosine":
        qf = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
        gf = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
        dist = -(qf @ gf.T)
    else:
        dist = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)
    aps, inps, cmcs, query_ap = [], [], [], np.full(len(qf), np.nan)
    for i in range(len(qf)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        match = (g_pids[order] == q_pids[i])[keep]
        if not match.any():
            continue
        hit_ranks = np.flatnonzero(match) + 1
        aps.append(np.mean(np.arange(1, len(hit_ranks) + 1) / hit_ranks))
        query_ap[i] = aps[-1]
        inps.append(len(hit_ranks) / hit_ranks[-1])
        cmc = np.zeros(max_rank)
        cmc[hit_ranks[0] - 1:] = 1
        cmcs.append(cmc)
    if not aps:
        return None, None, None, 0, query_ap
    return np.mean(aps), np.mean(inps), np.mean(cmcs, 0), len(aps), query_ap


def random_case(rng, metric):
    """Features on a small integer grid, so scores are exact and ties are real, in FAISS and NumPy."""
    n_q, n_g, dim = rng.integers(1, 40), rng.integers(1, 80), int(rng.integers(2, 10))
    if metric == "cosine":  # axis-aligned queries: q.g is one gallery component, computed exactly
        axis = rng.integers(0, dim, n_q)
        qf = np.zeros((n_q, dim), np.float32)
        qf[np.arange(n_q), axis] = rng.choice([-1.0, 1.0], n_q)
    else:
        qf = rng.integers(-2, 3, (n_q, dim)).astype(np.float32)
    gf = rng.integers(-2, 3, (n_g, dim)).astype(np.float32)
    dup = rng.integers(0, n_g, n_g // 3)  # exact duplicates in the gallery, some with other labels
    gf[rng.integers(0, n_g, len(dup))] = gf[dup]
    n_ids, n_cams = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    q_pids, g_pids = rng.integers(0, n_ids + 1, n_q), rng.integers(0, n_ids, n_g)  # id n_ids: no positive
    q_cams, g_cams = rng.integers(0, n_cams, n_q), rng.integers(0, n_cams, n_g)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


# -------------------------------------------------------------------------------------- distillation

TRAIN_TARGETS = torch.arange(6).repeat_interleave(4)  # a fake training set: 6 classes of 4 images


class FakeNet(nn.Module):
    """A small four-stage network with the ReIDModel interface (stages, feat_dim, ModelOutput)."""

    def __init__(self, widths=(4, 6, 8, 10), num_classes=5, first_stride=1, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        stages, c_in = [], 3
        for i, w in enumerate(widths):
            stride = first_stride if i == 0 else 2
            stages.append(nn.Sequential(nn.Conv2d(c_in, w, 3, stride, 1), nn.ReLU(),
                                        nn.Conv2d(w, w, 3, 1, 1), nn.ReLU()))
            c_in = w
        self.stages = nn.ModuleList(stages)
        self.feat_dim = widths[-1]
        self.neck = nn.BatchNorm1d(self.feat_dim)
        self.classifier = nn.Linear(self.feat_dim, num_classes, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        g = x.mean(dim=(2, 3))
        return ModelOutput(feats, g, *self.head(g))

    def head(self, g):
        b = self.neck(g)
        return b, self.classifier(b)


def batch(n_ids=4, per_id=2, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_ids * per_id, 3, size, size, generator=g)
    targets = torch.arange(n_ids).repeat_interleave(per_id)
    return images, targets


def indices(targets):
    """Dataset indices of a batch in TRAIN_TARGETS: the k-th sample of class c in the batch is image 4c + k."""
    seen, out = {}, []
    for y in targets.tolist():
        out.append(4 * y + seen.get(y, 0))
        seen[y] = seen.get(y, 0) + 1
    return torch.tensor(out)


def make(method, student, teacher, **options):
    cfg = load_config(None, [f"distill.method={method}"] + [f"distill.{method}.{k}={v}" for k, v in options.items()])
    return build_distiller(cfg["distill"], student, teacher, TRAIN_TARGETS)


def pair(same_width=False):
    """(student, teacher): other stage resolutions and widths; with `same_width`, retrieval features of one width
    (for the methods comparing the student's with the teacher's directly)."""
    return FakeNet(seed=0, first_stride=2), FakeNet(widths=(5, 7, 9, 10 if same_width else 12), seed=1)


# --------------------------------------------------------------------------- plain reference helpers

def softmax(row, t=1.0):
    m = max(row)
    e = [math.exp((v - m) / t) for v in row]
    s = sum(e)
    return [v / s for v in e]


def kl(p, q):
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q) if a > 0)


def pooled(x):
    """N×C×H×W -> list of lists: plain average over positions."""
    n, c, h, w = x.shape
    return [[sum(x[i, k].flatten().tolist()) / (h * w) for k in range(c)] for i in range(n)]


def norm(v):
    s = math.sqrt(sum(a * a for a in v))
    return [a / s for a in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def sqdist(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b))


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def mse(a, b):
    return mean((x - y) ** 2 for x, y in zip(flat(a), flat(b)))


def flat(m):
    return [v for row in m for v in (flat(row) if isinstance(row, list) else [row])]


def huber(a, b):
    return mean((0.5 * (x - y) ** 2 if abs(x - y) < 1 else abs(x - y) - 0.5) for x, y in zip(flat(a), flat(b)))


def lists(t):
    return t.detach().double().tolist()


# ---------------------------------------------------------------------------------------- weights

STAND_INS: set = set()  # files into_hub_cache wrote: the `hub` fixture lets them pass the published-hash check


def into_hub_cache(backbone: str, state: dict) -> dict:
    """`state` saved where `pretrained: imagenet` looks for `backbone`'s weights in torch hub's cache, as a
    stand-in for the published file (its SHA-256 cannot match the prefix the name carries: under the `hub`
    fixture, files written here alone are let through that check)."""
    file = imagenet_file(backbone)
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, file)
    STAND_INS.add(file)
    return state


# ---------------------------------------------------------------------------------------- run records

def run_record(method: str, run_name: str, seed: int, config_hash: str, mAP: float) -> dict:
    """A student run's metrics.json holding what a leaderboard reads (the other scores follow `mAP`)."""
    return {"method": method, "run_name": run_name, "seed": seed, "config_hash": config_hash, "mAP": mAP,
            "rank1": min(1.0, mAP + 0.1), "rank5": min(1.0, mAP + 0.2), "rank10": min(1.0, mAP + 0.25),
            "mINP": mAP / 2, "cmc": [min(1.0, mAP + 0.01 * r) for r in range(20)], "dataset": "synth_veri",
            "teacher_backbone": "resnet34", "student_backbone": "mobilenet_v3_small", "epochs": 1,
            "git_commit": "0000000", "params": 930000, "train_seconds": 1.0}
