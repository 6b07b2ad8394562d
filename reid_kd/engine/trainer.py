"""The trainer core: one network's optimiser and schedule, its step, an epoch's bookkeeping, resume.

Each epoch is a function of (seed, epoch): the sampler order, the augmentation stream and torch's
RNG are reseeded at its start, so a run resumed from its last checkpoint continues exactly as an
uninterrupted one would. The loop over epochs and batches is `engine/cohort.py`'s (a run alone is a
cohort of one: one loop, so a run trained alone and side by side cannot drift apart); what is written
or shown as training goes (checkpoint, log.csv, TensorBoard, console lines) is the hooks'
(`engine/hooks.py`).
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from reid_kd.engine.cohort import train_side_by_side
from reid_kd.engine.hooks import Hook, default_hooks
from reid_kd.engine.runtime import autocast
from reid_kd.losses import reid_losses
from reid_kd.utils import distributed
from reid_kd.utils.io import load_torch, save_torch

logger = logging.getLogger(__name__)


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
    """One network's training. A loop calls `begin`, then for each epoch `begin_epoch`, `step` for each
    batch and `end_epoch`, and `end` at last (also on an error); each calls the hooks of its point."""

    def __init__(self, model: nn.Module, train_loader, train_cfg: dict, device: torch.device, out_dir: str | Path,
                 *, seed: int = 0, teacher: nn.Module | None = None, distiller: nn.Module | None = None,
                 amp: bool = False, desc: str = "train", tag: str | None = None,
                 hooks: list[Hook] | None = None, sync_bn: bool = False):
        """`hooks`: default `default_hooks()` (checkpoint, log.csv, TensorBoard, console). The trainer's own
        lines (resuming, discarding a checkpoint) are logged by rank 0 alone.

        Under torch.distributed (see `engine/distributed.py`) the model trains as DistributedDataParallel,
        with its BatchNorms synchronised across ranks when `sync_bn`; only rank 0 writes or logs (runs
        hooks that are `main_only`).
        """
        self.main = distributed.is_main()
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
        self.amp = amp  # mixed precision: float16 with a grad scaler on CUDA, bfloat16 on CPU
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
        hooks = default_hooks() if hooks is None else hooks
        self.hooks = [h for h in hooks if self.main or not h.main_only]
        self.start_epoch, self.stop_epoch = 0, train_cfg["epochs"]  # this call trains epochs start..stop-1
        self.train_seconds = 0.0  # across resumes
        # the epoch under way: its loss sums, images and step time
        self.sums: dict[str, float] = defaultdict(float)
        self.n_batches, self.n_images, self.step_seconds = 0, 0, 0.0

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

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
            self.say(f"{self.desc}: discarding checkpoint.pt of another config in {self.out_dir}; starting afresh")
            return 0.0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.distiller is not None:
            self.distiller.load_state_dict(state["distiller"])
        self.start_epoch = state["epoch"] + 1
        self.say(f"{self.desc}: resuming from checkpoint.pt after epoch {self.start_epoch}/{self.cfg['epochs']} "
                 f"in {self.out_dir}")
        return float(state["train_seconds"])

    def fit(self, resume: bool = True, stop_after: int | None = None) -> float:
        """Train to `epochs` (or only up to epoch `stop_after`); returns training seconds across resumes."""
        return train_side_by_side([self], resume, stop_after)[0]

    def begin(self, resume: bool = True, stop_after: int | None = None) -> None:
        """Resume (unless not `resume`) and get ready for epochs start_epoch..stop_epoch-1."""
        self.train_seconds = self.try_resume() if resume else 0.0
        self.stop_epoch = min(self.cfg["epochs"], stop_after or self.cfg["epochs"])
        for hook in self.hooks:
            hook.before_train(self)

    def seed_epoch(self, epoch: int) -> None:
        """Reseed torch, the sampler and the augmentation stream: the epoch is a function of (seed, epoch)."""
        torch.manual_seed(self.seed * 100_003 + epoch)
        self.loader.batch_sampler.set_epoch(epoch)
        self.loader.dataset.transform.set_random_seed(self.seed * 100_003 + epoch)
        if self.loader.generator is not None:
            self.loader.generator.manual_seed(self.seed * 100_003 + epoch)

    def begin_epoch(self, epoch: int) -> None:
        """Zero the epoch's figures (call it before `seed_epoch`: the console hook's clock starts here)."""
        self.model.train()
        self.sums.clear()
        self.n_batches, self.n_images, self.step_seconds = 0, 0, 0.0
        for hook in self.hooks:
            hook.before_epoch(self, epoch)

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, teacher_out=None
                   ) -> tuple[dict[str, float], float]:
        """One optimisation step: the loss terms and total, and the batch accuracy.
        `teacher_out` is the teacher's output on `images` (shared by a cohort)."""
        with autocast(self.device, self.amp):
            out = self.forward(images)
        # the losses in float32 (distances, relations, softmax at a temperature), the network in mixed precision
        losses = reid_losses(out.float(), targets, self.cfg)
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

    def step(self, images, targets, indices, teacher_out=None) -> dict[str, float]:
        """`train_step` and the `after_step` hooks (e.g. weight averaging), counted into the epoch's figures."""
        start = time.perf_counter()
        terms, acc = self.train_step(images, targets, indices, teacher_out)
        for hook in self.hooks:
            hook.after_step(self, terms)
        self.step_seconds += time.perf_counter() - start
        for k, v in terms.items():
            self.sums[k] += v
        self.sums["acc"] += acc
        self.n_batches += 1
        self.n_images += len(images)
        return terms

    def end_epoch(self, epoch: int, shared_seconds: float) -> None:
        """Close an epoch: its log.csv row goes to the hooks. Its time is this run's steps plus the cohort's
        shared work (data, teacher forward): what the run would have taken alone."""
        seconds = self.step_seconds + shared_seconds
        self.train_seconds += seconds
        row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        row |= {k: v / max(self.n_batches, 1) for k, v in self.sums.items()}
        row |= {"images_per_sec": self.n_images / max(seconds, 1e-9), "seconds": seconds}
        for hook in self.hooks:
            hook.after_epoch(self, epoch, row)

    def end(self) -> None:
        """Also on an error or Ctrl-C: hooks release what they hold (e.g. TensorBoard's writer thread)."""
        for hook in self.hooks:
            hook.after_train(self)

    def log_eval(self, metrics: dict) -> None:
        """Hand the trained model's evaluation to the hooks (TensorBoard's `eval/` scalars)."""
        for hook in self.hooks:
            hook.after_eval(self, metrics)

    def say(self, message: str) -> None:
        """Log a line of this run (rank 0 alone: one line per event)."""
        if self.main:
            logger.info(message)
