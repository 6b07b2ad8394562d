"""`reidkd tune`: options are scored on identities held out of the train split; the test split is never read;
a grid whose best point sits at an edge is extended past it, within the option's bounds."""
import math
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from helpers import run_record
import reid_kd.bench.tune as tune
from reid_kd.bench.grid_edges import HIGHEST, INSIDE, LISTED, LOWEST, ONLY, Edge, edge_of
from reid_kd.bench.suite import plan_suite
from reid_kd.bench.suite_file import parse_suite
from reid_kd.bench.tune import parse_grid, tuning_suite
from reid_kd.config import config_hash
from reid_kd.cli import main
from reid_kd.data.image_dataset import load_dataset
import reid_kd.data.image_dataset as image_dataset
from reid_kd.data.validation import validation_split
from reid_kd.engine.configs import load_config
from reid_kd.engine.paths import method_name, run_folder, run_id, run_name, run_state
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
            "--grid", "at:distill.at.weight=100", "--validation-fraction", "0.25", "--out", str(tmp_path / "lb"),
            "--extend", "0"]
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


def test_the_next_point_past_an_edge_keeps_the_grids_spacing_and_bounds():
    free = [(None, None)]
    assert edge_of(("w",), [("0.1",), ("1",), ("10",)], ("10",), free) == Edge(HIGHEST, ("10",), ("100.0",))
    assert edge_of(("w",), [("0.1",), ("1",), ("10",)], ("0.1",), free).next == ("0.01",)
    assert edge_of(("w",), [("0.1",), ("0.3",)], ("0.3",), free).next == ("0.9",)  # x3, not 0.8999999999999999
    assert edge_of(("w",), [("1",), ("2",), ("3",)], ("3",), free).next == ("4",)  # evenly spaced: a step of 1
    assert edge_of(("w",), [("2",), ("1",), ("3",)], ("1",), free).stop == ""  # 1, 2, 3 in any order
    assert edge_of(("w",), [("1",), ("2",), ("4",)], ("4",), free).next == ("8",)  # a factor: integers stay integers
    assert edge_of(("w",), [("1e-3",), ("1e-2",)], ("1e-3",), free).next == ("0.0001",)
    crossing = edge_of(("w",), [("0",), ("1",), ("2",)], ("0",), free)
    assert crossing.at == LOWEST and crossing.next is None and "would cross 0" in crossing.stop
    assert edge_of(("w",), [("0",), ("1",), ("2",)], ("1",), free).at == INSIDE
    assert edge_of(("w",), [("4",)], ("4",), free).at == ONLY
    assert edge_of(("e",), [("bn_feat",), ("global_feat",)], ("bn_feat",), free).at == LISTED
    together = edge_of(("a", "b"), [("3", "1"), ("30", "10")], ("30", "10"), free * 2)
    assert together.next == ("300", "100")  # moved together: along the same line
    assert edge_of(("t",), [("0.004",), ("0.002",)], ("0.002",), [(0.001, 10.0)]).next == ("0.001",)  # at the bound
    stopped = edge_of(("t",), [("0.002",), ("0.001",)], ("0.001",), [(0.001, 10.0)])
    assert stopped.next is None and stopped.stop == "the next value of t, 0.0005, is below its bound (at least 0.001)"


def fake_training(monkeypatch, score) -> list[str]:
    """`run_suite` without training: each run not done gets a metrics.json whose mAP is `score(cfg)` (the baseline's
    0.4), as bench would leave it (skipped when done, so resumable); returns the runs it trained."""
    trained = []

    def run_suite(suite, extra=(), overwrite=False):
        for entry, seed, cfg in plan_suite(suite, extra, overwrite):
            if run_state(cfg) != "done":
                trained.append(run_id(entry.name, seed))
                mAP = 0.4 if cfg["distill"]["method"] == "none" else score(cfg)
                run_folder(cfg).finish(run_record(method_name(cfg), run_name(cfg), seed, config_hash(cfg), mAP))
        return [run_folder(cfg).read_metrics() for _, _, cfg in suite.runs(extra)]

    monkeypatch.setattr(tune, "run_suite", run_suite)
    return trained


def tune_fast(tmp_path, methods, *args):
    suite = {"name": "tiny", "base": QUICKSTART, "seeds": [0, 1], "set": [f"experiment.output_dir={tmp_path / 'runs'}"],
             "methods": [{"name": "baseline", "method": "none"}, *methods]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    result = CliRunner().invoke(main, ["tune", "--suite", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "lb"),
                                       *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def where(md: str, key: str) -> str:
    """The sweep table's line on where the chosen value of `key` sits."""
    return next(line for line in md.splitlines() if line.startswith(f"- `{key}`"))


def test_a_grid_whose_best_point_sits_at_an_edge_is_extended_and_the_table_says_where(tmp_path, monkeypatch):
    peak = fake_training(monkeypatch, lambda cfg: 0.5 - 0.01 * abs(math.log2(cfg["distill"]["kd"]["weight"]) - 2)
                         + 0.001 * cfg["experiment"]["seed"])  # best at weight 4, past the grid's highest, 2
    result = tune_fast(tmp_path, [{"name": "kd", "method": "kd"}], "--grid", "distill.kd.weight=0.5,1,2")
    assert "kd: its best point sits at the highest distill.kd.weight tried (2): adding 4.0" in result.output
    assert "adding 8.0" in result.output  # 4 was best again, and at the edge: one more round
    md = (tmp_path / "lb" / "tiny-tune-kd.md").read_text()
    rows = {line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")}
    assert {"kd-weight-4.0", "kd-weight-8.0"} <= rows
    assert "`kd-weight-4.0` has the best mean validation mAP (50.05)" in md
    assert where(md, "distill.kd.weight") == ("- `distill.kd.weight`: given 0.5, 1, 2, added 4.0, 8.0. The chosen "
                                              "value sits inside the grid.")
    assert len(peak) == 2 * 6  # baseline and 5 weights, 2 seeds
    tune_fast(tmp_path, [{"name": "kd", "method": "kd"}], "--grid", "distill.kd.weight=0.5,1,2")
    assert len(peak) == 12  # resumable: the extension points are runs of the tuning suite like the others


def test_extension_is_bounded_in_rounds_and_the_table_says_the_optimum_may_lie_beyond(tmp_path, monkeypatch):
    fake_training(monkeypatch, lambda cfg: 0.5 - 0.01 * cfg["distill"]["kd"]["temperature"])  # lower is better
    result = tune_fast(tmp_path, [{"name": "kd", "method": "kd"}], "--grid", "distill.kd.temperature=2,4",
                       "--extend", "1")
    assert "adding 1.0" not in result.output and "adding 1" in result.output  # integers stay integers
    md = (tmp_path / "lb" / "tiny-tune-kd.md").read_text()
    assert where(md, "distill.kd.temperature").startswith(
        "- `distill.kd.temperature`: given 2, 4, added 1. The chosen value sits at the lowest tried, where 1 round(s) "
        "of extension left it: the optimum may lie beyond")


def test_a_bound_stops_the_extension_with_a_line_saying_so(tmp_path, monkeypatch):
    fake_training(monkeypatch, lambda cfg: 0.3 + 0.1 * cfg["distill"]["crd"]["nce_m"])  # higher is better
    result = tune_fast(tmp_path, [{"name": "crd", "method": "crd"}], "--grid", "distill.crd.nce_m=0.5,0.9")
    line = ("crd: distill.crd.nce_m not extended past 0.9: the next value of distill.crd.nce_m, 1.62, is above its "
            "bound (at most 0.999)")
    assert line in result.output and "adding" not in result.output
    md = (tmp_path / "lb" / "tiny-tune-crd.md").read_text()
    assert where(md, "distill.crd.nce_m") == (
        "- `distill.crd.nce_m`: given 0.5, 0.9. The chosen value sits at the highest tried, not extended past it: the "
        "next value of distill.crd.nce_m, 1.62, is above its bound (at most 0.999).")
