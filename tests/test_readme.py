"""The README's set-up commands are exactly two, CI runs the README's test command, and its custom-data example
works as written."""
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import cli

from reid_kd.data.image_dataset import load_dataset
from reid_kd.engine.configs import load_config
from reid_kd.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2
    assert "reidkd run --config configs/quickstart.yaml" in commands[0]
    ci_lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith(("#", "set ", "cd "))]
    assert ci_lines == [commands[1]]


def custom_data_section() -> str:
    return (ROOT / "README.md").read_text().split("### Your own data", 1)[1].split("\n## ", 1)[0]


def test_the_custom_data_example_checks_out_and_its_junk_rule_is_as_said(tmp_path, jpeg):
    """The README's CSV, config and `data check` line, run as written on generated images; the query's AP on
    features built so that the junk rule decides it: nearest to it the image of its identity and camera, then
    another identity's, then its positive under the other camera."""
    section = custom_data_section()
    listing = re.search(r"```\n(path,id,camera,split\n.*?)\n```", section, re.S).group(1)
    config = re.search(r"```yaml\n(.*?)\n```", section, re.S).group(1)
    check = next(line for line in section.splitlines() if line.startswith("reidkd data check"))
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    (tmp_path / "configs" / "shop.yaml").write_text(config)
    rows = [line.split(",") for line in listing.splitlines()[1:]]
    for i, row in enumerate(rows):
        jpeg(tmp_path / "datasets" / "shop" / row[0], i)
    said = " ".join(section.split())
    for cameras, map_ in ((True, 1 / 2), (False, (1 + 2 / 3) / 2)):  # junk left out, or a positive at rank 1
        body = [",".join(r if cameras else [r[0], r[1], "", r[3]]) for r in rows]
        (tmp_path / "datasets" / "shop" / "list.csv").write_text("\n".join([listing.splitlines()[0], *body]) + "\n")
        args = [a if a not in ("datasets", "configs/shop.yaml") else str(tmp_path / a) for a in shlex.split(check)[1:]]
        result = cli(*args)
        assert result.exit_code == 0 and "custom_csv: OK" in result.output, result.output
        no_cameras = "no camera ids: evaluation keeps same-camera positives"
        assert (no_cameras in result.output) != cameras and no_cameras in said
        cfg = load_config(tmp_path / "configs" / "shop.yaml", [f"data.root={tmp_path / 'datasets'}"])
        ds = load_dataset(cfg["data"])
        assert ds.has_cameras == cameras and [Path(it.path).name for it in ds.query] == ["eve_door_q.jpg"]
        near = {"eve_door_0.jpg": [1.0, 0.0], "finn_till_0.jpg": [0.9, 0.1], "eve_till_0.jpg": [0.8, 0.2]}
        gf = np.array([near[Path(it.path).name] for it in ds.gallery], np.float32)
        got = evaluate(np.array([[1.0, 0.0]], np.float32), gf, [it.pid for it in ds.query],
                       [it.pid for it in ds.gallery], [it.camid for it in ds.query], [it.camid for it in ds.gallery],
                       max_rank=10, same_camera_is_junk=ds.has_cameras)
        assert got["mAP"] == pytest.approx(map_)
