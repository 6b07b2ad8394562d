"""The asymmetric-retrieval methods CSD, RAML, ROP, D3still and UGD: golden values from the reference code,
their value at the teacher's output, and the refusal of retrieval features of different widths.

Golden values: AIR-Distiller's own loss functions (SCY-X/D3still, AIR_Distiller/distillers/CSD.py `csd_loss`,
RAML.py `SecondOrderLoss`, ROP.py `rank_order_preservation`, D3.py `d3_loss`, UGD.py `UGD.ugd_loss`, at commit
b9801b9a8937575fc27a0c487dc0d2dad49213eb), run unchanged on CPU (only `.cuda()` removed and the base class's
import replaced by a stand-in) on the inputs `features()` and `ugd_inputs()` build here, in float32 as its
trainer feeds them; printed to 10 significant digits. It computes the similarities in float64, we in float32:
hence the relative tolerance of 1e-5. Its `.py` functions exclude its KD_WEIGHT, so the weights here are 1 or
its α, β, γ.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import assert_one_line, cli, make
from reid_kd.distill.catalog import DISTILLERS
from reid_kd.errors import ConfigError
from reid_kd.models.reid_model import ModelOutput

METHODS = ["csd", "d3still", "raml", "rop", "ugd"]


class Widths(nn.Module):
    """A network's widths alone (no forward): what the methods read when they are built."""

    def __init__(self, dim=16, widths=(2, 4, 6, 8)):
        super().__init__()
        self.feat_dim, self.widths = dim, widths


class ClassBlockTeacher(Widths):
    """A teacher whose head is AIR-Distiller's ClassBlock (models/utils/class_block.py): BN-ReLU-Linear-BN, then
    a bias-free classifier; its keys are ClassBlock's, so `fill` gives it the reference run's values."""

    def __init__(self, c, classes, dim):
        super().__init__(dim, (1, 1, 1, c))
        self.add_block = nn.Sequential(nn.BatchNorm1d(c), nn.ReLU(), nn.Linear(c, dim, bias=False), nn.BatchNorm1d(dim))
        self.classifier = nn.Linear(dim, classes, bias=False)

    def head(self, x):
        f = self.add_block(x)
        return f, self.classifier(f)


def fill(module, seed):
    """Every floating entry of the state dict, in sorted key order, from one seeded stream (as the golden run)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, v in sorted(module.state_dict().items()):
            if not v.is_floating_point():
                continue
            if key.endswith("running_var") or (v.dim() == 1 and key.endswith("weight")):
                v.copy_(0.5 + torch.rand(v.shape, generator=g))
            else:
                v.copy_(torch.randn(v.shape, generator=g) * 0.5)


def out(bn, feats=()):
    return ModelOutput(list(feats), bn, bn, None)


def features():
    """A P×K-like batch: 4 identities × 3 images of 16-d teacher features, the student's a noisy copy."""
    torch.manual_seed(0)
    centres = torch.randn(4, 16)
    t = centres.repeat_interleave(3, 0) + 0.5 * torch.randn(12, 16)
    s = t + 0.8 * torch.randn(12, 16)
    return s, t


def terms(method, s, t, **options):
    d = make(method, Widths(s.shape[1]), Widths(t.shape[1]), **options)
    return {k: v.item() for k, v in d(out(s), out(t), torch.zeros(len(s), dtype=torch.long)).items()}


# ---------------------------------------------------------------------------------------- golden values

def test_golden_csd():
    s, t = features()
    # top_k 256 > the batch of 12: every column, as csd_loss(s, t, 256, 1, 0.01) (its sort keeps 12)
    assert terms("csd", s, t, weight=1.0)["csd"] == pytest.approx(1.929862011, rel=1e-5)
    got = terms("csd", s, t, weight=1.0, top_k=5, student_temperature=0.5, teacher_temperature=0.05)
    assert got["csd"] == pytest.approx(0.7577352463, rel=1e-5)  # csd_loss(s, t, 5, 0.5, 0.05)
    assert terms("csd", s, t, weight=3.0, top_k=5, student_temperature=0.5,
                 teacher_temperature=0.05)["csd"] == pytest.approx(3 * 0.7577352463, rel=1e-5)


def test_golden_raml():
    s, t = features()
    got = terms("raml", s, t, weight=1.0)
    # SecondOrderLoss(λ1, λ2)(s, t) with λ1 = 0.7482, λ2 = 0.6778, and with either or both at 0
    absolute, with_ts, with_ss, whole = 0.04443066195, 0.06647165865, 0.0804374367, 0.1024784371
    assert got["raml_abs"] == pytest.approx(absolute, rel=1e-5)
    assert got["raml_ts"] == pytest.approx(with_ts - absolute, rel=1e-5)
    assert got["raml_ss"] == pytest.approx(with_ss - absolute, rel=1e-5)
    assert sum(got.values()) == pytest.approx(whole, rel=1e-5)
    assert set(terms("raml", s, t, lambda_ss=0.0)) == {"raml_abs", "raml_ts"}  # a term at 0 is left out


def test_golden_rop():
    s, t = features()
    # top_k 256 capped at the batch: rank_order_preservation(s, t, 12, 0.1, 0.2)
    assert terms("rop", s, t, weight=1.0)["rop"] == pytest.approx(0.585586903, rel=1e-5)
    got = terms("rop", s, t, weight=1.0, top_k=6, temperature=0.05, rank_weight=1.0)["rop"]
    assert got == pytest.approx(0.3264081936, rel=1e-5)  # rank_order_preservation(s, t, 6, 0.05, 1.0)


def test_golden_d3still():
    s, t = features()
    got = terms("d3still", s, t)  # d3_loss(s, t, 10, α, β, γ) with two of α = 50, β = 2, γ = 1 at 0
    assert got["d3still_top1"] == pytest.approx(3.042418161, rel=1e-5)
    assert got["d3still_hard"] == pytest.approx(0.8284025373, rel=1e-5)
    assert got["d3still_simple"] == pytest.approx(0.4716743707, rel=1e-5)
    assert sum(got.values()) == pytest.approx(4.342495069, rel=1e-5)  # d3_loss(s, t, 10, 50, 2, 1)
    small = terms("d3still", s, t, top_k=4, weight_top1=1.0, weight_hard=1.0, weight_simple=1.0)
    assert sum(small.values()) == pytest.approx(0.4576265105, rel=1e-5)  # d3_loss(s, t, 4, 1, 1, 1)
    assert small["d3still_hard"] == pytest.approx(0.1927662297, rel=1e-5)  # d3_loss(s, t, 4, 0, 1, 0)


def ugd_inputs():
    """Student map 6×4×2 (its distilled stage), teacher's last map 8×8×4, 16-d retrieval features, 3 classes."""
    torch.manual_seed(0)
    s_map, t_map = torch.randn(6, 6, 4, 2), torch.randn(6, 8, 8, 4)
    s_bn, t_bn = torch.randn(6, 16), torch.randn(6, 16)
    return s_map, t_map, s_bn, t_bn, torch.tensor([0, 0, 1, 1, 2, 2])


def test_golden_ugd():
    s_map, t_map, s_bn, t_bn, targets = ugd_inputs()
    teacher = ClassBlockTeacher(8, 3, 16)
    fill(teacher, 1)
    teacher.train()  # UGD runs the teacher's head in eval mode whatever its mode, and leaves it as it was
    before = teacher.add_block[0].running_mean.clone()
    d = make("ugd", Widths(16, (2, 4, 6, 8)), teacher)
    fill(d.projector, 2)
    fill(d.projector_half, 3)
    blank = torch.zeros(6, 1, 1, 1)
    got = d(ModelOutput([blank, blank, s_map, blank], s_bn, s_bn, None),
            ModelOutput([blank, blank, blank, t_map], t_bn, t_bn, None), targets)
    # UGD.ugd_loss with teacher.fc that ClassBlock, pooling (4, 4) and (2, 2), DISTILLATION_LAYER 3;
    # its teacher's classifier gets 28 of the 96 cells of 4×4 right and 10 of the 24 of 2×2
    assert got["ugd_global"].item() == pytest.approx(1.419736505, rel=1e-5)  # α = 1, β = 0
    assert got["ugd_local"].item() == pytest.approx(5.318676949, rel=1e-5)  # α = 0, β = 2
    assert teacher.training and torch.equal(teacher.add_block[0].running_mean, before)


# -------------------------------------------------------------------------------- at the teacher's output

def test_zero_or_minimum_at_the_teachers_output():
    _, t = features()
    assert all(v == pytest.approx(0.0, abs=1e-7) for v in terms("d3still", t, t).values())
    assert all(v == pytest.approx(0.0, abs=1e-7) for v in terms("raml", t, t, eps=0.0).values())
    # RAML's ε inside the square: weight · ε² · (1 + λ_ts + λ_ss) at the teacher's output
    assert sum(terms("raml", t, t, eps=1e-3).values()) == pytest.approx(5 * 1e-6 * (1 + 0.7482 + 0.6778), rel=1e-3)
    # CSD: the student's softer temperature leaves KL(softmax(t/0.01) ‖ softmax(t/1)) at the teacher's output;
    # at one temperature, 0
    sims = F.normalize(t, dim=1) @ F.normalize(t, dim=1).t()
    gap = F.kl_div(F.log_softmax(sims, 1), F.softmax(sims / 0.01, 1), reduction="batchmean").item()
    assert terms("csd", t, t, weight=1.0)["csd"] == pytest.approx(gap, rel=1e-5)
    assert terms("csd", t, t, teacher_temperature=1.0)["csd"] == pytest.approx(0.0, abs=1e-6)
    # ROP: the student's sigmoid against the teacher's step is not 0 at the teacher's output; at its 1e-6, 0
    assert terms("rop", t, t)["rop"] > 1e-3
    assert terms("rop", t, t, temperature=1e-6)["rop"] == pytest.approx(0.0, abs=1e-7)


def test_ugd_global_term_zero_at_the_teacher_and_local_zero_without_a_right_cell():
    s_map, t_map, _, t_bn, targets = ugd_inputs()
    teacher = ClassBlockTeacher(8, 3, 16)
    fill(teacher, 1)
    d = make("ugd", Widths(16, (2, 4, 6, 8)), teacher)
    blank = torch.zeros(6, 1, 1, 1)
    s = ModelOutput([blank, blank, s_map, blank], t_bn, t_bn, None)
    t = ModelOutput([blank, blank, blank, t_map], t_bn, t_bn, None)
    assert d(s, t, targets)["ugd_global"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        teacher.classifier.weight.zero_()  # every logit 0: the argmax is class 0, never the targets' 2
    got = d(s, t, torch.full((6,), 2))["ugd_local"]
    assert got.item() == 0.0
    got.backward()  # no NaN from an empty mean
    assert all(torch.isfinite(p.grad).all() for p in d.extra_parameters())


# ------------------------------------------------------------------------------------------------- widths

@pytest.mark.parametrize("method", METHODS)
def test_retrieval_features_of_different_widths_are_refused_in_one_line(method):
    with pytest.raises(ConfigError) as error:
        make(method, Widths(576), ClassBlockTeacher(8, 3, 512))
    message = str(error.value)
    assert "\n" not in message and message.startswith(method + " ") and "576-d and 512-d" in message
    assert "model.embedding_dim" in message and "teacher.embedding_dim" in message


@pytest.mark.parametrize("method", ["csd", "d3still", "raml", "rop"])
def test_widths_unknown_when_built_are_refused_at_the_first_call(method):
    s, t = features()
    d = make(method, nn.Module(), nn.Module())
    with pytest.raises(ConfigError, match=f"^{method} .*16-d and 8-d.*model.embedding_dim"):
        d(out(s), out(t[:, :8]), torch.zeros(12, dtype=torch.long))


def test_the_command_line_refuses_different_widths_in_one_line(tiny_overrides):
    # the tiny config: a MobileNetV3-Small student (576-d) behind a ResNet-18 teacher (512-d); stops before training
    overrides = [*tiny_overrides, "experiment.name=widths", "distill.method=d3still"]
    result = cli("run", "--config", "configs/quickstart.yaml", *[a for o in overrides for a in ("--set", o)])
    assert_one_line(result, "d3still", "576-d and 512-d", "model.embedding_dim", "teacher.embedding_dim")


def test_methods_are_listed():
    result = cli("methods")
    assert result.exit_code == 0
    for method in METHODS:
        line = next(line for line in result.stdout.splitlines() if line.startswith(method + " "))
        assert DISTILLERS[method].description in line
    assert "AIR-Distiller MSMT17 config D3.yaml and config/defaults.py (TOPK 10)" in result.stdout
