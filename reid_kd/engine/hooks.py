"""What happens around training, as hooks (after fast-reid's `HookBase`): checkpoints, log.csv,
TensorBoard scalars, an MLflow run, one console line per epoch; a weight-averaging hook (e.g. an EMA of the
student) would update at `after_step`. A member (`engine/member.py`) calls every hook of its own, in order, at
each point of its cohort's loop; a hook keeps its own state and reads what `Trained` lists.

log.csv is the record a run is judged by; TensorBoard is only for watching curves while runs train
(`engine/scalars.py`: optional, nothing is written without the `tensorboard` package), MLflow for tracking
runs where a config asks for it (`engine/tracking.py`).
"""
from __future__ import annotations

import csv
import logging
import math
import numbers
import time
from pathlib import Path
from typing import Protocol

from reid_kd.engine.run_folder import RunFolder
from reid_kd.engine.scalars import ScalarLog
from reid_kd.engine.tracking import MLflowRun

logger = logging.getLogger(__name__)
EVAL_SCALARS = ("mAP", "rank1", "rank5", "rank10", "mINP")
ROW_KEYS = ("epoch", "lr", "loss", "acc", "images_per_sec", "seconds")  # the log.csv columns that are not loss terms


class Trained(Protocol):
    """What a hook reads of the network it serves (an `engine/member.py` Member)."""

    desc: str  # its name in console lines
    folder: RunFolder
    epochs: int  # the schedule's length
    start_epoch: int  # the first epoch this process trains (after a resume)
    stop_epoch: int  # the epoch it stops before
    train_seconds: float  # across resumes

    def save_checkpoint(self, epoch: int) -> None: ...


class Hook:
    """A point of the loop to act at; override what you need. `main_only`: under torch.distributed such a
    hook runs on rank 0 alone (what writes files or prints); others run on every rank (e.g. averaging)."""

    main_only = False

    def before_train(self, member: Trained) -> None:
        """After resuming (`member.start_epoch` is the first epoch to train), before any epoch."""

    def before_epoch(self, member: Trained, epoch: int) -> None:
        pass

    def after_step(self, member: Trained, terms: dict[str, float]) -> None:
        """After an optimisation step, under the run's own RNG stream; `terms`: its loss terms and total."""

    def after_epoch(self, member: Trained, epoch: int, row: dict) -> None:
        """`row`: the epoch's log.csv row (epoch is 1-based there)."""

    def after_train(self, member: Trained) -> None:
        """Also when training fails or is interrupted: release what is held open."""

    def after_eval(self, member: Trained, metrics: dict) -> None:
        """The trained model's evaluation (`Member.log_eval`)."""


class CSVHook(Hook):
    """One `log.csv` row per epoch, written before the checkpoint; on resume, trimmed to the checkpoint's
    epochs (a kill may fall in between)."""

    main_only = True

    def before_train(self, member: Trained) -> None:
        path = member.folder.log
        if not path.is_file():
            return
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if None not in r.values() and r["epoch"].isdigit()
                    and int(r["epoch"]) <= member.start_epoch]  # a kill mid-write may leave a partial last row
        path.unlink()
        for r in rows:
            _append_row(path, r)

    def after_epoch(self, member: Trained, epoch: int, row: dict) -> None:
        _append_row(member.folder.log, row)


def _append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


class TensorBoardHook(Hook):
    """`loss/*` and `train/*` scalars per epoch, `eval/*` at the last epoch, in `tensorboard/`."""

    main_only = True

    def __init__(self):
        self.scalars: ScalarLog | None = None

    def before_train(self, member: Trained) -> None:
        # steps are 1-based epochs; those after the checkpoint (written before a kill) are purged
        self.scalars = ScalarLog(member.folder.path / "tensorboard", purge_step=member.start_epoch + 1)

    def after_epoch(self, member: Trained, epoch: int, row: dict) -> None:
        for tag, value in epoch_scalars(row).items():
            self.scalars.add(tag, value, row["epoch"])
        self.scalars.flush()  # a run killed later still shows this epoch

    def after_train(self, member: Trained) -> None:
        """No writer thread is left running, written events are flushed."""
        if self.scalars is not None:
            self.scalars.close()
            self.scalars = None

    def after_eval(self, member: Trained, metrics: dict) -> None:
        """`eval/<metric>` (fractions, as in metrics.json) at the step of the last epoch."""
        with ScalarLog(member.folder.path / "tensorboard") as scalars:
            for tag, value in eval_scalars(metrics).items():
                scalars.add(tag, value, member.epochs)


def epoch_scalars(row: dict) -> dict[str, float]:
    """An epoch's log.csv row as named scalars (TensorBoard's tags, MLflow's metrics): the loss and each of its
    terms, accuracy, learning rate, speed; a missing or NaN value (a model without a classifier) left out."""
    values = {"loss/total": row.get("loss"), **{f"loss/{k}": v for k, v in row.items() if k not in ROW_KEYS},
              "train/acc": row.get("acc"), "train/lr": row["lr"], "train/images_per_sec": row["images_per_sec"]}
    return {k: float(v) for k, v in values.items() if v is not None and not math.isnan(float(v))}


def eval_scalars(metrics: dict) -> dict[str, float]:
    """The trained network's scores as `eval/<metric>` (fractions, as in metrics.json)."""
    return {f"eval/{k}": float(metrics[k]) for k in EVAL_SCALARS if isinstance(metrics.get(k), numbers.Real)}


class MLflowHook(Hook):
    """The network's MLflow run (`engine/tracking.py`): its params when training starts, the log.csv row per
    epoch, and once evaluated (metrics.json written) its scores and metrics.json."""

    main_only = True

    def __init__(self, run: MLflowRun):
        self.run = run
        self.done = 0  # epochs trained to

    def before_train(self, member: Trained) -> None:
        self.run.start(member.folder.path)
        self.done = member.start_epoch

    def after_epoch(self, member: Trained, epoch: int, row: dict) -> None:
        self.run.log(epoch_scalars(row), row["epoch"])
        self.done = epoch + 1

    def after_train(self, member: Trained) -> None:
        if self.done < member.stop_epoch:  # an error or Ctrl-C stopped it
            self.run.end("FAILED")

    def after_eval(self, member: Trained, metrics: dict) -> None:
        self.run.log(eval_scalars(metrics), member.epochs)
        if member.folder.metrics.is_file():
            self.run.log_file(member.folder.metrics)
        self.run.end("FINISHED")


class CheckpointHook(Hook):
    """The member's state after every epoch: what it resumes from."""

    main_only = True

    def after_epoch(self, member: Trained, epoch: int, row: dict) -> None:
        member.save_checkpoint(epoch)


class ConsoleHook(Hook):
    """One line logged per finished epoch (shown also without a terminal: a log file, Slurm, CI): its log.csv
    row, the run's training time so far and the time left. Place it after the checkpoint hook: the time left
    counts checkpointing."""

    main_only = True

    def __init__(self):
        self.walls: list[float] = []  # wall time of each epoch run in this process
        self.epoch_start = 0.0

    def before_train(self, member: Trained) -> None:
        self.walls.clear()

    def before_epoch(self, member: Trained, epoch: int) -> None:
        self.epoch_start = time.perf_counter()

    def after_epoch(self, member: Trained, epoch: int, row: dict) -> None:
        self.walls.append(time.perf_counter() - self.epoch_start)
        eta = sum(self.walls) / len(self.walls) * (member.stop_epoch - epoch - 1)
        logger.info(epoch_line(member.desc, row, member.epochs, member.train_seconds, eta))


def default_hooks(tensorboard: bool = True, mlflow: MLflowRun | None = None) -> list[Hook]:
    """The log row before the checkpoint (a resume trims the log to it), the console line last; `mlflow`: the
    network's MLflow run (`tracking.mlflow_run`), None when the config tracks nothing."""
    return [CSVHook(), *([TensorBoardHook()] if tensorboard else []), *([MLflowHook(mlflow)] if mlflow else []),
            CheckpointHook(), ConsoleHook()]


def clock(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def epoch_line(desc: str, row: dict, epochs: int, elapsed: float, eta: float) -> str:
    terms = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ROW_KEYS)
    parts = [f"{desc} epoch {row['epoch']}/{epochs}",
             f"loss {row.get('loss', math.nan):.3f}" + (f" ({terms})" if terms else "")]
    if "acc" in row and not math.isnan(row["acc"]):
        parts.append(f"acc {row['acc']:.3f}")
    parts += [f"lr {row['lr']:.2e}", f"{row['images_per_sec']:.0f} img/s", f"{row['seconds']:.1f} s",
              f"elapsed {clock(elapsed)}", f"ETA {clock(eta)}"]
    return "  ".join(parts)
