"""Train, save, evaluate, write metrics.json last: the one routine behind a student run, a cached teacher and a
pretrained backbone, and the one cache check in front of the last two.

Each network is a `Job`: its cohort member, its folder and spec, and the three things that differ by kind
(the weights file it saves, how it is scored, what its metrics.json holds). A cache folder is reused only
when it holds a finished network of the very same spec; one of another spec is refused in one line,
never silently reused; one whose files cannot be read (a crash, a full disk, a hand) has them moved into
`damaged-<time>/` beside the network trained anew, said in a line, since a cache can always be rebuilt.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, TypeVar

from reid_kd.config import config_hash
from reid_kd.engine.cohort import Cohort
from reid_kd.engine.member import Member
from reid_kd.engine.run_folder import RunFolder, RunFolderError
from reid_kd.utils import distributed
from reid_kd.utils.io import DamagedFileError, load_torch

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Job:
    """One network to train into its folder."""

    member: Member
    spec: dict  # what the network is made under: recorded as the folder's config.yaml before it trains
    save: Callable[[], None]  # write the weights file (rank 0 calls it; kept even if evaluation fails)
    evaluate: Callable[[], dict]  # score the trained network
    record: Callable[[dict, float], dict]  # metrics.json from the scores and the training seconds

    @property
    def folder(self) -> RunFolder:
        return self.member.folder


def train_jobs(cohort: Cohort, jobs: list[Job], stop_after: int | None = None) -> list[dict | None]:
    """Train the cohort's jobs side by side, then save, evaluate and finish each; a job stopped before its last
    epoch by `stop_after` stays checkpointed and gives None, as a run killed there would. Each folder is
    locked meanwhile (callers may hold it already)."""
    with ExitStack() as locks:
        for job in jobs:
            locks.enter_context(job.folder.lock())
            job.folder.record_spec(job.spec)
        seconds = cohort.fit(stop_after=stop_after)
        return [_finish(job, s) if job.member.finished else None for job, s in zip(jobs, seconds)]


def _finish(job: Job, seconds: float) -> dict:
    if distributed.is_main():
        job.save()
    metrics = job.evaluate()
    record = job.record(metrics, seconds)
    job.folder.finish(record)  # written last of the network's own files: its presence marks it finished
    job.member.log_eval(metrics)  # then the hooks' copies (MLflow keeps metrics.json)
    return record


def train_cached(folder: RunFolder, spec: dict, what: str, train: Callable[[], T]) -> T | None:
    """`train()` under the folder's lock, unless the folder holds a finished network of `spec` (then None,
    also when another process finished it while this one waited); a folder of another spec is refused, and
    damaged files are moved aside (see `_reusable`) so the network trains anew."""
    spec_hash = config_hash(spec)
    if _reusable(folder, spec_hash, what):
        return None
    with folder.lock():
        reusable = _reusable(folder, spec_hash, what, repair=True)
        distributed.barrier()  # no rank reads the folder before rank 0 has moved damaged files aside
        trained = None if reusable else train()
    distributed.barrier()  # every rank leaves with the network cached
    return trained


def _reusable(folder: RunFolder, spec_hash: str, what: str, repair: bool = False) -> bool:
    """Whether the cache folder holds a finished network of this spec that can be read. One of another spec is
    refused. A damaged one (a record or weights file that cannot be read, a spec not recorded, with `repair`
    also a checkpoint.pt that cannot be resumed) is what a cache may rebuild: with `repair` (its lock held) its
    files are moved into `damaged-<time>/` inside the folder, said in a line, and it trains anew."""
    why = folder.damage()
    if why is None:
        state = folder.state(spec_hash)
        if state == "other":
            raise RunFolderError(f"{folder} holds a {what} made under another spec than this config's (hash "
                                 f"{folder.recorded_hash()}, this one is {spec_hash}); delete the folder to train it "
                                 "again")
        why = _unreadable(folder, what, state, repair)
        if why is None:
            return state == "done"
    if repair and distributed.is_main():
        aside = folder.move_aside()
        logger.warning(f"{what} cache {folder}: {why}; moved its files to {aside} and training the {what} anew")
    return False


def _unreadable(folder: RunFolder, what: str, state: str, check_checkpoint: bool) -> str | None:
    """Why a finished network's weights (or, `check_checkpoint`, an unfinished one's checkpoint.pt) cannot be
    read, None when they can. A file asking to run code is refused in one line, never moved aside."""
    file = folder.weights if state == "done" else folder.checkpoint if state == "resume" and check_checkpoint else None
    if file is None:
        return None
    if not file.is_file():
        return f"{file.name} is missing"
    try:
        load_torch(file, fix=f"delete it: the {what} is then trained anew")
    except DamagedFileError as e:
        return f"{file.name} {e.problem}"
    return None
