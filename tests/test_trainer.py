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


def test_channels_last_members_and_a_bfloat16_teacher_forward(tmp_path, tiny_overrides):
    """`model.memory_format`, `teacher.memory_format`, `teacher.forward_dtype`: each network in its layout,
    the teacher's forward autocast to bfloat16 on CPU, the distiller still computing in float32."""
    from reid_kd.distill.base import build_distiller
    from reid_kd.data.image_dataset import train_targets

    cfg = load_config("configs/quickstart.yaml", tiny_overrides + ["distill.method=kd"])
    loaders = build_loaders(cfg["data"], seed=0)
    n = loaders.dataset.num_train_pids
    torch.manual_seed(0)
    teacher, student = build_model(cfg["teacher"], n), build_model(cfg["model"], n)
    cohort = Cohort(loaders.train, torch.device("cpu"), teacher=teacher, teacher_dtype="bfloat16",
                    teacher_memory_format="channels_last")
    member = cohort.add(student, cfg["train"], RunFolder(tmp_path), hooks=[], memory_format="channels_last",
                        distiller=build_distiller(cfg["distill"], student, teacher, train_targets(loaders)))
    seen = []
    step = member.train_step

    def recording_step(images, targets, indices, teacher_out=None):
        seen.append(teacher_out.global_feat.dtype)
        return step(images, targets, indices, teacher_out)

    member.train_step = recording_step
    cohort.fit()
    conv = next(p for p in member.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert next(p for p in cohort.teacher.parameters() if p.dim() == 4).is_contiguous(
        memory_format=torch.channels_last)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(torch.isfinite(p).all() for p in member.model.parameters())


def test_the_default_settings_are_float32_and_contiguous(tiny_overrides):
    from reid_kd.engine.results import settings

    cpu = torch.device("cpu")
    cfg = load_config("configs/quickstart.yaml", tiny_overrides)
    assert settings(cfg, cpu) == {"precision": {"train": "float32", "teacher_forward": "float32"},
                                  "memory_format": {"student": "contiguous", "teacher": "contiguous"}}
    amp = load_config("configs/quickstart.yaml", tiny_overrides + ["experiment.amp=true"])
    assert settings(amp, cpu)["precision"] == {"train": "mixed", "teacher_forward": "bfloat16"}  # as experiment.amp
    fast = load_config("configs/quickstart.yaml", tiny_overrides + [
        "teacher.forward_dtype=bfloat16", "model.memory_format=channels_last", "teacher.memory_format=channels_last"])
    assert settings(fast, cpu) == {"precision": {"train": "float32", "teacher_forward": "bfloat16"},
                                   "memory_format": {"student": "channels_last", "teacher": "channels_last"}}


def test_cache_keys_hold_what_shapes_the_network(tiny_overrides):
    """A teacher or a pretrained backbone trained under other settings is never reused as this one: its
    memory format and training precision are in its key; the teacher's forward precision is not (it does
    not shape the teacher)."""
    from reid_kd.engine.paths import pretrain_key, teacher_key

    base = tiny_overrides + ["model.pretrained=synth", "teacher.pretrained=synth"]

    def keys(*sets):
        cfg = load_config("configs/quickstart.yaml", base + list(sets))
        return teacher_key(cfg), pretrain_key(cfg, "model"), pretrain_key(cfg, "teacher")

    plain = keys()
    assert keys("teacher.forward_dtype=bfloat16") == plain
    assert keys("experiment.amp=true")[0] != plain[0] and keys("experiment.amp=true")[1] != plain[1]
    teacher_cl = keys("teacher.memory_format=channels_last")
    assert teacher_cl[0] != plain[0] and teacher_cl[2] != plain[2] and teacher_cl[1] == plain[1]
    student_cl = keys("model.memory_format=channels_last")
    assert student_cl[1] != plain[1] and student_cl[0] == plain[0]
    # a recipe's own layout is the one its network trains in: a network that only runs channels_last, having
    # trained (and pretrained) contiguous, keeps the caches made at the defaults
    pinned = ["teacher.train.memory_format=contiguous", "pretrain.student.memory_format=contiguous",
              "pretrain.teacher.memory_format=contiguous"]
    assert keys("model.memory_format=channels_last", "teacher.memory_format=channels_last", *pinned) == plain
    trained_cl = keys("teacher.train.memory_format=channels_last")  # from the contiguous-pretrained backbone
    assert trained_cl[0] not in (plain[0], teacher_cl[0]) and trained_cl[1:] == plain[1:]
    assert keys("pretrain.student.memory_format=channels_last")[1] == student_cl[1]


def test_a_teacher_s_key_holds_its_retrieval_head_alone(tiny_overrides):
    """`teacher.embedding_dim` shapes the teacher (null keeps the keys made before it existed); the student's
    head, its input size and the evaluation protocols shape neither the teacher nor a pretrained backbone."""
    from reid_kd.engine.paths import pretrain_key, teacher_key, teacher_spec

    base = tiny_overrides + ["model.pretrained=synth", "teacher.pretrained=synth"]

    def keys(*sets):
        cfg = load_config("configs/quickstart.yaml", base + list(sets))
        return teacher_key(cfg), pretrain_key(cfg, "model"), pretrain_key(cfg, "teacher")

    cfg = load_config("configs/quickstart.yaml", base)
    assert set(teacher_spec(cfg)["teacher"]) == set(cfg["teacher"]) - {"seed", "forward_dtype", "embedding_dim"}
    plain = keys()
    assert keys("model.embedding_dim=64", "model.input_size=[16,16]", "eval.protocols=[asymmetric]") == plain
    head = keys("teacher.embedding_dim=64")
    assert head[0] != plain[0] and head[1:] == plain[1:]


def test_a_network_trains_in_its_recipes_layout_and_is_scored_in_its_own(tmp_path, tiny_overrides, monkeypatch):
    """`train.memory_format` pins the layout the student fine-tunes in; `model.memory_format` is the one it
    is evaluated (and timed) in."""
    from reid_kd.engine import run as run_module

    seen = {}
    real_add, real_evaluate = run_module.Cohort.add, run_module.evaluate_model

    def add(self, model, *args, memory_format="contiguous", **kwargs):
        seen["trained"] = memory_format
        return real_add(self, model, *args, memory_format=memory_format, **kwargs)

    def evaluate(model, *args, **kwargs):
        conv = next(p for p in model.parameters() if p.dim() == 4)
        seen["scored"] = "channels_last" if not conv.is_contiguous() else "contiguous"
        return real_evaluate(model, *args, **kwargs)

    cfg = load_config("configs/quickstart.yaml", tiny_overrides + [
        f"experiment.output_dir={tmp_path}", "model.memory_format=channels_last", "train.memory_format=contiguous",
        "teacher.checkpoint=null", "distill.method=none"])
    loaders = build_loaders(cfg["data"], seed=0)
    monkeypatch.setattr(run_module.Cohort, "add", add)
    monkeypatch.setattr(run_module, "evaluate_model", evaluate)
    record = run_module.train_student(cfg, loaders, None, torch.device("cpu"))
    assert seen == {"trained": "contiguous", "scored": "channels_last"}
    assert record["memory_format"]["student"] == "channels_last"
