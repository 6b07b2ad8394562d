"""Progress a run shows without a terminal (one line per epoch, resume lines) and its TensorBoard scalars."""
import csv
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch

from reid_kd.data.image_dataset import build_loaders
from reid_kd.engine import hooks as hooks_module
from reid_kd.engine import scalars as scalars_module
from reid_kd.engine.configs import load_config
from reid_kd.engine.hooks import clock, default_hooks
from reid_kd.engine.scalars import ScalarLog
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.run_folder import RunFolder
from reid_kd.models.reid_model import build_model

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
NUMBER = r"\d+\.\d+"
CLOCK = r"\d+:\d\d(?::\d\d)?"
EPOCH_LINE = re.compile(rf"^(?P<desc>\S+) epoch (?P<k>\d+)/(?P<e>\d+)  loss {NUMBER} \(id {NUMBER}, triplet {NUMBER}"
                        rf"(?:, [a-z_]+ {NUMBER})*\)  acc {NUMBER}  lr \d\.\d\de[-+]\d\d  \d+ img/s  {NUMBER} s  "
                        rf"elapsed {CLOCK}  ETA (?P<eta>{CLOCK})$")


@pytest.fixture
def with_tensorboard():
    """A skip where the optional `tensorboard` package (`reid-kd[tensorboard]`) is not installed."""
    pytest.importorskip("tensorboard")


def _accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def _steps(folder: Path, tag: str) -> list[int]:
    return [e.step for e in _accumulator(folder).Scalars(tag)]


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread" and t.is_alive()]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_overrides):
    """`reidkd run` with stdout and stderr captured (no terminal): teacher 2 epochs, student 3.

    Each stdout line is stamped with the time it arrived, to tell a line printed at once from one
    left in the buffer of a pipe until the process ends.
    """
    tmp = tmp_path_factory.mktemp("progress")
    out = tmp / "runs"
    overrides = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    overrides += [f"experiment.output_dir={out}", "teacher.train.epochs=2", "train.epochs=3", "experiment.threads=1"]
    with (tmp / "stderr.txt").open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "reid_kd.cli", "run", "--config", QUICKSTART,
                                 *[a for o in overrides for a in ("--set", o)]],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
                                env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
        arrived = [(time.monotonic(), line.rstrip("\n")) for line in proc.stdout]
        returncode = proc.wait(timeout=300)
    stdout = "\n".join(line for _, line in arrived)
    stderr = (tmp / "stderr.txt").read_bytes().decode()  # read as bytes: a "\r" stays a "\r"
    assert returncode == 0, stdout[-2000:] + stderr[-3000:]
    return {"out": out, "stdout": stdout, "stderr": stderr, "arrived": arrived}


@pytest.mark.slow
def test_run_without_terminal_prints_one_line_per_epoch(cli_run):
    epochs = {}
    for line in cli_run["stdout"].splitlines():
        match = EPOCH_LINE.match(line)
        if match:
            epochs.setdefault(match["desc"], []).append((int(match["k"]), int(match["e"]), match["eta"]))
    assert epochs.keys() == {"teacher", "baseline"}, cli_run["stdout"]
    assert [(k, e) for k, e, _ in epochs["teacher"]] == [(1, 2), (2, 2)]
    assert [(k, e) for k, e, _ in epochs["baseline"]] == [(1, 3), (2, 3), (3, 3)]
    assert epochs["teacher"][-1][2] == epochs["baseline"][-1][2] == "0:00"  # nothing left after the last epoch
    assert cli_run["stdout"].count(" epoch ") == 5  # no other per-epoch output (e.g. a bar drawn on stdout)
    # no progress bar in a log: tqdm draws with carriage returns and "|" bars
    assert "\r" not in cli_run["stderr"] and "it/s" not in cli_run["stderr"], cli_run["stderr"][-2000:]
    assert "%|" not in cli_run["stderr"] + cli_run["stdout"]
    # printed when the epoch ends, not when the process does (a pipe or file is block-buffered)
    first = next(t for t, line in cli_run["arrived"] if line.startswith("teacher epoch 1/2 "))
    last = cli_run["arrived"][-1][0]  # the results table, written after the student's evaluation
    assert last - first > 0.5, "the epoch lines reached the pipe only with the results at the end"


@pytest.mark.slow
def test_run_keeps_the_log_csv_columns_and_writes_tensorboard_scalars(cli_run, with_tensorboard):
    student = next((cli_run["out"] / "quickstart").glob("*/seed0"))
    teacher = next((cli_run["out"] / "teachers").glob("*"))
    for folder, epochs in ((student, 3), (teacher, 2)):
        with (folder / "log.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["epoch", "lr", "id", "triplet", "loss", "acc", "images_per_sec", "seconds"]
        assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
        tags = set(_accumulator(folder / "tensorboard").Tags()["scalars"])
        assert {"loss/total", "loss/id", "loss/triplet", "train/acc", "train/lr", "train/images_per_sec"} <= tags
        assert _steps(folder / "tensorboard", "train/lr") == list(range(1, epochs + 1))
        lrs = [e.value for e in _accumulator(folder / "tensorboard").Scalars("train/lr")]
        assert lrs == pytest.approx([float(r["lr"]) for r in rows], rel=1e-5)
        losses = [e.value for e in _accumulator(folder / "tensorboard").Scalars("loss/total")]
        assert losses == pytest.approx([float(r["loss"]) for r in rows], rel=1e-5)


def _cfg(tiny_overrides, epochs):
    cfg = load_config(QUICKSTART, tiny_overrides + ["train.optimizer=sgd", "train.lr=0.01"])
    return dict(cfg["train"], epochs=epochs), cfg["data"], cfg["model"]


TRAINER = "reid_kd.engine"  # the loggers of the member's own lines and its console hook's


def _cohort(tiny_overrides, out, epochs=3, tag="a", **kwargs):
    """A fresh cohort of one student on the tiny data, as a new process would build it."""
    train_cfg, data_cfg, model_cfg = _cfg(tiny_overrides, epochs)
    loaders = build_loaders(data_cfg, seed=0)
    torch.manual_seed(0)
    model = build_model(model_cfg, loaders.dataset.num_train_pids)
    cohort = Cohort(loaders.train, torch.device("cpu"), seed=0)
    cohort.add(model, train_cfg, RunFolder(out), desc="student", tag=tag, **kwargs)
    return cohort


def test_resume_is_announced_and_tensorboard_drops_the_steps_after_the_checkpoint(tmp_path, tiny_overrides,
                                                                                  one_thread, with_tensorboard,
                                                                                  logged, caplog):
    out = tmp_path / "run"
    _cohort(tiny_overrides, out).fit(stop_after=1)
    lines = logged(TRAINER)
    assert [line.split("  ")[0] for line in lines] == ["student epoch 1/3"]
    shutil.copy(out / "checkpoint.pt", tmp_path / "after_epoch1.pt")
    caplog.clear()
    _cohort(tiny_overrides, out).fit(stop_after=2)
    lines = logged(TRAINER)
    assert lines[0] == f"student: resuming from checkpoint.pt after epoch 1/3 in {out}"
    assert [line.split("  ")[0] for line in lines[1:]] == ["student epoch 2/3"]
    assert _steps(out / "tensorboard", "train/lr") == [1, 2]
    # killed after epoch 2's scalars were written but before its checkpoint: resumed after epoch 1 again
    shutil.copy(tmp_path / "after_epoch1.pt", out / "checkpoint.pt")
    caplog.clear()
    cohort = _cohort(tiny_overrides, out)
    cohort.fit()
    lines = logged(TRAINER)
    assert lines[0] == f"student: resuming from checkpoint.pt after epoch 1/3 in {out}"
    assert [line.split("  ")[0] for line in lines[1:]] == ["student epoch 2/3", "student epoch 3/3"]
    assert all(EPOCH_LINE.match(line) for line in lines[1:]), lines
    for tag in ("train/lr", "train/acc", "train/images_per_sec", "loss/total", "loss/id", "loss/triplet"):
        assert _steps(out / "tensorboard", tag) == [1, 2, 3], tag  # no step twice
    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    lrs = [e.value for e in _accumulator(out / "tensorboard").Scalars("train/lr")]
    assert lrs == pytest.approx([float(r["lr"]) for r in rows], rel=1e-5)  # the resumed run's values, not the old
    cohort.members[0].log_eval({"mAP": 0.5, "rank1": 0.25, "rank5": 0.75, "rank10": 1.0, "mINP": 0.125, "cmc": [0.25, 0.5]})
    assert not _writer_threads()
    acc = _accumulator(out / "tensorboard")
    assert {t for t in acc.Tags()["scalars"] if t.startswith("eval/")} == {
        "eval/mAP", "eval/rank1", "eval/rank5", "eval/rank10", "eval/mINP"}
    assert [(e.step, e.value) for e in acc.Scalars("eval/mAP")] == [(3, 0.5)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/mINP")] == [(3, 0.125)]


def test_checkpoint_of_another_config_is_discarded_with_a_line(tmp_path, tiny_overrides, one_thread,
                                                               with_tensorboard, logged, caplog):
    out = tmp_path / "run"
    _cohort(tiny_overrides, out, epochs=1, tag="a").fit()
    caplog.clear()
    _cohort(tiny_overrides, out, epochs=1, tag="b").fit()
    lines = logged(TRAINER)
    assert lines[0] == f"student: discarding checkpoint.pt of another config in {out}; starting afresh"
    assert [line.split("  ")[0] for line in lines[1:]] == ["student epoch 1/1"]
    assert _steps(out / "tensorboard", "train/lr") == [1]  # the other config's step 1 is purged


def test_eta_is_the_mean_epoch_time_times_the_epochs_left(tmp_path, tiny_overrides, one_thread, monkeypatch,
                                                          logged):
    """Each checkpoint write takes 60 s of a fake clock: after epoch k of 3 the ETA is about 3 - k minutes."""
    offset = [0.0]
    fake_time = types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + offset[0])
    monkeypatch.setattr(hooks_module, "time", fake_time)
    cohort = _cohort(tiny_overrides, tmp_path / "run")
    member = cohort.members[0]
    save = member.save_checkpoint

    def slow_save(*args):
        save(*args)
        offset[0] += 60.0

    member.save_checkpoint = slow_save
    cohort.fit()
    lines = logged(TRAINER)
    etas = [EPOCH_LINE.match(line)["eta"].split(":") for line in lines]
    etas = [int(minutes) * 60 + int(seconds) for minutes, seconds in etas]
    assert 120 <= etas[0] < 130 and 60 <= etas[1] < 65 and etas[2] == 0, lines
    assert all(" elapsed 0:0" in line for line in lines)  # training time only: checkpointing is not in it


def test_clock():
    assert [clock(s) for s in (0, 59.4, 61, 3599, 3600, 3725, 36000)] == [
        "0:00", "0:59", "1:01", "59:59", "1:00:00", "1:02:05", "10:00:00"]


def test_default_log_prints_to_stdout_at_once(tmp_path, tiny_overrides, one_thread, console, capsys):
    train_cfg, data_cfg, model_cfg = _cfg(tiny_overrides, 1)
    loaders = build_loaders(data_cfg, seed=0)
    model = build_model(model_cfg, loaders.dataset.num_train_pids)
    cohort = Cohort(loaders.train, torch.device("cpu"))
    cohort.add(model, train_cfg, RunFolder(tmp_path), desc="teacher", hooks=default_hooks(tensorboard=False))
    cohort.fit()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and EPOCH_LINE.match(out[0]) and out[0].startswith("teacher epoch 1/1  loss ")
    assert not (tmp_path / "tensorboard").exists()  # tensorboard=False


def test_a_failing_epoch_closes_the_writer_and_keeps_the_epochs_before(tmp_path, tiny_overrides, one_thread,
                                                                       with_tensorboard, logged):
    cohort = _cohort(tiny_overrides, tmp_path / "run")
    member = cohort.members[0]
    step, calls = member.train_step, []

    def failing_step(*args):
        calls.append(1)
        if len(calls) > len(cohort.loader):  # the first batch of epoch 2
            raise FloatingPointError("loss is nan")
        return step(*args)

    member.train_step = failing_step
    with pytest.raises(FloatingPointError):
        cohort.fit()
    assert not _writer_threads()
    assert len(logged(TRAINER)) == 1 and _steps(tmp_path / "run" / "tensorboard", "train/lr") == [1]


def test_without_tensorboard_nothing_is_written_and_nothing_breaks(tmp_path, tiny_overrides, one_thread,
                                                                  monkeypatch, logged):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    assert scalars_module._summary_writer_class() is None
    with ScalarLog(tmp_path / "tb", purge_step=1) as log:
        assert not log.enabled
        log.add("train/lr", 0.1, 1)
    assert not (tmp_path / "tb").exists()
    cohort = _cohort(tiny_overrides, tmp_path / "run", epochs=1)
    cohort.fit()
    cohort.members[0].log_eval({"mAP": 0.5})
    assert len(logged(TRAINER)) == 1 and (tmp_path / "run" / "log.csv").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_a_resumed_log_purges_a_file_of_another_process_written_the_same_second(tmp_path, with_tensorboard):
    """Event files are read in name order: creation second, then host, process id and a counter."""
    folder = tmp_path / "tb"
    with ScalarLog(folder, purge_step=1) as log:
        for step in (1, 2, 3):
            log.add("train/lr", float(step), step)
    (old,) = folder.glob("events.out.tfevents.*")
    old.rename(old.with_name(old.name.rsplit(".", 2)[0] + ".99999999.99"))  # sorts after this process's files
    with ScalarLog(folder, purge_step=2) as log:  # resumed after step 1, typically within the same second
        for step in (2, 3):
            log.add("train/lr", 10.0 * step, step)
    assert [(e.step, e.value) for e in _accumulator(folder).Scalars("train/lr")] == [(1, 1.0), (2, 20.0), (3, 30.0)]
