"""`reidkd run` end to end on the synthetic persons and on a custom CSV dataset."""
import json
from pathlib import Path

import pytest
from helpers import reidkd

from reid_kd.data import synth

pytestmark = pytest.mark.slow  # tiny runs end to end



def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def output_dir(overrides) -> Path:
    return Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("experiment.output_dir=")))


def test_run_on_synthetic_persons(tiny_overrides):
    result = reidkd("run", "--config", "configs/synth_person.yaml", *sets(tiny_overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "synth_market" in result.stdout and "| student (baseline)" in result.stdout
    run = output_dir(tiny_overrides) / "synth_person" / "baseline" / "seed0"
    record = json.loads((run / "metrics.json").read_text())
    assert record["dataset"] == "synth_market" and 0.0 <= record["mAP"] <= 1.0
    assert record["num_valid_queries"] > 0


def test_run_on_a_custom_csv_without_cameras(tiny_overrides, tmp_path):
    spec = synth.SynthSpec(train_ids=8, test_ids=6, cameras=4, images_per_id=4, image_size=32, seed=5)
    data = synth.generate(tmp_path / "vehicles", spec)
    rows = [f"image_train/{n},{int(n[:4])},,train\n" for n in (data / "name_train.txt").read_text().split()]
    queries = {}  # the first query image of each identity; the other test images are its gallery
    for name in (data / "name_query.txt").read_text().split():
        queries.setdefault(int(name[:4]), name)
    rows += [f"image_query/{n},{pid},,query\n" for pid, n in queries.items()]
    rows += [f"image_test/{n},{int(n[:4])},,gallery\n" for n in (data / "name_test.txt").read_text().split()
             if n not in queries.values()]
    (data / "mine.csv").write_text("path,id,camera,split\n" + "".join(rows))
    overrides = tiny_overrides + ["experiment.name=custom_e2e", "data.dataset=custom_csv",
                                  f"data.custom_csv.path={data / 'mine.csv'}"]
    check = reidkd("data", "check", "custom_csv", "--root", str(tmp_path), *sets(overrides))
    assert check.returncode == 0, check.stdout + check.stderr
    result = reidkd("run", "--config", "configs/quickstart.yaml", *sets(overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((output_dir(tiny_overrides) / "custom_e2e" / "baseline" / "seed0" / "metrics.json").read_text())
    assert record["dataset"] == "custom_csv" and 0.0 <= record["mAP"] <= 1.0
    n_queries = sum(1 for r in rows if r.endswith(",query\n"))
    assert record["num_valid_queries"] == n_queries  # no camera: no positive is removed as same-camera junk
