"""GIRD: the FIFO memory, relations against it, evolution, ablations, resume, and an end-to-end run."""
from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import FakeNet, batch, dot, flat, lists, make, mean, norm, pair, pooled, softmax
from reid_kd.distill.gird import GIRD
from reid_kd.engine.configs import load_config
from reid_kd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def features(out, i, embedding="bn_feat"):
    """Plain pooled (stage) or embedding vectors, L2-normalised, as lists."""
    raw = lists(getattr(out, embedding)) if i == 4 else pooled(out.feats[i])
    return [norm(v) for v in raw]


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


def test_defaults_are_distinct_layers_and_a_memory_below_one_epoch():
    assert GIRD.options["layers"].default == [1, 2, 3, 4] and GIRD.options["embedding"].default == "bn_feat"
    assert GIRD.options["memory_size"].default == 1024 and GIRD.options["loss"].default == "mse"
    synth = load_config("configs/synth_gird.yaml")
    spec = synth["data"]["synth"]
    assert synth["distill"]["gird"]["memory_size"] < spec["train_ids"] * spec["images_per_id"]  # 1024 < 1500
    veri = load_config("configs/veri_gird.yaml")
    assert veri["distill"]["gird"]["memory_size"] == 24000 < 37778  # VeRi-776's training images
    assert (veri["teacher"]["backbone"], veri["model"]["backbone"]) == ("resnet101", "resnet18")
    assert (veri["data"]["height"], veri["data"]["width"]) == (256, 256)


def test_golden_two_batches_with_memory_and_evolution():
    student, teacher = pair()
    d = make("gird", student, teacher, weight_sim=2.0, weight_evo=3.0, memory_size=100)
    layers = [1, 2, 3, 4]
    (x1, y1), (x2, y2) = batch(seed=1), batch(seed=2)
    s1, t1 = student(x1), teacher(x1)
    got1 = d(s1, t1, y1)
    sim, evo = plain_gird(s1, t1, {}, {}, layers)  # first batch: the memory is still empty
    assert got1["gird_sim"].item() == pytest.approx(2.0 * sim, rel=1e-4)
    assert got1["gird_evo"].item() == pytest.approx(3.0 * evo, rel=1e-4)
    s2, t2 = student(x2), teacher(x2)
    got2 = d(s2, t2, y2)
    s_mem = {i: features(s1, i) for i in layers}
    t_mem = {i: features(t1, i) for i in layers}
    sim, evo = plain_gird(s2, t2, s_mem, t_mem, layers)
    assert got2["gird_sim"].item() == pytest.approx(2.0 * sim, rel=1e-4)
    assert got2["gird_evo"].item() == pytest.approx(3.0 * evo, rel=1e-4)


def test_golden_kl_on_chosen_layers_without_evolution():
    student, teacher = pair()
    d = make("gird", student, teacher, weight_sim=1.0, loss="kl", temperature=0.5, use_evolution=False, layers="[0, 4]",
             embedding="bn_feat", memory_size=50)
    (x1, y1), (x2, y2) = batch(seed=3), batch(seed=4)
    s1, t1 = student(x1), teacher(x1)
    d(s1, t1, y1)
    s2, t2 = student(x2), teacher(x2)
    got = d(s2, t2, y2)
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


def test_memory_off_equals_the_batch_only_relation_loss():
    student, teacher = pair()
    on = make("gird", student, teacher, weight_sim=1.0, memory_size=64)
    off = make("gird", student, teacher, weight_sim=1.0, use_memory=False)
    assert not [n for n, _ in off.named_buffers()]
    for seed in (1, 2, 3):
        images, targets = batch(seed=seed)
        s, t = student(images), teacher(images)
        batch_only = mean(
            mean((x - y) ** 2 for x, y in zip(flat(relation(features(s, i), [])), flat(relation(features(t, i), []))))
            for i in (1, 2, 3, 4))
        assert off(s, t, targets)["gird_sim"].item() == pytest.approx(batch_only, rel=1e-4)
        with_memory = on(s, t, targets)["gird_sim"].item()
        if seed == 1:  # nothing stored yet: the memory-on loss is the batch-only loss too
            assert with_memory == pytest.approx(batch_only, rel=1e-4)
        else:
            assert with_memory != pytest.approx(batch_only, rel=1e-3)


def test_memory_is_fifo_and_wraps():
    student, teacher = pair()
    d = make("gird", student, teacher, memory_size=5, layers="[3, 4]")
    (x1, _), (x2, _) = batch(seed=1), batch(seed=2)
    y1, y2 = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.tensor([4, 4, 5, 5, 6, 6, 7, 7])
    # batches of 4 into 5 slots
    s1, t1 = student(x1[:4]), teacher(x1[:4])
    d(s1, t1, y1[:4])
    assert (int(d.mem_ptr), int(d.mem_count)) == (4, 4)
    assert d.mem_labels.tolist() == [0, 0, 1, 1, -1]
    assert flat(lists(d.memory(4)[0])) == pytest.approx(flat(features(s1, 4)), abs=1e-5)
    assert flat(lists(d.memory(3)[1])) == pytest.approx(flat(features(t1, 3)), abs=1e-5)
    s2, t2 = student(x2[:4]), teacher(x2[:4])
    d(s2, t2, y2[:4])
    assert (int(d.mem_ptr), int(d.mem_count)) == (3, 5)
    assert d.mem_labels.tolist() == [4, 5, 5, 1, 4]  # slot 4, then wrapped to 0, 1, 2; slot 3 is the oldest
    want = [features(s2, 4)[1], features(s2, 4)[2], features(s2, 4)[3], features(s1, 4)[3], features(s2, 4)[0]]
    assert flat(lists(d.mem_s4)) == pytest.approx(flat(want), abs=1e-5)
    # a batch larger than the memory keeps its newest samples
    s3, t3 = student(x1), teacher(x1)
    d(s3, t3, y1)
    assert d.mem_labels.tolist() == [2, 3, 3, 1, 2]  # y1[3:] into slots 3, 4, 0, 1, 2
    assert (int(d.mem_ptr), int(d.mem_count)) == (3, 5)


def test_memory_stores_no_graph():
    student, teacher = pair()
    d = make("gird", student, teacher, memory_size=32)
    images, targets = batch()
    for _ in range(2):
        sum(d(student(images), teacher(images), targets).values()).backward()
    for name, buf in d.named_buffers():
        assert not buf.requires_grad and buf.grad_fn is None, name
    assert d.extra_parameters() == []


def test_memory_survives_a_checkpoint_round_trip():
    student, teacher = pair()
    d = make("gird", student, teacher, memory_size=12)
    for seed in (1, 2):  # 16 samples into 12 slots: wrapped
        images, targets = batch(seed=seed)
        d(student(images), teacher(images), targets)
    blob = io.BytesIO()
    torch.save(d.state_dict(), blob)
    blob.seek(0)
    fresh = make("gird", student, teacher, memory_size=12)
    fresh.load_state_dict(torch.load(blob, weights_only=True))
    for (name, a), b in zip(d.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert (int(fresh.mem_ptr), int(fresh.mem_count)) == (4, 12)
    images, targets = batch(seed=3)
    s, t = student(images), teacher(images)
    got, want = fresh(s, t, targets), d(s, t, targets)
    for k in want:
        assert got[k].item() == pytest.approx(want[k].item(), rel=1e-6)


def test_cross_memory_relates_the_student_to_the_teacher_memory():
    student, teacher = pair()  # widths differ at every layer: one projection per layer
    d = make("gird", student, teacher, weight_sim=1.0, cross_memory=True, memory_size=40, layers="[2, 4]",
             use_evolution=False)
    assert sorted(d.proj) == ["2", "4"] and len(d.extra_parameters()) == 2
    (x1, y1), (x2, y2) = batch(seed=1), batch(seed=2)
    s1, t1 = student(x1), teacher(x1)
    d(s1, t1, y1)
    s2, t2 = student(x2), teacher(x2)
    got = d(s2, t2, y2)["gird_sim"]
    sims = []
    for i in (2, 4):
        fs, ft = features(s2, i), features(t2, i)
        w = lists(d.proj[str(i)].weight)
        projected = [norm([dot(row, v) for row in w]) for v in fs]
        r_s = [[dot(a, b) for b in fs] + [dot(p, m) for m in features(t1, i)] for a, p in zip(fs, projected)]
        r_t = relation(ft, features(t1, i))
        sims.append(mean((x - y) ** 2 for x, y in zip(flat(r_s), flat(r_t))))
    assert got.item() == pytest.approx(mean(sims), rel=1e-4)
    got.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.extra_parameters())
    same = FakeNet()
    assert len(make("gird", same, FakeNet(seed=5), cross_memory=True).proj) == 0  # equal widths: no projection


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
    result = subprocess.run([sys.executable, "-m", "reid_kd.cli", "run", "--config", "configs/synth_gird.yaml", *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "distill.gird.layers" in result.stderr and "same feature" in result.stderr
    assert not (tmp_path / "teachers").exists()  # stopped before the teacher trained


@pytest.mark.slow
def test_synth_gird_config_distills_and_evaluates_end_to_end(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    overrides.append(f"experiment.output_dir={tmp_path}")
    args = [a for o in overrides + ["distill.gird.memory_size=16"] for a in ("--set", o)]
    result = subprocess.run([sys.executable, "-m", "reid_kd.cli", "run", "--config", "configs/synth_gird.yaml", *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "synth_distill" / "gird" / "seed0"
    record = json.loads((run / "metrics.json").read_text())
    assert record["method"] == "gird" and 0.0 <= record["mAP"] <= 1.0 and 0.0 <= record["rank1"] <= 1.0
    assert "| student (gird)" in result.stdout
    log = (run / "log.csv").read_text()
    assert "gird_sim" in log and "gird_evo" in log
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["distiller"]
    assert int(state["mem_count"]) == 16 and state["mem_s4"].shape[0] == 16
