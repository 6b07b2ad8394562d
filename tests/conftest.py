"""Shared fixtures: tiny images written in the real on-disk layouts."""
from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import STAND_INS

from reid_kd.engine.configs import load_config
from reid_kd.models import weights
from reid_kd.models.checkpoint import save_model
from reid_kd.models.reid_model import build_model
from reid_kd.utils.logs import ROOT, setup_logging


def write_jpeg(path: Path, seed: int = 0, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def jpeg():
    return write_jpeg


@pytest.fixture(scope="session")
def tiny_overrides(tmp_path_factory) -> list[str]:
    """A run small enough for a test: tiny synthetic data, tiny schedules, output in a temp folder."""
    out = tmp_path_factory.mktemp("runs")
    data = tmp_path_factory.mktemp("data")
    return [f"experiment.output_dir={out}", f"data.root={data}", "data.height=32", "data.width=32",
            "data.batch_p=4", "data.batch_k=2", "data.pad=2", "data.synth.train_ids=8", "data.synth.test_ids=6",
            "data.synth.cameras=4", "data.synth.images_per_id=4", "data.synth.image_size=32",
            "teacher.backbone=resnet18", "teacher.train.epochs=1", "model.backbone=mobilenet_v3_small",
            "train.epochs=1"]


@pytest.fixture
def one_thread():
    """As the bench runs use (experiment.threads=1): fast on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def logged(caplog):
    """`logged()`: the lines the package logged so far in the test (its INFO lines and above, as the command
    line shows them), in order; `logged("reid_kd.engine")`: those of that part only; `caplog.clear()` forgets
    them."""
    caplog.set_level(logging.INFO, logger=ROOT)
    return lambda under=ROOT: [r.getMessage() for r in caplog.records if (r.name + ".").startswith(under + ".")]


@pytest.fixture
def console():
    """The command line's console lines (`setup_logging()`) for one test, undone after it."""
    logger = logging.getLogger(ROOT)
    handlers, level = list(logger.handlers), logger.level
    setup_logging()
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture(scope="module")
def deploy_setup(tiny_overrides, tmp_path_factory):
    """(config, folder, overrides): a student checkpoint (seeded initial weights: deployment needs no training)
    and a second one of other weights in `folder`, for the tiny config."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs/quickstart.yaml", tiny_overrides)
    folder = tmp_path_factory.mktemp("deploy")
    torch.manual_seed(0)
    model = build_model(cfg["model"], num_classes=8).eval()
    save_model(model, cfg["model"], folder / "student.pt", cfg["data"])
    torch.manual_seed(1)
    save_model(build_model(cfg["model"], num_classes=8), cfg["model"], folder / "other.pt", cfg["data"])
    return cfg, folder, tiny_overrides


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache of this test's own, and no network: a download attempt fails. The stand-ins
    `helpers.into_hub_cache` writes pass for the published files; any other file there is checked as in a run."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    published = weights.published_prefix
    monkeypatch.setattr(weights, "published_prefix", lambda file: None if file in STAND_INS else published(file))
    yield tmp_path / "torch_home" / "hub" / "checkpoints"
    STAND_INS.clear()
