"""GIRD: the teacher memory, student-vs-teacher relations, masking, evolution, the earlier reading by its
options, resume, and an end-to-end run. Expected values come from plain Python on tiny cases."""
from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path

import pytest
import torch

from helpers import (TRAIN_TARGETS, FakeNet, batch, dot, flat, kl, lists, make, mean, norm, pair, pooled, reidkd,
                     softmax)
from reid_kd.data.image_dataset import train_targets
from reid_kd.distill.base import build_distiller
from reid_kd.distill.gird import GIRD
from reid_kd.engine.configs import load_config
from reid_kd.engine.paths import run_dir
from reid_kd.engine.run import run_experiment
from reid_kd.errors import ConfigError
from reid_kd.models.reid_model import ModelOutput

ROOT = Path(__file__).resolve().parents[1]
# the reading before issue 24: each network against its own batch and memory, MSE over every entry
EARLIER = dict(relation="self", loss="mse", mask_self="false", stage_form="pooled", layers="[1, 2, 3, 4]")
# the options of issue 36 away from their defaults: CSD's two temperatures and top-k, memory columns weighed apart
ISSUE_36 = dict(temperature=1.0, teacher_temperature=0.02, top_k=6, evolution_memory_weight=0.5)


@pytest.fixture(autouse=True)
def seeded():
    """FakeNet's biases and GIRD's adapter draw from the global stream: the same values whatever ran before."""
    torch.manual_seed(0)


def gird(student, teacher, **options):
    """GIRD built from the config, for the helpers' batches of 4 identities × 2 images."""
    cfg = load_config(None, ["distill.method=gird", "data.batch_p=4", "data.batch_k=2"]
                      + [f"distill.gird.{k}={v}" for k, v in options.items()])
    return build_distiller(cfg["distill"], student, teacher, TRAIN_TARGETS)


def ids(seed, n=8):
    """Distinct dataset indices for the batch of `seed`."""
    return torch.arange(n) + n * seed


def same_size_pair():
    """Stage maps of equal H×W (no resizing of the student's attention), widths that differ."""
    return FakeNet(seed=0), FakeNet(widths=(5, 7, 9, 12), seed=1)


def features(out, i, embedding="bn_feat"):
    """Plain pooled (stage) or embedding vectors, L2-normalised, as lists."""
    raw = lists(getattr(out, embedding)) if i == 4 else pooled(out.feats[i])
    return [norm(v) for v in raw]


def given(embedding, stage=None):
    """A ModelOutput of 2-d vectors: `embedding` as global and BN feature, `stage` (else 0) as stage 3's 1×1 map."""
    v = torch.tensor(embedding, dtype=torch.float32)
    s = torch.zeros(len(v), 2) if stage is None else torch.tensor(stage, dtype=torch.float32)
    return ModelOutput([torch.zeros(len(v), 2, 1, 1)] * 3 + [s[:, :, None, None]], v, v, None)


def unit(degrees):
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def relation(batch_feats, memory):
    return [[dot(a, b) for b in batch_feats + memory] for a in batch_feats]


def plain_gird(s_out, t_out, s_mem, t_mem, layers, loss="mse", temperature=0.1, evolution=True):
    """(sim, evo) from the paper's formulas with Python lists; s_mem/t_mem: layer -> list of vectors."""
    r_s = [relation(features(s_out, i), s_mem.get(i, [])) for i in layers]
    r_t = [relation(features(t_out, i), t_mem.get(i, [])) for i in layers]
    sims = []
    for a, b in zip(r_s, r_t):
        if loss == "mse":
            sims.append(mean((x - y) ** 2 for x, y in zip(flat(a), flat(b))))
        else:
            rows = []
            for ra, rb in zip(a, b):
                p, q = softmax(rb, temperature), softmax(ra, temperature)
                rows.append(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q)))
            sims.append(temperature ** 2 * mean(rows))
    evo = None
    if evolution:
        evo = mean(mean(abs((s1 - s0) - (t1 - t0)) for s1, s0, t1, t0 in
                        zip(flat(r_s[k + 1]), flat(r_s[k]), flat(r_t[k + 1]), flat(r_t[k])))
                   for k in range(len(layers) - 1))
    return mean(sims), evo


def attention(out, i):
    """MKD/AT spatial attention of stage i: channel mean of f², flattened, L2-normalised (plain lists)."""
    maps = out.feats[i].tolist()
    return [norm([sum(ch[y][x] ** 2 for ch in m) / len(m) for y in range(len(m[0])) for x in range(len(m[0][0]))])
            for m in maps]


def vectors(d, s_out, t_out, i):
    """(student, teacher) vectors of layer i as the new reading defines them, in plain Python."""
    if i < 4:
        return attention(s_out, i), attention(t_out, i)
    s = lists(s_out.bn_feat)
    if str(i) in d.proj:
        w = lists(d.proj[str(i)].weight)
        s = [[dot(row, v) for row in w] for v in s]
    return [norm(v) for v in s], [norm(v) for v in lists(t_out.bn_feat)]


def cross_relations(s_vecs, t_vecs, rows, mem, mem_rows, mask=True):
    """Student rows and teacher rows against [teacher batch ; teacher memory]; which entries count."""
    cols, col_ids = t_vecs + mem, rows + mem_rows
    r_s = [[dot(a, c) for c in cols] for a in s_vecs]
    r_t = [[dot(a, c) for c in cols] for a in t_vecs]
    keep = [[not (mask and r == c) for c in col_ids] for r in rows]
    return r_s, r_t, keep


def row_kl(r_s, r_t, keep, t):
    """T² × mean over rows of KL(softmax(teacher / T) ‖ softmax(student / T)) over the kept entries only."""
    rows = []
    for a, b, k in zip(r_s, r_t, keep):
        a, b = [x for x, kk in zip(a, k) if kk], [x for x, kk in zip(b, k) if kk]
        rows.append(kl(softmax(b, t), softmax(a, t)))
    return t * t * mean(rows)


def evolution(rs, rt, keep):
    """Mean over consecutive layers of the mean |ΔR_s − ΔR_t| over the kept entries."""
    def kept(m):
        return [v for row, k in zip(m, keep) for v, kk in zip(row, k) if kk]
    return mean(mean(abs((a1 - a0) - (b1 - b0)) for a1, a0, b1, b0 in
                     zip(kept(rs[k + 1]), kept(rs[k]), kept(rt[k + 1]), kept(rt[k]))) for k in range(len(rs) - 1))


def test_defaults_follow_the_groups_code_and_every_source_is_named():
    o = load_config(None, ["distill.method=gird"])["distill"]["gird"]
    assert (o["layers"], o["stage_form"], o["embedding"], o["relation"]) == ([2, 3, 4], "attention", "bn_feat", "cross")
    assert o["loss"] == "kl" and 0.01 <= o["temperature"] <= 0.1 and o["mask_self"] and o["use_memory"]
    # issue 36's options default to the reading before them: one temperature, every column, a plain mean
    assert (o["teacher_temperature"], o["top_k"], o["evolution_memory_weight"]) == (None, None, 1.0)
    assert "CSD.py" in GIRD.sources["top_k"] and "CSD.py" in GIRD.sources["teacher_temperature"]
    assert set(GIRD.sources) == set(o) and all(GIRD.sources.values())
    assert "MKD.py" in GIRD.sources["stage_form"] and "utils_GRG.py" in GIRD.sources["use_memory"]
    synth = load_config("configs/synth_gird.yaml")
    spec, data = synth["data"]["synth"], synth["data"]
    size = synth["distill"]["gird"]["memory_size"]
    assert size % (data["batch_p"] * data["batch_k"]) == 0 and size < spec["train_ids"] * spec["images_per_id"]
    veri = load_config("configs/veri_gird.yaml")
    assert veri["distill"]["gird"]["memory_size"] == 24000 < 37778  # VeRi-776's training images
    assert 24000 % (veri["data"]["batch_p"] * veri["data"]["batch_k"]) == 0
    assert (veri["teacher"]["backbone"], veri["model"]["backbone"]) == ("resnet101", "resnet18")


def test_memory_size_must_be_a_multiple_of_the_batch():
    with pytest.raises(ConfigError) as e:
        load_config("configs/synth_gird.yaml", ["distill.gird.memory_size=1000"])
    message = str(e.value)
    assert "\n" not in message and "distill.gird.memory_size" in message and "64" in message and "960" in message
    load_config("configs/synth_gird.yaml", ["distill.gird.memory_size=960"])
    load_config("configs/synth_gird.yaml", ["distill.gird.memory_size=1000", "data.batch_p=5", "data.batch_k=2"])


def test_in_batch_relation_student_against_teacher_with_the_diagonal_masked():
    student, teacher = same_size_pair()
    d = gird(student, teacher, weight_sim=1.0, use_memory=False, use_evolution=False, layers="[2, 4]")
    assert sorted(d.proj) == ["4"]  # the embedding's widths differ (10 -> 12); attention maps need no adapter
    assert not [n for n, _ in d.named_buffers()]
    x, y = batch(seed=1)
    s, t = student(x), teacher(x)
    got = d(s, t, y, ids(1))["gird_sim"]
    want = mean(row_kl(*cross_relations(*vectors(d, s, t, i), ids(1).tolist(), [], []), 0.05) for i in (2, 4))
    assert got.item() == pytest.approx(want, rel=1e-4)
    got.backward()
    assert d.proj["4"].weight.grad.abs().sum() > 0
    # unmasked, the diagonal s_i·t_i (against t_i·t_i = 1) joins every row
    loose = gird(student, teacher, weight_sim=1.0, use_memory=False, use_evolution=False, layers="[2, 4]",
                 mask_self=False)
    loose.proj.load_state_dict(d.proj.state_dict())
    want = mean(row_kl(*cross_relations(*vectors(d, s, t, i), ids(1).tolist(), [], [], mask=False), 0.05)
                for i in (2, 4))
    assert loose(s, t, y, ids(1))["gird_sim"].item() == pytest.approx(want, rel=1e-4)


def test_memory_relation_student_and_teacher_against_the_stored_teacher_features():
    student, teacher = same_size_pair()
    d = gird(student, teacher, weight_sim=2.0, use_evolution=False, memory_size=16, temperature=0.1)
    (x1, y1), (x2, y2) = batch(seed=1), batch(seed=2)
    s1, t1 = student(x1), teacher(x1)
    d(s1, t1, y1, ids(1))
    s2, t2 = student(x2), teacher(x2)
    got = d(s2, t2, y2, ids(2))["gird_sim"].item()
    sims = []
    for i in (2, 3, 4):
        mem = vectors(d, s1, t1, i)[1]  # the teacher's vectors of batch 1: the memory
        sims.append(row_kl(*cross_relations(*vectors(d, s2, t2, i), ids(2).tolist(), mem, ids(1).tolist()), 0.1))
    assert got == pytest.approx(2.0 * mean(sims), rel=1e-4)


def test_masking_drops_an_image_against_itself_in_the_batch_and_in_the_memory():
    """Hand-computed: 2-d unit embeddings, MSE over the kept entries; the second batch repeats a stored
    image (index 0) and holds one image twice (index 5)."""
    net = FakeNet(widths=(2, 2, 2, 2))
    d = gird(net, net, weight_sim=1.0, loss="mse", layers="[4]", use_evolution=False, memory_size=8)
    d(given([[1.0, 0.0], [0.0, 1.0]]), given([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert d.mem_index.tolist()[:2] == [0, 1]
    c = 1 / math.sqrt(2)
    s = given([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # indices 0, 5, 5
    t = given([[c, c], [0.0, 1.0], [0.0, 1.0]])
    got = d(s, t, torch.tensor([0, 2, 2]), torch.tensor([0, 5, 5]))["gird_sim"].item()
    # columns: teacher batch t0 = (c, c), t1 = t2 = (0, 1); memory m0 = (1, 0) [index 0], m1 = (0, 1) [index 1]
    # row 0 (index 0): kept t1, t2, m1 (t0 itself and m0, the same image, masked): s·col = 0, 0, 0; t·col = c, c, c
    # rows 1 and 2 (index 5): kept t0, m0, m1 (t1, t2 are image 5): s·col = c, 0, 1; t·col = c, 0, 1
    want = (3 * c ** 2 + 0 + 0) / 9
    assert got == pytest.approx(want, rel=1e-5)


def test_evolution_between_consecutive_layers_over_the_same_anchors():
    student, teacher = same_size_pair()
    d = gird(student, teacher, weight_evo=3.0, memory_size=16)
    (x1, y1), (x2, y2) = batch(seed=1), batch(seed=2)
    s1, t1 = student(x1), teacher(x1)
    first = d(s1, t1, y1, ids(0))
    s2, t2 = student(x2), teacher(x2)
    rows = [8, 9, 10, 11, 8, 13, 14, 0]  # an image twice in the batch (8), and a stored one (0): masked too
    idx2 = torch.tensor(rows)
    got = d(s2, t2, y2, idx2)
    rs, rt, keep = [], [], None
    for i in (2, 3, 4):
        mem = vectors(d, s1, t1, i)[1]
        a, b, keep = cross_relations(*vectors(d, s2, t2, i), rows, mem, ids(0).tolist())
        rs.append(a)
        rt.append(b)
    assert got["gird_evo"].item() == pytest.approx(3.0 * evolution(rs, rt, keep), rel=1e-4)
    assert first["gird_evo"].item() > 0


# The loss terms at the defaults on fixed inputs, as GIRD computed them before issue 36 (commit 2337a2a), per ATen
# CPU capability (its vectorised kernels sum in another order): the new options' defaults move no number.
BEFORE_ISSUE_36 = {"AVX2": ["0x1.d9148cp+0", "0x1.298fa8p+0", "0x1.df0c6cp+0", "0x1.182a5cp+0"],
                   "DEFAULT": ["0x1.d9148cp+0", "0x1.298faap+0", "0x1.df0c70p+0", "0x1.182a5cp+0"]}


def fixed_output(seed, n=8):
    """Stage maps and features of FakeNet's widths drawn from a seeded stream (no convolution to round)."""
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(n, w, s, s, generator=g) for w, s in zip((4, 6, 8, 10), (8, 4, 4, 2))]
    return ModelOutput(feats, torch.randn(n, 10, generator=g), torch.randn(n, 10, generator=g), None)


def test_the_defaults_compute_bit_for_bit_what_gird_computed_before_issue_36():
    d = gird(FakeNet(), FakeNet(), memory_size=16)  # equal widths: no adapter
    y = torch.arange(4).repeat_interleave(2)
    got = []
    for k, rows in enumerate((list(range(8)), [8, 9, 10, 11, 8, 13, 14, 0])):  # then a duplicate and a stored image
        terms = d(fixed_output(10 + 2 * k), fixed_output(11 + 2 * k), y, torch.tensor(rows))
        got += [terms["gird_sim"].item(), terms["gird_evo"].item()]
    capability = torch.backends.cpu.get_cpu_capability()
    want = [float.fromhex(h) for h in BEFORE_ISSUE_36.get(capability, BEFORE_ISSUE_36["AVX2"])]
    if capability in BEFORE_ISSUE_36:
        assert got == want
    else:  # a capability not recorded (e.g. AVX512) rounds its sums otherwise
        assert got == pytest.approx(want, rel=1e-6)


def test_two_temperatures_the_teachers_sharpens_its_rows_the_students_scales_the_kl():
    """Hand-computed: 2-d unit embeddings, batch only, the diagonal masked: each row keeps two columns."""
    net = FakeNet(widths=(2, 2, 2, 2))
    d = gird(net, net, weight_sim=1.0, layers="[4]", use_memory=False, use_evolution=False, temperature=0.5,
             teacher_temperature=0.1)
    c = 1 / math.sqrt(2)
    t, s = given([[1.0, 0.0], [0.0, 1.0], [c, c]]), given([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    got = d(s, t, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))["gird_sim"].item()
    # row 0 keeps columns t1, t2; row 1 t0, t2; row 2 t0, t1
    teacher_rows = [[0.0, c], [0.0, c], [c, c]]  # t_i · t_j
    student_rows = [[0.0, c], [1.0, c], [0.0, 1.0]]  # s_i · t_j
    want = 0.5 ** 2 * mean(kl(softmax(b, 0.1), softmax(a, 0.5)) for a, b in zip(student_rows, teacher_rows))
    assert got == pytest.approx(want, rel=1e-5)
    one = gird(net, net, weight_sim=1.0, layers="[4]", use_memory=False, use_evolution=False, temperature=0.5)
    want_one = 0.5 ** 2 * mean(kl(softmax(b, 0.5), softmax(a, 0.5)) for a, b in zip(student_rows, teacher_rows))
    assert one(s, t, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))["gird_sim"].item() == \
        pytest.approx(want_one, rel=1e-5)
    assert abs(want - want_one) > 0.01


def test_top_k_keeps_the_teachers_k_nearest_over_batch_and_memory_an_image_never_against_itself():
    """Hand-computed on unit vectors at angles: the memory holds images 0 (0°) and 1 (70°); the next batch repeats
    image 0 and adds 5 (30°) and 6 (100°); columns t0, t5, t6, m0, m1 at 0°, 30°, 100°, 0°, 70°."""
    net = FakeNet(widths=(2, 2, 2, 2))

    def run(**options):
        d = gird(net, net, weight_sim=1.0, layers="[4]", use_evolution=False, memory_size=8, temperature=0.5,
                 **options)
        first = given([unit(0), unit(70)])
        d(first, first, torch.tensor([0, 1]), torch.tensor([0, 1]))
        s, t = given([unit(20), unit(50), unit(80)]), given([unit(0), unit(30), unit(100)])
        return d(s, t, torch.tensor([0, 2, 3]), torch.tensor([0, 5, 6]))["gird_sim"].item()

    cos = [math.cos(math.radians(a)) for a in range(181)]
    # kept columns (an image's own masked) with the teacher's cosines; its top 2; the student's cosines to those
    # row 0 (0°; t0, m0 itself): t5 cos30, t6 cos100, m1 cos70 -> t5, m1; student at 20°: cos10, cos50
    # row 5 (30°; t5 itself): t0 cos30, t6 cos70, m0 cos30, m1 cos40 -> t0, m0; student at 50°: cos50, cos50
    # row 6 (100°; t6 itself): t0 cos100, t5 cos70, m0 cos100, m1 cos30 -> m1, t5; student at 80°: cos10, cos50
    rows = [([cos[10], cos[50]], [cos[30], cos[70]]), ([cos[50], cos[50]], [cos[30], cos[30]]),
            ([cos[10], cos[50]], [cos[30], cos[70]])]
    want = 0.25 * mean(kl(softmax(b, 0.5), softmax(a, 0.5)) for a, b in rows)
    assert run(top_k=2) == pytest.approx(want, rel=1e-5)
    # a k beyond a row's kept columns takes every kept one: the image against itself stays out
    every = run()
    assert run(top_k=4) == pytest.approx(every, rel=1e-6) and run(top_k=5) == pytest.approx(every, rel=1e-6)
    assert abs(every - want) > 1e-3


@pytest.mark.parametrize("weight, want", [(1.0, 2 / 3), (0.5, 3 / 4), (0.0, 1.0)])
def test_evolution_weighs_memory_columns_apart(weight, want):
    """Hand-computed: stage 3 (pooled) and the embedding, 2-d. The teacher's vectors are the same at both layers
    (its E is 0), the student's equal them at stage 3 and are swapped at the embedding. The memory holds image 0
    at (1, 0) and image 1 at (c, c); the batch is images 2 at (1, 0) and 3 at (0, 1): columns t2, t3, m0, m1.
    |E_s| row 2 = [itself, 1, 1, 0], row 3 = [1, itself, 1, 0]: the batch's two kept entries are 1, the memory's
    four are 1, 0, 1, 0, so the weighted mean is (2 + 2w) / (2 + 4w)."""
    net = FakeNet(widths=(2, 2, 2, 2))
    d = gird(net, net, weight_evo=1.0, loss="mse", layers="[3, 4]", stage_form="pooled", memory_size=8,
             evolution_memory_weight=weight)
    c = 1 / math.sqrt(2)
    first = given([[1.0, 0.0], [c, c]], stage=[[1.0, 0.0], [c, c]])
    d(first, first, torch.tensor([0, 1]), torch.tensor([0, 1]))
    t = given([[1.0, 0.0], [0.0, 1.0]], stage=[[1.0, 0.0], [0.0, 1.0]])
    s = given([[0.0, 1.0], [1.0, 0.0]], stage=[[1.0, 0.0], [0.0, 1.0]])
    assert d(s, t, torch.tensor([0, 1]), torch.tensor([2, 3]))["gird_evo"].item() == pytest.approx(want, rel=1e-6)


def test_the_memory_holds_only_the_teachers_features():
    student, teacher = same_size_pair()
    d = gird(student, teacher, memory_size=16)
    assert sorted(n for n, _ in d.named_buffers() if n.startswith("mem_")) == \
        ["mem_count", "mem_index", "mem_ptr", "mem_t2", "mem_t3", "mem_t4"]  # no student memory
    batches = [batch(seed=k) for k in (1, 2, 3)]
    for k, (x, y) in enumerate(batches):
        d(student(x), teacher(x), y, ids(k))
    # 24 samples into 16 slots: batch 2 in slots 0-7, batch 1 in 8-15; each slot the teacher's vector, exactly
    for i in (2, 3, 4):
        want = [d.vectors(student(batches[k][0]), teacher(batches[k][0]), i)[1] for k in (2, 1)]
        assert torch.equal(d.memory(f"mem_t{i}", want[0]), torch.cat(want))
    assert d.mem_index.tolist() == list(range(16, 24)) + list(range(8, 16))
    # another student on the same batches leaves the same memory
    other = gird(FakeNet(seed=7), teacher, memory_size=16)
    for k, (x, y) in enumerate(batches):
        other(FakeNet(seed=7)(x), teacher(x), y, ids(k))
    for name, buf in d.named_buffers():
        assert torch.equal(buf, dict(other.named_buffers())[name]), name


def test_memory_is_fifo_and_wraps():
    student, teacher = pair()  # the student's maps are half the teacher's H×W: the teacher's are pooled down (MKD)
    d = gird(student, teacher, memory_size=16, layers="[2, 4]")
    for k in (1, 2):
        x, y = batch(seed=k)
        d(student(x), teacher(x), y, ids(k))
        assert (int(d.mem_ptr), int(d.mem_count)) == ((8 * k) % 16, 8 * k)
    t = teacher(x).feats[2]
    assert student(x).feats[2].shape[-2:] == (2, 2) and t.shape[-2:] == (4, 4)
    # each 2×2 block of the teacher's map averaged, then the channel mean of its square, normalised
    want = [norm([sum(mean([ch[y][x], ch[y][x + 1], ch[y + 1][x], ch[y + 1][x + 1]]) ** 2 for ch in img) / len(img)
                  for y in (0, 2) for x in (0, 2)]) for img in t.tolist()]
    assert flat(lists(d.mem_t2[8:])) == pytest.approx(flat(want), abs=1e-5)  # batch 2's teacher maps
    x, y = batch(seed=3)
    d(student(x), teacher(x), y, ids(3))
    assert d.mem_index.tolist() == list(range(24, 32)) + list(range(16, 24))  # the oldest batch overwritten
    assert (int(d.mem_ptr), int(d.mem_count)) == (8, 16)


def test_memory_stores_no_graph():
    student, teacher = pair()
    d = gird(student, teacher, memory_size=32)
    images, targets = batch()
    for k in range(2):
        sum(d(student(images), teacher(images), targets, ids(k)).values()).backward()
    for name, buf in d.named_buffers():
        assert not buf.requires_grad and buf.grad_fn is None, name


@pytest.mark.parametrize("options", [{}, EARLIER, ISSUE_36], ids=["default", "earlier", "issue36"])
def test_memory_survives_a_checkpoint_round_trip(options):
    student, teacher = pair()
    d = gird(student, teacher, memory_size=16, **options)
    for k in (1, 2, 3):  # 24 samples into 16 slots: wrapped
        images, targets = batch(seed=k)
        d(student(images), teacher(images), targets, ids(k))
    blob = io.BytesIO()
    torch.save(d.state_dict(), blob)
    blob.seek(0)
    fresh = gird(student, teacher, memory_size=16, **options)
    fresh.load_state_dict(torch.load(blob, weights_only=True))
    assert list(d.state_dict()) == list(fresh.state_dict())
    for (name, a), b in zip(d.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert (int(fresh.mem_ptr), int(fresh.mem_count)) == (8, 16)
    images, targets = batch(seed=4)
    s, t = student(images), teacher(images)
    got, want = fresh(s, t, targets, ids(4)), d(s, t, targets, ids(4))
    for k in want:
        assert got[k].item() == pytest.approx(want[k].item(), rel=1e-6)


def test_earlier_reading_golden_two_batches_with_memory_and_evolution():
    student, teacher = pair()
    d = gird(student, teacher, weight_sim=2.0, weight_evo=3.0, memory_size=96, **EARLIER)
    layers = [1, 2, 3, 4]
    (x1, y1), (x2, y2) = batch(seed=1), batch(seed=2)
    s1, t1 = student(x1), teacher(x1)
    got1 = d(s1, t1, y1, ids(1))
    sim, evo = plain_gird(s1, t1, {}, {}, layers)  # first batch: the memory is still empty
    assert got1["gird_sim"].item() == pytest.approx(2.0 * sim, rel=1e-4)
    assert got1["gird_evo"].item() == pytest.approx(3.0 * evo, rel=1e-4)
    s2, t2 = student(x2), teacher(x2)
    got2 = d(s2, t2, y2, ids(2))
    s_mem = {i: features(s1, i) for i in layers}
    t_mem = {i: features(t1, i) for i in layers}
    sim, evo = plain_gird(s2, t2, s_mem, t_mem, layers)
    assert got2["gird_sim"].item() == pytest.approx(2.0 * sim, rel=1e-4)
    assert got2["gird_evo"].item() == pytest.approx(3.0 * evo, rel=1e-4)


def test_earlier_reading_golden_kl_on_chosen_layers_without_evolution():
    student, teacher = pair()
    d = gird(student, teacher, **{**EARLIER, "loss": "kl", "layers": "[0, 4]"}, weight_sim=1.0, temperature=0.5,
             use_evolution=False, embedding="bn_feat", memory_size=48)
    (x1, y1), (x2, y2) = batch(seed=3), batch(seed=4)
    s1, t1 = student(x1), teacher(x1)
    d(s1, t1, y1, ids(3))
    s2, t2 = student(x2), teacher(x2)
    got = d(s2, t2, y2, ids(4))
    assert set(got) == {"gird_sim"}

    def feats(out, i):
        return features(out, i, "bn_feat")

    s_mem, t_mem = {0: feats(s1, 0), 4: feats(s1, 4)}, {0: feats(t1, 0), 4: feats(t1, 4)}
    rows = []
    for i in (0, 4):
        r_s, r_t = relation(feats(s2, i), s_mem[i]), relation(feats(t2, i), t_mem[i])
        kls = [sum(p * (math.log(p) - math.log(q)) for p, q in zip(softmax(b, 0.5), softmax(a, 0.5)))
               for a, b in zip(r_s, r_t)]
        rows.append(0.25 * mean(kls))
    assert got["gird_sim"].item() == pytest.approx(mean(rows), rel=1e-4)


def test_earlier_reading_memory_off_equals_the_batch_only_relation_loss():
    student, teacher = pair()
    on = gird(student, teacher, weight_sim=1.0, memory_size=64, **EARLIER)
    off = gird(student, teacher, weight_sim=1.0, use_memory=False, **EARLIER)
    assert not [n for n, _ in off.named_buffers()]
    for seed in (1, 2, 3):
        images, targets = batch(seed=seed)
        s, t = student(images), teacher(images)
        batch_only = mean(
            mean((x - y) ** 2 for x, y in zip(flat(relation(features(s, i), [])), flat(relation(features(t, i), []))))
            for i in (1, 2, 3, 4))
        assert off(s, t, targets, ids(seed))["gird_sim"].item() == pytest.approx(batch_only, rel=1e-4)
        with_memory = on(s, t, targets, ids(seed))["gird_sim"].item()
        if seed == 1:  # nothing stored yet: the memory-on loss is the batch-only loss too
            assert with_memory == pytest.approx(batch_only, rel=1e-4)
        else:
            assert with_memory != pytest.approx(batch_only, rel=1e-3)


def test_bad_layers_are_rejected():
    student, teacher = pair()
    with pytest.raises(ConfigError, match="layer indices"):
        make("gird", student, teacher, layers="[1, 5]")
    with pytest.raises(ConfigError, match=r"distill.gird.layers.*more than once"):
        make("gird", student, teacher, layers="[2, 2, 4]")


def test_layers_naming_one_feature_twice_are_rejected():
    student, teacher = pair()
    s, t = student(batch()[0]), teacher(batch()[0])
    # what the check guards against: the pooled last stage is global_feat itself
    assert torch.equal(s.feats[3].mean(dim=(2, 3)), s.global_feat)
    with pytest.raises(ConfigError, match=r"layers 3 and 4 are the same feature.*global_feat"):
        make("gird", student, teacher, layers="[1, 2, 3, 4]", embedding="global_feat")
    make("gird", student, teacher, layers="[1, 2, 3, 4]", embedding="bn_feat")  # a BN neck: distinct
    make("gird", student, teacher, layers="[1, 2, 4]", embedding="global_feat")  # no stage 3: distinct
    no_neck = FakeNet(seed=4)
    no_neck.neck = torch.nn.Identity()  # bn_feat is then global_feat
    with pytest.raises(ConfigError, match="without a BN neck"):
        make("gird", no_neck, teacher, layers="[3, 4]", embedding="bn_feat")
    with pytest.raises(ConfigError, match="distill.irg.edge_layers"):  # IRG's edge layers share the check
        make("irg", student, teacher, edge_layers="[3, 4]")


@pytest.mark.slow
def test_a_bad_layer_list_stops_reidkd_run_before_any_training(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    overrides += [f"experiment.output_dir={tmp_path}", "distill.gird.embedding=global_feat"]
    args = [a for o in overrides for a in ("--set", o)]
    result = reidkd("run", "--config", "configs/synth_gird.yaml", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "distill.gird.layers" in result.stderr and "same feature" in result.stderr
    assert not (tmp_path / "teachers").exists()  # stopped before the teacher trained


@pytest.mark.slow
def test_synth_gird_config_distills_and_evaluates_end_to_end(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    overrides.append(f"experiment.output_dir={tmp_path}")
    args = [a for o in overrides + ["distill.gird.memory_size=16"] for a in ("--set", o)]
    result = reidkd("run", "--config", "configs/synth_gird.yaml", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "synth_distill" / "gird" / "seed0"
    record = json.loads((run / "metrics.json").read_text())
    assert record["method"] == "gird" and 0.0 <= record["mAP"] <= 1.0 and 0.0 <= record["rank1"] <= 1.0
    assert "| student (gird)" in result.stdout
    log = (run / "log.csv").read_text()
    assert "gird_sim" in log and "gird_evo" in log
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["distiller"]
    assert int(state["mem_count"]) == 16 and state["mem_t4"].shape[0] == 16 and "mem_s4" not in state


def diagnostic():
    """benchmarks/gird_memory.py as a module."""
    spec = importlib.util.spec_from_file_location("gird_memory", ROOT / "benchmarks" / "gird_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_memory_diagnostic_reads_a_trained_run(tiny_overrides, tmp_path, one_thread, capsys):
    gm, cpu = diagnostic(), torch.device("cpu")
    overrides = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    overrides += [f"experiment.output_dir={tmp_path}", "distill.gird.memory_size=16"]
    folders = {}
    for memory in (True, False):  # one cached teacher for both
        cfg = load_config(ROOT / "configs/synth_gird.yaml",
                          overrides + [f"distill.gird.use_memory={memory}", f"experiment.run_name=memory_{memory}"])
        run_experiment(cfg)
        folders[memory] = run_dir(cfg)
        _, loaders, student, teacher, d = gm.load_run(folders[memory], cpu)
        assert d.use_memory == memory and (not memory or int(d.mem_count) == 16)  # the memory training left
        rows = gm.measure(d, student, teacher, loaders.train, train_targets(loaders), 3, cpu)
        assert sorted(rows) == [2, 3, 4]
        for layer, row in rows.items():
            assert all(0.0 <= row[k] <= 1.0 for k in gm.COLUMNS), (layer, row)
            assert row["memory_same"] + row["memory_other"] <= 1.0 + 1e-6
            assert sum(row[k] for k in gm.COLUMNS if k != "memory_share") == pytest.approx(1.0, abs=1e-5)
            if memory:  # 16 stored images, none of them the batch's: some of the student's gradient comes from them
                assert 0.0 < row["memory_share"] < 1.0 and row["memory_same"] + row["memory_other"] > 0.0
            else:
                assert row["memory_share"] == row["memory_same"] == row["memory_other"] == 0.0
    capsys.readouterr()
    gm.main([str(folders[True]), "--batches", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert "16/16 slots filled" in lines[0] and lines[1].split()[1:] == list(gm.COLUMNS) and len(lines) == 5
    gm.main([str(folders[True]), "--batches", "2", "--set", "distill.gird.teacher_temperature=0.01",
             "--set", "distill.gird.top_k=4"])
    header = capsys.readouterr().out.splitlines()[0]
    assert "teacher T 0.01, top_k 4" in header and "read under distill.gird.teacher_temperature=0.01" in header
    _, loaders, student, teacher, sharp = gm.load_run(folders[True], cpu, ("distill.gird.teacher_temperature=0.01",
                                                                           "distill.gird.top_k=4"))
    rows = gm.measure(sharp, student, teacher, loaders.train, train_targets(loaders), 2, cpu)
    assert all(sum(row[k] for k in gm.COLUMNS if k != "memory_share") == pytest.approx(1.0, abs=1e-5)
               for row in rows.values())
    with pytest.raises(SystemExit) as stopped:
        gm.main([str(folders[True]), "--set", "distill.gird.memory_size=8"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and "change what it trained" in err
    with pytest.raises(SystemExit) as stopped:
        gm.main([str(tmp_path)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and "config.yaml is missing" in err
