"""What a trained network's metrics.json holds: its scores, how it was made and what it was made with.

A run's record is what leaderboards are rebuilt from, so everything they show (inference speed,
parameters, how each network started, provenance) is measured once here and stored.
"""
from __future__ import annotations

import torch

from reid_kd.config import config_hash
from reid_kd.engine.paths import method_name, run_name, teacher_key, training_layout
from reid_kd.engine.runtime import forward_precision
from reid_kd.models.reid_model import ReIDModel
from reid_kd.utils import distributed
from reid_kd.utils.provenance import git_commit, software_environment

METRIC_KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10")


def count_params(model: torch.nn.Module) -> int:
    """Parameters used at inference (the classifier is dropped for retrieval)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier."))


def evaluated_on(cfg: dict) -> str:
    """The dataset a run is scored on: `<dataset>:val` when it holds out validation identities."""
    return cfg["data"]["dataset"] + (":val" if cfg["data"]["validation_fraction"] > 0 else "")


def trained_in(cfg: dict) -> dict:
    """How many processes trained the network and whether their BatchNorms shared statistics (both change
    the numbers: each process normalises over its share of the batch unless synchronised)."""
    n = distributed.world_size()
    return {"world_size": n, "sync_bn": bool(cfg["experiment"]["sync_bn"]) and n > 1}


def train_precision(cfg: dict) -> str:
    return "mixed" if cfg["experiment"]["amp"] else "float32"


def settings(cfg: dict, device: torch.device) -> dict:
    """How the networks computed (both change the numbers a little): training precision, the teacher's forward
    precision while students distil, and each network's memory format."""
    t = cfg["teacher"]
    return {"precision": {"train": train_precision(cfg),
                          "teacher_forward": forward_precision(t["forward_dtype"], cfg["experiment"]["amp"], device)},
            "memory_format": {"student": cfg["model"]["memory_format"], "teacher": t["memory_format"]}}


def shapes(cfg: dict, student: ReIDModel, teacher: ReIDModel | None) -> dict:
    """What each network saw and gave: its input size ([height, width]; the teacher always the data's) and the
    width of its retrieval feature (the asymmetric protocol compares the two)."""
    data = [cfg["data"]["height"], cfg["data"]["width"]]
    return {"input_size": {"student": list(student.input_size or data), "teacher": data},
            "retrieval_dim": {"student": student.retrieval_dim,
                              "teacher": teacher.retrieval_dim if teacher is not None else None}}


def teacher_record(metrics: dict, teacher: ReIDModel, seconds: float, cfg: dict, seed: int,
                   device: torch.device) -> dict:
    """A cached teacher's metrics.json: its scores and how it was trained."""
    return metrics | {"params": count_params(teacher), "train_seconds": seconds,
                      "epochs": cfg["teacher"]["train"]["epochs"], "backbone": teacher.backbone_name, "seed": seed,
                      "pretrained": teacher.start, "environment": software_environment(device), **trained_in(cfg),
                      "precision": {"train": train_precision(cfg)},
                      "memory_format": training_layout(cfg["teacher"], cfg["teacher"]["train"])}


def student_record(cfg: dict, metrics: dict, student: ReIDModel, seconds: float, teacher: ReIDModel | None,
                   teacher_metrics: dict | None, device: torch.device) -> dict:
    """A run's metrics.json: the student's scores (the top-level ones are `eval.protocols`' first, each protocol's
    under `protocols`), its teacher's (its own, symmetric), and the run's provenance."""
    teacher_summary = None
    if teacher_metrics is not None:
        teacher_summary = {k: teacher_metrics.get(k) for k in (*METRIC_KEYS, "cmc", "params",
                                                               "inference_images_per_sec", "train_seconds")}
        teacher_summary |= {"backbone": teacher.backbone_name, "pretrained": teacher.start,
                            "source": cfg["teacher"]["checkpoint"] or f"teachers/{teacher_key(cfg)}"}
    return {
        "method": method_name(cfg), "run_name": run_name(cfg), "dataset": evaluated_on(cfg),
        "teacher_backbone": teacher.backbone_name if teacher is not None else cfg["teacher"]["backbone"],
        "student_backbone": student.backbone_name,
        "pretrained": {"teacher": teacher.start if teacher is not None else None, "student": student.start},
        "seed": cfg["experiment"]["seed"], **{k: metrics[k] for k in METRIC_KEYS}, "cmc": metrics["cmc"],
        "num_valid_queries": metrics["num_valid_queries"], "num_queries": metrics["num_queries"],
        **{k: metrics[k] for k in ("rerank", "num_draws") if k in metrics},  # how the scores were made
        "protocols": metrics["protocols"], **shapes(cfg, student, teacher),
        "params": count_params(student),
        "train_seconds": seconds, "epochs": cfg["train"]["epochs"], "reported_epoch": "last",
        "inference_images_per_sec": metrics["inference_images_per_sec"],
        **trained_in(cfg), "git_commit": git_commit(), "config_hash": config_hash(cfg), "device": device.type,
        "environment": software_environment(device), "teacher": teacher_summary, **settings(cfg, device),
    }
