"""INT8 deployment (issue 38): a tiny student quantized by `reidkd quantize`, its float and INT8 ONNX models scored
by `reidkd eval` and `reidkd index`, and a suite's `deploy.int8` adding the leaderboard's INT8 columns.

The tolerances, on the tiny generated data (a seeded, untrained MobileNetV3-small at 32x32, calibrated on all 32
training images): the float ONNX model gives PyTorch's L2-normalised features to 1e-4; the INT8 model gives them
to 0.06 in every coordinate, with a cosine of at least 0.93 for every image (students of seeds 0-7 measured
0.016-0.046 and 0.946-0.996), and an mAP within 5 points of PyTorch's (measured within 3.3 points over seeds 0-7,
14 queries against 24 gallery images; on the quickstart's trained student, 1,415 images, -0.32 points: see
deploy/quantize.py). ONNX is an optional extra (`reid-kd[deploy]`): these tests skip without it.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import assert_one_line, cli

import reid_kd.deploy.export as export_mod
from reid_kd.bench.board_table import main_rows, table
from reid_kd.bench.leaderboard import build_leaderboard
from reid_kd.bench.suite import plan_suite, run_suite
from reid_kd.bench.suite_file import load_suite, parse_suite
from reid_kd.data.image_dataset import build_loaders
from reid_kd.deploy.index import GalleryIndex, build_index, extract, items_from_config
from reid_kd.deploy.index_eval import evaluate_index
from reid_kd.deploy.model import load_checkpoint
from reid_kd.deploy.onnx_model import OnnxModel
from reid_kd.errors import ConfigError
from reid_kd.evaluation import evaluate_model

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
FLOAT_TOLERANCE, INT8_TOLERANCE, INT8_COSINE, INT8_MAP_BOUND = 1e-4, 0.06, 0.93, 0.05


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def onnx_packages():
    """A skip, in one line, when the optional ONNX packages (`reid-kd[deploy]`) are not installed."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name)


@pytest.fixture(scope="module")
def quantized(deploy_setup, tmp_path_factory):
    """(config, student.pt, folder, what `reidkd quantize` printed): the tiny student's float and INT8 models."""
    onnx_packages()
    cfg, folder, overrides = deploy_setup
    out = tmp_path_factory.mktemp("int8")
    shown = cli("quantize", "--checkpoint", folder / "student.pt", "--config", QUICKSTART, *sets(overrides),
                "--out", out / "student.onnx")
    assert shown.exit_code == 0, shown.output
    return cfg, folder / "student.pt", out, shown.output


def test_float_and_int8_features_are_within_their_tolerance_of_pytorch(quantized):
    cfg, student, out, _ = quantized
    items = items_from_config(cfg, "query")[0] + items_from_config(cfg, "gallery")[0]
    cpu = torch.device("cpu")
    want = extract(load_checkpoint(student), items, cpu)
    as_float = extract(OnnxModel(out / "student.onnx"), items, cpu)
    as_int8 = extract(OnnxModel(out / "student.int8.onnx"), items, cpu)
    assert np.abs(as_float - want).max() < FLOAT_TOLERANCE
    assert np.abs(as_int8 - want).max() < INT8_TOLERANCE
    assert (as_int8 * want).sum(1).min() >= INT8_COSINE
    assert np.abs(as_int8 - as_float).max() > 1e-3  # quantized indeed, not the float graph again
    assert (out / "student.int8.onnx").stat().st_size < 0.4 * (out / "student.onnx").stat().st_size

    meta = json.loads((out / "student.int8.onnx.json").read_text())
    assert meta["file"] == "student.int8.onnx" and meta["input"]["height"] == cfg["data"]["height"]
    assert meta["quantization"]["calibration"] == {"method": "MinMax", "dataset": "synth_veri", "split": "train",
                                                      "images": 32, "seed": 0}  # 256 asked, 32 there


def test_int8_map_is_within_its_bound_of_pytorch_and_printed_beside_it(quantized):
    cfg, student, out, shown = quantized
    loaders = build_loaders(cfg["data"], 0)
    scores = {name: evaluate_model(model, loaders.query, loaders.gallery, cfg["eval"], torch.device("cpu"))["mAP"]
              for name, model in (("pytorch", load_checkpoint(student)), ("onnx", OnnxModel(out / "student.onnx")),
                                  ("int8", OnnxModel(out / "student.int8.onnx")))}
    assert scores["onnx"] == pytest.approx(scores["pytorch"], abs=1e-6)
    assert abs(scores["int8"] - scores["pytorch"]) <= INT8_MAP_BOUND
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in shown.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["PyTorch"][:3] == ["student.pt", f"{100 * scores['pytorch']:.2f}", "reference"]
    assert rows["ONNX float32"][:3] == ["student.onnx", f"{100 * scores['onnx']:.2f}", "+0.00"]
    assert rows["ONNX INT8"][:3] == ["student.int8.onnx", f"{100 * scores['int8']:.2f}",
                                     f"{100 * (scores['int8'] - scores['pytorch']):+.2f}"]
    assert all(float(r[-1]) > 0 for r in rows.values() if r[-1] != "Images/s")  # images/s of each, measured


def test_eval_and_index_score_the_int8_file_as_quantize_did(quantized, deploy_setup, tmp_path):
    cfg, _, out, _ = quantized
    _, _, overrides = deploy_setup
    int8 = out / "student.int8.onnx"
    loaders = build_loaders(cfg["data"], 0)
    want = evaluate_model(OnnxModel(int8), loaders.query, loaders.gallery, cfg["eval"], torch.device("cpu"))
    shown = cli("eval", "--checkpoint", int8, "--config", QUICKSTART, *sets(overrides))
    assert shown.exit_code == 0, shown.output
    assert f"| student.int8.onnx | mobilenet_v3_small | {100 * want['mAP']:.2f}" in shown.output
    build_index(int8, items_from_config(cfg, "gallery")[0], tmp_path / "index")
    scored = evaluate_index(GalleryIndex.load(tmp_path / "index"), cfg)
    assert scored["mAP"] == pytest.approx(want["mAP"], abs=1e-9) and scored["recall"] == 1.0


def test_an_onnx_file_without_its_json_or_runtime_is_one_line(quantized, deploy_setup, tmp_path, monkeypatch):
    _, student, out, _ = quantized
    _, _, overrides = deploy_setup
    alone = tmp_path / "alone.onnx"
    alone.write_bytes((out / "student.int8.onnx").read_bytes())
    assert_one_line(cli("eval", "--checkpoint", alone, "--config", QUICKSTART, *sets(overrides)),
                    "alone.onnx.json", "reidkd export")
    real = export_mod.importlib.util.find_spec
    monkeypatch.setattr(export_mod.importlib.util, "find_spec",
                        lambda name: None if name == "onnxruntime" else real(name))
    assert_one_line(cli("quantize", "--checkpoint", student, "--config", QUICKSTART, *sets(overrides),
                        "--out", tmp_path / "s.onnx"), "onnxruntime", "pip install -e '.[deploy]'")
    assert not (tmp_path / "s.onnx").exists()


def test_suite_deploy_block_is_checked_and_recorded_only_when_on():
    base = {"name": "s", "base": QUICKSTART, "seeds": [0], "methods": [{"name": "baseline", "method": "none"}]}
    for deploy, words in (({"int8": "yes"}, ["'deploy.int8'", "bool"]),
                          ({"calibration_images": 0}, ["'deploy.calibration_images'", "at least 1"]),
                          ({"int9": True}, ["'deploy.int9'", "did you mean 'int8'"]), (True, ["'deploy'", "mapping"])):
        with pytest.raises(ConfigError) as e:
            parse_suite(base | {"deploy": deploy})
        assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
    assert "deploy" not in parse_suite(base | {"deploy": {"int8": False}}).as_dict()
    on = parse_suite(base | {"deploy": {"int8": True, "calibration_images": 8}})
    assert on.int8 and on.as_dict()["deploy"] == {"int8": True, "calibration_images": 8}


def test_a_suite_whose_headline_is_not_symmetric_is_refused_int8_before_any_work(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    suite = parse_suite({"name": "s", "base": QUICKSTART, "seeds": [0], "deploy": {"int8": True},
                         "methods": [{"name": "baseline", "method": "none"}],
                         "set": [*overrides, f"experiment.output_dir={tmp_path}",
                                 "eval.protocols=[asymmetric,symmetric]"]})
    with pytest.raises(ConfigError, match="put symmetric first in eval.protocols"):
        plan_suite(suite)
    assert not (tmp_path / "s").exists()


def _record(entry, seed, mAP, **more):
    return {"entry": entry, "seed": seed, "failed": False, "mAP": mAP, "rank1": mAP, "rank5": mAP, "rank10": mAP,
            "mINP": mAP, "params": 9e5, "train_seconds": 60.0, "inference_images_per_sec": 1000.0} | more


def test_leaderboard_has_int8_columns_only_when_runs_recorded_them():
    entries = [{"name": n, "method": m, "label": n} for n, m in (("baseline", "none"), ("kd", "kd"))]
    plain = pd.DataFrame([_record(e, s, 0.5 + 0.01 * s) for e in ("baseline", "kd") for s in (0, 1)])
    assert "INT8" not in table(main_rows(plain, entries, 2))
    int8 = {"int8_mAP": 0.4, "int8_images_per_sec": 2000.0}
    quantized = pd.DataFrame([_record("baseline", 0, 0.5, **int8), _record("kd", 0, 0.5, **int8),
                              _record("baseline", 1, 0.51, int8_mAP=0.42, int8_images_per_sec=2001.0),
                              _record("kd", 1, 0.51)])  # kd's seed 1 not quantized: its mean is seed 0's alone
    rows = main_rows(quantized, entries, 2)
    assert [r["INT8 mAP"] for r in rows] == ["41.00 ± 1.41", "40.00"]
    assert [r["INT8 images/s"] for r in rows] == ["2000", "2000"]
    assert "| INT8 mAP" in table(rows)


def test_a_suite_with_deploy_int8_records_int8_once_and_the_leaderboard_shows_it(tiny_overrides, tmp_path, logged):
    """A tiny suite (one seed, the baseline) with `deploy.int8`: its student quantized after training, its INT8 mAP
    and images/s in the leaderboard; run again, nothing is quantized again."""
    onnx_packages()
    out = tmp_path / "runs"
    overrides = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    suite_file = tmp_path / "tiny_int8.yaml"
    suite_file.write_text(yaml.safe_dump({
        "name": "tiny_int8", "base": QUICKSTART, "seeds": [0], "methods": [{"name": "baseline", "method": "none"}],
        "set": [*overrides, f"experiment.output_dir={out}", "experiment.threads=1"],
        "deploy": {"int8": True, "calibration_images": 8}}, sort_keys=False))
    run_suite(load_suite(suite_file))
    run = out / "tiny_int8" / "baseline" / "seed0"
    record = json.loads((run / "int8.json").read_text())
    assert record["quantization"]["calibration"]["images"] == 8 and (run / "student.int8.onnx").is_file()
    assert record["config_hash"] == json.loads((run / "metrics.json").read_text())["config_hash"]
    assert sum("INT8: quantizing" in line for line in logged()) == 1
    stamp = (run / "int8.json").stat().st_mtime_ns
    run_suite(load_suite(suite_file))
    assert (run / "int8.json").stat().st_mtime_ns == stamp
    assert sum("INT8: quantizing" in line for line in logged()) == 1  # resumed: the record of this student is kept

    md, _, summary, rejected = build_leaderboard(out / "tiny_int8", tmp_path / "boards")
    assert not rejected
    header = next(line for line in summary.splitlines() if line.startswith("| Method"))
    row = next(line for line in summary.splitlines() if line.startswith("| baseline (student)"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["INT8 mAP"] == f"{100 * record['models']['int8']['mAP']:.2f}"
    assert cells["INT8 images/s"] == f"{record['models']['int8']['inference_images_per_sec']:.0f}"
    assert "INT8 mAP, INT8 images/s:" in summary
