"""Issue 39: bad input and faults. Each refusal is one line naming the fix, exit status 2, no traceback, no
training before it and nothing given changed; each damaged cache is rebuilt beside the damaged files, said in a
line; and the numbers a fault used to get wrong (data-changing suite entries, the image size a checkpoint is
scored at, the teacher's precision) are now right."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import assert_one_line, cli

from reid_kd.config import dump_config
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

def suite_file(tmp_path: Path, tiny_overrides, entry_set: list[str] | None = None, *extra: str) -> Path:
    """A tiny suite (so a regression trains seconds, not hours) of the baseline, and of a kd entry setting
    `entry_set` unless it is None; `extra`: overrides of every run."""
    path = tmp_path / "suite.yaml"
    kd = [] if entry_set is None else [{"name": "kd", "method": "kd", "set": entry_set}]
    path.write_text(yaml.safe_dump({"name": "mini", "base": QUICKSTART, "seeds": [0], "set": moved(
        tiny_overrides, tmp_path / "runs", *extra), "methods": [{"name": "baseline", "method": "none"}, *kd]}))
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


# --- damaged files: a cache is rebuilt beside them, a run's is named with the one fix that works -------------

TINY_PRETRAIN = ["model.pretrained=synth", "pretrain.synth.train_ids=6", "pretrain.synth.test_ids=3",
                 "pretrain.synth.cameras=4", "pretrain.synth.images_per_id=4", "pretrain.synth.image_size=32",
                 "pretrain.student.epochs=1"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory, tiny_overrides):
    """(runs folder, overrides): a finished run whose student starts from a synth-pretrained backbone, so the
    folder holds both caches (teachers/, pretrained/) and the run."""
    out = tmp_path_factory.mktemp("cached")
    overrides = moved(tiny_overrides, out, *TINY_PRETRAIN, "experiment.name=cached")
    result = cli("run", "--config", QUICKSTART, *sets(overrides))
    assert result.exit_code == 0, result.output
    return out, overrides


def damage(kind: str, folder: Path) -> Path:
    """Damage a cache folder's file as a crash, a full disk or a hand would; returns the damaged file."""
    weights = next(p for p in folder.iterdir() if p.name in ("teacher.pt", "backbone.pt"))
    if kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
        return weights
    if kind == "empty weights":
        weights.write_bytes(b"")
        return weights
    if kind == "truncated record":
        (folder / "metrics.json").write_text((folder / "metrics.json").read_text()[:40])
        return folder / "metrics.json"
    if kind == "no spec record":  # deleted after a damaged config.yaml was named
        (folder / "config.yaml").unlink()
        return folder / "metrics.json"
    # a killed training's checkpoint, cut short: what remains of an unfinished cache
    (folder / "metrics.json").unlink()
    weights.rename(folder / "checkpoint.pt")
    (folder / "checkpoint.pt").write_bytes((folder / "checkpoint.pt").read_bytes()[:3000])
    return folder / "checkpoint.pt"


@pytest.mark.parametrize("cache", ["teachers", "pretrained"])
@pytest.mark.parametrize("kind", ["truncated weights", "empty weights", "truncated record", "no spec record",
                                  "truncated checkpoint"])
def test_a_damaged_cache_is_moved_aside_and_rebuilt(cache, kind, cached, tmp_path):
    import torch

    out, overrides = cached
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    folder = next((copy / cache).iterdir())
    damaged = damage(kind, folder)
    kept = damaged.read_bytes() if damaged.exists() else None
    result = cli("run", "--config", QUICKSTART, *sets(moved(overrides, copy, "experiment.name=again")))
    assert result.exit_code == 0, result.output
    what = "teacher" if cache == "teachers" else "backbone"
    said = [line for line in result.stderr.splitlines() if line.startswith(f"{what} cache {folder}: ")]
    assert len(said) == 1 and "Traceback" not in result.output, result.output
    aside = next(folder.glob("damaged-*"))
    assert f"moved its files to {aside} and training the {what} anew" in said[0]
    assert (kind == "no spec record") == ("spec is not recorded" in said[0])
    if kept is not None:
        assert (aside / damaged.name).read_bytes() == kept  # kept as it was
        assert kind == "no spec record" or damaged.name in said[0]
    weights = folder / ("teacher.pt" if what == "teacher" else "backbone.pt")
    assert torch.load(weights, weights_only=True) and json.loads((folder / "metrics.json").read_text())
    assert json.loads((copy / "again" / "baseline" / "seed0" / "metrics.json").read_text())["mAP"] >= 0


def test_a_cached_file_asking_to_run_code_is_refused_not_rebuilt(cached, tmp_path):
    import os

    import torch

    out, overrides = cached
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    sentinel = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    backbone = next((copy / "pretrained").iterdir()) / "backbone.pt"
    torch.save({"features.0.0.weight": Payload()}, backbone)
    before = snapshot(copy)
    line = assert_one_line(cli("run", "--config", QUICKSTART, *sets(moved(overrides, copy, "experiment.name=again"))),
                           str(backbone), "not a plain checkpoint", "delete it: the backbone is then trained anew")
    assert "use a student.pt" not in line and not sentinel.exists() and snapshot(copy) == before


def test_a_killed_runs_damaged_checkpoint_names_the_fix_that_works(cached, tmp_path):
    out, overrides = cached
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    again = moved(overrides, copy)
    run = copy / "cached" / "baseline" / "seed0"
    (run / "config.yaml").write_text(dump_config(load_config(QUICKSTART, again)))  # the copy's own output_dir
    (run / "metrics.json").unlink()  # killed before the end: its checkpoint, cut short
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:3000])
    before = snapshot(copy)
    assert_one_line(cli("run", "--config", QUICKSTART, *sets(again)), str(run / "checkpoint.pt"),
                    "truncated", "delete it to train baseline from its first epoch")
    assert snapshot(copy) == before
    (run / "checkpoint.pt").unlink()  # the fix it names
    result = cli("run", "--config", QUICKSTART, *sets(again))
    assert result.exit_code == 0 and "baseline epoch 1/1" in result.output, result.output


def test_a_runs_truncated_metrics_is_named_as_damaged_not_as_another_config(tiny_overrides, tmp_path):
    """`reidkd run` and `reidkd bench` say the record is damaged and the fix; the fix re-evaluates, no retraining."""
    suite = suite_file(tmp_path, tiny_overrides)
    first = cli("bench", "--suite", suite)
    assert first.exit_code == 0, first.output
    run = tmp_path / "runs" / "mini" / "baseline" / "seed0"
    again = moved(tiny_overrides, tmp_path / "runs", "experiment.name=alone")
    assert cli("run", "--config", QUICKSTART, *sets(again)).exit_code == 0
    alone = tmp_path / "runs" / "alone" / "baseline" / "seed0"
    for folder in (run, alone):
        (folder / "metrics.json").write_text((folder / "metrics.json").read_text()[:200])
    before = snapshot(tmp_path / "runs")
    for args, folder in ((["bench", "--suite", suite], run), (["run", "--config", QUICKSTART, *sets(again)], alone)):
        line = assert_one_line(cli(*args), str(folder / "metrics.json"), "not readable JSON", "it is damaged",
                               "delete it and run again", "evaluated anew from its checkpoint.pt")
        assert "another config" not in line
    status = cli("bench", "--suite", suite, "--status")
    assert "baseline/seed0" in status.stdout and "is damaged" in status.stdout, status.output
    board = cli("leaderboard", "--runs", tmp_path / "runs", "--out", tmp_path / "boards", "--readme", tmp_path / "no.md")
    assert board.exit_code == 0 and "metrics.json: not readable JSON, damaged (delete it" in board.output, board.output
    assert snapshot(tmp_path / "runs") == before
    for args, folder in ((["bench", "--suite", suite], run), (["run", "--config", QUICKSTART, *sets(again)], alone)):
        (folder / "metrics.json").unlink()  # the fix the line names
        result = cli(*args)
        assert result.exit_code == 0 and "resuming from checkpoint.pt after epoch 1/1" in result.output, result.output
        assert "baseline epoch" not in result.output and json.loads((folder / "metrics.json").read_text())["mAP"] >= 0


# --- eval and index score a checkpoint at one size: the one it was trained on --------------------------------

def scores(output: str) -> list[str]:
    """mAP, Rank-1, Rank-5, Rank-10 and mINP of the one model row of a command's markdown table."""
    rows = [line for line in output.splitlines() if line.startswith("|") and "---" not in line]
    return [cell.strip() for cell in rows[1].strip("|").split("|")][2:]


def test_eval_and_index_score_a_checkpoint_at_the_size_it_was_trained_on(deploy_setup, tmp_path):
    cfg, folder, overrides = deploy_setup
    assert (cfg["data"]["height"], cfg["data"]["width"]) == (32, 32)  # the size student.pt records
    other = [*overrides, "data.height=64", "data.width=48"]
    checkpoint = folder / "student.pt"
    at_its_size = cli("eval", "--checkpoint", checkpoint, "--config", QUICKSTART, *sets(overrides))
    at_other = cli("eval", "--checkpoint", checkpoint, "--config", QUICKSTART, *sets(other))
    assert at_its_size.exit_code == 0 and at_other.exit_code == 0, at_other.output
    assert "student.pt was trained on 32x32 images: scored at that size, not the config's 64x48" in at_other.output
    built = cli("index", "build", "--checkpoint", checkpoint, "--config", QUICKSTART, *sets(other),
                "--out", tmp_path / "index")
    assert built.exit_code == 0, built.output
    indexed = cli("index", "eval", "--index", tmp_path / "index", "--config", QUICKSTART, *sets(other))
    assert indexed.exit_code == 0, indexed.output
    assert scores(at_other.output) == scores(at_its_size.output) == scores(indexed.output)


# --- bench workers wait for a backbone another process pretrains, as they wait for the teacher --------------

@pytest.mark.slow
def test_bench_workers_wait_for_a_backbone_another_process_pretrains(tiny_overrides, tmp_path):
    import os
    import subprocess
    import sys

    from helpers import within

    from reid_kd.bench.suite_file import load_suite
    from reid_kd.engine.paths import pretrain_dir

    suite = suite_file(tmp_path, tiny_overrides, None, *TINY_PRETRAIN, "experiment.threads=1")
    text = yaml.safe_load(suite.read_text())
    suite.write_text(yaml.safe_dump(text | {"seeds": [0, 1]}))  # a seed for each worker: both need the backbone
    folder = pretrain_dir(load_suite(suite).runs()[0][2], "model")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen(  # another process pretraining it, as far as the lock tells
        [sys.executable, "-c", "import sys\nfrom reid_kd.utils.lock import folder_lock\n"
         f"with folder_lock({str(folder)!r}):\n    print('held', flush=True)\n    sys.stdin.read()"],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        assert holder.stdout.readline().strip() == "held"
        bench = subprocess.Popen([sys.executable, "-m", "reid_kd.cli", "bench", "--suite", str(suite), "--workers", "2"],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with within(600):
            for line in bench.stdout:
                lines.append(line)
                if "waiting for" in line and str(folder) in line and holder.poll() is None:
                    holder.stdin.close()  # the other process is done with it: the workers go on
                    holder.wait()
            code = bench.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
    output = "".join(lines)
    assert any("waiting for" in line and f"pid {holder.pid}" in line and str(folder) in line for line in lines), output
    assert code == 0 and "FolderLockedError" not in output and "FAILED" not in output, output
    assert output.count(f"pretraining mobilenet_v3_small into {folder}") == 1  # trained once, by one worker
    assert [row.split(",")[0] for row in (folder / "log.csv").read_text().splitlines()[1:]] == ["1"]
    for seed in (0, 1):
        record = json.loads((tmp_path / "runs" / "mini" / "baseline" / f"seed{seed}" / "metrics.json").read_text())
        assert record["pretrained"]["student"]["name"] == folder.name


# --- tracebacks that are one line now -------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["teachers", "teachers/{key}", "pretrained"])
def test_a_file_where_a_cache_folder_goes_is_one_line(where, tiny_overrides, tmp_path):
    from reid_kd.engine.paths import teacher_key

    overrides = moved(tiny_overrides, tmp_path / "runs", *TINY_PRETRAIN[1:], "teacher.pretrained=synth")
    blocker = tmp_path / "runs" / where.format(key=teacher_key(load_config(QUICKSTART, overrides)))
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file, not a folder")
    assert_one_line(cli("run", "--config", QUICKSTART, *sets(overrides)), "cannot make the folder", str(blocker),
                    "is a file, not a folder", "move that file away", "experiment.output_dir")
    assert blocker.read_text() == "a file, not a folder" and not list((tmp_path / "runs").rglob("*.pt"))


@pytest.mark.parametrize("kind", ["another network's", "empty"])
def test_timm_imagenet_weights_that_cannot_be_loaded_are_one_line(kind, hub, tiny_overrides, tmp_path):
    timm = pytest.importorskip("timm")
    from helpers import into_hub_cache

    from reid_kd.models.weights import imagenet_file

    into_hub_cache("timm:resnet18d", timm.create_model("resnet34").state_dict())  # passes the name's hash check
    file = imagenet_file("timm:resnet18d")
    if kind == "empty":
        file.write_bytes(b"")  # timm's load of it ended in click's bare `Aborted!`
    before = file.read_bytes()
    result = cli("run", "--config", QUICKSTART, *sets(moved(tiny_overrides, tmp_path / "runs", "teacher.pretrained=imagenet",
                                                             "teacher.backbone=timm:resnet18d")))
    assert_one_line(result, str(file), "cannot be loaded as timm's resnet18d weights", "delete it")
    assert "Aborted" not in result.output and file.read_bytes() == before
    assert not list((tmp_path / "runs").rglob("*.pt"))


@pytest.mark.parametrize("backbone, words", [
    ("timm:maxvit_nano_rw_256", ["model.backbone", "takes 256x256 images only", "the data gives 32x32",
                                 "data.height=256 data.width=256"]),
    ("timm:swin_tiny_patch4_window7_224", ["swin_tiny_patch4_window7_224", "N×H×W×C", "convolutional timm model"]),
])
def test_a_timm_model_that_cannot_take_the_data_is_refused_before_training(backbone, words, tiny_overrides, tmp_path):
    pytest.importorskip("timm")
    result = cli("run", "--config", QUICKSTART, *sets(moved(tiny_overrides, tmp_path / "runs",
                                                             f"model.backbone={backbone}")))
    assert_one_line(result, *words)
    assert not list((tmp_path / "runs").rglob("*.pt")) and not (tmp_path / "runs" / "teachers").exists()


def test_a_loss_that_becomes_infinite_names_the_run_the_epoch_and_what_to_try(cached, tmp_path):
    out, overrides = cached
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)  # its teacher and backbone are reused
    line = assert_one_line(cli("run", "--config", QUICKSTART, *sets(moved(
        overrides, copy, "experiment.name=diverged", "distill.method=kd", "distill.kd.weight=1e300"))),
        f"kd ({copy / 'diverged' / 'kd' / 'seed0'})", "the loss became inf in epoch 1/1, step 1", "kd inf",
        "try a lower train.lr or loss weight, or set train.grad_clip")
    assert "FloatingPointError" not in line and not (copy / "diverged" / "kd" / "seed0" / "metrics.json").exists()


def test_launcher_slurm_without_slurm_is_one_line_before_anything_is_written(tiny_overrides, tmp_path, monkeypatch):
    pytest.importorskip("submitit")  # without it, the line names the extra that installs it
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    path = suite_file(tmp_path, tiny_overrides)
    assert_one_line(cli("bench", "--suite", path, "--launcher", "slurm"), "--launcher slurm needs Slurm",
                    "sbatch and srun are not on PATH", "--workers N")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("console", ["| head -2", "> /dev/full"])
def test_a_lost_console_neither_fails_a_run_nor_prints_logging_errors(console, tiny_overrides, tmp_path):
    import os
    import subprocess
    import sys

    if console == "> /dev/full" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    args = [sys.executable, "-m", "reid_kd.cli", "run", "--config", QUICKSTART,
            *sets(moved(tiny_overrides, tmp_path / "runs", "experiment.threads=1"))]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if console == "| head -2":
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        shown = [proc.stdout.readline(), proc.stdout.readline()]
        proc.stdout.close()  # what `head -2` does: the run goes on writing into a pipe nobody reads
        stderr = proc.stderr.read()
        code = proc.wait(timeout=600)
        assert all(shown)
    else:
        with open("/dev/full", "w") as full:
            done = subprocess.run(args, cwd=ROOT, env=env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=600)
        code, stderr = done.returncode, done.stderr
    assert code == 0 and "Logging error" not in stderr and "Traceback" not in stderr, stderr
    record = json.loads((tmp_path / "runs" / "quickstart" / "baseline" / "seed0" / "metrics.json").read_text())
    assert record["mAP"] >= 0


# --- the teacher cache is keyed by the precision it trained in, and each run names the teacher it used ------

def test_a_teacher_trained_in_mixed_precision_is_not_reused_in_float32(tiny_overrides, tmp_path):
    from reid_kd.engine.paths import teacher_key

    keys = []
    for name, amp, trains in (("mixed", "true", True), ("plain", "false", True), ("mixed_again", "true", False)):
        overrides = moved(tiny_overrides, tmp_path / "runs", f"experiment.amp={amp}", f"experiment.name={name}")
        result = cli("run", "--config", QUICKSTART, *sets(overrides))
        assert result.exit_code == 0, result.output
        assert ("teacher: training" in result.output) == trains and ("teacher: reusing" in result.output) != trains
        key = teacher_key(load_config(QUICKSTART, overrides))
        precision = "mixed" if amp == "true" else "float32"
        record = json.loads((tmp_path / "runs" / name / "baseline" / "seed0" / "metrics.json").read_text())
        assert record["teacher"]["source"] == f"teachers/{key}" and record["precision"]["train"] == precision
        cached = json.loads((tmp_path / "runs" / "teachers" / key / "metrics.json").read_text())
        assert cached["precision"] == {"train": precision}
        keys.append(key)
    assert keys[0] != keys[1] and keys[2] == keys[0]
    assert sorted(p.name for p in (tmp_path / "runs" / "teachers").iterdir()) == sorted(keys[:2])


# --- case 2: a re-ranked run says so, and a suite entry may not score otherwise than its baseline -------------
@pytest.mark.parametrize("entry_set, key", [(["eval.rerank=true"], "eval.rerank"),
                                            (["eval.metric=euclidean"], "eval.metric"),
                                            (["eval.protocols=[asymmetric]"], "eval.protocols")])
def test_a_suite_entry_that_scores_otherwise_is_refused(entry_set, key, tmp_path, tiny_overrides):
    path = suite_file(tmp_path, tiny_overrides, entry_set)
    before = path.read_bytes()
    assert_one_line(cli("bench", "--suite", path), "methods[1]", key, "changes how runs are scored",
                    "the suite's own 'set'")
    assert path.read_bytes() == before and not (tmp_path / "runs").exists()


def test_a_re_ranked_run_records_it_and_its_table_says_so(tmp_path, tiny_overrides):
    """A suite re-ranked as a whole (its own `set`) scores every run so: metrics.json records the re-ranking's
    options, `reidkd eval`-style console lines and the leaderboard say it."""
    path = suite_file(tmp_path, tiny_overrides, None, "eval.rerank=true")
    result = cli("bench", "--suite", path)
    assert result.exit_code == 0, result.output[-2000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("seed*/metrics.json")]
    assert records and all(r["rerank"] == {"k1": 20, "k2": 6, "lam": 0.3} for r in records)
    board = cli("leaderboard", "--runs", tmp_path / "runs", "--out", tmp_path / "boards", "--readme", tmp_path / "none.md")
    assert board.exit_code == 0, board.output[-2000:]
    text = (tmp_path / "boards" / "mini.md").read_text()
    assert "Re-ranking: k-reciprocal (k1 20, k2 6, λ 0.3)." in text


# --- case 7: every network's start is checked before any training ----------------------------------------------
@pytest.mark.parametrize("start, words", [("/nonexistent/student.pth", ["model.pretrained", "/nonexistent/student.pth"]),
                                          ("{garbage}", ["{garbage}"])])
def test_a_students_unusable_start_is_refused_before_the_teacher_trains(start, words, tmp_path, tiny_overrides):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all")
    start, words = start.format(garbage=garbage), [w.format(garbage=garbage) for w in words]
    out = tmp_path / "runs"
    result = cli("run", "--config", QUICKSTART, *sets(moved(tiny_overrides, out, f"model.pretrained={start}")))
    assert_one_line(result, *words)
    assert not list(out.rglob("*.pt")) and not list(out.rglob("log.csv"))  # no network trained, not even the teacher
    assert garbage.read_bytes() == b"not a torch file at all"
