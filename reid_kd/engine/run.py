"""One experiment, start to end: set up, data, teacher, student(s), evaluate, record.

Results land in `runs/<experiment>/<run>/seed<k>/` (`engine/paths.py`): the resolved `config.yaml`,
`metrics.json` (`engine/results.py`), `student.pt`, `checkpoint.pt` and `log.csv`; the teacher comes
from its cache (`engine/teacher.py`).
"""
from __future__ import annotations

import logging
import time
from contextlib import ExitStack

import torch

from reid_kd.config import config_hash, dump_config
from reid_kd.data.image_dataset import Loaders, build_loaders, train_targets
from reid_kd.distill.base import build_distiller
from reid_kd.engine.cohort import train_side_by_side
from reid_kd.engine.paths import run_dir, run_name
from reid_kd.engine.preflight import check_writable, claim_run_folder, preflight
from reid_kd.engine.pretrain import network_start
from reid_kd.engine.results import student_record
from reid_kd.engine.runtime import setup_runtime
from reid_kd.engine.teacher import get_teacher
from reid_kd.engine.trainer import Trainer
from reid_kd.evaluation import evaluate_model
from reid_kd.models.checkpoint import save_model
from reid_kd.models.reid_model import ReIDModel, build_model
from reid_kd.utils import distributed
from reid_kd.utils.io import write_json, write_text
from reid_kd.utils.lock import main_lock


logger = logging.getLogger(__name__)


def run_experiment(cfg: dict, overwrite: bool = False) -> tuple[dict, dict]:
    """Teacher metrics and the student's metrics.json record of one config.

    Holds the run folder's lock throughout; everything checkable is checked before any training.
    """
    device = setup_runtime(cfg)  # under torchrun: joins the process group first
    main = distributed.is_main()
    start, out = time.perf_counter(), run_dir(cfg)
    if main:
        check_writable(out)
    with main_lock(out):
        if main and claim_run_folder(out, config_hash(cfg), overwrite):
            logger.info(f"--overwrite: removed the run of another config in {out}")
        distributed.barrier()  # no rank reads the run folder before rank 0 has claimed it
        loaders = build_loaders(cfg["data"], cfg["experiment"]["seed"])
        logger.info(loaders.dataset.summary())
        if main:
            preflight(cfg, loaders, out)
        teacher, teacher_metrics = get_teacher(cfg, loaders, device)
        record = train_student(cfg, loaders, teacher, device, teacher_metrics)
    logger.info(f"done in {time.perf_counter() - start:.0f} s; results in {out}")
    return teacher_metrics, record


def train_student(cfg: dict, loaders: Loaders, teacher: ReIDModel | None, device: torch.device,
                  teacher_metrics: dict | None = None, stop_after: int | None = None) -> dict | None:
    """Train (or resume) the student of `cfg`, evaluate it and write the run's files.

    With `stop_after` < epochs, only trains (and checkpoints) up to that epoch and returns None, as a
    run killed there would have. The run folder is locked meanwhile (callers may hold it already).
    """
    return train_students([cfg], loaders, teacher, device, teacher_metrics, stop_after)[0]


def train_students(cfgs: list[dict], loaders: Loaders, teacher: ReIDModel | None, device: torch.device,
                   teacher_metrics: dict | None = None, stop_after: int | None = None) -> list[dict | None]:
    """`train_student` for several configs of one seed and data, trained side by side behind one teacher
    forward per batch (see `engine/cohort.py`); each gets the result it would get alone."""
    with ExitStack() as locks:
        for cfg in cfgs:
            locks.enter_context(main_lock(run_dir(cfg)))
        trainers = [_student_trainer(cfg, loaders, teacher, device) for cfg in cfgs]
        seconds = train_side_by_side(trainers, stop_after=stop_after)
        return [None if stop_after is not None and stop_after < cfg["train"]["epochs"]
                else _finish_student(cfg, trainer, s, loaders, teacher, device, teacher_metrics)
                for cfg, trainer, s in zip(cfgs, trainers, seconds)]


def _student_trainer(cfg: dict, loaders: Loaders, teacher: ReIDModel | None, device: torch.device) -> Trainer:
    """The student, its distiller and its trainer, built from the seed alone (as every method of the seed)."""
    exp, out = cfg["experiment"], run_dir(cfg)
    start = network_start(cfg, "model", device)
    torch.manual_seed(exp["seed"])
    student = build_model(cfg["model"], loaders.dataset.num_train_pids, start)
    distiller = build_distiller(cfg["distill"], student, teacher, train_targets(loaders))
    if distributed.is_main():
        write_text(dump_config(cfg), out / "config.yaml")
    return Trainer(student, loaders.train, cfg["train"], device, out, seed=exp["seed"],
                   teacher=teacher if distiller is not None else None, distiller=distiller, amp=exp["amp"],
                   desc=run_name(cfg), tag=config_hash(cfg), sync_bn=exp["sync_bn"])


def _finish_student(cfg: dict, trainer: Trainer, seconds: float, loaders: Loaders, teacher: ReIDModel | None,
                    device: torch.device, teacher_metrics: dict | None) -> dict:
    """Save and evaluate a trained student; write its metrics.json record (last: it marks a finished run)."""
    out, student = run_dir(cfg), trainer.model
    if distributed.is_main():
        save_model(student, cfg["model"], out / "student.pt", cfg["data"])  # kept even if evaluation fails
    metrics = evaluate_model(student, loaders.query, loaders.gallery, cfg["eval"], device)
    trainer.log_eval(metrics)
    record = student_record(cfg, metrics, student, seconds, teacher, teacher_metrics, loaders.gallery, device)
    if distributed.is_main():
        write_json(record, out / "metrics.json")  # written last: its presence marks a finished run
    return record
