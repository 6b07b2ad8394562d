"""Side-by-side rank lists (`reidkd ranklists`): the selections on hand-built APs, the models a comparison holds,
and the command on tiny generated data: its pictures and their marks, its page, and the page opened whole in a
headless browser."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import assert_one_line, cli, reference

from reid_kd.deploy.compared import recorded_config, resolve
from reid_kd.deploy.index import extract
from reid_kd.deploy.model import load_checkpoint
from reid_kd.deploy.ranklists import reference_index, select_queries
from reid_kd.data.image_dataset import load_dataset
from reid_kd.errors import UserError
from reid_kd.data.datasets.base import Item
from reid_kd.evaluation.visualize import GAP, GREEN, RED, TILE_W, _label, query_png, row_top, side_by_side_size

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
NAN = np.nan


def test_selections_pick_what_they_say():
    ap = np.array([[.9, .9, .9, .9, .9, NAN, .9],   # teacher
                   [.2, .8, .5, .5, .1, NAN, .6],   # baseline, the reference
                   [.7, .3, .5, .9, .2, NAN, .4]])  # distilled, the last: query 5 has no positive (NaN)
    # distilled - baseline: .5, -.5, 0, .4, .1, -, -.2
    assert list(select_queries(ap, "fixed", 5, reference=1)) == [0, 3, 4]  # only those it raised, most first
    assert list(select_queries(ap, "fixed", 2, reference=1)) == [0, 3]
    assert list(select_queries(ap, "broken", 5, reference=1)) == [1, 6]
    assert list(select_queries(ap, "fixed", 5, reference=0)) == []  # the teacher is above it everywhere
    assert list(select_queries(ap, "worst", 3)) == [4, 1, 6]
    assert list(select_queries(ap, "best", 2)) == [3, 0]
    drawn = {seed: list(select_queries(ap, "random", 3, seed=seed)) for seed in range(8)}
    assert all(len(d) == 3 and 5 not in d and d == sorted(d) for d in drawn.values())
    assert drawn[4] == list(select_queries(ap, "random", 3, seed=4)) and len({tuple(d) for d in drawn.values()}) > 1
    assert list(select_queries(ap, "random", 10)) == [0, 1, 2, 3, 4, 6]


def test_the_reference_is_baseline_else_the_first():
    assert reference_index(["teacher", "baseline", "gird"], None) == 1
    assert reference_index(["teacher", "cskd", "gird"], None) == 0
    assert reference_index(["teacher", "baseline", "gird"], "teacher") == 0
    with pytest.raises(UserError, match="last model"):
        reference_index(["baseline", "gird"], "gird")
    with pytest.raises(UserError, match="none of the models"):
        reference_index(["baseline", "gird"], "kd")


def test_models_are_named_from_their_folders_and_a_run_finds_its_teacher(tmp_path):
    runs = tmp_path / "runs"
    for run in ("baseline", "gird"):
        (runs / "x" / run / "seed0").mkdir(parents=True)
        (runs / "x" / run / "seed0" / "student.pt").write_bytes(b"")
        (runs / "x" / run / "seed0" / "config.yaml").write_text("{}")
    (runs / "x" / "gird" / "seed0" / "metrics.json").write_text(json.dumps({"teacher": {"source": "teachers/k1"}}))
    (runs / "teachers" / "k1").mkdir(parents=True)
    (runs / "teachers" / "k1" / "teacher.pt").write_bytes(b"")
    (tmp_path / "mine.pt").write_bytes(b"")
    models = resolve([str(runs / "x" / "gird" / "seed0"), str(runs / "x" / "baseline" / "seed0" / "student.pt"),
                      f"ours={tmp_path / 'mine.pt'}", str(tmp_path / "mine.pt")], with_teacher=True)
    assert [m.name for m in models] == ["teacher", "gird", "baseline", "ours", "mine"]
    assert models[0].checkpoint == runs / "teachers" / "k1" / "teacher.pt"
    assert recorded_config(models) == runs / "x" / "gird" / "seed0" / "config.yaml"
    assert recorded_config(models[3:]) is None
    with pytest.raises(UserError, match="two models are named 'gird'"):
        resolve([str(runs / "x" / "gird" / "seed0")] * 2)
    with pytest.raises(UserError, match="records no teacher"):
        resolve([str(runs / "x" / "baseline" / "seed0")], with_teacher=True)
    with pytest.raises(UserError, match="holds no student.pt or teacher.pt"):
        resolve([str(runs / "x")])
    with pytest.raises(UserError, match="model not found"):
        resolve([str(tmp_path / "nowhere")])


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def ranked(deploy_setup, tmp_path_factory):
    """`reidkd ranklists` of the two tiny checkpoints (baseline, then distilled), 2 queries per selection, top 5;
    and the independent reference: each model's features and each query's AP by a plain argsort of every row."""
    cfg, folder, overrides = deploy_setup
    out = tmp_path_factory.mktemp("ranklists")
    models = {"baseline": folder / "student.pt", "distilled": folder / "other.pt"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = cli("ranklists", *[f"{n}={p}" for n, p in models.items()], "--config", QUICKSTART, *sets(overrides),
                     "--queries", 2, "--top-k", 5, "--out", out, "--device", "cpu")
        dataset = load_dataset(cfg["data"])
        feats = {n: [extract(load_checkpoint(p), items, torch.device("cpu")) for items in
                     (dataset.query, dataset.gallery)] for n, p in models.items()}
    finally:
        torch.set_num_threads(threads)
    labels = [np.array([[it.pid, it.camid] for it in items]) for items in (dataset.query, dataset.gallery)]
    ap = np.stack([reference(qf, gf, labels[0][:, 0], labels[1][:, 0], labels[0][:, 1], labels[1][:, 1], "cosine",
                             10)[4] for qf, gf in feats.values()])
    return result, out, dataset, feats, labels, ap


def page_rows(page: str, how: str) -> list[list[str]]:
    """The cells of selection `how`'s table on the page: query, identity, then each model's AP."""
    section = page.split(f'<h2 id="{how}">', 1)[1].split("<h2", 1)[0]
    return [re.findall(r"<td>(?:<a [^>]*>)?([^<]*)", row) for row in re.findall(r"<tr><td>.*?</tr>", section)]


def test_the_command_writes_one_picture_per_query_and_the_page(ranked):
    result, out, dataset, feats, labels, ap = ranked
    assert result.exit_code == 0, result.output
    assert "rank lists of baseline, distilled: " in result.output
    page = (out / "index.html").read_text()
    drawn = set()
    for how in ("fixed", "broken", "worst", "best", "random"):
        want = select_queries(ap, how, 2, reference=0, seed=0)  # the reference picks from its own APs
        rows = page_rows(page, how)
        assert [int(r[0]) for r in rows] == list(want), how
        for qi, row in zip(want, rows):
            assert row[1:] == [str(dataset.query[qi].pid), f"{100 * ap[0, qi]:.1f}", f"{100 * ap[1, qi]:.1f}"]
            assert f'src="{query_png(qi, dataset.query[qi])}"' in page
        drawn |= set(want)
    assert len(drawn) >= 4 and sorted(p.name for p in out.glob("*.png")) == sorted(
        query_png(qi, dataset.query[qi]) for qi in drawn)
    (q_pids, q_cams), (g_pids, g_cams) = labels[0].T, labels[1].T
    checked = 0
    for qi in drawn:
        img = cv2.cvtColor(cv2.imread(str(out / query_png(qi, dataset.query[qi]))), cv2.COLOR_BGR2RGB)
        assert img.shape == (*side_by_side_size(2, 5), 3)
        for row, (qf, gf) in enumerate(feats.values()):  # each row: the model's plain ranking, junk left out
            sims = gf @ qf[qi]
            order = np.argsort(-sims, kind="stable")
            order = order[~((g_pids[order] == q_pids[qi]) & (g_cams[order] == q_cams[qi]))][:6]
            for r in range(5):
                border = tuple(int(c) for c in img[row_top(row) + 1, GAP + TILE_W + GAP + r * (TILE_W + 2) + 1])
                assert border in (GREEN, RED)
                gap = min(sims[order[r - 1]] - sims[order[r]] if r else np.inf, sims[order[r]] - sims[order[r + 1]])
                if gap > 1e-4:  # not (nearly) tied with a neighbour: the exact colour
                    checked += 1
                    assert border == (GREEN if g_pids[order[r]] == q_pids[qi] else RED), (qi, row, r)
    assert checked >= 20


def browser() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def test_the_page_opens_in_a_headless_browser_with_every_picture(ranked):
    chrome = browser()
    if chrome is None:
        pytest.skip("no headless browser: apt-get install chromium to open the rank-list page")
    _, out, *_ = ranked
    # the page as written, plus a script that records, once everything loaded, each image's source and width
    probe = out / "opened.html"
    probe.write_text((out / "index.html").read_text().replace("</body>", (
        "<script>addEventListener('load', () => document.body.dataset.images = JSON.stringify("
        "[...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])));</script></body>")))
    dom = subprocess.run([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, dom[-2000:]
    images = json.loads(found.group(1).replace("&quot;", '"'))
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert sorted({src for src, _, _ in images}) == pictures
    width = side_by_side_size(2, 5)[1]
    assert all(complete and natural == width for _, complete, natural in images), images


def test_one_line_errors(deploy_setup, tmp_path):
    _, folder, overrides = deploy_setup
    result = cli("ranklists", folder / "student.pt", "--config", QUICKSTART, *sets(overrides), "--select", "fixed",
                 "--out", tmp_path)
    assert_one_line(result, "--select fixed/broken", "two models")
    result = cli("ranklists", folder / "student.pt", folder / "other.pt", "--out", tmp_path)
    assert result.exit_code == 2 and "give --config F" in result.output


def test_a_tile_names_the_camera_as_the_file_names_count_it():
    assert _label(Item("image_query/0012_c003_00012345_0.jpg", 12, 2)) == "id 12 c3"  # VeRi's c003 is camid 2
    assert _label(Item("/data/unknown_person.jpg", -1, 0)) == "unknown_person"
