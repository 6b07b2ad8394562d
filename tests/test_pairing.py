"""Runs of one seed are paired: every method sees the baseline's batches, augmented images and initial
student weights, whatever random numbers its own loss draws (what makes per-seed differences meaningful)."""
import pytest
import torch

from reid_kd.data.image_dataset import build_loaders
from reid_kd.engine.configs import load_config
from reid_kd.engine.paths import run_dir
from reid_kd.engine.run import train_student, train_students
from reid_kd.engine.member import Member
from reid_kd.models.reid_model import build_model
from reid_kd.utils.io import load_torch, read_json

QUICKSTART = "configs/quickstart.yaml"


def test_every_method_of_a_seed_sees_the_same_batches_and_initial_weights(tiny_overrides, tmp_path, monkeypatch,
                                                                        one_thread):
    seen: dict[str, dict] = {}
    real_step = Member.train_step

    def recording_step(self, images, targets, indices, teacher_out=None):
        entry = seen.setdefault(self.desc, {"weights": None, "batches": []})
        if entry["weights"] is None:
            entry["weights"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        entry["batches"].append((indices.tolist(), images.double().sum().item()))
        return real_step(self, images, targets, indices, teacher_out)

    monkeypatch.setattr(Member, "train_step", recording_step)
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


@pytest.mark.slow
def test_runs_trained_side_by_side_match_runs_trained_alone(tiny_overrides, tmp_path, one_thread):
    """One teacher forward per batch for a seed's runs changes no run: the baseline, KD and two CRDs (each
    drawing its own negatives from torch's RNG) end with the weights they get alone, also when one of them
    joins late, resuming from its checkpoint."""
    entries = {"baseline": ["distill.method=none"], "kd": ["distill.method=kd"],
               "crd": ["distill.method=crd"], "crd_k8": ["distill.method=crd", "distill.crd.nce_k=8"]}

    def configs(out):
        return {name: load_config(QUICKSTART, [*tiny_overrides, f"experiment.output_dir={out}", "experiment.seed=5",
                                               "train.epochs=2", f"experiment.run_name={name}", *sets])
                for name, sets in entries.items()}

    def fresh(cfg):
        return build_loaders(cfg["data"], cfg["experiment"]["seed"])

    alone, together = configs(tmp_path / "alone"), configs(tmp_path / "together")
    loaders = fresh(alone["kd"])
    with torch.random.fork_rng():
        teacher = build_model(alone["kd"]["teacher"], loaders.dataset.num_train_pids)
    for cfg in alone.values():
        train_student(cfg, fresh(cfg), teacher, torch.device("cpu"))
    train_student(together["kd"], fresh(together["kd"]), teacher, torch.device("cpu"), stop_after=1)
    records = train_students(list(together.values()), fresh(together["kd"]), teacher, torch.device("cpu"))
    assert [r["run_name"] for r in records] == list(entries)
    for name in entries:
        a, b = run_dir(alone[name]), run_dir(together[name])
        want, got = load_torch(a / "student.pt")["model"], load_torch(b / "student.pt")["model"]
        assert all(torch.equal(want[k], got[k]) for k in want), name
        assert read_json(a / "metrics.json")["mAP"] == read_json(b / "metrics.json")["mAP"], name
    crd, crd_k8 = (load_torch(run_dir(together[n]) / "student.pt")["model"] for n in ("crd", "crd_k8"))
    assert not all(torch.equal(crd[k], crd_k8[k]) for k in crd)  # the entries differ: not one run twice
