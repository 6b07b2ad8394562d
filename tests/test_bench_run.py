"""`reidkd bench` killed mid-run and run again, `reidkd leaderboard`, exact resume, `reidkd eval --visualize`."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from statistics import stdev

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import reidkd

from reid_kd.bench.board_text import machine_said
from reid_kd.config import config_hash
from reid_kd.data.image_dataset import build_loaders
from reid_kd.distill.catalog import DISTILLERS
from reid_kd.engine.configs import load_config
from reid_kd.engine.paths import run_dir
from reid_kd.engine.results import METRIC_KEYS
from reid_kd.engine.run import train_student
from reid_kd.engine.teacher import get_teacher
from reid_kd.evaluation import extract_features
from reid_kd.evaluation.visualize import GAP, GREEN, RED, TILE_W, panel_size
from reid_kd.models.checkpoint import save_model
from reid_kd.models.reid_model import build_model
from reid_kd.utils.io import save_torch
from reid_kd.utils.provenance import processor

pytestmark = pytest.mark.slow  # a suite killed and resumed, the command line, resumed trainings

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
EPOCHS = 4


def suite_entries():
    entries = [{"name": "baseline", "method": "none"},
               {"name": "baseline_long", "method": "none", "set": [f"train.epochs={EPOCHS + 1}"],
                "longer_of": "baseline"}]
    if "gird" in DISTILLERS:
        entries += [{"name": "gird", "method": "gird", "set": ["distill.gird.memory_size=16"]},
                    {"name": "gird_no_memory", "method": "gird", "ablation_of": "gird",
                     "set": ["distill.gird.memory_size=16", "distill.gird.use_memory=false"]}]
    return entries


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory, tiny_overrides):
    """A tiny suite killed (SIGKILL) once a student's checkpoint.pt appears, then run again to the end."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "runs"
    overrides = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    suite = {"name": "tiny", "base": QUICKSTART, "seeds": [0, 1], "methods": suite_entries(),
             "set": [*overrides, f"experiment.output_dir={out}", f"train.epochs={EPOCHS}", "experiment.threads=1"]}
    suite_file = tmp / "tiny.yaml"
    suite_file.write_text(yaml.safe_dump(suite, sort_keys=False))
    with (tmp / "first.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "reid_kd.cli", "bench", "--suite", str(suite_file)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 300
        while not list((out / "tiny").glob("*/seed*/checkpoint.pt")):
            assert proc.poll() is None, (tmp / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    interrupted = [p.parent for p in (out / "tiny").glob("*/seed*/checkpoint.pt")
                   if not (p.parent / "metrics.json").exists()]
    logged = {}  # the epochs each interrupted run had checkpointed: a resumed run keeps their log rows
    for run in interrupted:
        done = torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] + 1
        with (run / "log.csv").open() as f:
            logged[run] = [r for r in csv.DictReader(f) if int(r["epoch"]) <= done]
    second = reidkd("bench", "--suite", str(suite_file))
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    return {"out": out, "suite": suite, "interrupted": interrupted, "logged": logged, "second": second.stdout,
            "tmp": tmp}


def test_killed_suite_resumes_and_completes_every_run_once(killed_then_resumed):
    out, suite, second = killed_then_resumed["out"], killed_then_resumed["suite"], killed_then_resumed["second"]
    interrupted = killed_then_resumed["interrupted"]
    assert interrupted, "the kill fell between runs: nothing was interrupted midway"
    for run in interrupted:
        assert f"{run.parent.name} {run.name}: resuming from its checkpoint" in second
        with (run / "log.csv").open() as f:
            rows = list(csv.DictReader(f))
        before = killed_then_resumed["logged"][run]
        assert before and rows[:len(before)] == before  # the epochs before the kill were not trained again
    assert "teacher: reusing" in second and "teacher: training" not in second
    assert not list(out.rglob("*.tmp")), "a temporary file of an atomic write was left behind"
    for entry in suite["methods"]:
        for seed in suite["seeds"]:
            folder = out / "tiny" / entry["name"] / f"seed{seed}"
            record = json.loads((folder / "metrics.json").read_text())
            cfg = yaml.safe_load((folder / "config.yaml").read_text())
            assert record["config_hash"] == config_hash(cfg) and record["run_name"] == entry["name"]
            assert record["seed"] == seed and record["inference_images_per_sec"] > 0
            assert record["teacher"]["mAP"] > 0
            epochs = EPOCHS + 1 if entry.get("longer_of") else EPOCHS  # trained beside the others, then alone
            with (folder / "log.csv").open() as f:
                assert [r["epoch"] for r in csv.DictReader(f)] == [str(e) for e in range(1, epochs + 1)]
            state = torch.load(folder / "checkpoint.pt", weights_only=False)
            assert state["epoch"] == epochs - 1 and state["tag"] == record["config_hash"]
            torch.load(folder / "student.pt", weights_only=False)
            done_before_kill = folder not in interrupted and f"{entry['name']} seed{seed}: done, skipped" in second
            trained_now = f"{entry['name']} seed{seed}: training" in second
            resumed_now = f"{entry['name']} seed{seed}: resuming" in second
            assert done_before_kill + trained_now + resumed_now == 1, (folder, second)
    third = reidkd("bench", "--suite", str(killed_then_resumed["tmp"] / "tiny.yaml"))
    assert third.returncode == 0 and third.stdout.count("done, skipped") == len(suite["methods"]) * 2


def test_leaderboard_rebuilds_byte_for_byte(killed_then_resumed, tmp_path):
    out = killed_then_resumed["out"]
    first = reidkd("leaderboard", "--runs", str(out), "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr[-3000:]
    second = reidkd("leaderboard", "--runs", str(out), "--out", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr[-3000:]
    md = (tmp_path / "a" / "tiny.md").read_text()
    assert (tmp_path / "a" / "tiny.md").read_bytes() == (tmp_path / "b" / "tiny.md").read_bytes()
    assert (tmp_path / "a" / "tiny_cmc.png").read_bytes() == (tmp_path / "b" / "tiny_cmc.png").read_bytes()
    assert (tmp_path / "a" / "tiny_cmc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](tiny_cmc.png)" in md and "Reported epoch: **last**" in md
    records = [json.loads(p.read_text()) for p in sorted((out / "tiny").glob("*/seed*/metrics.json"))]
    assert f"`{records[0]['git_commit']}`" in md
    assert all(r["pretrained"] == {"teacher": {"kind": "none"}, "student": {"kind": "none"}} for r in records)
    assert all(r["teacher"]["pretrained"] == {"kind": "none"} for r in records)
    assert "Initialisation: teacher from scratch, student from scratch." in md
    assert all(r["precision"] == {"train": "float32", "teacher_forward": "float32"} for r in records)
    assert all(r["memory_format"] == {"student": "contiguous", "teacher": "contiguous"} for r in records)
    provenance = next(line for line in md.splitlines() if line.startswith("Commit: "))  # one line, in this order
    assert "Initialisation: teacher from scratch" in provenance and provenance.endswith(
        "Computation: training float32, teacher forward float32; memory format teacher contiguous, student "
        "contiguous.")
    threads = " / ".join(map(str, sorted({r["environment"]["threads"] for r in records})))
    assert all(r["environment"]["cpu"] == processor() for r in records)
    software = next(line for line in md.splitlines() if line.startswith("Software: "))
    assert software.endswith(f"Processor: {processor()}. Threads per run: {threads}.")
    by_run = {(r["run_name"], r["seed"]): r["mAP"] for r in records}
    power = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
             for line in md.split("## Seeds needed")[1].split("\n## ")[0].splitlines() if line.startswith("| ")}
    for name in {r["run_name"] for r in records} - {"baseline"}:
        diffs = [by_run[(name, s)] - by_run[("baseline", s)] for s in (0, 1)]
        assert power[name][:4] == [name, "2", f"{100 * (diffs[0] + diffs[1]) / 2:+.2f}", f"{100 * stdev(diffs):.2f}"]
    assert f"PyTorch {torch.__version__}" in md
    for header in ("Method", "mAP", "Rank-1", "Rank-5", "Rank-10", "mINP", "Δ mAP (95% CI)", "Δ Rank-1 (95% CI)",
                   "Params", "Images/s", "Train time"):
        assert f" {header} " in md
    table = [[cell.strip() for cell in line.split("|")[1:-1]] for line in md.split("![CMC")[0].splitlines()
             if line.startswith("| ")]
    assert table[0][:2] == ["Method", "Seeds"] and table[1][0] == "teacher (resnet18)"
    rows = {row[0]: row for row in table[1:]}
    baseline = [r["mAP"] for r in records if r["run_name"] == "baseline"]
    assert rows["baseline (student)"][1:3] == ["2/2", f"{100 * np.mean(baseline):.2f} ± "
                                                      f"{100 * np.std(baseline, ddof=1):.2f}"]
    students = [float(row[2].split(" ± ")[0]) for row in table[1:] if not row[0].startswith("teacher")]
    assert students == sorted(students, reverse=True)  # sorted by mAP
    long = [r["mAP"] for r in records if r["run_name"] == "baseline_long"]
    convergence = md.split("## Convergence of baseline")[1]
    assert "`baseline_long` is `baseline` trained longer (`train.epochs=5`)" in convergence
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in convergence.split("## ")[0].splitlines() if line.startswith("| ")}
    assert cells["baseline (as in the table)"][6] == "reference"
    assert cells["baseline_long"][:2] == ["2/2", f"{100 * np.mean(long):.2f} ± {100 * np.std(long, ddof=1):.2f}"]
    assert cells["baseline_long"][6].startswith(f"{100 * np.mean(long) - 100 * np.mean(baseline):+.2f} [")
    if "gird" in DISTILLERS:
        assert set(rows) == {"teacher (resnet18)", "baseline (student)", "gird"}  # ablations, convergence: own tables
        gird = [r["mAP"] for r in records if r["run_name"] == "gird"]
        paired = [g - b for g, b in zip(gird, baseline)]  # records sorted by run folder: seed0, seed1
        assert rows["gird"][7].startswith(f"{100 * np.mean(paired):+.2f} [")
        assert "## Ablations of gird" in md and "| gird (full)" in md and "| gird_no_memory" in md


def test_leaderboard_rewrites_the_readme_block_and_nothing_else(killed_then_resumed, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# intro\n\n<!-- leaderboard:tiny -->\nstale 99.99\n<!-- /leaderboard:tiny -->\n\nrest\n")
    args = ("leaderboard", "--runs", str(killed_then_resumed["out"]), "--out", str(tmp_path / "leaderboards"),
            "--readme", str(readme))
    assert reidkd(*args).returncode == 0
    text = readme.read_text()
    main_table = next(chunk for chunk in (tmp_path / "leaderboards" / "tiny.md").read_text().split("\n\n")
                      if chunk.startswith("| Method"))
    assert text.startswith("# intro\n\n<!-- leaderboard:tiny -->\nSeeds: 0, 1; ") and "\n" + main_table + "\n" in text
    assert text.endswith("![CMC curves of tiny](leaderboards/tiny_cmc.png)\n<!-- /leaderboard:tiny -->\n\nrest\n")
    assert "stale" not in text and "[leaderboards/tiny.md](leaderboards/tiny.md)" in text
    assert reidkd(*args).returncode == 0 and readme.read_text() == text


def test_leaderboard_lists_methods_without_runs_as_missing(killed_then_resumed, tmp_path):
    suite_dir = tmp_path / "runs" / "tiny"
    shutil.copytree(killed_then_resumed["out"] / "tiny", suite_dir, ignore=shutil.ignore_patterns("*.pt"))
    suite = yaml.safe_load((suite_dir / "suite.yaml").read_text())
    suite["methods"].append({"name": "not_run_yet", "method": "kd"})
    (suite_dir / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    shutil.rmtree(suite_dir / "baseline" / "seed1")
    result = reidkd("leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "lb"))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in (tmp_path / "lb" / "tiny.md").read_text().splitlines()
            if line.startswith("| ")}
    assert "missing (0/2)" in rows["not_run_yet"]
    assert rows["baseline (student)"].split("|")[2].strip() == "1/2"
    assert "±" not in rows["baseline (student)"].split("|")[3]  # one seed: no spread to show


def _fresh_loaders(cfg):
    return build_loaders(cfg["data"], cfg["experiment"]["seed"])


@pytest.fixture(scope="module")
def resume_out(tmp_path_factory):
    return tmp_path_factory.mktemp("resume")  # shared: both methods distil from one cached teacher


@pytest.mark.parametrize("method", ["none", "gird", "crd"])
def test_resumed_run_ends_with_the_metrics_of_an_uninterrupted_one(method, resume_out, tiny_overrides, one_thread):
    base = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    base += [f"experiment.output_dir={resume_out}", "train.epochs=3", "experiment.seed=1", "teacher.seed=0",
             f"distill.method={method}", "train.optimizer=sgd", "train.lr=0.01"]
    if method == "gird":
        base += ["distill.gird.memory_size=16"]  # fills and wraps within the run: the memory must resume too
    if method == "crd":
        base += ["distill.crd.nce_k=8"]  # per-image memory and negatives drawn from torch's RNG resume exactly
    straight = load_config(QUICKSTART, base + [f"experiment.run_name={method}_straight"])
    resumed = load_config(QUICKSTART, base + [f"experiment.run_name={method}_resumed"])
    device = torch.device("cpu")
    teacher, t_metrics = get_teacher(straight, _fresh_loaders(straight), device)
    want = train_student(straight, _fresh_loaders(straight), teacher, device, t_metrics)
    assert train_student(resumed, _fresh_loaders(resumed), teacher, device, t_metrics, stop_after=1) is None
    assert not (run_dir(resumed) / "metrics.json").exists()
    state = torch.load(run_dir(resumed) / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 0
    state["train_seconds"] = 1000.0  # a marker: only a run that resumes from this checkpoint carries it on
    save_torch(state, run_dir(resumed) / "checkpoint.pt")
    got = train_student(resumed, _fresh_loaders(resumed), teacher, device, t_metrics)  # a new process would
    assert got["train_seconds"] > 1000.0 and want["train_seconds"] < 1000.0
    for key in (*METRIC_KEYS, "cmc", "num_valid_queries", "params"):
        assert got[key] == want[key], key
    a = torch.load(run_dir(straight) / "student.pt", weights_only=False)["model"]
    b = torch.load(run_dir(resumed) / "student.pt", weights_only=False)["model"]
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6), name
    with (run_dir(resumed) / "log.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3"]


def test_eval_visualize_writes_ranked_list_pngs(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "experiment.threads=1"]
    cfg = load_config(QUICKSTART, overrides)
    loaders = build_loaders(cfg["data"], 0)
    torch.manual_seed(0)
    model = build_model(cfg["model"], loaders.dataset.num_train_pids)
    save_model(model, cfg["model"], tmp_path / "student.pt", cfg["data"])
    result = reidkd("eval", "--checkpoint", str(tmp_path / "student.pt"), "--config", QUICKSTART,
                    *[a for o in overrides for a in ("--set", o)], "--visualize", "3", "--out", str(tmp_path / "vis"))
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted((tmp_path / "vis").glob("*.png"))
    assert len(files) == 3
    # the ranking recomputed here without FAISS: cosine similarity, junk (same id and camera) removed
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        qf, q_pids, q_cams = extract_features(model, loaders.query, torch.device("cpu"))
        gf, g_pids, g_cams = extract_features(model, loaders.gallery, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    greens_total, checked = 0, 0
    for path in files:
        qi = int(path.name.split("_")[0].removeprefix("query"))
        assert path.name == f"query{qi:05d}_id{q_pids[qi]}.png"
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert img.shape == (*panel_size(10), 3)
        order = np.argsort(-(gf @ qf[qi]), kind="stable")
        order = order[~((g_pids[order] == q_pids[qi]) & (g_cams[order] == q_cams[qi]))][:11]
        sims = gf[order] @ qf[qi]
        borders = [tuple(int(c) for c in img[GAP + 1, GAP + TILE_W + GAP + r * (TILE_W + 2) + 1]) for r in range(10)]
        assert set(borders) <= {GREEN, RED}
        for r in range(10):  # ranks whose similarity is not (nearly) tied with a neighbour's: exact colour
            gap = min(sims[r - 1] - sims[r] if r else np.inf, sims[r] - sims[r + 1])
            if gap > 1e-4:
                checked += 1
                assert borders[r] == (GREEN if g_pids[order[r]] == q_pids[qi] else RED), (qi, r, sims)
        greens_total += borders.count(GREEN)
    assert greens_total > 0 and checked >= 20


def test_leaderboard_counts_only_the_suites_runs_and_shows_failed_ones(killed_then_resumed, tmp_path):
    """A metrics.json of another config, method or unreadable is rejected by path and why; NaN is a failure."""
    suite_dir = tmp_path / "runs" / "tiny"
    shutil.copytree(killed_then_resumed["out"] / "tiny", suite_dir, ignore=shutil.ignore_patterns("*.pt"))
    nan_run = suite_dir / "baseline" / "seed1" / "metrics.json"
    nan_run.write_text(nan_run.read_text().replace('"mAP": ', '"mAP": NaN, "was": ', 1))
    other_config = suite_dir / "baseline" / "seed0" / "metrics.json"
    record = json.loads(other_config.read_text())
    other_config.write_text(json.dumps(record | {"config_hash": "0123456789ab"}))
    result = reidkd("leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "lb"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"rejected {other_config}: its config_hash is '0123456789ab'" in result.stdout
    md = (tmp_path / "lb" / "tiny.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert rows["baseline (student)"].split("|")[2].strip() == "failed (1/2)"
    assert "- `tiny/baseline/seed1/metrics.json`: failed" in md
    assert "- `tiny/baseline/seed0/metrics.json`: rejected, its config_hash is '0123456789ab'" in md
    n = record["num_queries"]
    assert f"Queries scored per run: {record['num_valid_queries']} of {n} (" in md
    if "gird" in DISTILLERS:  # another method's record in gird's folder, and unreadable JSON
        shutil.copy(suite_dir / "gird_no_memory" / "seed0" / "metrics.json", suite_dir / "gird" / "seed0")
        (suite_dir / "gird" / "seed1" / "metrics.json").write_text('{"mAP": 0.9')
        result = reidkd("leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "lb"))
        md = (tmp_path / "lb" / "tiny.md").read_text()
        assert "`tiny/gird/seed0/metrics.json`: rejected, its run_name is 'gird_no_memory'" in md
        assert "`tiny/gird/seed1/metrics.json`: rejected, not readable JSON" in md
        assert "missing (0/2)" in next(line for line in md.splitlines() if line.startswith("| gird "))


def test_bench_refuses_to_replace_another_configs_runs(killed_then_resumed):
    suite_file = killed_then_resumed["tmp"] / "tiny.yaml"
    before = {p: p.read_bytes() for p in (killed_then_resumed["out"] / "tiny").glob("*/seed*/metrics.json")}
    result = reidkd("bench", "--suite", str(suite_file), "--set", "train.weight_decay=0.001")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--overwrite" in result.stderr and "hold runs of another config" in result.stderr
    assert before == {p: p.read_bytes() for p in before}


def test_a_table_of_runs_from_two_kinds_of_machine_says_so():
    envs = [{"cpu": "AMD EPYC (AVX2)", "threads": 2}, {"cpu": "AMD EPYC (AVX512, bfloat16 native)", "threads": 1}]
    assert machine_said(pd.DataFrame({"environment": envs})) == (
        "Processor: AMD EPYC (AVX2) / AMD EPYC (AVX512, bfloat16 native). Threads per run: 1 / 2.")
    assert machine_said(pd.DataFrame({"environment": [{"threads": 2}]})) == "Threads per run: 2."  # older records
    assert machine_said(pd.DataFrame({"mAP": [0.5]})) == ""
