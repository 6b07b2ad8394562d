"""The training loop: runs of one seed trained side by side, batch by batch (a run alone is a cohort of one).

One pass of the data and one teacher forward per batch serve every run (the teacher's forward is most
of a distillation step's cost). Each run keeps its own model, optimiser, schedule, checkpoint, log and
torch RNG stream, and sees the batches and augmentations a run alone would see, so its result is the one
it would get alone (a resumed run joins at the epoch after its checkpoint).

Progress: a bar while an epoch runs (only on a terminal); the rest is the trainers' hooks.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from reid_kd.engine.runtime import autocast

if TYPE_CHECKING:
    from reid_kd.engine.trainer import Trainer


def rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@contextmanager
def own_stream(streams: list[tuple], i: int, device: torch.device):
    """Run the block under run `i`'s torch RNG stream, so what the cohort's other runs draw cannot shift it."""
    shared = rng_state(device)
    set_rng_state(device, streams[i])
    try:
        yield
    finally:
        streams[i] = rng_state(device)
        set_rng_state(device, shared)


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
    """Train `trainers` (one seed, loader, device, teacher) to their epochs, or up to epoch `stop_after`;
    returns each run's training seconds across resumes."""
    _check_cohort(trainers)
    teacher = next((t.teacher for t in trainers if t.teacher is not None), None)
    try:
        for t in trainers:
            t.begin(resume, stop_after)
        epochs = max(t.cfg["epochs"] for t in trainers)
        for epoch in range(min(t.start_epoch for t in trainers), max(t.stop_epoch for t in trainers)):
            active = [t for t in trainers if t.start_epoch <= epoch < t.stop_epoch]
            if active:
                _epoch(active, epoch, epochs, teacher)
    finally:
        for t in trainers:
            t.end()
    return [t.train_seconds for t in trainers]


def _epoch(active: list[Trainer], epoch: int, epochs: int, teacher: torch.nn.Module | None) -> None:
    first = active[0]
    for t in active:
        t.begin_epoch(epoch)
    first.seed_epoch(epoch)
    batches = iter(first.loader)  # may draw from torch's RNG: before the runs' streams fork off
    streams = [rng_state(first.device)] * len(active)
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
            with torch.no_grad(), autocast(first.device, first.amp):
                teacher_out = teacher(images)
        terms = []
        for i, t in enumerate(active):
            with own_stream(streams, i, first.device):
                terms.append(t.step(images, targets, indices, teacher_out))
        bar.set_postfix(loss=f"{terms[0]['loss']:.3f}",
                        img_s=f"{first.n_images / (time.perf_counter() - start):.0f}")
    bar.close()
    shared_seconds = time.perf_counter() - start - sum(t.step_seconds for t in active)
    for t in active:
        t.end_epoch(epoch, shared_seconds)
