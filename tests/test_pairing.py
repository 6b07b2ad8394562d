"""Runs of one seed are paired: every method sees the baseline's batches, augmented images and initial
student weights, whatever random numbers its own loss draws (what makes per-seed differences meaningful)."""
import torch

from reid_kd.config import load_config
from reid_kd.data.image_dataset import build_loaders
from reid_kd.engine.run import train_student
from reid_kd.engine.trainer import Trainer
from reid_kd.models.reid_model import build_model

QUICKSTART = "configs/quickstart.yaml"


def test_every_method_of_a_seed_sees_the_same_batches_and_initial_weights(tiny_overrides, tmp_path, monkeypatch,
                                                                        one_thread):
    seen: dict[str, dict] = {}
    real_step = Trainer._step

    def recording_step(self, images, targets, indices):
        entry = seen.setdefault(self.desc, {"weights": None, "batches": []})
        if entry["weights"] is None:
            entry["weights"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        entry["batches"].append((indices.tolist(), images.double().sum().item()))
        return real_step(self, images, targets, indices)

    monkeypatch.setattr(Trainer, "_step", recording_step)
    for method in ("none", "kd", "crd", "gird"):  # CRD and GIRD draw random numbers or keep memories
        cfg = load_config(QUICKSTART, [*tiny_overrides, f"experiment.output_dir={tmp_path}", "experiment.seed=3",
                                       "train.epochs=2", f"distill.method={method}"])
        loaders = build_loaders(cfg["data"], cfg["experiment"]["seed"])
        teacher = None
        if method != "none":
            with torch.random.fork_rng():
                teacher = build_model(cfg["teacher"], loaders.dataset.num_train_pids)
        train_student(cfg, loaders, teacher, torch.device("cpu"), stop_after=2)
    names = {"none": "baseline", "kd": "kd", "crd": "crd", "gird": "gird"}
    base = seen[names["none"]]
    assert len(base["batches"]) >= 4 and len({tuple(b[0]) for b in base["batches"]}) > 1
    for method in ("kd", "crd", "gird"):
        other = seen[names[method]]
        assert other["batches"] == base["batches"], method  # same images, same order, same augmentation
        assert other["weights"].keys() == base["weights"].keys()
        assert all(torch.equal(other["weights"][k], base["weights"][k]) for k in base["weights"]), method
