"""`pretrained: synth`: a backbone pretrained once on synthetic vehicles disjoint from the benchmark's.

Why: every re-ID distillation paper fine-tunes ImageNet-pretrained networks to convergence, and a
machine with no download has no ImageNet. This is its stand-in: the same BNNeck recipe (ID + triplet)
on many more procedurally generated identities, drawn with another generator seed (`pretrain.synth`),
so no identity or image is the benchmark's. The trained stages are kept as a torchvision state dict,
the form every `pretrained` file has.

Cached like teachers (`engine/training.py`), under `<output_dir>/pretrained/<key>/` (`backbone.pt`,
`metrics.json` written last, `config.yaml` with everything that shaped it), keyed by all of that: the
backbone, the data, the recipe, the seed. The folder is locked while it trains, an epoch is checkpointed
as it ends (a killed pretraining resumes), and a folder whose record is another spec's is refused.
"""
from __future__ import annotations

import logging

import torch

from reid_kd.data.image_dataset import build_loaders
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.hooks import default_hooks
from reid_kd.engine.paths import ROLES, pretrain_data, pretrain_folder, shaping
from reid_kd.engine.run_folder import RunFolder
from reid_kd.engine.tracking import mlflow_run
from reid_kd.engine.training import Job, train_cached, train_jobs
from reid_kd.evaluation import evaluate_model
from reid_kd.models.backbones import torchvision_state
from reid_kd.models.reid_model import build_model
from reid_kd.models.weights import Start
from reid_kd.utils.io import save_torch

logger = logging.getLogger(__name__)


def network_start(cfg: dict, block: str, device: torch.device) -> Start | None:
    """The resolved start of `cfg[block]` when it is `synth` (pretrained first if not cached), else None
    (the model layer reads `imagenet`, a file or null itself)."""
    if cfg[block]["pretrained"] != "synth":
        return None
    folder = pretrained_folder(cfg, block, device)
    start = Start("synth", folder.weights, folder.path.name)  # the folder is named by its cache key
    logger.info(f"{ROLES[block]}: starting from {start.name} ({start.file})")
    return start


def pretrained_folder(cfg: dict, block: str, device: torch.device) -> RunFolder:
    """The cache folder of `cfg[block]`'s synth-pretrained backbone, pretrained into it first if not cached (its
    lock held meanwhile: another process that needs it gets FolderLockedError, which bench workers wait out)."""
    folder, spec = pretrain_folder(cfg, block), shaping(cfg, block)
    train_cached(folder, spec, "backbone", lambda: _pretrain(cfg, block, device, folder, spec))
    return folder


def _pretrain(cfg: dict, block: str, device: torch.device, folder: RunFolder, spec: dict) -> None:
    """Train the backbone on the pretraining set, score it on that set's own held-out identities, cache it."""
    net, pre, key = cfg[block], cfg["pretrain"], folder.path.name
    loaders = build_loaders(pretrain_data(cfg), pre["seed"])
    logger.info(f"pretraining {net['backbone']} into {folder}")
    logger.info(loaders.dataset.summary())
    torch.manual_seed(pre["seed"])
    # the backbone alone is kept: it trains in the plain BNNeck network at the pretraining data's size, whatever
    # retrieval head or input size the benchmark network has (neither is in its key, `shaping`)
    model = build_model({**net, "pretrained": None, "embedding_dim": None, "input_size": None},
                        loaders.dataset.num_train_pids)
    recipe = pre[ROLES[block]]
    cohort = Cohort(loaders.train, device, pre["seed"], amp=cfg["experiment"]["amp"])
    member = cohort.add(model, recipe, folder, desc=f"pretrain {net['backbone']}", tag=key,
                        recipe=f"pretrain.{ROLES[block]}",
                        sync_bn=cfg["experiment"]["sync_bn"], memory_format=spec["memory_format"],
                        hooks=default_hooks(mlflow=mlflow_run(cfg, f"pretrained/{key}", spec)))
    made = {"key": key, "backbone": net["backbone"], "epochs": recipe["epochs"], "amp": cfg["experiment"]["amp"],
            "memory_format": spec["memory_format"]}
    job = Job(member, spec,
              save=lambda: save_torch(torchvision_state(net["backbone"], model.stages), folder.weights),
              evaluate=lambda: evaluate_model(model, loaders.query, loaders.gallery, cfg["eval"], device),
              record=lambda metrics, seconds: metrics | made | {"train_seconds": seconds,
                                                                 "train_ids": loaders.dataset.num_train_pids})
    train_jobs(cohort, [job])
