"""Training-step times of the CPU suite's networks on this machine, at 1 thread and at every core.

    python benchmarks/step_times.py                      # ResNet-34 teacher, MobileNetV3-small student
    python benchmarks/step_times.py --size 64 --batch 64 --steps 10

One step: forward, the re-ID losses (label-smoothed ID + batch-hard triplet), backward, Adam, on a P×K
batch at the synthetic recipe's input size. The teacher's forward alone (eval mode, no grad) is what a
distilled student adds per batch. Prints seconds per step and the speed-up of every core over one
thread, measured side by side in this process: machines differ several-fold, ratios travel.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from reid_kd.losses import reid_losses
from reid_kd.models.reid_model import ReIDModel
from reid_kd.schema import TRAIN_SCHEMA, defaults


def seconds_per_step(backbone: str, batch: int, size: int, steps: int, train: bool) -> float:
    torch.manual_seed(0)
    model = ReIDModel(backbone, 150)
    cfg = defaults(TRAIN_SCHEMA)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 3, size, size)
    targets = torch.arange(batch) // 4
    model.train(train)

    def step() -> None:
        if not train:
            with torch.no_grad():
                model(images)
            return
        loss = sum(reid_losses(model(images), targets, cfg).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"batch {args.batch} at {args.size}x{args.size}, {args.steps} steps each, {cores} cores")
    print(f"{'what':<36} {'1 thread':>10} {f'{cores} threads':>10} {'speed-up':>9}")
    for backbone, train, what in (("resnet34", True, "ResNet-34 training step"),
                                  ("resnet34", False, "ResNet-34 forward (teacher)"),
                                  ("mobilenet_v3_small", True, "MobileNetV3-small training step")):
        times = []
        for threads in (1, cores):
            torch.set_num_threads(threads)
            times.append(seconds_per_step(backbone, args.batch, args.size, args.steps, train))
        print(f"{what:<36} {times[0]:>9.3f}s {times[1]:>9.3f}s {times[0] / times[1]:>8.2f}x")


if __name__ == "__main__":
    main()
