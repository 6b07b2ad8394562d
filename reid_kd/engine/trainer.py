"""One training loop for a teacher, a plain student (the baseline) and a distilled student.

Each epoch is a function of (seed, epoch): the sampler order, the augmentation stream and torch's
RNG are reseeded at its start, so a run resumed from its last checkpoint continues exactly as an
uninterrupted one would. A checkpoint (model, optimizer, schedule, distiller buffers) is written
atomically after every epoch, with a per-epoch CSV log beside it.

Runs of one seed can train side by side (`train_side_by_side`): one data pass and one teacher forward
per batch serve every run, and each run still gets exactly the result it would get alone.

Progress: a bar while an epoch runs (only on a terminal), then one line per finished epoch through
`log` (also without a terminal: a log file, Slurm, CI), and TensorBoard scalars in `tensorboard/`
when the optional `tensorboard` package is installed (see `engine/scalars.py`).
"""
from __future__ import annotations

import csv
import math
import numbers
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from reid_kd.engine.scalars import ScalarLog
from reid_kd.errors import ConfigError
from reid_kd.losses import reid_losses
from reid_kd.utils import distributed
from reid_kd.utils.io import load_torch, save_torch


def select_device(name: str, setting: str = "config key 'experiment.device'", fix: str = "experiment.device=auto"
                  ) -> torch.device:
    """`auto`: the GPU when PyTorch sees one, else the CPU; `setting` and `fix` word the error for a missing GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{setting} is '{name}' but PyTorch sees no CUDA device; use {fix} (or cpu)")
    return torch.device(name)


def echo(message: str) -> None:
    """Print a line to stdout at once (a log file sees it now), above any progress bar on the terminal."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


def clock(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


EVAL_SCALARS = ("mAP", "rank1", "rank5", "rank10", "mINP")
ROW_KEYS = ("epoch", "lr", "loss", "acc", "images_per_sec", "seconds")  # the log.csv columns that are not loss terms


def build_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                               nesterov=True)
    return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def lr_factor(cfg: dict, iteration: int, iters_per_epoch: int) -> float:
    """Linear warmup from `warmup_factor`, then cosine to zero or step decay at `milestones` (epochs)."""
    epoch = iteration / iters_per_epoch
    warmup = cfg["warmup_epochs"]
    if epoch < warmup:
        return cfg["warmup_factor"] + (1 - cfg["warmup_factor"]) * epoch / warmup
    if cfg["scheduler"] == "cosine":
        span = max(cfg["epochs"] - warmup, 1e-8)
        return 0.5 * (1 + math.cos(math.pi * min((epoch - warmup) / span, 1.0)))
    return cfg["gamma"] ** sum(epoch >= m for m in cfg["milestones"])


class Trainer:
    def __init__(self, model: nn.Module, train_loader, train_cfg: dict, device: torch.device, out_dir: str | Path,
                 *, seed: int = 0, teacher: nn.Module | None = None, distiller: nn.Module | None = None,
                 amp: bool = False, desc: str = "train", tag: str | None = None,
                 log: Callable[[str], None] = echo, tensorboard: bool = True, sync_bn: bool = False):
        """`log` gets one line per finished epoch and a line on resuming; `tensorboard=False` writes no
        scalars even when the `tensorboard` package is installed.

        Under torch.distributed (see `engine/distributed.py`) the model trains as DistributedDataParallel,
        with its BatchNorms synchronised across ranks when `sync_bn`; only rank 0 writes or logs.
        """
        self.main = distributed.is_main()
        self.log, self.tensorboard = log, tensorboard and self.main
        self.tag = tag  # e.g. the config hash: a checkpoint saved under another tag is not resumed
        if sync_bn and distributed.active():
            model = distributed.sync_batch_norm(model, device)
        self.model, self.loader, self.cfg, self.device = model.to(device), train_loader, train_cfg, device
        self.forward = self.model
        if distributed.active():  # gradients averaged over the ranks as the backward pass runs
            self.forward = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.out_dir, self.seed, self.desc = Path(out_dir), seed, desc
        self.teacher = teacher.to(device).eval() if teacher is not None else None
        if self.teacher is not None:
            self.teacher.requires_grad_(False)
        self.distiller = distiller.to(device) if distiller is not None else None
        params = [p for p in model.parameters() if p.requires_grad]
        if self.distiller is not None:
            params += self.distiller.extra_parameters()
        self.optimizer = build_optimizer(params, train_cfg)
        self.iters_per_epoch = max(len(train_loader), 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(train_cfg, it, self.iters_per_epoch))
        self.amp = amp and device.type == "cuda"
        self.start_epoch = 0

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def log_path(self) -> Path:
        return self.out_dir / "log.csv"

    @property
    def tensorboard_dir(self) -> Path:
        return self.out_dir / "tensorboard"

    def save_checkpoint(self, epoch: int, train_seconds: float) -> None:
        if not self.main:
            return
        state = {"epoch": epoch, "train_seconds": train_seconds, "tag": self.tag, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.distiller is not None:
            state["distiller"] = self.distiller.state_dict()
        save_torch(state, self.checkpoint_path)

    def try_resume(self) -> float:
        """Continue from the last complete epoch if a checkpoint exists; returns seconds already spent."""
        if not self.checkpoint_path.is_file():
            return 0.0
        state = load_torch(self.checkpoint_path, self.device)
        if state.get("tag") != self.tag:  # left by a run of another config: start afresh
            self.checkpoint_path.unlink()
            self._say(f"{self.desc}: discarding checkpoint.pt of another config in {self.out_dir}; starting afresh")
            return 0.0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.distiller is not None:
            self.distiller.load_state_dict(state["distiller"])
        self.start_epoch = state["epoch"] + 1
        self._say(f"{self.desc}: resuming from checkpoint.pt after epoch {self.start_epoch}/{self.cfg['epochs']} "
                 f"in {self.out_dir}")
        return float(state["train_seconds"])

    def _seed_epoch(self, epoch: int) -> None:
        torch.manual_seed(self.seed * 100_003 + epoch)
        self.loader.batch_sampler.set_epoch(epoch)
        self.loader.dataset.transform.set_random_seed(self.seed * 100_003 + epoch)
        if self.loader.generator is not None:
            self.loader.generator.manual_seed(self.seed * 100_003 + epoch)

    def _step(self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, teacher_out=None
              ) -> tuple[dict[str, float], float]:
        """One optimisation step; `teacher_out` is the teacher's output on `images` (shared by a cohort)."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.forward(images)
            losses = reid_losses(out, targets, self.cfg)
            if self.distiller is not None:
                losses.update(self.distiller(out, teacher_out, targets, indices))
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(f"{self.desc}: loss is {total.item()} ({ {k: v.item() for k, v in losses.items()} })")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.distiller is not None:  # its regressors and projectors sit outside DDP: average them here
            distributed.average_gradients(self.distiller.extra_parameters())
        if self.cfg["grad_clip"]:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        acc = (out.logits.argmax(1) == targets).float().mean() if out.logits is not None else total.new_tensor(math.nan)
        # the global batch's figures under data-parallel training (each rank's share is equal: their mean)
        values = distributed.mean_over_ranks(torch.stack([*(v.detach().float() for v in losses.values()),
                                                          total.detach().float(), acc.float()])).tolist()
        return dict(zip([*losses, "loss"], values[:-1])), values[-1]

    def fit(self, resume: bool = True, stop_after: int | None = None) -> float:
        """Train to `epochs` (or only up to epoch `stop_after`); returns training seconds across resumes."""
        return train_side_by_side([self], resume, stop_after)[0]

    def _open(self, resume: bool, stop_after: int | None) -> None:
        """Resume, trim the log to the checkpoint, open TensorBoard: ready for epochs start_epoch..end-1."""
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.train_seconds = self.try_resume() if resume else 0.0
        self.end_epoch = min(self.cfg["epochs"], stop_after or self.cfg["epochs"])
        self._trim_log(self.start_epoch)
        # steps are 1-based epochs; those after the checkpoint (written before a kill) are purged
        self.scalars = ScalarLog(self.tensorboard_dir, purge_step=self.start_epoch + 1) if self.tensorboard else None
        self.epoch_walls: list[float] = []  # wall time of each epoch run in this process (checkpointing included)

    def _begin_epoch(self, rng_state: torch.Tensor) -> None:
        self.model.train()
        self.rng_state = rng_state
        self.sums: dict[str, float] = defaultdict(float)
        self.n_batches, self.n_images, self.step_seconds = 0, 0, 0.0

    def _step_in_own_stream(self, images, targets, indices, teacher_out) -> dict[str, float]:
        """A step under this run's own torch RNG stream, so what a cohort's other runs draw cannot shift it."""
        shared = _rng_state(self.device)
        _set_rng_state(self.device, self.rng_state)
        start = time.perf_counter()
        terms, acc = self._step(images, targets, indices, teacher_out)
        self.step_seconds += time.perf_counter() - start
        self.rng_state = _rng_state(self.device)
        _set_rng_state(self.device, shared)
        for k, v in terms.items():
            self.sums[k] += v
        self.sums["acc"] += acc
        self.n_batches += 1
        self.n_images += len(images)
        return terms

    def _end_epoch(self, epoch: int, shared_seconds: float, wall_start: float) -> None:
        """Log, checkpoint and report one epoch. Its time is this run's steps plus the cohort's shared work
        (data, teacher forward): what the run would have taken alone."""
        seconds = self.step_seconds + shared_seconds
        self.train_seconds += seconds
        row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        row |= {k: v / max(self.n_batches, 1) for k, v in self.sums.items()}
        row |= {"images_per_sec": self.n_images / max(seconds, 1e-9), "seconds": seconds}
        self._log(row)
        if self.scalars is not None:
            self._write_scalars(self.scalars, row)
        self.save_checkpoint(epoch, self.train_seconds)
        self.epoch_walls.append(time.perf_counter() - wall_start)
        eta = sum(self.epoch_walls) / len(self.epoch_walls) * (self.end_epoch - epoch - 1)
        self._say(self.epoch_line(row, self.cfg["epochs"], self.train_seconds, eta))

    def _close(self) -> None:
        """Also on an error or Ctrl-C: no writer thread is left running, written events are flushed."""
        if getattr(self, "scalars", None) is not None:
            self.scalars.close()
            self.scalars = None

    def _say(self, message: str) -> None:
        if not self.main:
            return
        self.log(message)
        sys.stdout.flush()  # whatever `log` is (print, click.echo): a log file shows the line now, not at exit

    def epoch_line(self, row: dict, epochs: int, elapsed: float, eta: float) -> str:
        """One finished epoch in a line: the log.csv row, the run's training time so far, the time left."""
        terms = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ROW_KEYS)
        parts = [f"{self.desc} epoch {row['epoch']}/{epochs}",
                 f"loss {row.get('loss', math.nan):.3f}" + (f" ({terms})" if terms else "")]
        if "acc" in row and not math.isnan(row["acc"]):
            parts.append(f"acc {row['acc']:.3f}")
        parts += [f"lr {row['lr']:.2e}", f"{row['images_per_sec']:.0f} img/s", f"{row['seconds']:.1f} s",
                  f"elapsed {clock(elapsed)}", f"ETA {clock(eta)}"]
        return "  ".join(parts)

    @staticmethod
    def _write_scalars(scalars: ScalarLog, row: dict) -> None:
        step = row["epoch"]
        scalars.add("loss/total", row.get("loss"), step)
        for k, v in row.items():
            if k not in ROW_KEYS:
                scalars.add(f"loss/{k}", v, step)
        scalars.add("train/acc", row.get("acc"), step)
        scalars.add("train/lr", row["lr"], step)
        scalars.add("train/images_per_sec", row["images_per_sec"], step)
        scalars.flush()  # a run killed later still shows this epoch

    def log_eval(self, metrics: dict) -> None:
        """Write `eval/<metric>` TensorBoard scalars (mAP, rank1, rank5, rank10, mINP; fractions as in
        metrics.json) at the step of the last epoch, and close that writer. Call it after evaluating the
        trained model; a no-op without the `tensorboard` package or with `tensorboard=False`."""
        if not self.tensorboard:
            return
        with ScalarLog(self.tensorboard_dir) as scalars:
            for k in EVAL_SCALARS:
                if isinstance(metrics.get(k), numbers.Real):
                    scalars.add(f"eval/{k}", metrics[k], self.cfg["epochs"])

    def _trim_log(self, epochs_done: int) -> None:
        """Keep only the log rows of epochs that the checkpoint holds (a kill may fall in between)."""
        if not self.main or not self.log_path.is_file():
            return
        with self.log_path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if None not in r.values() and r["epoch"].isdigit()
                    and int(r["epoch"]) <= epochs_done]  # a kill mid-write may leave a partial last row
        self.log_path.unlink()
        for r in rows:
            self._log(r)

    def _log(self, row: dict) -> None:
        if not self.main:
            return
        new = not self.log_path.is_file()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


def _rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _check_cohort(trainers: list[Trainer]) -> None:
    first = trainers[0]
    for t in trainers[1:]:
        same = (t.loader is first.loader, t.seed == first.seed, t.device == first.device, t.amp == first.amp)
        if not all(same):
            raise ValueError(f"{t.desc} cannot train beside {first.desc}: runs side by side share one loader, "
                             "seed, device and AMP setting")
    teachers = {id(t.teacher) for t in trainers if t.teacher is not None}
    if len(teachers) > 1:
        raise ValueError("runs side by side share one teacher")


def train_side_by_side(trainers: list[Trainer], resume: bool = True, stop_after: int | None = None) -> list[float]:
    """Train runs of one seed together, batch by batch: one pass of the data and one teacher forward per
    batch serve them all (the teacher's forward is most of a distillation step's cost).

    Each run keeps its own model, optimiser, schedule, checkpoint, log and torch RNG stream, and sees the
    batches and augmentations a run alone would see, so its result is the one it would get alone (a
    resumed run joins at the epoch after its checkpoint). Returns each run's training seconds.
    """
    _check_cohort(trainers)
    first = trainers[0]
    teacher = next((t.teacher for t in trainers if t.teacher is not None), None)
    try:
        for t in trainers:
            t._open(resume, stop_after)
        epochs = max(t.cfg["epochs"] for t in trainers)
        for epoch in range(min(t.start_epoch for t in trainers), max(t.end_epoch for t in trainers)):
            active = [t for t in trainers if t.start_epoch <= epoch < t.end_epoch]
            if not active:
                continue
            wall_start = time.perf_counter()
            first._seed_epoch(epoch)
            batches = iter(first.loader)  # may draw from torch's RNG: before the runs' streams fork off
            epoch_rng = _rng_state(first.device)
            for t in active:
                t._begin_epoch(epoch_rng)
            distilling = teacher is not None and any(t.distiller is not None for t in active)
            start = time.perf_counter()
            desc = first.desc if len(active) == 1 else f"{len(active)} runs side by side"
            # no bar when stderr is not a terminal (logs stay readable), nor on ranks other than 0
            bar = tqdm(batches, total=len(first.loader), desc=f"{desc} {epoch + 1}/{epochs}", leave=False,
                       dynamic_ncols=True, disable=None if first.main else True)
            for images, targets, _, indices in bar:
                images, targets = images.to(first.device, non_blocking=True), targets.to(first.device)
                indices = indices.to(first.device)
                teacher_out = None
                if distilling:
                    with torch.no_grad(), torch.autocast(first.device.type, dtype=torch.float16, enabled=first.amp):
                        teacher_out = teacher(images)
                terms = [t._step_in_own_stream(images, targets, indices, teacher_out) for t in active]
                bar.set_postfix(loss=f"{terms[0]['loss']:.3f}",
                                img_s=f"{active[0].n_images / (time.perf_counter() - start):.0f}")
            bar.close()
            shared_seconds = time.perf_counter() - start - sum(t.step_seconds for t in active)
            for t in active:
                t._end_epoch(epoch, shared_seconds, wall_start)
    finally:
        for t in trainers:
            t._close()
    return [t.train_seconds for t in trainers]
