"""Deploying a student: export parity, gallery index build / search / eval, on tiny synthetic vehicles.

ONNX is an optional extra (`reid-kd[deploy]`): the tests that export to it or run it skip without it.
"""
import importlib.util

import cv2
import numpy as np
import pytest
import torch
import yaml
from helpers import assert_one_line, cli, reidkd

from reid_kd.data.image_dataset import build_loaders
from reid_kd.deploy.export import export_model
from reid_kd.deploy.index import GalleryIndex, build_index, extract, items_from_config
from reid_kd.deploy.index_eval import evaluate_index, ranked_list_metrics
from reid_kd.deploy.model import RetrievalModel, load_checkpoint
from reid_kd.errors import UserError
from reid_kd.evaluation import Features, evaluate, evaluate_model
from reid_kd.models.checkpoint import save_model, weights_digest
from reid_kd.models.reid_model import build_model
from reid_kd.utils.io import load_torch, save_torch



@pytest.fixture(scope="module")
def setup(deploy_setup):
    """A student checkpoint (seeded initial weights: deployment needs no training) and the tiny config."""
    return deploy_setup


def onnx_packages():
    """onnxruntime, or a skip when the optional ONNX packages (`reid-kd[deploy]`) are not installed."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")  # torch.onnx.export(dynamo=True) writes the graph with it
    return pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def features_to_match(setup):
    """(what `reidkd eval` extracts from 5 gallery images, those 5 images as the loader gives them)."""
    cfg, folder, _ = setup
    model = load_checkpoint(folder / "student.pt")
    items, _ = items_from_config(cfg, "gallery")
    want = extract(model, items[:5], torch.device("cpu"))  # what `reidkd eval` scores: batch 5, not the export's 2
    loader = build_loaders(cfg["data"], 0).gallery
    images = next(iter(loader))[0][:5]
    with torch.no_grad():
        assert np.abs(RetrievalModel(model)(images).numpy() - want).max() < 1e-5
    return want, images


def test_export_parity_torchscript(setup, features_to_match):
    cfg, folder, _ = setup
    want, images = features_to_match
    ts_file, meta_file = export_model(folder / "student.pt", "torchscript")
    assert ts_file == folder / "student.ts"
    with torch.no_grad():
        got = torch.jit.load(str(ts_file))(images).numpy()
    assert np.abs(got - want).max() < 1e-4
    meta = yaml.safe_load(meta_file.read_text())
    assert meta["input"]["height"] == cfg["data"]["height"] and meta["output"]["dim"] == want.shape[1]


def test_export_parity_onnx_runtime(setup, features_to_match):
    """`reidkd export --format onnx` writes the model and its .json; ONNX Runtime gives PyTorch's features."""
    onnxruntime = onnx_packages()
    cfg, folder, _ = setup
    want, images = features_to_match
    onnx_file, meta_file = folder / "model.onnx", folder / "model.onnx.json"
    exported = reidkd("export", "--checkpoint", folder / "student.pt", "--format", "onnx", "--out", onnx_file)
    assert exported.returncode == 0 and meta_file.is_file(), exported.stderr[-2000:]
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"images": images.numpy()})[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4

    meta = yaml.safe_load(meta_file.read_text())
    assert meta["input"]["height"] == cfg["data"]["height"] and meta["input"]["width"] == cfg["data"]["width"]
    assert meta["input"]["mean"] == [0.485, 0.456, 0.406] and meta["input"]["std"] == [0.229, 0.224, 0.225]
    assert meta["output"]["dim"] == want.shape[1] and meta["input"]["batch"] == "dynamic"


def test_a_student_with_a_retrieval_head_and_its_own_input_size_exports_and_indexes(setup, tmp_path):
    """The head's width is the output's; the exported model takes the data's size and resizes as the student did
    in training and evaluation, so its features are the ones scored."""
    cfg, _, _ = setup
    model_cfg = dict(cfg["model"], embedding_dim=16, input_size=[16, 24])
    torch.manual_seed(0)
    save_model(build_model(model_cfg, num_classes=8).eval(), model_cfg, tmp_path / "student.pt", cfg["data"])
    model = load_checkpoint(tmp_path / "student.pt")
    items, _ = items_from_config(cfg, "gallery")
    want = extract(model, items[:5], torch.device("cpu"))
    assert want.shape == (5, 16)
    images = next(iter(build_loaders(cfg["data"], 0).gallery))[0][:5]
    ts_file, meta_file = export_model(tmp_path / "student.pt", "torchscript")
    with torch.no_grad():
        assert np.abs(torch.jit.load(str(ts_file))(images).numpy() - want).max() < 1e-4
    meta = yaml.safe_load(meta_file.read_text())
    assert meta["output"]["dim"] == 16 and meta["input"]["height"] == cfg["data"]["height"]
    assert (meta["network_input"]["height"], meta["network_input"]["width"]) == (16, 24)
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        import onnxruntime

        onnx_file, _ = export_model(tmp_path / "student.pt", "onnx")
        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        assert np.abs(session.run(["features"], {"images": images.numpy()})[0] - want).max() < 1e-4
    build_index(tmp_path / "student.pt", items, tmp_path / "index")
    assert GalleryIndex.load(tmp_path / "index").model().retrieval_dim == 16


def test_checkpoint_without_input_takes_it_from_its_run_config(setup, tmp_path):
    cfg, folder, _ = setup
    state = load_torch(folder / "student.pt")
    del state["input"]  # as written before `input` was recorded
    save_torch(state, tmp_path / "student.pt")
    with pytest.raises(UserError, match="config.yaml"):
        load_checkpoint(tmp_path / "student.pt")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"height": 32, "width": 48}}))
    assert load_checkpoint(tmp_path / "student.pt").input["width"] == 48


def test_ranked_list_metrics_by_hand_and_against_evaluate():
    g_pids, g_cams = np.array([1, 1, 2, 3]), np.array([0, 1, 1, 1])
    # query id 1 under camera 0: gallery row 0 is junk, row 1 the only positive
    full = ranked_list_metrics(np.array([[0, 2, 1, 3]]), [1], g_pids, [0], g_cams, max_rank=4)
    assert full["mAP"] == pytest.approx(0.5) and full["mINP"] == pytest.approx(0.5)
    assert list(full["cmc"]) == [0, 1, 1, 1]
    cut = ranked_list_metrics(np.array([[0, 2, -1, -1]]), [1], g_pids, [0], g_cams, max_rank=4)
    assert cut["mAP"] == 0 and cut["mINP"] == 0 and list(cut["cmc"]) == [0, 0, 0, 0]

    rng = np.random.default_rng(0)
    gf, qf = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(40, 16)).astype(np.float32)
    gp, gc, qp, qc = rng.integers(0, 20, 300), rng.integers(0, 4, 300), rng.integers(0, 20, 40), rng.integers(0, 4, 40)
    want = evaluate(qf, gf, qp, gp, qc, gc, metric="euclidean", max_rank=20)
    ranked = np.argsort(((qf[:, None] - gf[None]) ** 2).sum(-1), axis=1, kind="stable")
    got = ranked_list_metrics(ranked, qp, gp, qc, gc, max_rank=20)
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-12) and got["mINP"] == pytest.approx(want["mINP"], abs=1e-12)
    assert np.allclose(got["cmc"], want["cmc"]) and got["num_valid_queries"] == want["num_valid_queries"]


def test_index_eval_of_a_flat_index_equals_reidkd_eval(setup, tmp_path):
    cfg, folder, _ = setup
    items, _ = items_from_config(cfg, "gallery")
    build_index(folder / "student.pt", items, tmp_path / "flat")
    got = evaluate_index(GalleryIndex.load(tmp_path / "flat"), cfg)
    loaders = build_loaders(cfg["data"], 0)
    want = evaluate_model(load_checkpoint(folder / "student.pt"), loaders.query, loaders.gallery, cfg["eval"], "cpu")
    for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert np.allclose(got["cmc"], want["cmc"]) and got["num_valid_queries"] == want["num_valid_queries"]
    assert got["recall"] == 1.0 and got["depth"] == len(items)


@pytest.fixture(scope="module")
def teacher_index(setup, tmp_path_factory):
    """(folder): a teacher.pt, its gallery index, a student.pt distilled from it (recorded as a run records it),
    a baseline.pt trained without it and a wide.pt of another width."""
    cfg, _, _ = setup
    folder = tmp_path_factory.mktemp("asymmetric")
    torch.manual_seed(5)
    teacher = build_model(cfg["model"], num_classes=8).eval()
    save_model(teacher, cfg["model"], folder / "teacher.pt", cfg["data"])
    torch.manual_seed(6)
    save_model(build_model(cfg["model"], 8), cfg["model"], folder / "student.pt", cfg["data"], weights_digest(teacher))
    save_model(build_model(cfg["model"], 8), cfg["model"], folder / "baseline.pt", cfg["data"])
    wide = dict(cfg["model"], embedding_dim=16)
    save_model(build_model(wide, 8), wide, folder / "wide.pt", cfg["data"], weights_digest(teacher))
    build_index(folder / "teacher.pt", items_from_config(cfg, "gallery")[0], folder / "index")
    return folder


def test_a_student_searches_a_teachers_index_as_the_asymmetric_protocol_scores_it(setup, teacher_index):
    cfg, _, _ = setup
    got = evaluate_index(GalleryIndex.load(teacher_index / "index"), cfg,
                         query_checkpoint=str(teacher_index / "student.pt"))
    loaders = build_loaders(cfg["data"], 0)
    student, teacher = (load_checkpoint(teacher_index / f) for f in ("student.pt", "teacher.pt"))
    want = evaluate_model(student, loaders.query, loaders.gallery, cfg["eval"], "cpu", ["asymmetric"],
                          Features(teacher, torch.device("cpu")))
    for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert got["recall"] == 1.0 and got["num_valid_queries"] == want["num_valid_queries"]
    alone = evaluate_index(GalleryIndex.load(teacher_index / "index"), cfg)  # the teacher's own queries: another score
    assert alone["mAP"] != got["mAP"]
    _, _, overrides = setup
    shown = cli("index", "eval", "--index", teacher_index / "index", "--config", "configs/quickstart.yaml",
                *[a for o in overrides for a in ("--set", o)], "--query-checkpoint", teacher_index / "student.pt")
    assert shown.exit_code == 0, shown.output
    assert f"queries by {cfg['model']['backbone']}" in shown.output and f"{100 * got['mAP']:.2f}" in shown.output
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):  # the deployed student too
        exported, _ = export_model(teacher_index / "student.pt", "onnx")
        deployed = evaluate_index(GalleryIndex.load(teacher_index / "index"), cfg, query_checkpoint=str(exported))
        assert deployed["mAP"] == pytest.approx(got["mAP"], abs=1e-3) and deployed["recall"] == 1.0


@pytest.mark.parametrize("student, words", [
    ("baseline.pt", ["records no teacher", "distilled from the index's model"]),
    ("wide.pt", ["16-d features", "model.embedding_dim="]),
])
def test_a_query_encoder_of_another_space_or_width_is_refused_in_one_line_writing_nothing(setup, teacher_index,
                                                                                          tmp_path, student, words):
    cfg, _, _ = setup
    image = items_from_config(cfg, "query")[0][0].path
    result = cli("search", "--index", teacher_index / "index", image, "--query-checkpoint", teacher_index / student,
                 "--png", tmp_path / "lists.png")
    assert_one_line(result, *words)
    assert not (tmp_path / "lists.png").exists()
    other = teacher_index / "other_teacher.pt"
    if not other.exists():
        torch.manual_seed(7)
        twin = build_model(cfg["model"], 8)
        save_model(twin, cfg["model"], other, cfg["data"], weights_digest(build_model(cfg["model"], 8)))
    with pytest.raises(UserError, match="distilled from another model"):
        GalleryIndex.load(teacher_index / "index").query_model(other)


def test_approximate_index_reports_recall_below_one_and_its_speed(setup, tmp_path):
    cfg, folder, _ = setup
    items, _ = items_from_config(cfg, "gallery")
    build_index(folder / "student.pt", items, tmp_path / "ivf", factory="IVF8,Flat", search_params="nprobe=1")
    assert (tmp_path / "ivf" / "features.npy").is_file()
    one_list = evaluate_index(GalleryIndex.load(tmp_path / "ivf"), cfg)
    assert one_list["recall"] < 1.0  # 1 of 8 lists probed: some true neighbours are missed
    assert one_list["queries_per_second"] > 0 and one_list["exact_queries_per_second"] > 0
    every_list = evaluate_index(GalleryIndex.load(tmp_path / "ivf", search_params="nprobe=8"), cfg)
    assert every_list["recall"] == 1.0  # every list probed: the search is exact again
    with pytest.raises(UserError, match="efSearch"):
        GalleryIndex.load(tmp_path / "ivf", search_params="nosuch=3")


@pytest.mark.slow
def test_build_search_and_eval_from_the_command_line(setup, tmp_path):
    cfg, folder, overrides = setup
    sets = [a for o in overrides for a in ("--set", o)]
    built = reidkd("index", "build", "--checkpoint", str(folder / "student.pt"), "--config", "configs/quickstart.yaml",
                   *sets, "--out", str(tmp_path / "index"))
    assert built.returncode == 0, built.stderr[-2000:]
    table = GalleryIndex.load(tmp_path / "index").items
    assert {"path", "pid", "camid"} <= set(table.columns) and (table["pid"] >= 0).all()
    image = table["path"].iloc[3]
    found = reidkd("search", "--index", str(tmp_path / "index"), image, table["path"].iloc[7], "--top-k", "5",
                   "--png", str(tmp_path / "lists.png"))
    assert found.returncode == 0, found.stderr[-2000:]
    rows = [line for line in found.stdout.splitlines() if line.startswith("|") and "---" not in line][1:]
    first = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert first[0] == image and first[1] == "1" and first[3] == image and float(first[2]) == pytest.approx(1, abs=1e-5)
    assert len(rows) == 10  # 5 per query
    png = cv2.imread(str(tmp_path / "lists.png"))
    assert png is not None and png.shape[0] > 2 * 128  # a row per query

    scored = reidkd("index", "eval", "--index", str(tmp_path / "index"), "--config", "configs/quickstart.yaml", *sets)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "| index Flat" in scored.stdout and "recall@10 1.0000" in scored.stdout and "queries/s" in scored.stdout


@pytest.mark.slow
def test_a_model_that_is_not_the_index_s_is_refused_in_one_line(setup, tmp_path):
    cfg, folder, _ = setup
    items, _ = items_from_config(cfg, "gallery")
    build_index(folder / "student.pt", items, tmp_path / "index")
    result = reidkd("search", "--index", str(tmp_path / "index"), items[0].path,
                    "--checkpoint", str(folder / "other.pt"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "not the model the index" in result.stderr and "rebuild the index" in result.stderr
    missing = reidkd("search", "--index", str(tmp_path / "nothing"), items[0].path)
    assert missing.returncode == 2 and "reidkd index build" in missing.stderr
