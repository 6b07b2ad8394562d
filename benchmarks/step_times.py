"""Training-step and forward times of any backbones on this machine, in every precision and memory format.

    python benchmarks/step_times.py                                   # the CPU suite's networks, every core
    python benchmarks/step_times.py --backbones resnet18 resnet50_ibn_a --threads 2 --size 64 --batch 64

Per backbone, two calls: a training step (forward, the re-ID losses, backward, Adam, on a P×K batch) and the
forward alone (eval mode, no grad: what a frozen teacher costs per batch). Each is timed in four columns:
float32, bfloat16 autocast (float16 on CUDA), channels_last, and both, side by side in one process (the
columns take turns, step by step, so a machine's drift hits them alike). Prints ms per call and each
column's speed-up over float32: which column wins depends on the network and the processor, so pick the
settings per network (`model.memory_format`, `teacher.memory_format`, `teacher.forward_dtype`) from what
your machine prints. Machines differ several-fold; ratios travel.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from reid_kd.engine.runtime import MEMORY_FORMATS, select_device
from reid_kd.losses import reid_losses
from reid_kd.models.reid_model import ReIDModel
from reid_kd.schema import TRAIN_SCHEMA, defaults

COLUMNS = (("float32", False, "contiguous"), ("bf16 autocast", True, "contiguous"),
           ("channels_last", False, "channels_last"), ("bf16 + channels_last", True, "channels_last"))


def make_call(backbone: str, train: bool, mixed: bool, memory_format: str, images, targets, device):
    """One call (a step, or a forward) of a fresh network in one column's setting."""
    torch.manual_seed(0)
    model = ReIDModel(backbone, 150).to(device, memory_format=MEMORY_FORMATS[memory_format]).train(train)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = images.contiguous(memory_format=MEMORY_FORMATS[memory_format])
    cfg = defaults(TRAIN_SCHEMA)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def call() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=mixed), torch.set_grad_enabled(train):
            out = model(images)
        if train:
            loss = sum(reid_losses(out.float(), targets, cfg).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return call


def time_columns(backbone: str, train: bool, args, device) -> list[float]:
    """Median ms per call of each column, the columns taking turns."""
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    targets = (torch.arange(args.batch) // 4).to(device)
    calls = [make_call(backbone, train, mixed, fmt, images, targets, device) for _, mixed, fmt in COLUMNS]
    for call in calls:
        call()  # warm-up: allocator, kernel selection
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(args.steps):
        for call, spent in zip(calls, times):
            start = time.perf_counter()
            call()
            spent.append(1000 * (time.perf_counter() - start))
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet34", "mobilenet_v3_small"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="timed calls per column")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: every core, as runs use unless experiment.threads is set)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device, "--device", "--device cpu")
    print(f"batch {args.batch} at {args.size}x{args.size}, {torch.get_num_threads()} thread(s), {device}, median of "
          f"{args.steps} calls; ms per call (speed-up over float32)")
    print("| network, call | " + " | ".join(name for name, _, _ in COLUMNS) + " |")
    print("| --- |" + " --- |" * len(COLUMNS))
    for backbone in args.backbones:
        for train, what in ((True, "training step"), (False, "forward")):
            ms = time_columns(backbone, train, args, device)
            cells = [f"{ms[0]:.0f}"] + [f"{t:.0f} ({ms[0] / t:.2f}x)" for t in ms[1:]]
            print(f"| {backbone} {what} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
