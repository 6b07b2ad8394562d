"""One experiment: a teacher (trained once and cached, or loaded), a student, their evaluation.

Results land in `runs/<experiment>/<method>/seed<k>/`: the resolved `config.yaml`, `metrics.json`,
`student.pt`, `checkpoint.pt` and `log.csv`. Teachers are cached under `runs/teachers/<key>/`,
keyed by everything that shapes them (data, backbone, recipe, seed), so every method and seed of
a comparison distils from the very same teacher.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import torch

from reid_kd.config import ConfigError, config_hash, dump_config
from reid_kd.data.image_dataset import Loaders, build_loaders, train_targets
from reid_kd.distill import build_distiller
from reid_kd.engine import distributed
from reid_kd.engine.cohort import train_side_by_side
from reid_kd.engine.io import read_json, write_json, write_text
from reid_kd.engine.lock import main_lock
from reid_kd.engine.paths import method_name, run_dir, run_name, teacher_dir, teacher_key, teacher_seed
from reid_kd.engine.pretrain import network_start
from reid_kd.engine.preflight import check_writable, claim_run_folder, preflight
from reid_kd.engine.runtime import setup_runtime
from reid_kd.engine.trainer import Trainer
from reid_kd.evaluation import evaluate_model
from reid_kd.evaluation.speed import inference_speed
from reid_kd.models.checkpoint import load_model, save_model
from reid_kd.models.reid_model import ReIDModel, build_model
from reid_kd.utils.provenance import git_commit, software_environment

METRIC_KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10")


def quiet(_: str) -> None:
    """The log of ranks other than 0: one line per event, from rank 0."""


def count_params(model: torch.nn.Module) -> int:
    """Parameters used at inference (the classifier is dropped for retrieval)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier."))


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


def get_teacher(cfg: dict, loaders: Loaders, device: torch.device, log=print) -> tuple[ReIDModel, dict]:
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
        log(f"teacher: reusing {model_file}")
        return load_model(model_file, device), read_json(metrics_file)
    with main_lock(folder, log):
        log(f"teacher: training {t_cfg['backbone']} into {folder}")
        seed = teacher_seed(cfg)
        train_loader = loaders.train
        if seed != cfg["experiment"]["seed"]:  # the teacher's own sampling and augmentation stream
            train_loader = build_loaders(cfg["data"], seed, dataset=loaders.dataset).train
        start = network_start(cfg, "teacher", device, log)
        torch.manual_seed(seed)
        teacher = build_model(t_cfg, loaders.dataset.num_train_pids, start)
        trainer = Trainer(teacher, train_loader, t_cfg["train"], device, folder, seed=seed,
                          amp=cfg["experiment"]["amp"], desc="teacher", tag=teacher_key(cfg), log=log,
                          sync_bn=cfg["experiment"]["sync_bn"])
        seconds = trainer.fit()
        if distributed.is_main():
            write_text(dump_config(cfg), folder / "config.yaml")
            save_model(teacher, t_cfg, model_file, cfg["data"])  # kept even if evaluation fails
        metrics = evaluate_model(teacher, loaders.query, loaders.gallery, cfg["eval"], device)
        trainer.log_eval(metrics)
        metrics |= {"params": count_params(teacher), "train_seconds": seconds, "epochs": t_cfg["train"]["epochs"],
                    "backbone": teacher.backbone_name, "seed": seed, "pretrained": teacher.start,
                    "inference_images_per_sec": inference_speed(teacher, loaders.gallery, device),
                    "environment": software_environment(device)}
        if distributed.is_main():
            write_json(metrics, metrics_file)  # written last: its presence marks a complete teacher
            trainer.checkpoint_path.unlink(missing_ok=True)
        distributed.barrier()  # every rank leaves with the teacher cached
    return teacher, metrics


def evaluated_on(cfg: dict) -> str:
    """The dataset a run is scored on: `<dataset>:val` when it holds out validation identities."""
    return cfg["data"]["dataset"] + (":val" if cfg["data"]["validation_fraction"] > 0 else "")


def train_student(cfg: dict, loaders: Loaders, teacher: ReIDModel | None, device: torch.device,
                  teacher_metrics: dict | None = None, stop_after: int | None = None, log=print) -> dict | None:
    """Train (or resume) the student of `cfg`, evaluate it and write the run's files.

    With `stop_after` < epochs, only trains (and checkpoints) up to that epoch and returns None, as a
    run killed there would have. The run folder is locked meanwhile (callers may hold it already).
    """
    return train_students([cfg], loaders, teacher, device, teacher_metrics, stop_after, log)[0]


def train_students(cfgs: list[dict], loaders: Loaders, teacher: ReIDModel | None, device: torch.device,
                   teacher_metrics: dict | None = None, stop_after: int | None = None, log=print) -> list[dict | None]:
    """`train_student` for several configs of one seed and data, trained side by side behind one teacher
    forward per batch (see `engine/cohort.py`); each gets the result it would get alone."""
    with ExitStack() as locks:
        for cfg in cfgs:
            locks.enter_context(main_lock(run_dir(cfg), log))
        trainers = [_student_trainer(cfg, loaders, teacher, device, log) for cfg in cfgs]
        seconds = train_side_by_side(trainers, stop_after=stop_after)
        return [None if stop_after is not None and stop_after < cfg["train"]["epochs"]
                else _finish_student(cfg, trainer, s, loaders, teacher, device, teacher_metrics)
                for cfg, trainer, s in zip(cfgs, trainers, seconds)]


def _student_trainer(cfg: dict, loaders: Loaders, teacher: ReIDModel | None, device: torch.device, log) -> Trainer:
    """The student, its distiller and its trainer, built from the seed alone (as every method of the seed)."""
    exp, out = cfg["experiment"], run_dir(cfg)
    start = network_start(cfg, "model", device, log)
    torch.manual_seed(exp["seed"])
    student = build_model(cfg["model"], loaders.dataset.num_train_pids, start)
    distiller = build_distiller(cfg["distill"], student, teacher, train_targets(loaders))
    if distributed.is_main():
        write_text(dump_config(cfg), out / "config.yaml")
    return Trainer(student, loaders.train, cfg["train"], device, out, seed=exp["seed"],
                   teacher=teacher if distiller is not None else None, distiller=distiller, amp=exp["amp"],
                   desc=run_name(cfg), tag=config_hash(cfg), log=log, sync_bn=exp["sync_bn"])


def _finish_student(cfg: dict, trainer: Trainer, seconds: float, loaders: Loaders, teacher: ReIDModel | None,
                    device: torch.device, teacher_metrics: dict | None) -> dict:
    """Save and evaluate a trained student; write its metrics.json record (last: it marks a finished run)."""
    exp, out, student = cfg["experiment"], run_dir(cfg), trainer.model
    if distributed.is_main():
        save_model(student, cfg["model"], out / "student.pt", cfg["data"])  # kept even if evaluation fails
    metrics = evaluate_model(student, loaders.query, loaders.gallery, cfg["eval"], device)
    trainer.log_eval(metrics)
    teacher_summary = None
    if teacher_metrics is not None:
        teacher_summary = {k: teacher_metrics.get(k) for k in (*METRIC_KEYS, "cmc", "params",
                                                               "inference_images_per_sec", "train_seconds")}
        teacher_summary |= {"backbone": teacher.backbone_name, "pretrained": teacher.start,
                            "source": cfg["teacher"]["checkpoint"] or f"teachers/{teacher_key(cfg)}"}
    record = {
        "method": method_name(cfg), "run_name": run_name(cfg), "dataset": evaluated_on(cfg),
        "teacher_backbone": teacher.backbone_name if teacher is not None else cfg["teacher"]["backbone"],
        "student_backbone": student.backbone_name,
        "pretrained": {"teacher": teacher.start if teacher is not None else None, "student": student.start},
        "seed": exp["seed"], **{k: metrics[k] for k in METRIC_KEYS}, "cmc": metrics["cmc"],
        "num_valid_queries": metrics["num_valid_queries"], "num_queries": metrics["num_queries"],
        "params": count_params(student),
        "train_seconds": seconds, "epochs": cfg["train"]["epochs"], "reported_epoch": "last",
        "inference_images_per_sec": inference_speed(student, loaders.gallery, device),
        "git_commit": git_commit(), "config_hash": config_hash(cfg), "device": device.type,
        "environment": software_environment(device), "teacher": teacher_summary,
    }
    if distributed.is_main():
        write_json(record, out / "metrics.json")  # written last: its presence marks a finished run
    return record


def run_experiment(cfg: dict, overwrite: bool = False, log=print) -> tuple[dict, dict]:
    """Teacher metrics and the student's metrics.json record of one config.

    Holds the run folder's lock throughout; everything checkable is checked before any training.
    """
    device = setup_runtime(cfg)  # under torchrun: joins the process group first
    main = distributed.is_main()
    log = log if main else quiet
    start, out = time.perf_counter(), run_dir(cfg)
    if main:
        check_writable(out)
    with main_lock(out, log):
        if main and claim_run_folder(out, config_hash(cfg), overwrite):
            log(f"--overwrite: removed the run of another config in {out}")
        distributed.barrier()  # no rank reads the run folder before rank 0 has claimed it
        loaders = build_loaders(cfg["data"], cfg["experiment"]["seed"])
        log(loaders.dataset.summary())
        if main:
            preflight(cfg, loaders, out)
        teacher, teacher_metrics = get_teacher(cfg, loaders, device, log)
        record = train_student(cfg, loaders, teacher, device, teacher_metrics, log=log)
    log(f"done in {time.perf_counter() - start:.0f} s; results in {out}")
    return teacher_metrics, record
