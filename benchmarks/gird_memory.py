"""How much say GIRD's memory has in a trained run: per distilled layer, the teacher's softmax mass on memory
columns (images of the row's identity, of another) and the share of the student's similarity gradient that
comes from memory columns.

    python benchmarks/gird_memory.py runs/synth_cpu/gird/seed0                  # 8 training batches
    python benchmarks/gird_memory.py runs/synth_cpu/gird_no_memory/seed0 --batches 16 --device cuda
    python benchmarks/gird_memory.py runs/synth_cpu/gird/seed0 --set distill.gird.teacher_temperature=0.01

The last reads the trained run under another teacher temperature (any of READING_OPTIONS): where the mass and
the gradient would go under that reading, before training with it.

It loads the run's config.yaml, its student.pt, the teacher it distilled from (the cached teacher or
`teacher.checkpoint`, checked against the teacher digest student.pt records) and the distiller's state from
the run's checkpoint.pt: the memory as training left it, and the student's learned adapter. It then draws
`--batches` P×K training batches (the run's sampler and augmentation), runs the student in training mode as
it trained, and measures each batch before storing it, as training does:
- teacher mass: each row's softmax(R_t / T_t) as the loss weighs it (an image against itself masked, and the
  columns outside `top_k`), summed over the memory columns of the row's identity and of other identities,
  and, for the rest of the mass, over the batch's; averaged over rows;
- memory share: Σ|∂L_sim/∂R_s| over memory columns over Σ|∂L_sim/∂R_s| over every column, L_sim the layer's
  similarity term (the gradient the relations pass on to the student's vectors, split by column).
Each figure is the mean over the batches. Both networks compute in float32, contiguous (training may have
run the teacher in bfloat16: its stored features differ in the last bits).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from reid_kd.data.image_dataset import build_loaders, train_targets
from reid_kd.distill.base import build_distiller
from reid_kd.distill.gird import GIRD, MASKED
from reid_kd.distill.common import N_STAGES
from reid_kd.engine.configs import load_config
from reid_kd.engine.paths import teacher_folder
from reid_kd.engine.run_folder import RunFolder
from reid_kd.engine.runtime import select_device
from reid_kd.engine.teacher import load_teacher_checkpoint
from reid_kd.errors import ConfigError, UserError
from reid_kd.models.checkpoint import load_model, weights_digest
from reid_kd.utils.io import load_torch

COLUMNS = ("memory_same", "memory_other", "batch_same", "batch_other", "memory_share")


# the options that shape only how relations are read, not what training stored: a trained run can be read under
# another value of them (`--set`) to see where the teacher's mass and the student's gradient would go
READING_OPTIONS = ("temperature", "teacher_temperature", "top_k", "loss", "mask_self")


def load_run(path: Path, device: torch.device, readings: tuple[str, ...] = ()):
    """(config, loaders, student, teacher, distiller with the run's last state) of a finished GIRD run, its
    distiller reading relations under `readings` (`distill.gird.<option>=value`, READING_OPTIONS only)."""
    folder = RunFolder(path)
    for file in (folder.spec_file, folder.weights, folder.checkpoint):
        if not file.is_file():
            raise ConfigError(f"{file} is missing: give the folder of a finished GIRD run "
                              "(<output_dir>/<experiment>/<run>/seed<k>)")
    for reading in readings:
        if reading.split("=", 1)[0] not in {f"distill.gird.{o}" for o in READING_OPTIONS}:
            raise ConfigError(f"--set {reading}: only {', '.join(f'distill.gird.{o}' for o in READING_OPTIONS)} "
                              "change how a trained run is read; the others change what it trained")
    cfg = load_config(folder.spec_file, list(readings))
    if cfg["distill"]["method"] != "gird":
        raise ConfigError(f"{path} holds a {cfg['distill']['method']} run, not gird: give a GIRD run's folder")
    student = load_model(folder.weights, device)
    if cfg["teacher"]["checkpoint"]:
        teacher = load_teacher_checkpoint(cfg, device)
    else:
        weights = teacher_folder(cfg).weights
        if not weights.is_file():
            raise ConfigError(f"{weights}, the teacher this run distilled from, is missing: run the run's command "
                              "again (it rebuilds the cached teacher) or give experiment.output_dir's runs folder")
        teacher = load_model(weights, device)
    if student.distilled_from not in (None, weights_digest(teacher)):
        raise ConfigError(f"the teacher found for {path} is not the one its student.pt was distilled from: "
                          "rebuild that run's teacher, or run the diagnostic where it trained")
    loaders = build_loaders(cfg["data"], cfg["experiment"]["seed"])
    distiller = build_distiller(cfg["distill"], student, teacher, train_targets(loaders)).to(device)
    distiller.load_state_dict(load_torch(folder.checkpoint, device)["distiller"])
    return cfg, loaders, student, teacher.eval(), distiller


def batch_reading(d: GIRD, r_s: torch.Tensor, r_t: torch.Tensor, mask: torch.Tensor | None,
                  same: torch.Tensor, n_batch: int) -> dict[str, float]:
    """One layer's figures on one batch; `same`: each row's image against each column's of the same identity."""
    r_s = r_s.detach().requires_grad_()
    grad = torch.autograd.grad(d.sim_loss(r_s, r_t, mask), r_s)[0].abs()
    total = float(grad.sum())
    loss_mask = d.top_k_mask(r_t, mask)
    p = torch.softmax((r_t if loss_mask is None else r_t.masked_fill(loss_mask, MASKED)) / d.teacher_temperature, 1)
    memory = torch.arange(r_t.shape[1], device=r_t.device) >= n_batch
    parts = {"memory_same": same & memory, "memory_other": ~same & memory, "batch_same": same & ~memory,
             "batch_other": ~same & ~memory}
    out = {name: float((p * part).sum(1).mean()) for name, part in parts.items()}
    out["memory_share"] = float(grad[:, n_batch:].sum()) / total if total > 0 else 0.0
    return out


def measure(d: GIRD, student: torch.nn.Module, teacher: torch.nn.Module, loader, labels: torch.Tensor,
            batches: int, device: torch.device) -> dict[int, dict[str, float]]:
    """Per distilled layer, each figure's mean over `batches` training batches (the memory written after each)."""
    student.train()  # batch statistics, as in training
    sums = {i: dict.fromkeys(COLUMNS, 0.0) for i in d.layers}
    n = 0
    for images, targets, _, indices in loader:
        if n == batches:
            break
        images, targets, indices = images.to(device), targets.to(device), indices.to(device)
        with torch.no_grad():
            r_s, r_t, new = d.relations(student(images).float(), teacher(images).float())
        stored = d.mem_index[:int(d.mem_count)] if d.use_memory else indices[:0]
        same = targets[:, None] == torch.cat([targets, labels.to(device)[stored]])[None, :]
        mask = d.self_mask(indices, indices)
        for i, a, b in zip(d.layers, r_s, r_t):
            for key, value in batch_reading(d, a, b, mask, same, len(indices)).items():
                sums[i][key] += value
        if d.use_memory:
            d.enqueue(new, indices)
        n += 1
    if n == 0:
        raise ConfigError("the training set gave no batch: check the run's data.batch_p × data.batch_k")
    return {i: {k: v / n for k, v in row.items()} for i, row in sums.items()}


def layer_name(d: GIRD, i: int) -> str:
    if i == N_STAGES:
        return f"{i} embedding ({d.embedding})"
    return f"{i} stage ({'attention map' if d.is_attention(i) else 'pooled'})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished GIRD run's folder (holding config.yaml, student.pt, "
                                               "checkpoint.pt)")
    parser.add_argument("--batches", type=int, default=8, help="training batches averaged over")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", dest="readings", action="append", default=[], metavar="distill.gird.KEY=VALUE",
                        help=f"read the trained run under another {', '.join(READING_OPTIONS)} (repeatable)")
    args = parser.parse_args(argv)
    try:
        device = select_device(args.device, "--device", "--device auto")
        cfg, loaders, student, teacher, d = load_run(args.run, device, tuple(args.readings))
        torch.manual_seed(cfg["experiment"]["seed"])
        filled = int(d.mem_count) if d.use_memory else 0
        rows = measure(d, student, teacher, loaders.train, train_targets(loaders), args.batches, device)
    except UserError as e:  # one line, as the command line's
        print(e, file=sys.stderr)
        sys.exit(2)
    o = cfg["distill"]["gird"]
    print(f"{args.run}: loss {o['loss']}, T {o['temperature']}, teacher T {d.teacher_temperature}, top_k "
          f"{o['top_k'] or 'all'}, memory {'on' if d.use_memory else 'off'} ({filled}/{o['memory_size']} slots "
          f"filled), batch {cfg['data']['batch_p']}x{cfg['data']['batch_k']}, {args.batches} batches"
          + (f" (read under {', '.join(args.readings)}; trained otherwise)" if args.readings else ""))
    print(f"{'layer':<28}" + "".join(f"{c:>14}" for c in COLUMNS))
    for i, row in rows.items():
        print(f"{layer_name(d, i):<28}" + "".join(f"{row[c]:>14.4f}" for c in COLUMNS))


if __name__ == "__main__":
    main()
