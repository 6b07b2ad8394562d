"""`experiment.amp` on CPU: bfloat16 autocast for the networks, float32 for every loss; a few steps of a
relation method and a logit method stay finite and close to float32 training."""
from __future__ import annotations

import pytest
import torch

from reid_kd.distill.base import build_distiller
from reid_kd.engine.configs import load_config
from reid_kd.engine.runtime import autocast, slow_bfloat16
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.member import Member
from reid_kd.engine.run_folder import RunFolder
from reid_kd.models.reid_model import ReIDModel

CPU = torch.device("cpu")


def trainer(method: str, amp: bool, folder) -> tuple[Member, Cohort]:
    cfg = load_config(None, [f"distill.method={method}", "train.optimizer=sgd", "train.lr=0.01"])
    torch.manual_seed(0)
    student, teacher = ReIDModel("resnet18", 4), ReIDModel("resnet18", 4)
    distiller = build_distiller(cfg["distill"], student, teacher)
    cohort = Cohort([None], CPU, teacher=teacher, amp=amp)
    return cohort.add(student, cfg["train"], RunFolder(folder), distiller=distiller, hooks=[]), cohort


@pytest.mark.parametrize("method", ["rkd", "kd"])
def test_amp_on_cpu_trains_with_losses_close_to_float32(method, tmp_path):
    """Steps with AMP; before each, a float32 twin takes the same weights and batch: their losses agree
    (training itself is chaotic on 8 random images, so the trajectories are compared step by step; a
    bfloat16 forward through a ResNet-18 moves them by a few per cent)."""
    (mixed, cohort), (full, _) = trainer(method, True, tmp_path / "amp"), trainer(method, False, tmp_path / "fp32")
    generator = torch.Generator().manual_seed(1)
    targets = torch.arange(4).repeat_interleave(2)
    for step in range(4):
        images = torch.randn(8, 3, 64, 32, generator=generator)
        full.model.load_state_dict(mixed.model.state_dict())
        full.optimizer.load_state_dict(mixed.optimizer.state_dict())
        terms = {}
        for run in (mixed, full):
            with torch.no_grad(), autocast(CPU, run.amp):
                teacher_out = cohort.teacher(images)
            terms[run.amp] = run.train_step(images, targets, torch.arange(8), teacher_out)[0]
        assert any(method in k for k in terms[False])  # the method's own terms are among those compared
        for key, value in terms[False].items():
            assert torch.isfinite(torch.tensor(terms[True][key])), (step, key, terms)
            assert terms[True][key] == pytest.approx(value, rel=0.1, abs=2e-3), (step, key, terms)


def test_distillers_compute_in_float32_under_autocast():
    torch.manual_seed(0)
    student, teacher = ReIDModel("resnet18", 4), ReIDModel("resnet18", 4).eval()
    images = torch.randn(8, 3, 64, 32)
    for method in ("rkd", "kd", "at"):
        distiller = build_distiller(load_config(None, [f"distill.method={method}"])["distill"], student, teacher)
        with autocast(CPU, True):
            s, t = student(images), teacher(images)
            assert s.global_feat.dtype == torch.bfloat16  # the network runs in mixed precision
            terms = distiller(s, t, torch.arange(4).repeat_interleave(2))
        assert all(v.dtype == torch.float32 for v in terms.values()), (method, terms)


@pytest.mark.parametrize("sets, fixes", [
    (["teacher.forward_dtype=bfloat16"], ["teacher.forward_dtype=float32"]),
    (["experiment.amp=true"], ["experiment.amp=false"]),
    (["experiment.amp=true", "teacher.forward_dtype=bfloat16"], ["teacher.forward_dtype=float32", "experiment.amp=false"]),
])
def test_bfloat16_on_a_cpu_without_it_is_warned_with_the_settings_that_avoid_it(sets, fixes):
    cfg = load_config(None, sets)
    warning = slow_bfloat16(cfg, CPU, native=False)
    assert warning is not None and all(fix in warning for fix in fixes)
    assert slow_bfloat16(cfg, CPU, native=True) is None  # AVX-512 BF16 or AMX: bfloat16 is the fast column there
    assert slow_bfloat16(cfg, torch.device("cuda"), native=False) is None
    assert slow_bfloat16(load_config(None, ["teacher.forward_dtype=float32"]), CPU, native=False) is None
