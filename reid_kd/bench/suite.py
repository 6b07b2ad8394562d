"""Benchmark suites: one dataset, one teacher, one student backbone, every method, several seeds.

A suite file (configs/suites/) is read and validated by bench/suite_file.py.

A run's config is `load_config(base, suite set + entry set + experiment.name/run_name/seed +
teacher.seed + distill.method)`. `run_suite` trains (or reuses) the teacher once, then the runs of
each seed side by side (one data pass and one teacher forward per batch for all of them; each run's
result is the one it would get alone): a run whose metrics.json holds the config hash of its resolved
config is skipped, any other run trains, resuming from its checkpoint.pt when one of the same config is there.
Every `run_suite` is a worker: it claims the runs it trains (bench/claims.py), so several of them on one suite
(`reidkd bench --workers N`, Slurm jobs, hosts sharing the runs folder) train each run once.
"""
from __future__ import annotations

import copy
import logging
import os
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from reid_kd.bench.claims import (
    CLAIM_TIMEOUT,
    Claims,
    read_claim,
    read_failure,
)
from reid_kd.bench.int8 import check_int8, quantize_students
from reid_kd.bench.suite_file import EXPECTED_RUNS, Entry, Suite
from reid_kd.config import config_hash
from reid_kd.data.image_dataset import build_loaders, load_dataset
from reid_kd.engine.paths import (
    experiment_dir,
    method_name,
    pretrain_dir,
    run_dir,
    run_folder,
    run_id,
    run_state,
    teacher_dir,
    teacher_key,
)
from reid_kd.engine.preflight import preflight
from reid_kd.engine.pretrain import pretrained_folder
from reid_kd.engine.run_folder import RunFolderError
from reid_kd.engine.run import train_students
from reid_kd.engine.runtime import setup_runtime
from reid_kd.engine.teacher import get_teacher
from reid_kd.errors import UserError
from reid_kd.utils.io import write_json, write_text
from reid_kd.utils.lock import HOST, FolderLockedError, describe_holder, folder_lock
from reid_kd.utils.logs import LastLine

logger = logging.getLogger(__name__)
T = TypeVar("T")


def expected_runs(runs: list[tuple[Entry, int, dict]]) -> dict[str, dict]:
    """What each run folder must hold to count: `<entry>/seed<k>` -> method, run name, config hash.

    Recorded beside suite.yaml, so `reidkd leaderboard` accepts only the runs this suite asked for.
    """
    return {run_id(e.name, s): {"method": method_name(cfg), "run_name": e.name, "seed": s,
                                "config_hash": config_hash(cfg)} for e, s, cfg in runs}


def check_run_folders(runs: list[tuple[Entry, int, dict]], overwrite: bool) -> None:
    """Without `overwrite`, stop before any work when a run folder holds another config's run."""
    taken = [run_dir(cfg) for _, _, cfg in runs if run_state(cfg) == "other"]
    if taken and not overwrite:
        raise RunFolderError(f"{len(taken)} run folder(s) hold runs of another config, e.g. {taken[0]}; pass "
                             "--overwrite to replace them, or change the suite's name to keep both")


def plan_suite(suite: Suite, extra: tuple[str, ...] = (), overwrite: bool = False) -> list[tuple[Entry, int, dict]]:
    """Every run's config, validated, and the suite recorded beside its runs (suite.yaml, expected runs)."""
    runs = suite.runs(extra)  # every config validated before any work starts
    check_run_folders(runs, overwrite)
    if suite.int8:
        check_int8(runs)
    suite_dir = experiment_dir(runs[0][2])
    record = suite.as_dict() | ({"set_on_command_line": list(extra)} if extra else {})
    write_text(yaml.safe_dump(record, sort_keys=False), suite_dir / "suite.yaml")
    write_json(expected_runs(runs), suite_dir / EXPECTED_RUNS)
    return runs


class RunsFailedError(UserError):
    """Some runs of a suite failed (each has its failure.json); the others were trained."""


def cohort_key(seed: int, cfg: dict) -> tuple:
    """Runs with the same key can train side by side: one seed, data, teacher, device and precision."""
    return (seed, config_hash(cfg["data"]), cfg["teacher"]["checkpoint"] or teacher_key(cfg),
            cfg["experiment"]["device"], cfg["experiment"]["amp"])


def run_suite(suite: Suite, extra: tuple[str, ...] = (), overwrite: bool = False, worker: str = "",
              claim_timeout: float = CLAIM_TIMEOUT, launch: str = "") -> list[dict]:
    """Train the teacher once and every (entry, seed) run not done yet; returns the metrics of the runs done.

    A worker: it claims the pending runs of one seed (see bench/claims.py), trains them side by side,
    releases them and claims again, so any number of workers on one suite (processes, hosts) train each
    run once. A run another worker holds is left to it. A cohort that fails is retried run by run, so
    one failing run does not fail the others; a failed run is recorded and not retried in this launch,
    and RunsFailedError is raised at the end.
    """
    runs = plan_suite(suite, extra, overwrite)
    loaders_for = _loaders_cache()
    for seed, cfg in {entry.name: (seed, cfg) for entry, seed, cfg in runs}.values():
        preflight(cfg, loaders_for(cfg, seed), run_dir(cfg))  # every entry, before any training
    tags = {(e.name, s): f"[{i}/{len(runs)}] {e.name} seed{s}" for i, (e, s, _) in enumerate(runs, 1)}
    for entry, seed, cfg in runs:
        if run_state(cfg) == "done":
            logger.info(f"{tags[entry.name, seed]}: done, skipped ({run_dir(cfg)})")
    claims = Claims(worker or f"{HOST}:{os.getpid()}", claim_timeout, launch)
    failed: list[str] = []
    alone: set[tuple[str, int]] = set()  # runs of a failed cohort: retried one at a time
    teachers: dict[str, tuple] = {}
    last = LastLine()  # the last line logged while training cohorts, for failure.json
    try:
        while cohort := _claim_cohort(runs, claims, alone, failed, launch):
            for entry, seed, cfg in cohort:
                logger.info(f"{tags[entry.name, seed]}: "
                            f"{'resuming from its checkpoint' if run_state(cfg) == 'resume' else 'training'}")
            try:
                with last:
                    _train_cohort(cohort, loaders_for, teachers, overwrite)
            except Exception as e:
                if not isinstance(e, UserError):  # a bug: its traceback; a user error says all in its line
                    logger.info(traceback.format_exc().rstrip())
                if len(cohort) > 1:
                    logger.info(f"{len(cohort)} runs side by side failed ({type(e).__name__}: {e}); retrying them "
                                "one at a time to find which")
                    alone.update((entry.name, seed) for entry, seed, _ in cohort)
                else:
                    entry, seed, cfg = cohort[0]
                    claims.fail(run_dir(cfg), e, last.line)
                    failed.append(run_id(entry.name, seed))
                    logger.info(f"{tags[entry.name, seed]}: FAILED: {type(e).__name__}: {e}")
            else:
                for _, _, cfg in cohort:
                    run_folder(cfg).failure_file.unlink(missing_ok=True)
            finally:
                for _, _, cfg in cohort:
                    claims.release(run_dir(cfg))
        if suite.int8:
            quantize_students(runs, claims, suite.calibration_images)
    finally:
        claims.close()
    _say_left_to_others(runs, tags)
    if failed:
        raise RunsFailedError(f"{len(failed)} run(s) of suite {suite.name!r} failed: {', '.join(failed)}; the others "
                              f"were trained; `reidkd bench --suite FILE --status` shows each error, and running "
                              "`reidkd bench` again retries them")
    return [run_folder(cfg).read_metrics() for _, _, cfg in runs if run_state(cfg) == "done"]


def _say_left_to_others(runs: list[tuple[Entry, int, dict]], tags: dict) -> None:
    """One line per unfinished run another worker holds: who trains it."""
    for entry, seed, cfg in runs:
        holder = read_claim(run_dir(cfg))
        if run_state(cfg) != "done" and holder:
            logger.info(f"{tags[entry.name, seed]}: left to worker {holder.get('worker', '?')} "
                        f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}), which holds it")


def _loaders_cache():
    """loaders_for(cfg, seed): each dataset loaded once per process, loaders built per seed."""
    datasets: dict[str, Any] = {}

    def loaders_for(cfg: dict, seed: int):
        data_key = config_hash(cfg["data"])
        if data_key not in datasets:
            datasets[data_key] = load_dataset(cfg["data"])
        return build_loaders(cfg["data"], seed, dataset=datasets[data_key])

    return loaders_for


def _claim_cohort(runs: list[tuple[Entry, int, dict]], claims: Claims, alone: set, failed: list[str],
                  launch: str) -> list[tuple[Entry, int, dict]]:
    """Claim the pending runs of the first cohort that has any free; [] when no run is left to claim."""
    groups: dict[tuple, list[tuple[Entry, int, dict]]] = {}
    for entry, seed, cfg in runs:
        if run_id(entry.name, seed) in failed or run_state(cfg) == "done":
            continue
        failure = read_failure(run_dir(cfg))
        if launch and failure and failure.get("launch") == launch:  # failed in this launch: not again
            continue
        key = cohort_key(seed, cfg) + (((entry.name, seed),) if (entry.name, seed) in alone else ())
        groups.setdefault(key, []).append((entry, seed, cfg))
    for leftovers in (False, True):  # first whole cohorts; then the runs other workers left of theirs
        for group in groups.values():
            mine = []
            for run in group:
                if claims.claim(run_dir(run[2])):
                    mine.append(run)
                elif not mine and not leftovers:
                    break  # another worker is claiming this cohort: leave it whole to it
            for run in [r for r in mine if run_state(r[2]) == "done"]:  # finished elsewhere since we looked
                claims.release(run_dir(run[2]))
                mine.remove(run)
            if mine:
                return mine
    return []


def _train_cohort(cohort: list[tuple[Entry, int, dict]], loaders_for, teachers: dict, overwrite: bool) -> None:
    """Train claimed runs of one seed side by side behind one teacher forward per batch."""
    seed = cohort[0][1]
    cfgs = [copy.deepcopy(cfg) for _, _, cfg in cohort]
    device = setup_runtime(cfgs[0])
    loaders = loaders_for(cfgs[0], seed)
    t_key = cohort_key(seed, cfgs[0])[2]
    if t_key not in teachers:
        logger.info(loaders.dataset.summary())
        teachers[t_key] = wait_for_caches(cfgs[0], lambda: get_teacher(cfgs[0], loaders, device))
    teacher, teacher_metrics = teachers[t_key]
    for cfg in cfgs:  # the students' synth-pretrained backbones, before their run folders are locked
        if cfg["model"]["pretrained"] == "synth":
            wait_for_caches(cfg, lambda cfg=cfg: pretrained_folder(cfg, "model", device))
    with ExitStack() as locks:
        for (entry, _, cfg) in cohort:
            locks.enter_context(folder_lock(run_dir(cfg)))
            if run_folder(cfg).claim(config_hash(cfg), overwrite):
                logger.info(f"{entry.name} seed{seed}: --overwrite: removed the run of another config in "
                            f"{run_dir(cfg)}")
        logger.info(f"seed {seed}: training {len(cohort)} run(s) side by side, one teacher forward per batch: "
                    + ", ".join(entry.name for entry, _, _ in cohort))
        done = train_students(cfgs, loaders, teacher, device, teacher_metrics)
    for (entry, _, cfg), record in zip(cohort, done):
        logger.info(f"{entry.name} seed{seed}: mAP {100 * record['mAP']:.2f}, Rank-1 {100 * record['rank1']:.2f} "
                    f"({run_dir(cfg)})")


def wait_for_caches(cfg: dict, make: Callable[[], T], poll: float = 2.0) -> T:
    """`make()`, waiting while another process trains a cache it needs: the teacher, or a synth-pretrained
    backbone of the teacher or the student (the cache folder is locked). Another folder's lock is an error."""
    caches = {teacher_dir(cfg), pretrain_dir(cfg, "teacher"), pretrain_dir(cfg, "model")}
    told: set[Path] = set()
    while True:
        try:
            return make()
        except FolderLockedError as e:
            if e.folder not in caches:
                raise
            if e.folder not in told:
                logger.info(f"waiting for {describe_holder(e.holder)}, which trains into {e.folder}")
                told.add(e.folder)
            time.sleep(poll)
