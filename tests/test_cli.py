"""`reidkd` end to end on a tiny synthetic config: the first run and a bad key as a user starts them (a real
subprocess: the entry point, its imports, its exit status), the rest in this process."""
import json
from pathlib import Path

import pytest
import torch
from helpers import reidkd, reidkd_process

pytestmark = pytest.mark.slow  # the CLI in subprocesses

METRICS_FIELDS = {"method", "dataset", "teacher_backbone", "student_backbone", "seed", "mAP", "mINP", "rank1",
                  "rank5", "rank10", "params", "train_seconds", "epochs", "git_commit", "config_hash",
                  "environment"}


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def quick_run(tiny_overrides):
    result = reidkd_process("run", "--config", "configs/quickstart.yaml", *sets(tiny_overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_run_trains_teacher_and_student_and_writes_metrics(quick_run, tiny_overrides):
    out = Path(next(o.split("=", 1)[1] for o in tiny_overrides if o.startswith("experiment.output_dir=")))
    record = json.loads((out / "quickstart" / "baseline" / "seed0" / "metrics.json").read_text())
    assert METRICS_FIELDS <= set(record)
    assert record["method"] == "baseline" and record["student_backbone"] == "mobilenet_v3_small"
    assert 0.0 <= record["mAP"] <= 1.0 and record["params"] > 0
    assert record["environment"]["torch"] == torch.__version__ and record["environment"]["threads"] >= 1
    for name in ("config.yaml", "student.pt", "log.csv"):
        assert (out / "quickstart" / "baseline" / "seed0" / name).is_file()
    table = quick_run.stdout
    assert "| teacher" in table and "| student (baseline)" in table and "mINP" in table and "Rank-5" in table


def test_second_run_reuses_the_cached_teacher(quick_run, tiny_overrides):
    again = reidkd("run", "--config", "configs/quickstart.yaml", *sets(tiny_overrides))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "teacher: reusing" in again.stdout


def test_eval_scores_a_saved_student(quick_run, tiny_overrides):
    out = Path(next(o.split("=", 1)[1] for o in tiny_overrides if o.startswith("experiment.output_dir=")))
    student = out / "quickstart" / "baseline" / "seed0" / "student.pt"
    result = reidkd("eval", "--checkpoint", str(student), "--config", "configs/quickstart.yaml",
                    *sets(tiny_overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    stored = json.loads(student.with_name("metrics.json").read_text())
    assert f"{100 * stored['mAP']:.2f}" in result.stdout  # same model, same data, same number


def test_missing_dataset_is_one_line_without_traceback(tmp_path):
    result = reidkd("run", "--set", "data.dataset=veri776", "--set", f"data.root={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(tmp_path / "VeRi") in lines[0] and "image_train/" in lines[0]


def test_bad_config_key_is_one_line(tmp_path):
    result = reidkd_process("run", "--set", "train.epochz=3")
    assert result.returncode == 2 and "train.epochz" in result.stderr and "Traceback" not in result.stderr
