"""The teacher: `teacher.checkpoint` loaded, or trained once and cached under `<output_dir>/teachers/<key>/`,
keyed by everything that shapes it (`engine/paths.py`: data, backbone, recipe, seed, start), so every
method and seed of a comparison distils from the very same teacher."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from reid_kd.data.image_dataset import Loaders, build_loaders
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.hooks import default_hooks
from reid_kd.engine.paths import teacher_folder, teacher_seed, teacher_spec, training_layout
from reid_kd.engine.pretrain import network_start
from reid_kd.engine.results import teacher_record
from reid_kd.engine.run_folder import RunFolder
from reid_kd.engine.runtime import as_layout
from reid_kd.engine.tracking import mlflow_run
from reid_kd.engine.training import Job, train_cached, train_jobs
from reid_kd.errors import ConfigError
from reid_kd.evaluation import evaluate_model
from reid_kd.models.checkpoint import load_model, save_model
from reid_kd.models.reid_model import ReIDModel, build_model

logger = logging.getLogger(__name__)


def load_teacher_checkpoint(cfg: dict, device: torch.device) -> ReIDModel:
    """`teacher.checkpoint`, which must hold the backbone `teacher.backbone` names."""
    path = cfg["teacher"]["checkpoint"]
    if not Path(path).is_file():
        raise ConfigError(f"config key 'teacher.checkpoint': file not found: {path}")
    teacher = load_model(path, device)
    if teacher.backbone_name != cfg["teacher"]["backbone"]:
        raise ConfigError(f"config key 'teacher.checkpoint': {path} holds a {teacher.backbone_name} teacher but "
                          f"teacher.backbone is {cfg['teacher']['backbone']}; set teacher.backbone="
                          f"{teacher.backbone_name}")
    held, said = teacher.embedding_dim, cfg["teacher"]["embedding_dim"]
    if held != said:  # the width preflight checked the student's retrieval features against
        raise ConfigError(f"config key 'teacher.checkpoint': {path} holds a teacher with "
                          f"{f'a {held}-d retrieval head' if held else 'no retrieval head'} but teacher.embedding_dim "
                          f"is {'null' if said is None else said}; set teacher.embedding_dim={held or 'null'}")
    if teacher.input_size is not None:
        raise ConfigError(f"config key 'teacher.checkpoint': {path} holds a network that resizes its input to "
                          f"{teacher.input_size[0]}x{teacher.input_size[1]} (a student's model.input_size), but a "
                          "teacher sees the data at its own size; give a teacher.pt or a student trained without it")
    return teacher


def get_teacher(cfg: dict, loaders: Loaders, device: torch.device) -> tuple[ReIDModel, dict]:
    """Load `teacher.checkpoint`, or reuse the cached teacher, or train and cache it first (its folder
    locked meanwhile, so two processes never train into it at once)."""
    if cfg["teacher"]["checkpoint"]:
        teacher = as_layout(load_teacher_checkpoint(cfg, device), cfg["teacher"]["memory_format"])
        return teacher, evaluate_model(teacher, loaders.query, loaders.gallery, cfg["eval"], device)
    folder, spec = teacher_folder(cfg), teacher_spec(cfg)
    trained = train_cached(folder, spec, "teacher", lambda: _train_teacher(cfg, loaders, device, folder, spec))
    if trained is not None:
        return trained
    logger.info(f"teacher: reusing {folder.weights}")
    return load_model(folder.weights, device), folder.read_metrics()


def _train_teacher(cfg: dict, loaders: Loaders, device: torch.device, folder: RunFolder, spec: dict
                   ) -> tuple[ReIDModel, dict]:
    t_cfg, seed = cfg["teacher"], teacher_seed(cfg)
    logger.info(f"teacher: training {t_cfg['backbone']} into {folder}")
    train_loader = loaders.train
    if seed != cfg["experiment"]["seed"]:  # the teacher's own sampling and augmentation stream
        train_loader = build_loaders(cfg["data"], seed, dataset=loaders.dataset).train
    start = network_start(cfg, "teacher", device)
    torch.manual_seed(seed)
    teacher = build_model(t_cfg, loaders.dataset.num_train_pids, start)
    cohort = Cohort(train_loader, device, seed, amp=cfg["experiment"]["amp"])
    member = cohort.add(teacher, t_cfg["train"], folder, desc="teacher", tag=folder.path.name, recipe="teacher.train",
                        sync_bn=cfg["experiment"]["sync_bn"], memory_format=training_layout(t_cfg, t_cfg["train"]),
                        hooks=default_hooks(mlflow=mlflow_run(cfg, f"teachers/{folder.path.name}", spec)))
    job = Job(member, spec, save=lambda: save_model(teacher, t_cfg, folder.weights, cfg["data"]),
              evaluate=lambda: evaluate_model(as_layout(teacher, t_cfg["memory_format"]), loaders.query,
                                              loaders.gallery, cfg["eval"], device),
              record=lambda metrics, seconds: teacher_record(metrics, teacher, seconds, cfg, seed, device))
    return teacher, train_jobs(cohort, [job])[0]
