"""`reidkd tune`: options are scored on identities held out of the train split; the test split is never read."""
import shutil
from pathlib import Path

import yaml
from click.testing import CliRunner

import reid_kd.data.image_dataset as image_dataset
from reid_kd.cli import main
from reid_kd.config import load_config
from reid_kd.data.image_dataset import load_dataset
from reid_kd.data.validation import validation_split

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
             "methods": [{"name": "baseline", "method": "none"}, {"name": "kd", "method": "kd"}]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    result = CliRunner().invoke(main, ["tune", "--suite", str(tmp_path / "suite.yaml"), "--entry", "kd",
                                       "--grid", "distill.kd.weight=0.5,2", "--validation-fraction", "0.25",
                                       "--out", str(tmp_path / "lb")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert read and not [p for p in read if "image_query" in p or "image_test" in p]
    md = (tmp_path / "lb" / "tiny-tune-kd.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert {"baseline (student)", "kd-weight-0.5", "kd-weight-2"} <= set(rows)
    assert "validation identities" in md and "Dataset `veri776:val`" in md
    assert rows["kd-weight-2"].split("|")[2].strip() == "1/1"
    again = CliRunner().invoke(main, ["tune", "--suite", str(tmp_path / "suite.yaml"), "--entry", "kd",
                                      "--grid", "distill.kd.weight=0.5,2", "--validation-fraction", "0.25",
                                      "--out", str(tmp_path / "lb")])
    assert again.exit_code == 0 and again.output.count("done, skipped") == 3  # resumable like bench
