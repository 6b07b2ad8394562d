"""One network in training: its model, optimiser, schedule, distiller, checkpoint and the epoch's figures.

A member does not loop: its cohort (`engine/cohort.py`) owns the epochs, the batches, the one teacher
forward per batch and the order of every call; a member takes a step on a batch it is given, keeps its
own state, and resumes from its own checkpoint. What is written or shown as it trains (checkpoint,
log.csv, TensorBoard, console lines) is its hooks' (`engine/hooks.py`).
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict

import torch
from torch import nn

from reid_kd.engine.hooks import Hook, default_hooks
from reid_kd.engine.run_folder import RunFolder
from reid_kd.engine.runtime import MEMORY_FORMATS, autocast, in_format
from reid_kd.errors import UserError
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


class NonFiniteLossError(UserError, FloatingPointError):
    """A training loss that became NaN or infinite; the message names the run, the epoch and what to try."""


class Member:
    """One network of a cohort (made by `Cohort.add`, which passes the cohort's device, batches per epoch
    and precision). Under torch.distributed the model trains as DistributedDataParallel, its BatchNorms
    synchronised across ranks when `sync_bn`; only rank 0 runs the hooks that write or print."""

    def __init__(self, model: nn.Module, train_cfg: dict, folder: RunFolder, device: torch.device,
                 steps_per_epoch: int, *, distiller: nn.Module | None = None, amp: bool = False,
                 desc: str = "train", tag: str | None = None, hooks: list[Hook] | None = None, sync_bn: bool = False,
                 memory_format: str = "contiguous", recipe: str = "train"):
        self.main = distributed.is_main()
        self.recipe = recipe  # the config block of its training recipe (train, teacher.train, pretrain.student)
        self.tag = tag  # e.g. the config hash: a checkpoint saved under another tag is not resumed
        if sync_bn and distributed.active():
            model = distributed.sync_batch_norm(model, device)
        if memory_format != "contiguous":  # its weights and activations in that layout (inputs: `in_format`)
            model = model.to(memory_format=MEMORY_FORMATS[memory_format])
        self.memory_format = memory_format
        self.model, self.cfg, self.device, self.folder, self.desc = model.to(device), train_cfg, device, folder, desc
        self.forward = self.model
        if distributed.active():  # gradients averaged over the ranks as the backward pass runs
            self.forward = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.distiller = distiller.to(device) if distiller is not None else None
        params = [p for p in model.parameters() if p.requires_grad]
        if self.distiller is not None:
            params += self.distiller.extra_parameters()
        self.optimizer = build_optimizer(params, train_cfg)
        steps = max(steps_per_epoch, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: lr_factor(train_cfg, it, steps))
        self.amp = amp  # mixed precision: float16 with a grad scaler on CUDA, bfloat16 on CPU
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
        hooks = default_hooks() if hooks is None else hooks
        self.hooks = [h for h in hooks if self.main or not h.main_only]
        self.epochs = train_cfg["epochs"]
        self.start_epoch, self.stop_epoch = 0, self.epochs  # this process trains epochs start..stop-1
        self.train_seconds = 0.0  # across resumes
        self.epoch: int | None = None  # the epoch open between `begin_epoch` and `end_epoch`
        self.sums: dict[str, float] = defaultdict(float)  # the open epoch's loss sums, images and step time
        self.n_batches, self.n_images, self.step_seconds = 0, 0, 0.0

    @property
    def finished(self) -> bool:
        """Trained to its last epoch (not stopped early by `stop_after`)."""
        return self.stop_epoch >= self.epochs

    def save_checkpoint(self, epoch: int) -> None:
        if not self.main:
            return
        state = {"epoch": epoch, "train_seconds": self.train_seconds, "tag": self.tag,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        if self.distiller is not None:
            state["distiller"] = self.distiller.state_dict()
        save_torch(state, self.folder.checkpoint)

    def _resume(self) -> float:
        """Continue from the last complete epoch if a checkpoint exists; returns seconds already spent."""
        path = self.folder.checkpoint
        if not path.is_file():
            return 0.0
        state = load_torch(path, self.device, fix=f"delete it to train {self.desc} from its first epoch")
        if state.get("tag") != self.tag:  # left by a run of another config: start afresh
            path.unlink()
            self.say(f"{self.desc}: discarding {path.name} of another config in {self.folder}; starting afresh")
            return 0.0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.distiller is not None:
            self.distiller.load_state_dict(state["distiller"])
        self.start_epoch = state["epoch"] + 1
        self.say(f"{self.desc}: resuming from {path.name} after epoch {self.start_epoch}/{self.epochs} in {self.folder}")
        return float(state["train_seconds"])

    # The cohort's calls, in its order: begin, then per epoch begin_epoch, step per batch, end_epoch; end.

    def begin(self, resume: bool, stop_after: int | None) -> None:
        """Resume (unless not `resume`) and get ready for epochs start_epoch..stop_epoch-1."""
        self.train_seconds = self._resume() if resume else 0.0
        self.stop_epoch = min(self.epochs, stop_after or self.epochs)
        for hook in self.hooks:
            hook.before_train(self)

    def begin_epoch(self, epoch: int) -> None:
        self.model.train()
        self.epoch = epoch
        self.sums.clear()
        self.n_batches, self.n_images, self.step_seconds = 0, 0, 0.0
        for hook in self.hooks:
            hook.before_epoch(self, epoch)

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, teacher_out=None
                   ) -> tuple[dict[str, float], float]:
        """One optimisation step: the loss terms and total, and the batch accuracy.
        `teacher_out` is the teacher's output on `images` (the cohort's one forward)."""
        with autocast(self.device, self.amp):
            out = self.forward(in_format(images, self.memory_format))
        # the losses in float32 (distances, relations, softmax at a temperature), the network in mixed precision
        losses = reid_losses(out.float(), targets, self.cfg)
        if self.distiller is not None:
            losses.update(self.distiller(out, teacher_out, targets, indices))
        total = sum(losses.values())
        if not torch.isfinite(total):
            self._non_finite(total, losses)
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

    def _non_finite(self, total: torch.Tensor, losses: dict) -> None:
        """Stop the run in one line: which run, where, the terms, and what to try (no step of it is saved)."""
        terms = ", ".join(f"{k} {v.item():.4g}" for k, v in losses.items())
        amp = ", or experiment.amp=false" if self.amp else ""
        raise NonFiniteLossError(
            f"{self.desc} ({self.folder}): the loss became {total.item()} in epoch {self.epoch + 1}/{self.epochs}, "
            f"step {self.n_batches + 1} ({terms}); try a lower {self.recipe}.lr or loss weight, or set "
            f"{self.recipe}.grad_clip{amp}")

    def step(self, images, targets, indices, teacher_out=None) -> dict[str, float]:
        """`train_step` and the `after_step` hooks (e.g. weight averaging), counted into the open epoch."""
        if self.epoch is None:
            raise RuntimeError(f"{self.desc}: a step outside an epoch (the cohort opens each epoch first)")
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

    def end_epoch(self, shared_seconds: float) -> None:
        """Close the open epoch: its log.csv row goes to the hooks. Its time is this member's steps plus the
        cohort's shared work (data, teacher forward): what it would have taken alone."""
        epoch, self.epoch = self.epoch, None
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
        """Hand the trained model's evaluation to the hooks (TensorBoard's `eval/` scalars, MLflow), once its
        metrics.json is written."""
        for hook in self.hooks:
            hook.after_eval(self, metrics)

    def say(self, message: str) -> None:
        """Log a line of this member (rank 0 alone: one line per event)."""
        if self.main:
            logger.info(message)
