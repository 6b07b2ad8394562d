"""`reidkd tune`: options are scored on identities held out of the train split; the test split is never read."""
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reid_kd.bench.suite_file import parse_suite
from reid_kd.bench.tune import parse_grid, tuning_suite
from reid_kd.cli import main
from reid_kd.data.image_dataset import load_dataset
import reid_kd.data.image_dataset as image_dataset
from reid_kd.data.validation import validation_split
from reid_kd.engine.configs import load_config
from reid_kd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def test_validation_split_holds_out_train_identities_only(tiny_overrides):
    cfg = load_config(QUICKSTART, tiny_overrides)
    full = load_dataset(cfg["data"])
    val = validation_split(full, 0.25, seed=0)
    train_paths = {it.path for it in full.train}
    test_paths = {it.path for it in full.query + full.gallery}
    val_paths = {it.path for it in val.query + val.gallery}
    assert val_paths and val_paths <= train_paths and not val_paths & test_paths
    assert not val_paths & {it.path for it in val.train}  # held-out identities leave training
    assert len({it.path for it in val.train} | val_paths) == len(train_paths)  # nothing lost
    held = {it.pid for it in full.train if it.path in val_paths}
    assert len(held) == 2 and {it.pid for it in val.train} == set(range(len({it.pid for it in full.train}) - 2))
    assert len({(it.pid, it.camid) for it in val.query}) == len(val.query)  # one query per identity and camera
    assert val.draws is None and val.name == f"{full.name}:val"
    assert validation_split(full, 0.25, seed=0) == val and validation_split(full, 0.25, seed=1) != val


@pytest.mark.slow
def test_tune_never_reads_the_test_split_and_writes_the_sweep_table(tiny_overrides, tmp_path, monkeypatch):
    data_root = Path(next(o.split("=", 1)[1] for o in tiny_overrides if o.startswith("data.root=")))
    load_dataset(load_config(QUICKSTART, tiny_overrides)["data"])  # the synthetic data exists
    root = tmp_path / "data"
    shutil.copytree(data_root / "synth_veri", root / "VeRi")
    for folder in ("image_query", "image_test"):  # a test split that cannot be decoded: reading it fails
        for f in (root / "VeRi" / folder).iterdir():
            f.write_bytes(b"not an image")
    read = []
    real_read = image_dataset.read_image
    monkeypatch.setattr(image_dataset, "read_image", lambda path: read.append(path) or real_read(path))
    overrides = [o for o in tiny_overrides if not o.startswith(("experiment.output_dir=", "data.root="))]
    suite = {"name": "tiny", "base": QUICKSTART, "seeds": [0],
             "set": [*overrides, f"data.root={root}", "data.dataset=veri776",
                     f"experiment.output_dir={tmp_path / 'runs'}"],
             "methods": [{"name": "baseline", "method": "none"}, {"name": "kd", "method": "kd"},
                         {"name": "at", "method": "at"}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    args = ["tune", "--suite", str(tmp_path / "suite.yaml"), "--grid", "distill.kd.weight=0.5,2",
            "--grid", "at:distill.at.weight=100", "--validation-fraction", "0.25", "--out", str(tmp_path / "lb")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert read and not [p for p in read if "image_query" in p or "image_test" in p]
    md = (tmp_path / "lb" / "tiny-tune-kd.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert {"baseline (student)", "kd-weight-0.5", "kd-weight-2"} <= set(rows)
    assert "validation identities" in md and "Dataset `veri776:val`" in md
    assert rows["kd-weight-2"].split("|")[2].strip() == "1/1" and "at-weight-100" not in rows
    at_rows = [line.split("|")[1].strip() for line in (tmp_path / "lb" / "tiny-tune-at.md").read_text().splitlines()
               if line.startswith("| ")]
    assert set(at_rows[1:]) == {"teacher (resnet18)", "baseline (student)", "at-weight-100"}
    assert "4 run(s) side by side" in result.output  # one baseline, every grid point of the seed together
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and again.output.count("done, skipped") == 4  # resumable like bench


def test_each_grid_finds_its_entry():
    suite = parse_suite({"name": "s", "base": QUICKSTART, "seeds": [0], "methods": [
        {"name": "baseline", "method": "none"}, {"name": "kd", "method": "kd"}, {"name": "gird", "method": "gird"},
        {"name": "gird_no_memory", "method": "gird", "ablation_of": "gird"}]})
    grids = parse_grid(suite, ("distill.kd.weight=1,2", "distill.kd.temperature=4", "distill.gird.weight_sim=3",
                               "gird_no_memory:distill.gird.weight_sim=1"))
    assert grids == {"kd": [(("distill.kd.weight",), [("1",), ("2",)]), (("distill.kd.temperature",), [("4",)])],
                     "gird": [(("distill.gird.weight_sim",), [("3",)])],
                     "gird_no_memory": [(("distill.gird.weight_sim",), [("1",)])]}
    assert parse_grid(suite, ("train.lr=1e-3",), "kd") == {"kd": [(("train.lr",), [("1e-3",)])]}
    together = parse_grid(suite, ("distill.gird.weight_sim,distill.gird.weight_evo=3:1,30:10",))
    assert [e.set for e in tuning_suite(suite, together)[0].entries[1:]] == [
        ("distill.gird.weight_sim=3", "distill.gird.weight_evo=1"), ("distill.gird.weight_sim=30",
                                                                     "distill.gird.weight_evo=10")]
    tuning, tables = tuning_suite(suite, grids)
    assert tuning.seeds == (0,) and tuning_suite(suite, grids, seeds=(3, 4))[0].seeds == (3, 4)
    assert [e.name for e in tuning.entries] == ["baseline", "kd-weight-1-temperature-4", "kd-weight-2-temperature-4",
                                                "gird-weight_sim-3", "gird_no_memory-weight_sim-1"]
    assert tables["gird"] == ["baseline", "gird-weight_sim-3"] and tuning.name == "s-tune-kd-gird-gird_no_memory"
    for bad, words in [(("train.lr=1e-3",), "name the entry"), (("distill.kd.weight=",), "must look like"),
                       (("nope:distill.kd.weight=1",), "no entry 'nope'"),
                       (("distill.kd.weight,distill.kd.temperature=1:4,2",), "moved together"), (("baseline:train.lr=1",), "baseline")]:
        with pytest.raises(ConfigError, match=words):
            parse_grid(suite, bad)
