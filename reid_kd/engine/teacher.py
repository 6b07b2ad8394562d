"""The teacher: `teacher.checkpoint` loaded, or trained once and cached under `<output_dir>/teachers/<key>/`,
keyed by everything that shapes it (data, backbone, recipe, seed), so every method and seed of a
comparison distils from the very same teacher."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from reid_kd.config import dump_config
from reid_kd.data.image_dataset import Loaders, build_loaders
from reid_kd.engine.paths import teacher_dir, teacher_key, teacher_seed
from reid_kd.engine.pretrain import network_start
from reid_kd.engine.results import teacher_record
from reid_kd.engine.trainer import Trainer
from reid_kd.errors import ConfigError
from reid_kd.evaluation import evaluate_model
from reid_kd.models.checkpoint import load_model, save_model
from reid_kd.models.reid_model import ReIDModel, build_model
from reid_kd.utils import distributed
from reid_kd.utils.io import read_json, write_json, write_text
from reid_kd.utils.lock import main_lock

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
    return teacher


def get_teacher(cfg: dict, loaders: Loaders, device: torch.device) -> tuple[ReIDModel, dict]:
    """Load `teacher.checkpoint`, or reuse the cached teacher, or train and cache it first.

    The cache folder is locked while the teacher trains, so two processes never train into it at once.
    """
    t_cfg = cfg["teacher"]
    if t_cfg["checkpoint"]:
        teacher = load_teacher_checkpoint(cfg, device)
        return teacher, evaluate_model(teacher, loaders.query, loaders.gallery, cfg["eval"], device)
    folder = teacher_dir(cfg)
    model_file, metrics_file = folder / "teacher.pt", folder / "metrics.json"
    if model_file.is_file() and metrics_file.is_file():
        logger.info(f"teacher: reusing {model_file}")
        return load_model(model_file, device), read_json(metrics_file)
    with main_lock(folder):
        logger.info(f"teacher: training {t_cfg['backbone']} into {folder}")
        seed = teacher_seed(cfg)
        train_loader = loaders.train
        if seed != cfg["experiment"]["seed"]:  # the teacher's own sampling and augmentation stream
            train_loader = build_loaders(cfg["data"], seed, dataset=loaders.dataset).train
        start = network_start(cfg, "teacher", device)
        torch.manual_seed(seed)
        teacher = build_model(t_cfg, loaders.dataset.num_train_pids, start)
        trainer = Trainer(teacher, train_loader, t_cfg["train"], device, folder, seed=seed,
                          amp=cfg["experiment"]["amp"], desc="teacher", tag=teacher_key(cfg),
                          sync_bn=cfg["experiment"]["sync_bn"])
        seconds = trainer.fit()
        if distributed.is_main():
            write_text(dump_config(cfg), folder / "config.yaml")
            save_model(teacher, t_cfg, model_file, cfg["data"])  # kept even if evaluation fails
        metrics = evaluate_model(teacher, loaders.query, loaders.gallery, cfg["eval"], device)
        trainer.log_eval(metrics)
        metrics = teacher_record(metrics, teacher, seconds, cfg, seed, loaders.gallery, device)
        if distributed.is_main():
            write_json(metrics, metrics_file)  # written last: its presence marks a complete teacher
            trainer.checkpoint_path.unlink(missing_ok=True)
        distributed.barrier()  # every rank leaves with the teacher cached
    return teacher, metrics
