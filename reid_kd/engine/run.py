"""One experiment, start to end: set up, data, teacher, student(s), evaluate, record.

Results land in `runs/<experiment>/<run>/seed<k>/` (a `RunFolder`, `engine/run_folder.py`): the resolved
`config.yaml`, `metrics.json` (`engine/results.py`), `student.pt`, `checkpoint.pt` and `log.csv`; the
teacher comes from its cache (`engine/teacher.py`).
"""
from __future__ import annotations

import logging
import time

import torch

from reid_kd.config import config_hash
from reid_kd.data.image_dataset import Loaders, build_loaders, train_targets
from reid_kd.distill.base import build_distiller
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.hooks import default_hooks
from reid_kd.engine.paths import run_folder, run_id, run_name, training_layout
from reid_kd.engine.preflight import check_asymmetric, check_writable, preflight
from reid_kd.engine.pretrain import network_start
from reid_kd.engine.results import student_record
from reid_kd.engine.runtime import as_layout, setup_runtime
from reid_kd.engine.teacher import get_teacher
from reid_kd.engine.tracking import mlflow_run
from reid_kd.engine.training import Job, train_jobs
from reid_kd.evaluation import Features, evaluate_model
from reid_kd.models.checkpoint import save_model, weights_digest
from reid_kd.models.reid_model import ReIDModel, build_model
from reid_kd.utils import distributed

logger = logging.getLogger(__name__)


def run_experiment(cfg: dict, overwrite: bool = False) -> tuple[dict, dict]:
    """Teacher metrics and the student's metrics.json record of one config.

    Holds the run folder's lock throughout; everything checkable is checked before any training.
    """
    device = setup_runtime(cfg)  # under torchrun: joins the process group first
    main = distributed.is_main()
    start, folder = time.perf_counter(), run_folder(cfg)
    if main:
        check_writable(folder.path)
    with folder.lock():
        if main and folder.claim(config_hash(cfg), overwrite):
            logger.info(f"--overwrite: removed the run of another config in {folder}")
        distributed.barrier()  # no rank reads the run folder before rank 0 has claimed it
        loaders = build_loaders(cfg["data"], cfg["experiment"]["seed"])
        logger.info(loaders.dataset.summary())
        if main:
            preflight(cfg, loaders, folder.path)
        teacher, teacher_metrics = get_teacher(cfg, loaders, device)
        record = train_student(cfg, loaders, teacher, device, teacher_metrics)
    logger.info(f"done in {time.perf_counter() - start:.0f} s; results in {folder}")
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
    exp, t_cfg = cfgs[0]["experiment"], cfgs[0]["teacher"]
    cohort = Cohort(loaders.train, device, exp["seed"], teacher=teacher, amp=exp["amp"],
                    teacher_dtype=t_cfg["forward_dtype"], teacher_memory_format=t_cfg["memory_format"])
    # the frozen teacher's gallery, embedded once for all the students scored in it (eval.protocols: asymmetric)
    gallery = Features(cohort.teacher, device) if cohort.teacher is not None else None
    teacher_digest = weights_digest(cohort.teacher) if cohort.teacher is not None else None
    jobs = [_student_job(cohort, cfg, loaders, device, teacher_metrics, gallery, teacher_digest) for cfg in cfgs]
    return train_jobs(cohort, jobs, stop_after)


def _student_job(cohort: Cohort, cfg: dict, loaders: Loaders, device: torch.device,
                 teacher_metrics: dict | None, teacher_features: Features | None, teacher_digest: str | None) -> Job:
    """The student and its distiller, built from the seed alone (as every method of the seed), as a job; a
    distilled student's file records its teacher's `teacher_digest` (the space `reidkd index` checks)."""
    exp, teacher, folder = cfg["experiment"], cohort.teacher, run_folder(cfg)
    distilled_from = teacher_digest if cfg["distill"]["method"] != "none" else None
    check_asymmetric(cfg, teacher)  # told before a synthetic pretraining
    start = network_start(cfg, "model", device)
    torch.manual_seed(exp["seed"])
    student = build_model(cfg["model"], loaders.dataset.num_train_pids, start)
    check_asymmetric(cfg, teacher, student)  # the teacher it has (preflight checked the config's)
    distiller = build_distiller(cfg["distill"], student, teacher, train_targets(loaders))
    member = cohort.add(student, cfg["train"], folder, distiller=distiller, desc=run_name(cfg),
                        tag=config_hash(cfg), sync_bn=exp["sync_bn"],
                        memory_format=training_layout(cfg["model"], cfg["train"]),
                        hooks=default_hooks(mlflow=mlflow_run(cfg, run_id(run_name(cfg), exp["seed"]), cfg)))
    return Job(member, cfg,
               save=lambda: save_model(student, cfg["model"], folder.weights, cfg["data"], distilled_from),
               evaluate=lambda: evaluate_model(as_layout(student, cfg["model"]["memory_format"]), loaders.query,
                                               loaders.gallery, cfg["eval"], device, cfg["eval"]["protocols"],
                                               teacher_features),
               record=lambda metrics, seconds: student_record(cfg, metrics, student, seconds, teacher,
                                                              teacher_metrics, device))
