"""`pretrained: synth`: a backbone pretrained once on synthetic vehicles disjoint from the benchmark's.

Why: every re-ID distillation paper fine-tunes ImageNet-pretrained networks to convergence, and a
machine with no download has no ImageNet. This is its stand-in: the same BNNeck recipe (ID + triplet)
on many more procedurally generated identities, drawn with another generator seed (`pretrain.synth`),
so no identity or image is the benchmark's. The trained stages are kept as a torchvision state dict,
the form every `pretrained` file has.

Cached like teachers, under `<output_dir>/pretrained/<key>/` (`backbone.pt`, `metrics.json` written
last, `pretrain.json` with everything that shaped it), keyed by all of that: the backbone, the data, the
recipe, the seed. The folder is locked while it trains, an epoch is checkpointed as it ends (a killed
pretraining resumes), and a folder whose record is another spec's is refused.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from reid_kd.data.image_dataset import build_loaders
from reid_kd.engine.paths import (
    ROLES,
    pretrain_data,
    pretrain_dir,
    pretrain_key,
    shaping,
)
from reid_kd.engine.trainer import Trainer
from reid_kd.errors import ConfigError
from reid_kd.evaluation import evaluate_model
from reid_kd.models.backbones import torchvision_state
from reid_kd.models.reid_model import build_model
from reid_kd.models.weights import Start
from reid_kd.utils import distributed
from reid_kd.utils.io import read_json, save_torch, write_json
from reid_kd.utils.lock import main_lock

logger = logging.getLogger(__name__)


def network_start(cfg: dict, block: str, device: torch.device) -> Start | None:
    """The resolved start of `cfg[block]` when it is `synth` (pretrained first if not cached), else None
    (the model layer reads `imagenet`, a file or null itself)."""
    if cfg[block]["pretrained"] != "synth":
        return None
    folder = pretrain_dir(cfg, block)
    start = _cached(cfg, block, folder)
    if start is None:
        with main_lock(folder):
            start = _cached(cfg, block, folder) or _pretrain(cfg, block, folder, device)
        distributed.barrier()  # every rank leaves with the weights cached
    logger.info(f"{ROLES[block]}: starting from {start.name} ({start.file})")
    return start


def _cached(cfg: dict, block: str, folder: Path) -> Start | None:
    """The cached weights, or None; a folder whose record is another spec's is refused."""
    weights, metrics, record = folder / "backbone.pt", folder / "metrics.json", folder / "pretrain.json"
    if not (weights.is_file() and metrics.is_file()):
        return None
    expected = json.loads(json.dumps(shaping(cfg, block), default=str))
    stored = read_json(record) if record.is_file() else None
    if stored != expected:
        raise ConfigError(f"{folder} holds backbone weights pretrained with another spec than "
                          f"{pretrain_key(cfg, block)} names; delete the folder to pretrain again")
    return Start("synth", weights, pretrain_key(cfg, block))


def _pretrain(cfg: dict, block: str, folder: Path, device: torch.device) -> Start:
    """Train the backbone on the pretraining set, score it on that set's own held-out identities, cache it."""
    net, pre, key = cfg[block], cfg["pretrain"], pretrain_key(cfg, block)
    loaders = build_loaders(pretrain_data(cfg), pre["seed"])
    logger.info(f"pretraining {net['backbone']} into {folder}")
    logger.info(loaders.dataset.summary())
    if distributed.is_main():
        write_json(shaping(cfg, block), folder / "pretrain.json")
    torch.manual_seed(pre["seed"])
    model = build_model({**net, "pretrained": None}, loaders.dataset.num_train_pids)
    recipe = pre[ROLES[block]]
    trainer = Trainer(model, loaders.train, recipe, device, folder, seed=pre["seed"],
                      amp=cfg["experiment"]["amp"], desc=f"pretrain {net['backbone']}", tag=key,
                      sync_bn=cfg["experiment"]["sync_bn"])
    seconds = trainer.fit()
    metrics = evaluate_model(model, loaders.query, loaders.gallery, cfg["eval"], device)
    trainer.log_eval(metrics)
    if distributed.is_main():
        save_torch(torchvision_state(net["backbone"], model.stages), folder / "backbone.pt")
        metrics |= {"key": key, "backbone": net["backbone"], "epochs": recipe["epochs"],
                    "train_seconds": seconds, "train_ids": loaders.dataset.num_train_pids}
        write_json(metrics, folder / "metrics.json")  # written last: its presence marks finished weights
        trainer.checkpoint_path.unlink(missing_ok=True)
    return Start("synth", folder / "backbone.pt", key)
