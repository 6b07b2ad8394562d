"""GIRD's training step time over the baseline student's (same teacher forward, same batch).

    python benchmarks/gird_step_time.py                      # synthetic quickstart sizes, on CPU or GPU
    python benchmarks/gird_step_time.py --preset veri776     # ResNet-101 -> ResNet-18, 256x256, memory 24000
    python benchmarks/gird_step_time.py --device cpu --threads 1   # steadier on a shared CPU

Both steps are the trainer's own `Member.train_step` on one fixed P×K batch of random images: the
baseline runs the frozen teacher's forward and the student's ID + triplet step with a distiller
that adds nothing; the GIRD step adds GIRD's loss terms and memory update. GIRD's memory is
filled to capacity first (random unit vectors), so every timed step relates the batch to the full
B × (B + K) memory, its most expensive case. The two kinds of step alternate step by step (so
load from other processes hits both alike); the figure is the median of the paired ratios, beside
the two medians, and on a CPU also the ratio of this process's CPU time per step, which other
processes' load disturbs less. GIRD's own cost (its loss, backward and memory update on fixed
network outputs) is timed alone too. The target is a ratio of at most 1.15.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from reid_kd.distill.base import Distiller, build_distiller
from reid_kd.engine.configs import load_config
from reid_kd.engine.runtime import select_device
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.member import Member
from reid_kd.engine.run_folder import RunFolder
from reid_kd.models.reid_model import build_model

PRESETS = {"synth": "configs/synth_gird.yaml", "veri776": "configs/veri_gird.yaml"}  # memory: the config's


class NoDistillation(Distiller):
    """The baseline's stand-in: the trainer runs the teacher forward, and nothing is added to the loss."""

    name = "none"
    description = "no distillation (benchmark baseline)"

    def forward(self, student, teacher, targets):
        return {}


def fill_memory(gird: Distiller) -> None:
    """Every slot filled with random unit vectors (the memory's vectors exist after one step has run)."""
    with torch.no_grad():
        for name, buf in gird.named_buffers():
            if name.startswith("mem_") and buf.dim() == 2:
                buf.copy_(F.normalize(torch.randn_like(buf), dim=1))
        gird.mem_index.random_(0, 100)
        gird.mem_count.fill_(gird.mem_index.numel())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer: Member, teacher_out, images, targets, steps: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds of this process) of each step, on the teacher's output of the batch."""
    out = []
    indices = torch.arange(len(targets), device=targets.device)
    for _ in range(steps):
        sync(trainer.device)
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.train_step(images, targets, indices, teacher_out)
        sync(trainer.device)
        out.append((time.perf_counter() - wall, time.process_time() - cpu))
    return out


def time_gird_alone(trainer: Member, teacher, images, targets, steps: int) -> list[float]:
    """GIRD's forward + backward on fixed network outputs (less noisy than the difference of two steps)."""
    with torch.no_grad(), torch.autocast(trainer.device.type, dtype=torch.float16, enabled=trainer.amp):
        student = trainer.model(images)
    indices = torch.arange(len(targets), device=targets.device)
    for f in student.feats + [student.global_feat]:
        f.requires_grad_(True)
    out = []
    for _ in range(steps):
        sync(trainer.device)
        start = time.perf_counter()
        with torch.autocast(trainer.device.type, dtype=torch.float16, enabled=trainer.amp):
            total = sum(trainer.distiller(student, teacher, targets, indices).values())
        total.backward()
        sync(trainer.device)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="synth")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--num-classes", type=int, default=576)
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only), as the VeRi configs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(PRESETS[args.preset], args.overrides)
    memory = cfg["distill"]["gird"]["memory_size"]
    device = select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = cfg["data"]
    b = data["batch_p"] * data["batch_k"]
    images = torch.randn(b, 3, data["height"], data["width"], device=device)
    targets = torch.arange(data["batch_p"], device=device).repeat_interleave(data["batch_k"])
    teacher = build_model(cfg["teacher"], args.num_classes)
    cohort = Cohort([None], device, teacher=teacher, amp=args.amp)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=args.amp):
        teacher_out = cohort.teacher(images)
    trainers = {}
    for kind in ("baseline", "gird"):
        torch.manual_seed(0)
        student = build_model(cfg["model"], args.num_classes)
        distiller = NoDistillation(student, teacher, {}) if kind == "baseline" else \
            build_distiller(cfg["distill"], student, teacher, targets.cpu())  # the batch is the training set
        trainer = cohort.add(student, dict(cfg["train"], grad_clip=None), RunFolder("/tmp/unused"),
                             distiller=distiller, hooks=[])
        trainer.model.train()
        if kind == "gird":
            time_steps(trainer, teacher_out, images, targets, 1)  # allocates the memory's vectors
            fill_memory(trainer.distiller)
        time_steps(trainer, teacher_out, images, targets, 3)  # warm-up: allocator, cuDNN autotuning
        trainers[kind] = trainer
    times = {"baseline": [], "gird": []}
    for step in range(args.steps):
        order = ("baseline", "gird") if step % 2 == 0 else ("gird", "baseline")
        for kind in order:
            times[kind] += time_steps(trainers[kind], teacher_out, images, targets, 1)
    wall = {k: [w for w, _ in v] for k, v in times.items()}
    cpu = {k: [c for _, c in v] for k, v in times.items()}
    base, gird = statistics.median(wall["baseline"]), statistics.median(wall["gird"])
    alone = statistics.median(time_gird_alone(trainers["gird"], teacher_out, images, targets, args.steps))
    paired = statistics.median(g / b for g, b in zip(wall["gird"], wall["baseline"]))
    paired_cpu = statistics.median(g / b for g, b in zip(cpu["gird"], cpu["baseline"]))
    where = f"{device.type} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type
    print(f"{args.preset}: teacher {cfg['teacher']['backbone']} -> student {cfg['model']['backbone']}, batch {b} "
          f"at {data['height']}x{data['width']}, GIRD memory {memory} per layer (full), layers "
          f"{cfg['distill']['gird']['layers']}, device {where}, amp {trainers['gird'].amp}")
    print(f"baseline step (teacher forward + student ID/triplet step): {1000 * base:.1f} ms (median)")
    print(f"GIRD step: {1000 * gird:.1f} ms (median)")
    print(f"GIRD's own loss, backward and memory update, timed alone: {1000 * alone:.1f} ms (median), "
          f"{100 * alone / base:.1f}% of the baseline step")
    print(f"GIRD / baseline step time: {paired:.3f} (median of {args.steps} paired steps; ratio of medians "
          f"{gird / base:.3f}; target <= 1.15)")
    if device.type == "cpu":  # on a shared CPU, wall time carries other processes' load; CPU time less so
        print(f"GIRD / baseline CPU time of this process per step: {paired_cpu:.3f} (median of paired steps)")


if __name__ == "__main__":
    main()
