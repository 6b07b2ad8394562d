"""Every distillation method: zero at the teacher, positive elsewhere, gradients, golden values, training.

The golden values come from deliberately plain implementations below (Python loops over samples,
`math` on scalars), written from the papers' formulas rather than from the library's code.
"""
from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from reid_kd.config import load_config
from reid_kd.distill import DISTILLERS, build_distiller, describe_methods
from reid_kd.models.reid_model import ModelOutput

ALL = sorted(DISTILLERS)
EXPECTED = {"gird", "kd", "irg", "cskd", "fitnet", "at", "sp", "rkd", "pkt", "cc", "dkd", "crd"}
LEARNED = {"fitnet", "crd"}  # learned parts between the two networks: no zero at equal outputs


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
        b = self.neck(g)
        return ModelOutput(feats, g, b, self.classifier(b))


def batch(n_ids=4, per_id=2, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_ids * per_id, 3, size, size, generator=g)
    targets = torch.arange(n_ids).repeat_interleave(per_id)
    return images, targets


def make(method, student, teacher, **options):
    cfg = load_config(None, [f"distill.method={method}"] + [f"distill.{method}.{k}={v}" for k, v in options.items()])
    return build_distiller(cfg["distill"], student, teacher)


def pair():
    return FakeNet(seed=0, first_stride=2), FakeNet(widths=(5, 7, 9, 12), seed=1)


# ---------------------------------------------------------------------------------------------- wiring

def test_every_method_is_registered_with_a_description():
    assert set(ALL) == EXPECTED
    rows = dict(describe_methods())
    for name, cls in DISTILLERS.items():
        assert rows[name] == cls.description and len(cls.description.splitlines()) == 1
        assert cls.__module__.endswith("." + name) and cls.__module__.split(".")[-1] == name
        doc = __import__(cls.__module__, fromlist=["x"]).__doc__
        assert doc and "default" in doc.lower()


def test_unknown_option_is_rejected_by_the_config():
    from reid_kd.config import ConfigError

    with pytest.raises(ConfigError, match="distill.gird.memory_sise"):
        load_config(None, ["distill.method=gird", "distill.gird.memory_sise=3"])


# ------------------------------------------------------------------------------ zero / positive / grads

@pytest.mark.parametrize("method", sorted(EXPECTED - LEARNED))
def test_zero_when_student_equals_teacher(method):
    net = FakeNet()
    d = make(method, net, net)
    images, targets = batch()
    for _ in range(2):  # twice: memory-based methods then relate to a non-empty memory
        out = net(images)
        losses = d(out, out, targets)
        assert losses
        for name, value in losses.items():
            assert value.item() == pytest.approx(0.0, abs=1e-6), name


@pytest.mark.parametrize("method", ALL)
def test_positive_when_student_differs(method):
    student, teacher = pair()
    d = make(method, student, teacher)
    images, targets = batch()
    for _ in range(2):
        losses = d(student(images), teacher(images), targets)
        for name, value in losses.items():
            assert torch.isfinite(value) and value.item() > 0, name


@pytest.mark.parametrize("method", ALL)
def test_gradients_reach_student_and_extra_parameters_never_teacher(method):
    student, teacher = pair()
    d = make(method, student, teacher)
    images, targets = batch()
    d(student(images), teacher(images), targets)  # fills memories where there are any
    student.zero_grad()
    total = sum(d(student(images), teacher(images), targets).values())
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for p in d.extra_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert all(not b.requires_grad for b in d.buffers())


def test_learned_parts_are_extra_parameters():
    student, teacher = pair()
    assert len(make("fitnet", student, teacher).extra_parameters()) == 3  # conv, BN weight and bias
    assert len(make("crd", student, teacher).extra_parameters()) == 4  # two linear heads
    assert make("rkd", student, teacher).extra_parameters() == []


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


@pytest.fixture
def outputs():
    student, teacher = pair()
    images, targets = batch(n_ids=3, per_id=2)
    student.train()
    teacher.eval()
    return student, teacher, images, targets


# ---------------------------------------------------------------------------------------- golden values

def test_golden_kd(outputs):
    student, teacher, images, targets = outputs
    s, t = student(images), teacher(images)
    got = make("kd", student, teacher, weight=0.5, temperature=3.0)(s, t, targets)["kd"].item()
    want = 0.5 * 9 * mean(kl(softmax(a, 3.0), softmax(b, 3.0)) for b, a in zip(lists(s.logits), lists(t.logits)))
    assert got == pytest.approx(want, rel=1e-5)


def test_golden_dkd(outputs):
    student, teacher, images, targets = outputs
    s, t = student(images), teacher(images)
    got = make("dkd", student, teacher, alpha=1.5, beta=8.0, temperature=2.0)(s, t, targets)
    tckd, nckd = [], []
    for zs, zt, y in zip(lists(s.logits), lists(t.logits), targets.tolist()):
        ps, pt = softmax(zs, 2.0), softmax(zt, 2.0)
        tckd.append(kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]]))
        qs = softmax([v for j, v in enumerate(zs) if j != y], 2.0)
        qt = softmax([v for j, v in enumerate(zt) if j != y], 2.0)
        nckd.append(kl(qt, qs))
    assert got["dkd_tckd"].item() == pytest.approx(1.5 * 4 * mean(tckd), rel=1e-4)
    assert got["dkd_nckd"].item() == pytest.approx(8.0 * 4 * mean(nckd), rel=1e-4)


def test_dkd_warmup_ramps_by_step(outputs):
    student, teacher, images, targets = outputs
    s, t = student(images), teacher(images)
    d = make("dkd", student, teacher, warmup_steps=4)
    full = make("dkd", student, teacher)(s, t, targets)["dkd_nckd"].item()
    ramp = [d(s, t, targets)["dkd_nckd"].item() / full for _ in range(5)]
    assert ramp == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0], rel=1e-5)
    assert int(d.step) == 5


def test_golden_irg(outputs):
    student, teacher, images, targets = outputs
    d = make("irg", student, teacher, weight_vertex=0.1, weight_edge=0.005, weight_transform=0.005,
             edge_layers="[2, 4]", transform_stages="[1, 3]")
    s, t = student(images), teacher(images)
    got = d(s, t, targets)

    def edges(feats):
        dist = [[sqdist(a, b) for b in feats] for a in feats]
        top = max(flat(dist))
        return [[v / top for v in row] for row in dist]

    def transform(net, out, i):
        first = pooled(net.stages[i][0](out.feats[i - 1]))  # FakeNet: the first block has the stage's width
        d_i = [sqdist(a, b) for a, b in zip(first, pooled(out.feats[i]))]
        return [v / max(d_i) for v in d_i]

    def caffe_euclidean(a, b):  # Caffe EuclideanLoss: sum of squares / (2 * num)
        if isinstance(a[0], list):
            return sum((x - y) ** 2 for ra, rb in zip(a, b) for x, y in zip(ra, rb)) / (2 * len(a))
        return sum((x - y) ** 2 for x, y in zip(a, b)) / 2

    vertex = mse(lists(s.logits), lists(t.logits))
    edge = (caffe_euclidean(edges(pooled(s.feats[2])), edges(pooled(t.feats[2])))
            + caffe_euclidean(edges(lists(s.global_feat)), edges(lists(t.global_feat))))
    with torch.no_grad():
        tran = sum(caffe_euclidean(transform(student, s, i), transform(teacher, t, i)) for i in (1, 3))
    assert got["irg_vertex"].item() == pytest.approx(0.1 * vertex, rel=1e-4)
    assert got["irg_edge"].item() == pytest.approx(0.005 * edge, rel=1e-4)
    assert got["irg_transform"].item() == pytest.approx(0.005 * tran, rel=1e-4)
    release = make("irg", student, teacher)  # the defaults: the release trains no vertex loss
    assert "irg_vertex" not in release(student(images), teacher(images), targets)


def test_golden_cskd(outputs):
    student, teacher, images, targets = outputs
    s, t = student(images), teacher(images)
    got = make("cskd", student, teacher, weight_intra=2.0, weight_inter=3.0)(s, t, targets)

    def structure(feats):
        f = [norm(v) for v in lists(feats)]
        labels = targets.tolist()
        classes = sorted(set(labels))
        centres = {}
        for c in classes:
            members = [f[i] for i in range(len(f)) if labels[i] == c]
            centres[c] = norm([sum(col) / len(members) for col in zip(*members)])
        intra = [dot(f[i], centres[labels[i]]) for i in range(len(f))]
        inter = [[dot(centres[a], centres[b]) for b in classes] for a in classes]
        return intra, inter

    (intra_s, inter_s), (intra_t, inter_t) = structure(s.global_feat), structure(t.global_feat)
    assert got["cskd_intra"].item() == pytest.approx(2.0 * mse(intra_s, intra_t), rel=1e-4)
    assert got["cskd_inter"].item() == pytest.approx(3.0 * mse(inter_s, inter_t), rel=1e-4)


def test_golden_fitnet(outputs):
    student, teacher, images, targets = outputs
    d = make("fitnet", student, teacher, weight=2.0, hint_layer=1)
    s, t = student(images), teacher(images)
    got = d(s, t, targets)["fitnet"].item()
    conv, bn = d.regressor[0], d.regressor[1]
    x = torch.nn.functional.interpolate(s.feats[1], size=t.feats[1].shape[-2:], mode="bilinear", align_corners=False)
    x = nn.functional.pad(x, (1, 1, 1, 1)).detach().double()
    w = conv.weight.detach().double()
    n, _, h, wd = t.feats[1].shape
    y = torch.zeros(n, w.shape[0], h, wd, dtype=torch.double)
    for i in range(h):  # the convolution as explicit windows
        for j in range(wd):
            y[:, :, i, j] = torch.einsum("nckl,ockl->no", x[:, :, i:i + 3, j:j + 3], w)
    mu, var = y.mean(dim=(0, 2, 3), keepdim=True), y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    y = ((y - mu) / torch.sqrt(var + bn.eps)).clamp_min(0)  # BN at initialisation: weight 1, bias 0
    assert got == pytest.approx(2.0 * ((y - t.feats[1].double()) ** 2).mean().item(), rel=1e-4)


def test_golden_at(outputs):
    _, teacher, images, targets = outputs
    student = FakeNet(widths=(3, 5, 7, 9), seed=3)  # same resolutions as the teacher: no resizing here
    s, t = student(images), teacher(images)
    got = make("at", student, teacher, weight=10.0, layers="[0, 2]")(s, t, targets)["at"].item()

    def attention(f):
        n, c, h, w = f.shape
        maps = [[sum(f[i, k].flatten()[p].item() ** 2 for k in range(c)) / c for p in range(h * w)] for i in range(n)]
        return [norm(m) for m in maps]

    want = sum(mse(attention(s.feats[i]), attention(t.feats[i])) for i in (0, 2))
    assert got == pytest.approx(10.0 * want, rel=1e-4)


def test_at_resizes_the_student_map():
    student, teacher = pair()
    images, targets = batch()
    s, t = student(images), teacher(images)
    assert s.feats[0].shape[-1] != t.feats[0].shape[-1]
    assert make("at", student, teacher)(s, t, targets)["at"].item() > 0


def test_golden_sp(outputs):
    student, teacher, images, targets = outputs
    s, t = student(images), teacher(images)
    got = make("sp", student, teacher, weight=3.0, layer=2)(s, t, targets)["sp"].item()

    def gram(f):
        rows = [f[i].flatten().tolist() for i in range(len(f))]
        return [norm([dot(a, b) for b in rows]) for a in rows]

    b = len(images)
    want = sum((x - y) ** 2 for x, y in zip(flat(gram(s.feats[2])), flat(gram(t.feats[2])))) / (b * b)
    assert got == pytest.approx(3.0 * want, rel=1e-4)


def test_golden_rkd(outputs):
    student, teacher, images, targets = outputs
    s, t = student(images), teacher(images)
    got = make("rkd", student, teacher)(s, t, targets)

    def distances(e):
        d = [[math.sqrt(sqdist(a, b)) for b in e] for a in e]
        m = mean(d[i][j] for i in range(len(e)) for j in range(len(e)) if i != j)
        return [[v / m for v in row] for row in d]

    def angles(e):
        out = []
        for j in range(len(e)):
            for i in range(len(e)):
                for k in range(len(e)):
                    u = [a - b for a, b in zip(e[i], e[j])]
                    v = [a - b for a, b in zip(e[k], e[j])]
                    nu, nv = math.sqrt(dot(u, u)), math.sqrt(dot(v, v))
                    out.append(dot(u, v) / (max(nu, 1e-12) * max(nv, 1e-12)))
        return out

    es, et = lists(s.global_feat), lists(t.global_feat)
    assert got["rkd_distance"].item() == pytest.approx(25 * huber(distances(es), distances(et)), rel=1e-4)
    assert got["rkd_angle"].item() == pytest.approx(50 * huber(angles(es), angles(et)), rel=1e-4)


def test_golden_pkt(outputs):
    student, teacher, images, targets = outputs
    s, t = student(images), teacher(images)
    got = make("pkt", student, teacher, weight=100.0)(s, t, targets)["pkt"].item()

    def probabilities(e):
        e = [norm(v) for v in e]
        k = [[(dot(a, b) + 1) / 2 for b in e] for a in e]
        return [[v / sum(row) for v in row] for row in k]

    ps, pt = probabilities(lists(s.global_feat)), probabilities(lists(t.global_feat))
    eps = 1e-7
    want = mean(b * math.log((b + eps) / (a + eps)) for a, b in zip(flat(ps), flat(pt)))
    assert got == pytest.approx(100.0 * want, rel=1e-4)


def test_golden_cc_and_taylor_expansion(outputs):
    student, teacher, images, targets = outputs
    s, t = student(images), teacher(images)
    got = make("cc", student, teacher, weight=1.0, gamma=0.4, order=2)(s, t, targets)["cc"].item()

    def correlation(e, order):
        e = [norm(v) for v in e]
        # exp(-γ‖x−y‖²) = exp(-2γ)·exp(2γ x·y) for unit vectors; its Taylor series in x·y, term by term
        return [[sum(math.exp(-0.8) * 0.8 ** p / math.factorial(p) * dot(a, b) ** p for p in range(order + 1))
                 for b in e] for a in e]

    assert got == pytest.approx(mse(correlation(lists(s.global_feat), 2), correlation(lists(t.global_feat), 2)),
                                rel=1e-4)
    # a high order reaches the exact Gaussian RBF kernel
    from reid_kd.distill.cc import rbf_correlation

    e = s.global_feat.detach().double()
    exact = [[math.exp(-0.4 * sqdist(a, b)) for b in map(norm, lists(e))] for a in map(norm, lists(e))]
    assert flat(rbf_correlation(e, 0.4, 12).tolist()) == pytest.approx(flat(exact), abs=1e-6)


def test_golden_crd(outputs):
    student, teacher, images, targets = outputs
    d = make("crd", student, teacher, nce_k=7, feat_dim=4, nce_t=0.5, weight=1.0)
    q_s, q_t = lists(d.queue_s), lists(d.queue_t)
    s, t = student(images), teacher(images)
    got = d(s, t, targets)["crd"].item()

    def embed(linear, feats):
        w, b = lists(linear.weight), lists(linear.bias)
        return [norm([dot(row, f) + bias for row, bias in zip(w, b)]) for f in feats]

    es, et = embed(d.embed_s, lists(s.global_feat)), embed(d.embed_t, lists(t.global_feat))

    def nce(anchors, positives, negatives):
        z = mean(math.exp(dot(a, n) / 0.5) for a in anchors for n in negatives) * len(negatives)
        total = 0.0
        for a, p in zip(anchors, positives):
            pos = math.exp(dot(a, p) / 0.5) / z
            total -= math.log(pos / (pos + 1.0))
            for n in negatives:
                neg = math.exp(dot(a, n) / 0.5) / z
                total -= math.log(1.0 / (neg + 1.0))
        return total / len(anchors)

    assert got == pytest.approx(nce(es, et, q_t) + nce(et, es, q_s), rel=1e-4)
    # FIFO: the batch (6) went into slots 0..5 of the 7-slot queues
    assert flat(lists(d.queue_s)[:6]) == pytest.approx(flat(es), abs=1e-5)
    assert lists(d.queue_s)[6] == pytest.approx(q_s[6])
    assert int(d.ptr) == 6 and d.z_s.item() > 0


# ------------------------------------------------------------------------------------ training smoke

@pytest.fixture(scope="module")
def tiny_loaders(tiny_overrides):
    from reid_kd.data.image_dataset import build_loaders

    cfg = load_config("configs/quickstart.yaml", tiny_overrides)
    return build_loaders(cfg["data"], seed=0)


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_every_method_trains_a_few_steps_without_nan(method, tiny_loaders, tiny_overrides, tmp_path):
    from reid_kd.engine.trainer import Trainer
    from reid_kd.models.reid_model import build_model

    cfg = load_config(f"configs/synth_{method}.yaml", tiny_overrides)
    assert cfg["distill"]["method"] == method
    torch.manual_seed(0)
    n = tiny_loaders.dataset.num_train_pids
    teacher, student = build_model(cfg["teacher"], n), build_model(cfg["model"], n)
    distiller = build_distiller(cfg["distill"], student, teacher)
    trainer = Trainer(student, tiny_loaders.train, cfg["train"], torch.device("cpu"), tmp_path, teacher=teacher,
                      distiller=distiller)
    trainer.fit()  # raises FloatingPointError on a non-finite loss
    with (tmp_path / "log.csv").open() as f:
        row = next(csv.DictReader(f))
    terms = [k for k in row if k.startswith(method.split("_")[0])]
    assert terms and all(math.isfinite(float(row[k])) for k in terms + ["loss"])


# ---------------------------------------------------------------------------------------------- configs

@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_method_configs_hold_only_what_differs(method):
    import yaml

    for prefix, base in (("veri", "_base_/veri.yaml"), ("synth", "quickstart.yaml")):
        raw = yaml.safe_load(open(f"configs/{prefix}_{method}.yaml"))
        assert raw["_base_"] == base and raw["distill"]["method"] == method
        assert set(raw) <= {"_base_", "distill", "experiment"}
        cfg = load_config(f"configs/{prefix}_{method}.yaml")
        assert cfg["distill"][method] == load_config(None, [f"distill.method={method}"])["distill"][method] or \
            method == "gird"
    veri = load_config(f"configs/veri_{method}.yaml")
    assert (veri["teacher"]["backbone"], veri["model"]["backbone"], veri["data"]["dataset"]) == \
        ("resnet101", "resnet18", "veri776")
    assert veri["train"]["milestones"] == [40, 70] and veri["model"]["neck"] == "bnneck"


def test_methods_listing_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "reid_kd.cli", "methods"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(EXPECTED)
    for line, (name, description) in zip(lines, describe_methods()):
        assert line.split()[0] == name and line.endswith(description)
