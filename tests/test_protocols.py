"""Evaluation protocols (`eval.protocols`), the retrieval head shared by teacher and student, and the student's
own input size, on tiny synthetic vehicles in their on-disk layout."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_one_line, cli

from reid_kd.bench.board_table import DASH, PROTOCOL_COLUMNS, main_rows, protocols_of
from reid_kd.bench.board_text import protocol_said
from reid_kd.data.datasets.base import ReIDDataset
from reid_kd.data.image_dataset import build_loaders
from reid_kd.engine import run as run_module
from reid_kd.engine.configs import load_config
from reid_kd.engine.teacher import load_teacher_checkpoint
from reid_kd.errors import ConfigError
from reid_kd.evaluation import Features, evaluate, evaluate_model, extract_features
from reid_kd.evaluation import extract as extract_module
from reid_kd.engine.paths import run_folder
from reid_kd.models.checkpoint import load_model, save_model, weights_digest
from reid_kd.models.reid_model import build_model

CPU = torch.device("cpu")
QUICKSTART = "configs/quickstart.yaml"
HEADS = ["model.embedding_dim=32", "teacher.embedding_dim=32"]  # mobilenet_v3_small (576) and resnet18 (512)


def config(tiny_overrides, *sets):
    return load_config(QUICKSTART, tiny_overrides + ["experiment.threads=1", *sets])


def networks(cfg, n):
    torch.manual_seed(0)
    return build_model(cfg["model"], n).eval(), build_model(cfg["teacher"], n).eval()


def test_asymmetric_is_evaluate_of_student_queries_and_teacher_gallery(tiny_overrides):
    cfg = config(tiny_overrides, *HEADS)
    loaders = build_loaders(cfg["data"], 0)
    student, teacher = networks(cfg, loaders.dataset.num_train_pids)
    got = evaluate_model(student, loaders.query, loaders.gallery, cfg["eval"], CPU, ["asymmetric", "symmetric"],
                         Features(teacher, CPU))
    qf, q_pids, q_cams = extract_features(student, loaders.query, CPU)
    gf, g_pids, g_cams = extract_features(teacher, loaders.gallery, CPU)
    want = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=cfg["eval"]["metric"],
                    max_rank=cfg["eval"]["max_rank"])
    asym = got["protocols"]["asymmetric"]
    assert (asym["query"], asym["gallery"]) == ("student", "teacher")
    assert asym["mAP"] == want["mAP"] and asym["mINP"] == want["mINP"] and asym["cmc"] == list(want["cmc"])
    assert asym["num_valid_queries"] == want["num_valid_queries"]
    # the first protocol is the headline; symmetric is the student scored alone, as without protocols
    assert {k: got[k] for k in ("mAP", "mINP", "rank1", "rank5", "rank10", "cmc")} == \
        {k: asym[k] for k in ("mAP", "mINP", "rank1", "rank5", "rank10", "cmc")}
    alone = evaluate_model(student, loaders.query, loaders.gallery, cfg["eval"], CPU)
    sym = got["protocols"]["symmetric"]
    assert (sym["query"], sym["gallery"]) == ("student", "student") and "protocols" not in alone
    assert {k: sym[k] for k in alone if k != "inference_images_per_sec"} == \
        {k: v for k, v in alone.items() if k != "inference_images_per_sec"}
    assert asym["mAP"] != sym["mAP"]  # two networks' galleries: the protocols do differ


def test_a_later_asymmetric_protocol_is_skipped_for_a_student_of_another_width(tiny_overrides):
    """A suite of students with and without a shared head is scored symmetrically; the asymmetric column is
    filled where the widths match and says why not elsewhere. As the headline, other widths are an error."""
    cfg = config(tiny_overrides)
    loaders = build_loaders(cfg["data"], 0)
    student, teacher = networks(cfg, loaders.dataset.num_train_pids)  # 576-d and 512-d
    got = evaluate_model(student, loaders.query, loaders.gallery, cfg["eval"], CPU, ["symmetric", "asymmetric"],
                         Features(teacher, CPU))
    assert got["protocols"]["asymmetric"] == {"query": "student", "gallery": "teacher", "skipped":
                                              "the student's retrieval features are 576-d, the teacher's 512-d "
                                              "(no shared head)"}
    alone = evaluate_model(student, loaders.query, loaders.gallery, cfg["eval"], CPU)
    assert got["mAP"] == alone["mAP"] and got["protocols"]["symmetric"]["mAP"] == alone["mAP"]
    with pytest.raises(ValueError, match="576-d"):
        evaluate_model(student, loaders.query, loaders.gallery, cfg["eval"], CPU, ["asymmetric"], Features(teacher, CPU))


class MeanColour(torch.nn.Module):
    """A 'network' embedding an image as its mean colour, channels permuted by `order`, so features are known."""

    class Out:
        def __init__(self, x):
            self.bn_feat = x

    def __init__(self, order):
        super().__init__()
        self.order = order

    def forward(self, images):
        return self.Out(images.float().mean((2, 3))[:, self.order])


def test_asymmetric_with_gallery_draws_takes_each_draws_gallery_from_the_teacher(tmp_path):
    """VehicleID's draws take query and gallery from all test images: the teacher embeds both loaders."""
    import cv2

    root, rng = tmp_path / "VehicleID_V1.0", np.random.default_rng(0)
    (root / "train_test_split").mkdir(parents=True)
    (root / "image").mkdir()
    listed = []
    for pid in range(1, 5):
        for k in range(3):
            name = f"{pid * 10 + k:07d}"
            cv2.imwrite(str(root / "image" / f"{name}.jpg"), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
            listed.append(f"{name} {pid}\n")
    for split in ("train_list.txt", "test_list_800.txt"):
        (root / "train_test_split" / split).write_text("".join(listed))
    cfg = load_config(None, [f"data.root={tmp_path}", "data.dataset=vehicleid", "data.height=16", "data.width=16",
                             "data.vehicleid.draws=3", "eval.faiss_gpu=never", "data.batch_p=2", "data.batch_k=2"])
    loaders = build_loaders(cfg["data"], 0)
    student, teacher = MeanColour([0, 1, 2]), MeanColour([2, 1, 0])
    got = evaluate_model(student, loaders.query, loaders.gallery, cfg["eval"], CPU, ["asymmetric"],
                         Features(teacher, CPU))["protocols"]["asymmetric"]
    per_draw = []
    for query, gallery in loaders.dataset.draws:
        q = build_loaders(cfg["data"], 0, ReIDDataset("d", loaders.dataset.train, query, gallery, has_cameras=False))
        qf, q_pids, q_cams = extract_features(student, q.query, CPU)
        gf, g_pids, g_cams = extract_features(teacher, q.gallery, CPU)
        per_draw.append(evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, same_camera_is_junk=False)["mAP"])
    assert got["num_draws"] == 3 and got["mAP"] == pytest.approx(np.mean(per_draw), abs=1e-12)


def test_a_cohort_embeds_the_teachers_gallery_once_and_the_student_at_its_own_size(tiny_overrides, tmp_path,
                                                                                   monkeypatch):
    """Two students of one teacher scored in its gallery: the teacher embeds it once. The students see
    `model.input_size` (training and evaluation), the teacher the data's size."""
    sets = [*HEADS, f"experiment.output_dir={tmp_path}", "model.input_size=[16,24]",
            "eval.protocols=[asymmetric,symmetric]"]
    cfgs = [config(tiny_overrides, *sets, "distill.method=none"), config(tiny_overrides, *sets, "distill.method=kd")]
    loaders = build_loaders(cfgs[0]["data"], 0)
    _, teacher = networks(cfgs[0], loaders.dataset.num_train_pids)
    sizes = {"student": set(), "teacher": set()}
    teacher.stages[0].register_forward_pre_hook(lambda m, a: sizes["teacher"].add(tuple(a[0].shape[-2:])))
    real_build, real_extract, extracted = run_module.build_model, extract_module.extract_features, []

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.stages[0].register_forward_pre_hook(lambda m, a: sizes["student"].add(tuple(a[0].shape[-2:])))
        return model

    def extract(model, loader, *args, **kwargs):
        extracted.append((model is teacher, loader is loaders.gallery))
        return real_extract(model, loader, *args, **kwargs)

    monkeypatch.setattr(run_module, "build_model", build)
    monkeypatch.setattr(extract_module, "extract_features", extract)
    records = run_module.train_students(cfgs, loaders, teacher, CPU, {"mAP": 0.5})
    assert extracted.count((True, True)) == 1 and (True, False) not in extracted
    assert sizes == {"student": {(16, 24)}, "teacher": {(32, 32)}}
    for record in records:
        assert record["input_size"] == {"student": [16, 24], "teacher": [32, 32]}
        assert record["retrieval_dim"] == {"student": 32, "teacher": 32}
        assert list(record["protocols"]) == ["asymmetric", "symmetric"]
        assert record["mAP"] == record["protocols"]["asymmetric"]["mAP"]
        assert record["protocols"]["asymmetric"]["gallery"] == "teacher"
    # the distilled student's file names its teacher's weights (the space `reidkd index` checks); the baseline's none
    saved = [load_model(run_folder(cfg).weights).distilled_from for cfg in cfgs]
    assert saved == [None, weights_digest(teacher)]


def test_asymmetric_without_a_teacher_is_refused_in_one_line(tiny_overrides, tmp_path):
    cfg = config(tiny_overrides, f"experiment.output_dir={tmp_path}", "eval.protocols=[symmetric,asymmetric]")
    with pytest.raises(ConfigError, match="eval.protocols") as e:
        run_module.train_student(cfg, build_loaders(cfg["data"], 0), None, CPU)
    assert "\n" not in str(e.value) and "no teacher" in str(e.value)
    assert not list(tmp_path.rglob("checkpoint.pt"))  # refused before a step was taken


def test_asymmetric_retrieval_of_other_widths_is_refused_before_training(tiny_overrides, tmp_path):
    result = cli("run", "--config", QUICKSTART, *[a for s in tiny_overrides + [
        f"experiment.output_dir={tmp_path}", "eval.protocols=[asymmetric]"] for a in ("--set", s)])
    line = assert_one_line(result, "model.embedding_dim", "teacher.embedding_dim", "576", "512")
    assert "model.embedding_dim=512" in line
    assert not (tmp_path / "teachers").exists()  # nothing trained


def test_a_teacher_checkpoint_must_have_the_head_its_config_says(tiny_overrides, tmp_path):
    cfg = config(tiny_overrides)
    _, teacher = networks(cfg, 4)
    save_model(teacher, cfg["teacher"], tmp_path / "teacher.pt", cfg["data"])
    head = config(tiny_overrides, f"teacher.checkpoint={tmp_path / 'teacher.pt'}", "teacher.embedding_dim=32")
    with pytest.raises(ConfigError, match="teacher.embedding_dim=null"):
        load_teacher_checkpoint(head, CPU)
    same = config(tiny_overrides, f"teacher.checkpoint={tmp_path / 'teacher.pt'}")
    assert load_teacher_checkpoint(same, CPU).retrieval_dim == 512


@pytest.mark.parametrize("sets, words", [
    (["eval.protocols=[]"], "eval.protocols"),
    (["eval.protocols=[symmetric,symmetric]"], "eval.protocols"),
    (["eval.protocols=[teacher]"], "eval.protocols"),
    (["model.input_size=[64]"], "model.input_size"),
    (["model.input_size=[8,16]"], "model.input_size"),
    (["model.embedding_dim=0"], "model.embedding_dim"),
    (["teacher.embedding_dim=64", "teacher.neck=none"], "teacher.neck=bnneck"),
])
def test_option_mistakes_are_one_line_config_errors(tiny_overrides, sets, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")) as e:
        config(tiny_overrides, *sets)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("method", ["crd", "gird"])
def test_a_method_on_bn_feat_takes_the_heads_width(tiny_overrides, method):
    """A distiller that maps `bn_feat` between the networks sizes its map by the retrieval width (the head's)."""
    from reid_kd.distill.base import build_distiller

    cfg = config(tiny_overrides, "model.embedding_dim=24", f"distill.method={method}",
                 f"distill.{method}.embedding=bn_feat", *(["distill.gird.stage_form=pooled"] if method == "gird" else []))
    student, teacher = networks(cfg, 4)
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    distiller = build_distiller(cfg["distill"], student, teacher, targets)
    images = torch.randn(8, 3, 32, 32)
    student.train()
    losses = distiller(student(images), teacher(images), targets, torch.arange(8))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert student.neck[2].weight.grad.abs().sum() > 0


def board_runs(headline: str, other: str, skipped: set) -> pd.DataFrame:
    """Records as `load_runs` gives them: a baseline and one method over two seeds, scored in two protocols."""
    teacher = {"source": "runs/teachers/t", "backbone": "resnet34", "mAP": 0.8, "rank1": 0.9, "rank5": 0.95,
               "rank10": 0.97, "mINP": 0.5, "params": 2e7, "inference_images_per_sec": 100.0, "train_seconds": 60.0}
    rows = []
    for entry, base in (("baseline", 0.60), ("csd", 0.64)):
        for seed in (0, 1):
            score = base + seed / 100
            scores = {"mAP": score, "rank1": score, "rank5": score, "rank10": score, "mINP": score}
            protocols = {headline: {"query": "student", "gallery": "x", **scores},
                         other: {"query": "student", "gallery": "y", "mAP": score - 0.3 - seed / 100}}
            if entry in skipped:
                protocols[other] = {"query": "student", "gallery": "y", "skipped": "576-d vs 512-d"}
            rows.append({"entry": entry, "seed": seed, "failed": False, "params": 1e6, "train_seconds": 30.0,
                         "inference_images_per_sec": 500.0, "teacher": teacher, "protocols": protocols, **scores})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("headline, other", [("symmetric", "asymmetric"), ("asymmetric", "symmetric")])
def test_a_leaderboard_shows_the_other_protocols_map_and_an_asymmetric_one_the_teachers_ceiling(headline, other):
    entries = [{"name": "baseline", "method": "none", "label": "baseline"}, {"name": "csd", "method": "csd",
                                                                            "label": "csd"}]
    runs = board_runs(headline, other, skipped={"baseline"} if other == "asymmetric" else set())
    rows = {r["Method"]: r for r in main_rows(runs, entries, 2)}
    column = PROTOCOL_COLUMNS[other]
    assert rows["csd"][column] == "34.00 ± 0.00"  # (0.34, 0.34): the other protocol's own numbers
    assert rows["csd"]["mAP"] == "64.50 ± 0.71" and rows["csd"]["Δ mAP (95% CI)"].startswith("+4.00")
    teacher = next(r for name, r in rows.items() if name.startswith("teacher"))
    assert teacher[column] == "80.00"  # its own queries in its own gallery, whichever protocol
    ceiling = teacher["Method"].endswith(", the ceiling")
    assert ceiling == (headline == "asymmetric")
    if other == "asymmetric":
        assert rows["baseline (student)"][column] == DASH  # no shared head: skipped, not zero
        assert "where a student's retrieval width is not the teacher's" in protocol_said(protocols_of(runs))
    else:
        assert rows["baseline (student)"][column] == "30.00 ± 0.00"
        assert "the ceiling" in protocol_said(protocols_of(runs))
