"""Every distillation method: zero at the teacher, positive elsewhere, gradients, golden values, training.

The golden values come from deliberately plain implementations (Python loops over samples, `math` on
scalars, here and in helpers.py), written from the papers' formulas rather than from the library's code.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import (TRAIN_TARGETS, FakeNet, batch, dot, flat, huber, indices, kl, lists, make, mean, mse, norm,
                     pair, pooled, softmax, sqdist)
from reid_kd.distill.base import build_distiller
from reid_kd.distill.catalog import DISTILLERS, describe_methods
from reid_kd.engine.configs import load_config
from reid_kd.models.catalog import BACKBONES
from reid_kd.registry import default_values
from reid_kd.models.reid_model import ModelOutput

ALL = sorted(DISTILLERS)
EXPECTED = {"gird", "kd", "irg", "cskd", "fitnet", "at", "sp", "rkd", "pkt", "cc", "dkd", "crd",
            "csd", "raml", "rop", "d3still", "ugd"}
LEARNED = {"fitnet", "crd", "cskd", "ugd"}  # learned parts between the two networks: no zero at equal outputs
# the student's temperature softer than the teacher's (csd) or its sigmoid against the teacher's step (rop): not 0
# at the teacher's output (test_distill_retrieval checks their value there)
NOT_ZERO_AT_TEACHER = LEARNED | {"csd", "rop"}
SAME_WIDTH = {name for name in ALL if DISTILLERS.load(name).same_width}  # student vs teacher vectors


def pair_for(method):
    """The helpers' student and teacher, of one retrieval width where the method compares them directly."""
    return pair(same_width=method in SAME_WIDTH)


# ---------------------------------------------------------------------------------------------- wiring

def test_every_method_is_registered_with_a_description():
    assert set(ALL) == EXPECTED
    rows = dict(describe_methods())
    for name, cls in DISTILLERS.items():
        assert rows[name] == cls.description and len(cls.description.splitlines()) == 1
        # `distill.method: <name>` builds this class from its `distill.<name>` options
        built = make(name, *pair_for(name))
        assert type(built) is cls.load() and built.cfg == default_values(cls)


def test_unknown_option_is_rejected_by_the_config():
    from reid_kd.errors import ConfigError

    with pytest.raises(ConfigError, match="distill.gird.memory_sise"):
        load_config(None, ["distill.method=gird", "distill.gird.memory_sise=3"])


# ------------------------------------------------------------------------------ zero / positive / grads

@pytest.mark.parametrize("method", sorted(EXPECTED - NOT_ZERO_AT_TEACHER))
def test_zero_when_student_equals_teacher(method):
    net = FakeNet()
    d = make(method, net, net)
    images, targets = batch()
    for _ in range(2):  # twice: memory-based methods then relate to a non-empty memory
        out = net(images)
        losses = d(out, out, targets, indices(targets))
        assert losses
        for name, value in losses.items():
            assert value.item() == pytest.approx(0.0, abs=1e-6), name


@pytest.mark.parametrize("method", ALL)
def test_positive_when_student_differs(method):
    student, teacher = pair_for(method)
    d = make(method, student, teacher)
    images, targets = batch()
    for _ in range(2):
        losses = d(student(images), teacher(images), targets, indices(targets))
        for name, value in losses.items():
            assert torch.isfinite(value) and value.item() > 0, name


@pytest.mark.parametrize("method", ALL)
def test_gradients_reach_student_and_extra_parameters_never_teacher(method):
    student, teacher = pair_for(method)
    d = make(method, student, teacher)
    images, targets = batch()
    d(student(images), teacher(images), targets, indices(targets))  # fills memories where there are any
    student.zero_grad()
    total = sum(d(student(images), teacher(images), targets, indices(targets)).values())
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
    assert len(make("cskd", student, teacher).extra_parameters()) == 1  # the bias-free 1×1 adapter
    assert make("rkd", student, teacher).extra_parameters() == []
    # two projectors (BN weight and bias, linear, BN weight and bias); the teacher whose head it runs is not one
    assert len(make("ugd", *pair(same_width=True)).extra_parameters()) == 10


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


def test_golden_cskd_offsets_and_centre_cosines(outputs):
    """The authors' form: offsets from correctly classified centres, a centre pull, raw-feature centre cosines."""
    student, teacher, images, targets = outputs  # targets 0, 0, 1, 1, 2, 2
    s, t = student(images), teacher(images)
    # logits chosen so that the correct-only centres matter: class 0 has one sample right, class 1 none,
    # class 2 both (student); the teacher gets class 0 wholly right and one of each other class
    z_s = torch.tensor([[5., 0, 0, 0, 0], [0, 5, 0, 0, 0], [5, 0, 0, 0, 0], [0, 0, 5, 0, 0],
                        [0, 0, 5, 0, 0], [0, 0, 5, 1, 0]]) + torch.linspace(0, 1, 30).view(6, 5)
    z_t = torch.tensor([[4., 0, 0, 0, 0], [4, 0, 0, 0, 0], [0, 4, 0, 0, 0], [4, 0, 0, 0, 0],
                        [0, 0, 4, 0, 0], [0, 0, 0, 4, 0]]) - torch.linspace(0, 2, 30).view(6, 5)
    s = ModelOutput(s.feats, s.global_feat, s.bn_feat, z_s)
    t = ModelOutput(t.feats, t.global_feat, t.bn_feat, z_t)
    d = make("cskd", student, teacher, weight_intra=2.0, weight_pull=5.0, weight_inter=3.0)
    got = d(s, t, targets)

    x = nn.functional.interpolate(s.feats[3], size=t.feats[3].shape[-2:], mode="bilinear", align_corners=False)
    w = lists(d.adapter.weight.flatten(1))
    fs = [[dot(row, lists(x[n, :, i, j])) for row in w for i in range(x.shape[2]) for j in range(x.shape[3])]
          for n in range(len(x))]
    fs = [[v for o in range(len(w)) for v in row[o::len(w)]] for row in fs]  # channel-major, as flatten(1)
    ft = [lists(t.feats[3][n].flatten()) for n in range(len(images))]
    labels = targets.tolist()

    def centre(rows, members):
        return [sum(col) / len(members) for col in zip(*(rows[j] for j in members))]

    def offsets(rows, logits=None):
        out = []
        for i, y in enumerate(labels):
            members = [j for j in range(len(rows)) if labels[j] == y]
            if logits is not None:  # correctly classified members only
                members = [j for j in members if max(range(5), key=lambda k: logits[j][k]) == y]
            c = centre(rows, members) if members else rows[i]
            out.append([a - b for a, b in zip(rows[i], c)])
        return out

    def cosines(rows):
        means = [norm(centre(rows, [j for j in range(len(rows)) if labels[j] == y])) for y in sorted(set(labels))]
        return [[dot(a, b) for b in means] for a in means]

    zs, zt = lists(z_s), lists(z_t)
    intra = (mse(offsets(fs, zs), offsets(ft, zt)) / len(ft[0])
             + mse(offsets(zs), offsets(zt)) / 5)
    pull = mse(zs, [centre(zs, [j for j in range(6) if labels[j] == y]) for y in labels])
    inter = (mse(cosines(fs), cosines(ft)) + mse(cosines(zs), cosines(zt))) / 3
    assert got["cskd_intra"].item() == pytest.approx(2.0 * intra, rel=1e-4)
    assert got["cskd_pull"].item() == pytest.approx(5.0 * pull, rel=1e-4)
    assert got["cskd_inter"].item() == pytest.approx(3.0 * inter, rel=1e-4)
    # with `correct_only: false` the feature centres count every sample: another value, also matched
    every = make("cskd", student, teacher, weight_intra=2.0, correct_only=False)(s, t, targets)["cskd_intra"]
    intra_every = mse(offsets(fs), offsets(ft)) / len(ft[0]) + mse(offsets(zs), offsets(zt)) / 5
    assert every.item() == pytest.approx(2.0 * intra_every, rel=1e-4)
    correct_part, every_part = mse(offsets(fs, zs), offsets(ft, zt)), mse(offsets(fs), offsets(ft))
    assert abs(correct_part - every_part) > 0.05 * every_part


def test_cskd_defaults_keep_the_authors_proportions():
    from reid_kd.distill.cskd import CSKD

    authors = {"weight_intra": 0.002, "weight_pull": 0.1, "weight_inter": 0.04}  # xeanzheng/CSKD train_cifar.py
    assert {k: CSKD.options[k] for k in authors} == pytest.approx({k: 10 * v for k, v in authors.items()})
    assert CSKD.options["correct_only"] is True


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

    ps, pt = probabilities(lists(s.bn_feat)), probabilities(lists(t.bn_feat))  # the default embedding
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

    assert got == pytest.approx(mse(correlation(lists(s.bn_feat), 2), correlation(lists(t.bn_feat), 2)),
                                rel=1e-4)  # the default embedding
    # a high order reaches the exact Gaussian RBF kernel
    from reid_kd.distill.cc import rbf_correlation

    e = s.global_feat.detach().double()
    exact = [[math.exp(-0.4 * sqdist(a, b)) for b in map(norm, lists(e))] for a in map(norm, lists(e))]
    assert flat(rbf_correlation(e, 0.4, 12).tolist()) == pytest.approx(flat(exact), abs=1e-6)


def test_golden_crd_memory_positives_and_other_class_negatives(outputs, monkeypatch):
    """The official CRD: the positive is the other network's memory slot of the same image, the
    negatives other classes' slots, NCE with Z from the first batch and K/N noise; momentum update."""
    student, teacher, images, targets = outputs
    d = make("crd", student, teacher, nce_k=5, feat_dim=4, nce_t=0.5, nce_m=0.25, weight=1.0)
    idx = indices(targets)
    mem_s, mem_t = lists(d.memory_s), lists(d.memory_t)
    drawn = []
    draw = d.draw_negatives
    monkeypatch.setattr(d, "draw_negatives", lambda y: drawn.append(draw(y)) or drawn[-1])
    s, t = student(images), teacher(images)
    got = d(s, t, targets, idx)["crd"].item()

    labels, negatives = TRAIN_TARGETS.tolist(), drawn[0].tolist()
    for y, row in zip(targets.tolist(), negatives):  # 5 of 20 other-class images: no repeats
        assert all(labels[j] != y for j in row) and len(set(row)) == len(row) == 5

    def embed(linear, feats):
        w, b = lists(linear.weight), lists(linear.bias)
        return [norm([dot(row, f) + bias for row, bias in zip(w, b)]) for f in feats]

    es, et = embed(d.embed_s, lists(s.global_feat)), embed(d.embed_t, lists(t.global_feat))
    n = len(labels)

    def nce(anchors, memory):
        scores = [[dot(a, memory[j]) for j in [i] + row] for a, i, row in zip(anchors, idx.tolist(), negatives)]
        z = mean(math.exp(v / 0.5) for row in scores for v in row) * n
        noise = 5 / n
        total = 0.0
        for row in scores:
            p = [math.exp(v / 0.5) / z for v in row]
            total -= math.log(p[0] / (p[0] + noise + 1e-7))
            total -= sum(math.log(noise / (q + noise + 1e-7)) for q in p[1:])
        return total / len(scores)

    assert got == pytest.approx(nce(es, mem_t) + nce(et, mem_s), rel=1e-4)
    new_s = lists(d.memory_s)
    for j in range(n):
        if j in idx.tolist():
            e = es[idx.tolist().index(j)]
            assert new_s[j] == pytest.approx(norm([0.25 * a + 0.75 * b for a, b in zip(mem_s[j], e)]), abs=1e-5)
        else:
            assert new_s[j] == pytest.approx(mem_s[j])
    z_first = d.z_s.item()
    d(student(images), teacher(images), targets, idx)
    assert d.z_s.item() == z_first > 0  # Z is fixed by the first batch


@pytest.mark.parametrize("k", [10, 50])
def test_crd_negatives_are_uniform_over_other_classes(k):
    """Without replacement when K fits in the other classes (10 of 20), with replacement otherwise (50)."""
    student, teacher = pair()
    d = make("crd", student, teacher, nce_k=k)
    torch.manual_seed(0)
    anchors = torch.zeros(400, dtype=torch.long)  # class 0: images 0..3
    picks = torch.cat([d.draw_negatives(anchors) for _ in range(5)])
    assert picks.shape == (2000, k) and bool((TRAIN_TARGETS[picks] != 0).all())
    if k <= 20:
        assert all(len(set(row)) == k for row in picks.tolist())
    counts = torch.bincount(picks.flatten(), minlength=24)[4:].double()
    expected = 2000 * k / 20
    assert counts.sub(expected).abs().max() < 5 * math.sqrt(expected)  # each other image equally likely


def test_crd_needs_the_batch_indices():
    student, teacher = pair()
    images, targets = batch()
    with pytest.raises(ValueError, match="dataset indices"):
        make("crd", student, teacher)(student(images), teacher(images), targets)


# ------------------------------------------------------------------------------------ training smoke

@pytest.fixture(scope="module")
def tiny_loaders(tiny_overrides):
    from reid_kd.data.image_dataset import build_loaders

    cfg = load_config("configs/quickstart.yaml", tiny_overrides)
    return build_loaders(cfg["data"], seed=0)


@pytest.mark.parametrize("method", ALL)
def test_every_method_trains_a_few_steps_without_nan(method, tiny_loaders, tiny_overrides, tmp_path):
    from reid_kd.data.image_dataset import train_targets
    from reid_kd.engine.cohort import Cohort
    from reid_kd.engine.run_folder import RunFolder
    from reid_kd.models.reid_model import build_model

    # a ResNet-18 student beside the ResNet-18 teacher where the method needs retrieval features of one width
    same = ["model.backbone=resnet18"] if method in SAME_WIDTH else []
    cfg = load_config("configs/quickstart.yaml", [*tiny_overrides, f"distill.method={method}", *same])
    assert cfg["distill"]["method"] == method
    torch.manual_seed(0)
    n = tiny_loaders.dataset.num_train_pids
    teacher, student = build_model(cfg["teacher"], n), build_model(cfg["model"], n)
    distiller = build_distiller(cfg["distill"], student, teacher, train_targets(tiny_loaders))
    cohort = Cohort(tiny_loaders.train, torch.device("cpu"), teacher=teacher)
    cohort.add(student, cfg["train"], RunFolder(tmp_path), distiller=distiller)
    cohort.fit()  # raises FloatingPointError on a non-finite loss
    with (tmp_path / "log.csv").open() as f:
        row = next(csv.DictReader(f))
    terms = [k for k in row if k.startswith(method.split("_")[0])]
    assert terms and all(math.isfinite(float(row[k])) for k in terms + ["loss"])


# ---------------------------------------------------------------------------------------------- configs

METHOD_CONFIGS = {(p.stem.split("_", 1)[0], p.stem.split("_", 1)[1]) for p in Path("configs").glob("*_*.yaml")
                  if p.stem.split("_", 1)[1] in DISTILLERS}  # the per-method configs users are shown; none required


def test_per_method_configs_name_registered_methods():
    assert ("veri", "gird") in METHOD_CONFIGS  # the README's example
    for prefix, method in METHOD_CONFIGS:
        assert prefix in ("veri", "synth") and method in DISTILLERS


@pytest.mark.parametrize("method", sorted({m for _, m in METHOD_CONFIGS}))
def test_method_configs_hold_only_what_differs(method):
    import yaml

    for prefix, base in (("veri", "_base_/veri.yaml"), ("synth", "quickstart.yaml")):
        if (prefix, method) not in METHOD_CONFIGS:
            continue
        raw = yaml.safe_load(open(f"configs/{prefix}_{method}.yaml"))
        assert raw["_base_"] == base and raw["distill"]["method"] == method
        assert set(raw) <= {"_base_", "distill", "experiment"}
        cfg = load_config(f"configs/{prefix}_{method}.yaml")
        assert cfg["distill"][method] == load_config(None, [f"distill.method={method}"])["distill"][method] or \
            method == "gird"
    if ("veri", method) not in METHOD_CONFIGS:
        return
    veri = load_config(f"configs/veri_{method}.yaml")
    assert (veri["teacher"]["backbone"], veri["model"]["backbone"], veri["data"]["dataset"]) == \
        ("resnet101", "resnet18", "veri776")
    assert veri["train"]["milestones"] == [40, 70] and veri["model"]["neck"] == "bnneck"


@pytest.mark.slow
def test_methods_listing_command_states_every_default_and_its_source():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "reid_kd.cli", "methods"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    blocks, current = {}, None
    methods_part, backbones_part = out.stdout.split("\n\n")
    for line in methods_part.splitlines():
        if not line.startswith(" "):
            current = line.split()[0]
            blocks[current] = (line, [])
        else:
            blocks[current][1].append(line.strip())
    assert list(blocks) == [name for name, _ in describe_methods()]
    for name, description in describe_methods():
        head, options = blocks[name]
        assert head.endswith(description)
        cls = DISTILLERS[name]
        assert [o.split(" = ")[0] for o in options] == list(default_values(cls))
        for option, line in zip(default_values(cls), options):
            assert line.endswith(cls.sources[option])
    listed = [line.split()[0] for line in backbones_part.splitlines()[1:]]
    assert listed == BACKBONES.names() and "resnet50_ibn_a" in listed and "timm:<name>" in listed


def test_every_default_names_its_source():
    for name, cls in DISTILLERS.items():
        assert set(cls.sources) == set(cls.options), name
        for option, source in cls.sources.items():
            assert source.strip(), (name, option)
