import csv

import pytest
import torch

from reid_kd.data.image_dataset import build_loaders
from reid_kd.engine.configs import load_config
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.member import lr_factor
from reid_kd.engine.run_folder import RunFolder
from reid_kd.models.reid_model import build_model


def test_warmup_then_cosine_and_step():
    cfg = {"warmup_epochs": 2, "warmup_factor": 0.1, "scheduler": "cosine", "epochs": 10, "milestones": [4, 8],
           "gamma": 0.1}
    assert lr_factor(cfg, 0, 5) == pytest.approx(0.1)
    assert lr_factor(cfg, 5, 5) == pytest.approx(0.55)
    assert lr_factor(cfg, 10, 5) == pytest.approx(1.0)
    assert lr_factor(cfg, 30, 5) == pytest.approx(0.5)
    assert lr_factor(cfg, 50, 5) == pytest.approx(0.0)
    cfg["scheduler"] = "step"
    assert [lr_factor(cfg, e * 5, 5) for e in (3, 4, 8)] == pytest.approx([1.0, 0.1, 0.01])


def _train(cfg, out, stop_after):
    loaders = build_loaders(cfg["data"], seed=0)
    torch.manual_seed(0)
    model = build_model(cfg["model"], loaders.dataset.num_train_pids)
    cohort = Cohort(loaders.train, torch.device("cpu"), seed=0)
    cohort.add(model, dict(cfg["train"], epochs=2), RunFolder(out))
    cohort.fit(stop_after=stop_after)
    return model


def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny_overrides):
    cfg = load_config("configs/quickstart.yaml", tiny_overrides + ["train.optimizer=sgd", "train.lr=0.01"])
    straight = _train(cfg, tmp_path / "straight", stop_after=2)
    _train(cfg, tmp_path / "resumed", stop_after=1)
    resumed = _train(cfg, tmp_path / "resumed", stop_after=2)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    with (tmp_path / "resumed" / "log.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
