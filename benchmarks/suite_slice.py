"""A one-seed slice of a suite (its teacher and every student side by side, a few epochs), timed with the
default settings and with faster ones in one run: the wall-time ratio, and where the wall time goes.

    python benchmarks/suite_slice.py                                  # synth_cpu, 2 epochs
    python benchmarks/suite_slice.py --suite configs/suites/synth_cpu.yaml --epochs 2 --entries 7

The slice is what `reidkd bench` runs for a seed: one data pass and one teacher forward per batch for every
student, each student's step, its checkpoint and log.csv row per epoch, then each student's evaluation
(its scores and the inference-speed measurement). Networks start from random weights (the timing is
the same, and nothing is pretrained first). "default" is every network contiguous in float32; "fast" is
the settings given (by default the suite's own `model.memory_format`, `teacher.memory_format` and
`teacher.forward_dtype`; `--fast` overrides them), one after the other on the same batches: they do the
same work.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from reid_kd.bench.suite_file import load_suite
from reid_kd.data.image_dataset import build_loaders, train_targets
from reid_kd.distill.base import build_distiller
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.paths import training_layout
from reid_kd.engine.run_folder import RunFolder
from reid_kd.engine.runtime import as_layout
from reid_kd.evaluation import evaluate_model
from reid_kd.models.reid_model import build_model

DEFAULT = ["model.memory_format=contiguous", "train.memory_format=null", "teacher.memory_format=contiguous",
           "teacher.forward_dtype=float32"]


class Clock:
    """Seconds spent per part of the slice (wrapping the calls the loop makes)."""

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)

    def wrap(self, owner, name: str, part: str) -> None:
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.spent[part] += time.perf_counter() - start

        setattr(owner, name, timed)


def build_cohort(cfgs: list[dict], loaders, device, epochs: int, out: Path, clock: Clock) -> Cohort:
    """The seed's cohort from random weights: the teacher, then each student as `reidkd bench` builds it."""
    first, n = cfgs[0], loaders.dataset.num_train_pids
    torch.manual_seed(0)
    teacher = build_model({**first["teacher"], "pretrained": None}, n)
    cohort = Cohort(loaders.train, device, first["experiment"]["seed"], teacher=teacher,
                    teacher_dtype=first["teacher"]["forward_dtype"],
                    teacher_memory_format=first["teacher"]["memory_format"])
    clock.wrap(cohort.teacher, "forward", "teacher forward")
    for cfg in cfgs:
        torch.manual_seed(0)
        student = build_model({**cfg["model"], "pretrained": None}, n)
        distiller = build_distiller(cfg["distill"], student, cohort.teacher, train_targets(loaders))
        member = cohort.add(student, dict(cfg["train"], epochs=epochs), RunFolder(out / cfg["experiment"]["run_name"]),
                            distiller=distiller, desc=cfg["experiment"]["run_name"],
                            memory_format=training_layout(cfg["model"], cfg["train"]))
        clock.wrap(member, "train_step", "student steps")
        clock.wrap(member, "save_checkpoint", "checkpoints")
    return cohort


def evaluate(cohort: Cohort, loaders, cfgs: list[dict], device, clock: Clock) -> None:
    for member, cfg in zip(cohort.members, cfgs):
        start = time.perf_counter()
        model = as_layout(member.model, cfg["model"]["memory_format"])
        evaluate_model(model, loaders.query, loaders.gallery, cfg["eval"], device)
        clock.spent["evaluation (and inference speed)"] += time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="configs/suites/synth_cpu.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--entries", type=int, default=None, help="the first N entries (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the suite's)")
    parser.add_argument("--fast", nargs="*", default=None, metavar="KEY=VALUE",
                        help="the fast settings (default: the suite's own)")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    entries = suite.entries[:args.entries] if args.entries else suite.entries
    seed = suite.seeds[0]
    settings = {"default": tuple(DEFAULT), "fast": tuple(args.fast or ())}
    cfgs = {name: [suite.run_config(e, seed, sets) for e in entries] for name, sets in settings.items()}
    first = cfgs["fast"][0]
    if args.threads or first["experiment"]["threads"]:  # else every core, as the suite's runs
        torch.set_num_threads(args.threads or first["experiment"]["threads"])
    device = torch.device("cpu")
    loaders = build_loaders(first["data"], seed)
    clocks = {name: Clock() for name in settings}
    walls: dict[str, float] = {}
    print(f"suite {suite.name}, seed {seed}: teacher + {len(entries)} students side by side, {args.epochs} epoch(s), "
          f"{len(loaders.train)} batches an epoch, {torch.get_num_threads()} thread(s)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cohorts = {name: build_cohort(cfgs[name], loaders, device, args.epochs, Path(tmp) / name, clocks[name])
                   for name in settings}
        for name, cohort in cohorts.items():
            start = time.perf_counter()
            cohort.fit()
            evaluate(cohort, loaders, cfgs[name], device, clocks[name])
            walls[name] = time.perf_counter() - start
    for name in settings:
        c = cfgs[name][0]
        print(f"{name}: {walls[name]:.1f} s (teacher {c['teacher']['memory_format']}, forward "
              f"{cohorts[name].teacher_dtype}; students {c['model']['memory_format']})")
        rest = walls[name] - sum(clocks[name].spent.values())
        for part, seconds in [*clocks[name].spent.items(), ("the rest: data, logs, resume, loop", rest)]:
            print(f"  {part:<34} {seconds:8.1f} s  {100 * seconds / walls[name]:5.1f}%")
    print(f"wall-time ratio default / fast: {walls['default'] / walls['fast']:.2f}x")


if __name__ == "__main__":
    main()
