"""The VeRi-shaped GPU recipe on synthetic data: is this machine's GPU path sound, and how fast is it?

    python benchmarks/gpu_check.py                     # the GPU it finds (else the CPU), then the CPU for the ratio
    python benchmarks/gpu_check.py --device cpu --steps 2 --size 128 --eval-images 256 --faiss-gallery 20000

The recipe of `configs/_base_/veri.yaml` with the teacher of fast-reid's DistillReID: ResNet-101-IBN-a
teacher, ResNet-18 student, 256×256 images, P×K 16×4, `experiment.amp` on (float16 with a grad scaler on
CUDA, bfloat16 on CPU), a DataLoader with workers (and pinned memory on CUDA) over random images. Prints
images/s of the teacher's forward, a student step (teacher forward, student forward and backward, the
distiller, Adam), evaluation (feature extraction of VeRi-776's 1,678 queries and 11,579 gallery images,
then exact mAP/CMC) and FAISS top-100 search (queries/s over a gallery of 512-d vectors); then the same on
the CPU, at `--cpu-steps` batches, for the GPU/CPU ratio. Random weights: the speeds are those of
trained networks. Under 10 minutes on one GPU with the defaults.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reid_kd.distill.base import build_distiller
from reid_kd.engine.configs import load_config
from reid_kd.engine.runtime import autocast, select_device
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.run_folder import RunFolder
from reid_kd.evaluation.extract import extract_features
from reid_kd.evaluation.metrics import evaluate
from reid_kd.evaluation.search import knn
from reid_kd.models.reid_model import ReIDModel

ROOT = Path(__file__).resolve().parents[1]
VERI_QUERIES, VERI_GALLERY, VERI_TRAIN_IDS = 1678, 11579, 576


class RandomImages(Dataset):
    """Normalised random images (copies from a bank of 32, so the workers' cost is a decoded image's copy,
    not a random generator's); consecutive runs of K items share an identity, so sequential batches of
    P×K items are P×K batches."""

    def __init__(self, n: int, size: int, k: int, ids: int):
        self.n, self.k, self.ids = n, k, ids
        self.bank = torch.randn(32, 3, size, size, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.bank[i % len(self.bank)].clone(), i // self.k % self.ids, i % 20, i


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader(dataset: Dataset, batch: int, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda")


def measure(device: torch.device, args, steps: int, eval_images: int) -> dict[str, float]:
    """Images/s of each stage on `device` (queries/s for FAISS)."""
    cfg = load_config(ROOT / "configs" / "_base_" / "veri.yaml",
                      ["teacher.backbone=resnet101_ibn_a", "teacher.pretrained=null", "model.pretrained=null",
                       f"distill.method={args.method}", f"experiment.amp={str(args.amp).lower()}"])
    batch = args.batch_p * args.batch_k
    torch.manual_seed(0)
    teacher = ReIDModel("resnet101_ibn_a", VERI_TRAIN_IDS).to(device).eval().requires_grad_(False)
    student = ReIDModel("resnet18", VERI_TRAIN_IDS)
    train = loader(RandomImages(batch * (steps + 1), args.size, args.batch_k, VERI_TRAIN_IDS), batch, args.workers,
                   device)
    out: dict[str, float] = {}

    def timed(batches, work) -> float:
        """Images/s of `work` over the batches after the first (a warm-up: allocator, cuDNN autotuning)."""
        n, start = 0, None
        for i, (images, targets, _, indices) in enumerate(batches):
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            work(images, targets, indices.to(device))
            if i == 0:
                sync(device)
                start = time.perf_counter()
            else:
                n += len(images)
        sync(device)
        return n / max(time.perf_counter() - start, 1e-9)

    def teacher_forward(images, targets, indices):
        with torch.no_grad(), autocast(device, args.amp):
            return teacher(images)

    out["teacher forward"] = timed(train, teacher_forward)
    distiller = build_distiller(cfg["distill"], student, teacher, torch.arange(len(train.dataset)) // args.batch_k
                                % VERI_TRAIN_IDS)
    with tempfile.TemporaryDirectory() as folder:
        cohort = Cohort(train, device, teacher=teacher, amp=args.amp)
        trainer = cohort.add(student, cfg["train"], RunFolder(folder), distiller=distiller, hooks=[])
        out["student step (with the teacher)"] = timed(
            train, lambda images, targets, indices: trainer.train_step(
                images, targets, indices, teacher_forward(images, targets, indices)))
    queries = max(eval_images * VERI_QUERIES // (VERI_QUERIES + VERI_GALLERY), 1)
    test = [loader(RandomImages(n, args.size, 6, 200), args.test_batch, args.workers, device)
            for n in (queries, eval_images - queries)]
    with autocast(device, args.amp):
        extract_features(student, loader(RandomImages(args.test_batch, args.size, 6, 200), args.test_batch, 0,
                                         device), device)  # warm-up
        sync(device)
        start = time.perf_counter()
        (qf, q_pids, q_cams), (gf, g_pids, g_cams) = (extract_features(student, t, device) for t in test)
    evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, device=device)
    sync(device)
    out["evaluation (extract + mAP/CMC)"] = sum(len(t.dataset) for t in test) / (time.perf_counter() - start)
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((args.faiss_gallery, 512), dtype=np.float32)
    query = rng.standard_normal((args.faiss_queries, 512), dtype=np.float32)
    knn(query[:64], gallery, 100, inner_product=True, use_gpu=device.type == "cuda")  # warm-up
    start = time.perf_counter()
    knn(query, gallery, 100, inner_product=True, use_gpu=device.type == "cuda")
    out[f"FAISS top-100 search (queries/s, {args.faiss_gallery} gallery)"] = len(query) / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda[:N]")
    parser.add_argument("--steps", type=int, default=40, help="timed batches on the device (after one warm-up)")
    parser.add_argument("--cpu-steps", type=int, default=2, help="timed batches of the CPU comparison")
    parser.add_argument("--size", type=int, default=256, help="image height and width")
    parser.add_argument("--batch-p", type=int, default=16)
    parser.add_argument("--batch-k", type=int, default=4)
    parser.add_argument("--test-batch", type=int, default=256)
    parser.add_argument("--eval-images", type=int, default=VERI_QUERIES + VERI_GALLERY,
                        help="query + gallery images evaluated on the device (VeRi-776's by default)")
    parser.add_argument("--cpu-eval-images", type=int, default=512)
    parser.add_argument("--faiss-gallery", type=int, default=200_000)
    parser.add_argument("--faiss-queries", type=int, default=2000)
    parser.add_argument("--method", default="gird", help="the distillation method of the student step")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="float32 throughout")
    args = parser.parse_args()
    device = select_device(args.device, setting="--device", fix="--device auto")
    threads = torch.get_num_threads()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} threads"
    print(f"{name}: ResNet-101-IBN-a -> ResNet-18 ({args.method}), {args.size}x{args.size}, "
          f"P×K {args.batch_p}x{args.batch_k}, AMP {'on' if args.amp else 'off'}, {args.workers} loader workers")
    rows = measure(device, args, args.steps, args.eval_images)
    cpu = measure(torch.device("cpu"), args, args.cpu_steps, args.cpu_eval_images) if device.type != "cpu" else None
    width = max(map(len, rows))
    print(f"{'images/s'.ljust(width)}  {device.type:>10}" + (f"  {'cpu':>10}  {'ratio':>7}" if cpu else ""))
    for key, value in rows.items():
        line = f"{key.ljust(width)}  {value:10.1f}"
        if cpu:
            line += f"  {cpu[key]:10.1f}  {value / cpu[key]:6.1f}x"
        print(line)


if __name__ == "__main__":
    main()
