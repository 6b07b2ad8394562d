"""No method is inert and none drowns the re-ID losses at its defaults.

A teacher and a student are trained a few epochs on small synthetic vehicles with the quickstart's
student and P×K batch; then, on one batch, the gradient norm that each method's terms send into the
student's backbone must lie within [0.05, 20] × that of the ID + triplet loss.
"""
from __future__ import annotations

import pytest
import torch

from reid_kd.distill.base import build_distiller
from reid_kd.distill.catalog import DISTILLERS
from reid_kd.distill.strength import gradient_ratio
from reid_kd.engine.configs import load_config

pytestmark = pytest.mark.slow  # the gradient window: a teacher and a student trained for several epochs

LOW, HIGH = 0.05, 20.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(teacher, students, loaders, cfg): the quickstart's student and P×K batch at 64×64, its 150
    identities with 4 images each, after 4 epochs (36 steps) behind a ResNet-18 teacher of 8 epochs.
    `students`: the plain one, and one with a retrieval head of the teacher's width (512) for the methods
    that compare the two networks' retrieval vectors directly."""
    from reid_kd.data.image_dataset import build_loaders
    from reid_kd.engine.cohort import Cohort
    from reid_kd.engine.run_folder import RunFolder
    from reid_kd.models.reid_model import build_model

    data = tmp_path_factory.mktemp("window_data")
    cfg = load_config("configs/quickstart.yaml", [
        f"data.root={data}", "data.synth.test_ids=4", "data.synth.images_per_id=4", "teacher.backbone=resnet18",
        "teacher.train.epochs=8", "train.epochs=4"])
    loaders = build_loaders(cfg["data"], seed=0)
    n = loaders.dataset.num_train_pids
    torch.manual_seed(0)
    teacher, student = build_model(cfg["teacher"], n), build_model(cfg["model"], n)
    torch.manual_seed(0)
    headed = build_model({**cfg["model"], "embedding_dim": teacher.retrieval_dim}, n)
    out = tmp_path_factory.mktemp("window_runs")
    cpu = torch.device("cpu")
    for model, train_cfg, name in ((teacher, cfg["teacher"]["train"], "teacher"), (student, cfg["train"], "student"),
                                   (headed, cfg["train"], "headed")):
        cohort = Cohort(loaders.train, cpu)
        cohort.add(model, train_cfg, RunFolder(out / name))
        cohort.fit()
    return teacher.eval(), {False: student.train(), True: headed.train()}, loaders, cfg


def ratio(method: str, trained, **options) -> float:
    """The method's gradient ratio on the 4th batch, after 3 batches have filled any memory."""
    from reid_kd.data.image_dataset import train_targets

    teacher, students, loaders, cfg = trained
    student = students[DISTILLERS.load(method).same_width]
    c = load_config(None, [f"distill.method={method}"] + [f"distill.{method}.{k}={v}" for k, v in options.items()])
    torch.manual_seed(1)
    distiller = build_distiller(c["distill"], student, teacher, train_targets(loaders))
    batches = [b for _, b in zip(range(4), (b for _ in range(4) for b in loaders.train))]
    for images, targets, _, indices in batches[:3]:
        with torch.no_grad():
            distiller(student(images), teacher(images), targets, indices)
    images, targets, _, indices = batches[3]
    return gradient_ratio(distiller, student, teacher, images, targets, indices, cfg["train"])


@pytest.mark.parametrize("method", sorted(DISTILLERS))
def test_every_method_acts_and_none_dominates_at_its_defaults(method, trained):
    assert LOW <= ratio(method, trained) <= HIGH


def test_the_window_catches_an_inert_weight(trained):
    """CC at 0.02 (RepDistiller's β for another CC loss, our old default) is a baseline run."""
    assert ratio("cc", trained, weight=0.02) < LOW

