"""Everything checkable before training starts, so a mistake costs seconds, not a trained teacher.

`preflight` runs after the data is loaded and before the teacher or the student trains: the P×K
batch against the identities, a positive for some query, every listed image on disk, the method's
options and the evaluation protocols on the networks (each from its pretrained weights where those are
read from disk), an output folder that is writable with room for checkpoints, and MLflow where the config
asks for tracking.
"""
from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from reid_kd.data.datasets.base import ReIDDataset
from reid_kd.data.image_dataset import Loaders, train_targets
from reid_kd.distill.base import build_distiller
from reid_kd.engine.run_folder import RunFolderError
from reid_kd.engine.tracking import check_mlflow
from reid_kd.errors import ConfigError
from reid_kd.models.reid_model import ReIDModel, build_model
from reid_kd.models.timm_backbone import fixed_input_size
from reid_kd.models.weights import Start

BYTES_PER_PARAM = 4 * 5  # fp32 weights in a checkpoint with two Adam moments, plus the saved model


def check_batches(cfg: dict, loaders: Loaders) -> None:
    """P identities must exist in the train split (the sampler names data.batch_p otherwise)."""
    if len(loaders.train) == 0:
        raise ConfigError(f"config keys 'data.batch_p' and 'data.batch_k' ({cfg['data']['batch_p']}×"
                          f"{cfg['data']['batch_k']}) fill no batch from the train split; lower them")


def query_positives(query, gallery, has_cameras: bool) -> int:
    """How many queries have a positive: the same identity, under another camera when cameras count."""
    cams_of: dict[int, set[int]] = defaultdict(set)
    for item in gallery:
        cams_of[item.pid].add(item.camid)
    return sum(1 for q in query if cams_of[q.pid] and (not has_cameras or cams_of[q.pid] - {q.camid}))


def check_positives(ds: ReIDDataset) -> int:
    """Some query must have a positive, or evaluation has nothing to score; returns the count (checked before a
    run trains, and before `reidkd eval` and `reidkd ranklists` score)."""
    draws = ds.draws or [(ds.query, ds.gallery)]
    counts = [query_positives(q, g, ds.has_cameras) for q, g in draws]
    if min(counts) == 0:
        rule = " under another camera" if ds.has_cameras else ""
        raise ConfigError(f"no query of dataset '{ds.name}' at {ds.root} has a positive in the gallery{rule}; "
                          f"check its query and gallery folders (`reidkd data check {ds.name} --root ...`)")
    return min(counts)


def check_images(loaders: Loaders) -> None:
    """Every listed image exists (a stat each; decoding is left to `reidkd data check`)."""
    ds = loaders.dataset
    missing = [it.path for split in (ds.train, ds.query, ds.gallery) for it in split if not Path(it.path).is_file()]
    if missing:
        raise ConfigError(f"{len(missing)} image(s) of dataset '{ds.name}' are missing, e.g. {missing[0]}; "
                          f"`reidkd data check {ds.name} --root {Path(ds.root).parent}` lists them")


def check_asymmetric(cfg: dict, teacher: ReIDModel | None, student: ReIDModel | None = None) -> None:
    """`eval.protocols` with asymmetric compares the student's query features with the teacher's gallery
    features: there must be a teacher, and where it is the headline (the first protocol) both retrieval
    features must be one width (checked when the student is given); a later one is skipped where they differ,
    its record saying why (a suite's students without a shared head, e.g.)."""
    protocols = cfg["eval"]["protocols"]
    if "asymmetric" not in protocols:
        return
    if teacher is None:
        raise ConfigError("config key 'eval.protocols' lists asymmetric (the student's queries in the teacher's "
                          "gallery) but this run has no teacher; give it one or set eval.protocols=[symmetric]")
    if student is not None and protocols[0] == "asymmetric" and student.retrieval_dim != teacher.retrieval_dim:
        raise ConfigError(f"config keys 'model.embedding_dim' and 'teacher.embedding_dim': asymmetric retrieval "
                          f"(eval.protocols) compares the student's {student.retrieval_dim}-d retrieval features with "
                          f"the teacher's {teacher.retrieval_dim}-d; set model.embedding_dim={teacher.retrieval_dim} "
                          "(the teacher's width), or one width in both model.embedding_dim and teacher.embedding_dim")


def check_input_size(cfg: dict) -> None:
    """A network that takes one image size only (a timm transformer's patch grid) must be given the data's: it
    would otherwise fail at its first step, the student's after the teacher is trained."""
    data = (cfg["data"]["height"], cfg["data"]["width"])
    for block in ("teacher", "model"):
        own = cfg[block].get("input_size")  # a student may see its own size (model.input_size)
        size = tuple(own) if own else data
        fixed = fixed_input_size(cfg[block]["backbone"])
        if fixed is not None and fixed != size:
            given, fix = ((f"model.input_size gives {size[0]}x{size[1]}", f"model.input_size=[{fixed[0]}, {fixed[1]}]")
                          if own else (f"the data gives {size[0]}x{size[1]}",
                                       f"data.height={fixed[0]} data.width={fixed[1]}"))
            raise ConfigError(f"config key '{block}.backbone': {cfg[block]['backbone']} takes {fixed[0]}x{fixed[1]} "
                              f"images only, {given}; set {fix}, or use a backbone that takes any size")


def check_distiller(cfg: dict, loaders: Loaders) -> int:
    """Build the method on the networks (its option errors stop the run), and check the evaluation protocols
    against them; returns their parameters."""
    n = loaders.dataset.num_train_pids
    with torch.random.fork_rng():  # leaves the seeded streams of the real run untouched
        student, teacher = build_checked(cfg, "model", n), build_checked(cfg, "teacher", n)
        if cfg["distill"]["method"] != "none":
            try:
                build_distiller(cfg["distill"], student, teacher, train_targets(loaders))
            except ConfigError:
                raise
            except ValueError as e:  # a method's own option check
                raise ConfigError(f"distill.{cfg['distill']['method']}: {e}") from None
    check_asymmetric(cfg, teacher, student)
    teacher_params = 0 if cfg["teacher"]["checkpoint"] else sum(p.numel() for p in teacher.parameters())
    return sum(p.numel() for p in student.parameters()) + teacher_params


def build_checked(cfg: dict, block: str, num_classes: int) -> ReIDModel:
    """`cfg[block]`'s network for the checks, from its `pretrained` source where that is read from disk
    (ImageNet weights in the cache, a file), so a missing or wrong one stops the run before any training (the
    student's would otherwise be read only after the teacher has trained); from random weights for `synth`
    (built when first needed, not before the checks) and under a `teacher.checkpoint` (read by its own check)."""
    net = cfg[block]
    plain = net["pretrained"] in (None, "synth") or (block == "teacher" and net["checkpoint"])
    try:
        return build_model(net, num_classes, Start() if plain else None)
    except FileNotFoundError as e:
        raise ConfigError(f"config key '{block}.pretrained': {e}") from None


def check_writable(folder: Path) -> None:
    """`folder` can be created and written (checked first: its lock file lives there)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-", suffix=".tmp"):
            pass
    except OSError as e:
        raise RunFolderError(f"cannot write into {folder}: {e.strerror}; set experiment.output_dir to a "
                             "writable folder") from None


def check_space(folder: Path, params: int) -> None:
    """The output disk has room for the checkpoints of `params` parameters."""
    need, free = BYTES_PER_PARAM * params + (64 << 20), shutil.disk_usage(folder).free
    if free < need:
        raise RunFolderError(f"{folder} has {free >> 20} MiB free, the checkpoints need about {need >> 20} MiB; "
                             "free some space or set experiment.output_dir to another disk")


def preflight(cfg: dict, loaders: Loaders, folder: Path) -> None:
    """Every check above, before any training."""
    check_batches(cfg, loaders)
    check_positives(loaders.dataset)
    check_images(loaders)
    check_writable(folder)
    check_mlflow(cfg)
    params = check_distiller(cfg, loaders)  # builds the networks: one that cannot be built is refused there
    check_input_size(cfg)
    check_space(folder, params)
