"""Issue 39: bad input and faults. Each refusal is one line naming the fix, exit status 2, no traceback, no
training before it and nothing given changed; each damaged cache is rebuilt beside the damaged files, said in a
line; and the numbers a fault used to get wrong (data-changing suite entries, the image size a checkpoint is
scored at, the teacher's precision) are now right."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from helpers import assert_one_line, cli

from reid_kd.engine.configs import load_config

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def moved(overrides, out: Path, *extra: str) -> list[str]:
    """`overrides` writing into `out`, plus `extra`."""
    return [*(o for o in overrides if not o.startswith("experiment.output_dir=")), f"experiment.output_dir={out}",
            *extra]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` by content (lock files record holders, not results)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


# --- the config check: no number may be NaN or infinite ------------------------------------------------------

@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_non_finite_loss_weight_is_refused_like_a_non_finite_learning_rate(value, tiny_overrides, tmp_path):
    line = assert_one_line(cli("run", "--config", QUICKSTART, *sets(moved(
        tiny_overrides, tmp_path / "runs", "distill.method=kd", f"distill.kd.weight={value}"))),
        "distill.kd.weight", "finite")
    assert "Traceback" not in line and not (tmp_path / "runs").exists()


# --- suites and tune grids compare entries on one dataset ----------------------------------------------------

def suite_file(tmp_path: Path, tiny_overrides, entry_set: list[str]) -> Path:
    """A tiny suite (so a regression trains seconds, not hours) whose kd entry sets `entry_set`."""
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "mini", "base": QUICKSTART, "seeds": [0], "set": moved(
        tiny_overrides, tmp_path / "runs"), "methods": [{"name": "baseline", "method": "none"},
                                                         {"name": "kd", "method": "kd", "set": entry_set}]}))
    return path


@pytest.mark.parametrize("entry_set, key", [
    (["data.height=64", "data.width=64"], "data.height"),
    (["distill.kd.weight=2", "data.synth.train_ids=20"], "data.synth.train_ids"),
    (["data.dataset=veri776"], "data.dataset"),
    (["data.validation_fraction=0.2"], "data.validation_fraction"),
])
def test_a_suite_entry_that_changes_the_data_is_refused(entry_set, key, tmp_path, tiny_overrides):
    path = suite_file(tmp_path, tiny_overrides, entry_set)
    before = path.read_bytes()
    for command in (["--status"], []):
        assert_one_line(cli("bench", "--suite", path, *command), "methods[1]", key, "changes the data",
                        "the suite's own 'set'")
    assert path.read_bytes() == before and not (tmp_path / "runs").exists()


def test_a_suite_entry_may_set_data_keys_that_leave_the_data_alone(tmp_path, tiny_overrides):
    from reid_kd.bench.suite_file import load_suite

    suite = load_suite(suite_file(tmp_path, tiny_overrides, ["data.workers=2", "data.test_batch_size=16", "data.cache_images=false"]))
    cfg = suite.run_config(suite.entries[1], 0)
    assert cfg["data"]["workers"] == 2 and cfg["data"]["test_batch_size"] == 16


@pytest.mark.parametrize("grid, key", [("kd:data.synth.train_ids=20,22", "data.synth.train_ids"),
                                       ("kd:data.height,data.width=64:64,96:96", "data.height"),
                                       ("kd:experiment.output_dir=a,b", "experiment.output_dir")])
def test_a_tune_grid_over_the_data_is_refused(grid, key, tmp_path, tiny_overrides):
    path = suite_file(tmp_path, tiny_overrides, [])
    result = cli("tune", "--suite", path, "--grid", grid, "--out", tmp_path / "tables")
    assert_one_line(result, grid, key, "with --set, for every run")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tables").exists()


# --- ImageNet weights: a file at the cache path must be the published one ------------------------------------

@pytest.mark.parametrize("kind", ["other weights", "empty"])
def test_a_file_at_the_imagenet_cache_path_that_is_not_the_published_one_is_refused(kind, hub, tiny_overrides,
                                                                                      tmp_path):
    import torch
    import torchvision

    from reid_kd.models.weights import imagenet_file

    file = imagenet_file("resnet18")
    file.parent.mkdir(parents=True)
    if kind == "empty":
        file.write_bytes(b"")
    else:  # loads, fits the architecture, and is not the published file
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), file)
    before = file.read_bytes()
    result = cli("run", "--config", QUICKSTART, *sets(moved(tiny_overrides, tmp_path / "runs",
                                                             "teacher.pretrained=imagenet")))
    line = assert_one_line(result, str(file), "not the published ImageNet weights of resnet18", "its name says f37072fd",
                           "delete it", "https://download.pytorch.org/models/resnet18-f37072fd.pth")
    assert ("an empty file" in line) == (kind == "empty")
    assert file.read_bytes() == before and not list((tmp_path / "runs").rglob("*.pt"))  # nothing trained
