"""The training loop: the networks of one seed trained side by side, batch by batch (a network trained
alone is a cohort of one, so alone and side by side cannot drift apart).

The cohort owns what its members share: the loader and its seeding, the device and precision, the
teacher and its one forward per batch (most of a distillation step's cost), and the order of every
call. Each member (`engine/member.py`) keeps its own model, optimiser, schedule, checkpoint, hooks and
torch RNG stream, and sees the batches and augmentations it would see alone, so its result is the one
it would get alone (a resumed member joins at the epoch after its checkpoint).

Each epoch is a function of (seed, epoch): the sampler order, the augmentation stream and torch's RNG
are reseeded at its start, so a run resumed from its last checkpoint continues exactly as an
uninterrupted one would. Progress: a bar while an epoch runs (only on a terminal); the rest is the
members' hooks.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from torch import nn
from tqdm import tqdm

from reid_kd.engine.hooks import Hook
from reid_kd.engine.member import Member
from reid_kd.engine.run_folder import RunFolder
from reid_kd.engine.runtime import MEMORY_FORMATS, forward_autocast, forward_precision, in_format
from reid_kd.utils import distributed


def rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@contextmanager
def own_stream(streams: list[tuple], i: int, device: torch.device):
    """Run the block under member `i`'s torch RNG stream, so what the other members draw cannot shift it."""
    shared = rng_state(device)
    set_rng_state(device, streams[i])
    try:
        yield
    finally:
        streams[i] = rng_state(device)
        set_rng_state(device, shared)


class Cohort:
    """Networks trained on one loader, seed, device and precision, behind at most one frozen teacher, whose
    forward runs in `teacher_dtype` (null: as `amp`) and `teacher_memory_format`."""

    def __init__(self, loader, device: torch.device, seed: int = 0, *, teacher: nn.Module | None = None,
                 amp: bool = False, teacher_dtype: str | None = None, teacher_memory_format: str = "contiguous"):
        self.loader, self.device, self.seed, self.amp = loader, device, seed, amp
        self.teacher_dtype = forward_precision(teacher_dtype, amp, device)
        self.teacher_memory_format = teacher_memory_format
        if teacher is not None:
            teacher = teacher.to(device).eval().requires_grad_(False)
            if teacher_memory_format != "contiguous":
                teacher = teacher.to(memory_format=MEMORY_FORMATS[teacher_memory_format])
        self.teacher = teacher
        self.members: list[Member] = []

    def add(self, model: nn.Module, train_cfg: dict, folder: RunFolder, *, distiller: nn.Module | None = None,
            desc: str = "train", tag: str | None = None, hooks: list[Hook] | None = None,
            sync_bn: bool = False, memory_format: str = "contiguous", recipe: str = "train") -> Member:
        """A member training `model` into `folder` under `train_cfg` (the config block `recipe`); a distiller needs
        the cohort's teacher."""
        if distiller is not None and self.teacher is None:
            raise ValueError(f"{desc}: a distiller needs the cohort's teacher")
        member = Member(model, train_cfg, folder, self.device, len(self.loader), distiller=distiller, amp=self.amp,
                        desc=desc, tag=tag, hooks=hooks, sync_bn=sync_bn, memory_format=memory_format, recipe=recipe)
        self.members.append(member)
        return member

    def fit(self, resume: bool = True, stop_after: int | None = None) -> list[float]:
        """Train every member to its epochs (or up to epoch `stop_after`); returns each one's training
        seconds across resumes."""
        try:
            for m in self.members:
                m.begin(resume, stop_after)
            for epoch in range(min(m.start_epoch for m in self.members), max(m.stop_epoch for m in self.members)):
                active = [m for m in self.members if m.start_epoch <= epoch < m.stop_epoch]
                if active:
                    self._epoch(active, epoch)
        finally:
            for m in self.members:
                m.end()
        return [m.train_seconds for m in self.members]

    def _seed_epoch(self, epoch: int) -> None:
        """Reseed torch, the sampler and the augmentation stream: the epoch is a function of (seed, epoch)."""
        seed = self.seed * 100_003 + epoch
        torch.manual_seed(seed)
        self.loader.batch_sampler.set_epoch(epoch)
        self.loader.dataset.transform.set_random_seed(seed)
        if self.loader.generator is not None:
            self.loader.generator.manual_seed(seed)

    def _epoch(self, active: list[Member], epoch: int) -> None:
        for m in active:
            m.begin_epoch(epoch)
        self._seed_epoch(epoch)
        batches = iter(self.loader)  # may draw from torch's RNG: before the members' streams fork off
        streams = [rng_state(self.device)] * len(active)
        distilling = self.teacher is not None and any(m.distiller is not None for m in active)
        start = time.perf_counter()
        epochs = max(m.epochs for m in self.members)
        desc = active[0].desc if len(active) == 1 else f"{len(active)} runs side by side"
        # no bar when stderr is not a terminal (logs stay readable), nor on ranks other than 0
        bar = tqdm(batches, total=len(self.loader), desc=f"{desc} {epoch + 1}/{epochs}", leave=False,
                   dynamic_ncols=True, disable=None if distributed.is_main() else True)
        for images, targets, _, indices in bar:
            images, targets = images.to(self.device, non_blocking=True), targets.to(self.device)
            indices = indices.to(self.device)
            teacher_out = None
            if distilling:
                with torch.no_grad(), forward_autocast(self.device, self.teacher_dtype):
                    teacher_out = self.teacher(in_format(images, self.teacher_memory_format))
            terms = []
            for i, m in enumerate(active):
                with own_stream(streams, i, self.device):
                    terms.append(m.step(images, targets, indices, teacher_out))
            bar.set_postfix(loss=f"{terms[0]['loss']:.3f}",
                            img_s=f"{active[0].n_images / (time.perf_counter() - start):.0f}")
        bar.close()
        shared_seconds = time.perf_counter() - start - sum(m.step_seconds for m in active)
        for m in active:
            m.end_epoch(shared_seconds)
