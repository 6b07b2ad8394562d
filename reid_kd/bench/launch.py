"""Launchers of a suite's workers: N processes on this host (`--workers N`) or N jobs through submitit
(`--launcher slurm`, or `local` to try a launch on one machine). Every worker runs the same claim loop
(`run_suite`) on the shared runs folder, so the launcher only starts them and waits: which worker trains
which run is settled by the claim files, and a worker that dies leaves its runs to the next one.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from reid_kd.bench.suite import plan_suite, run_suite
from reid_kd.bench.suite_file import load_suite
from reid_kd.engine.paths import experiment_dir
from reid_kd.errors import UserError
from reid_kd.utils.logs import setup_logging

logger = logging.getLogger(__name__)


class WorkersFailedError(UserError):
    """A worker process or job failed; its output says why, and `--status` shows each run."""


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (or by index)."""
    names = os.environ.get("CUDA_VISIBLE_DEVICES")
    if names is not None:
        return [n for n in names.split(",") if n.strip() and n.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_command(suite_file: str, overrides: tuple[str, ...], worker: str, launch: str, overwrite: bool,
                   claim_timeout: float) -> list[str]:
    """`reidkd bench` as one worker of a launch."""
    args = [sys.executable, "-m", "reid_kd.cli", "bench", "--suite", str(suite_file), "--worker-id", worker,
            "--launch", launch, "--claim-timeout", str(claim_timeout)]
    args += [a for o in overrides for a in ("--set", o)]
    return args + (["--overwrite"] if overwrite else [])


def run_local_workers(suite_file: str, overrides: tuple[str, ...], n: int, overwrite: bool = False,
                      claim_timeout: float = 600.0) -> None:
    """N worker processes at once: one GPU each (round robin) when there are GPUs, else cores // N threads each
    (OMP_NUM_THREADS: a thread count kept out of the config, so runs keep their config hash). Their lines are
    forwarded prefixed by the worker id; raises WorkersFailedError if any worker failed."""
    launch, gpus = uuid.uuid4().hex[:8], visible_gpus()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // n)
    logger.info(f"launch {launch}: {n} worker(s) on this host, "
                + (f"GPUs {', '.join(gpus)}" if gpus
                   else f"{threads} CPU thread(s) each unless the suite sets experiment.threads"))
    procs, pumps = [], []
    for i in range(n):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        else:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        worker = f"w{i}"
        proc = subprocess.Popen(worker_command(suite_file, overrides, worker, launch, overwrite, claim_timeout),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        procs.append((worker, proc))
        pumps.append(threading.Thread(target=_forward, args=(worker, proc), daemon=True))
        pumps[-1].start()
    try:
        codes = [(worker, proc.wait()) for worker, proc in procs]
    except KeyboardInterrupt:
        for _, proc in procs:
            proc.terminate()  # each releases its claims on the way out
        raise
    for pump in pumps:
        pump.join()
    bad = [f"{w} (exit {code})" for w, code in codes if code != 0]
    if bad:
        raise WorkersFailedError(f"{len(bad)} of {n} worker(s) failed: {', '.join(bad)}; their lines above say why, "
                                 f"and `reidkd bench --suite {suite_file} --status` shows each run")


def _forward(worker: str, proc: subprocess.Popen) -> None:
    """The worker's lines, prefixed by its id (each logged line is written whole)."""
    for line in proc.stdout:
        logger.info(f"[{worker}] {line.rstrip()}")


def submit_jobs(suite_file: str, overrides: tuple[str, ...], jobs: int, kind: str = "slurm",
                partition: str | None = None, gpus_per_job: int = 1, minutes: int = 240, overwrite: bool = False,
                claim_timeout: float = 600.0, folder: str | Path | None = None) -> None:
    """Submit `jobs` worker jobs through submitit and wait for them; raises WorkersFailedError if any failed.

    Interrupting the wait leaves Slurm jobs running (`--status` follows them)."""
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher needs submitit: pip install -e '.[slurm]'") from None
    missing = [c for c in ("sbatch", "srun") if kind == "slurm" and shutil.which(c) is None]
    if missing:  # told before anything is planned or written
        raise UserError(f"--launcher slurm needs Slurm, and {' and '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not on PATH here; run it on a Slurm login node, or use "
                        "--workers N on this machine (--launcher local tries a launch here)")
    suite = load_suite(suite_file)
    runs = plan_suite(suite, overrides, overwrite)  # a config mistake is told here, not in every job
    launch = uuid.uuid4().hex[:8]
    folder = Path(folder or experiment_dir(runs[0][2]) / "jobs")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=kind)
    params = {"name": f"reidkd-{suite.name}", "timeout_min": minutes, "nodes": 1, "tasks_per_node": 1,
              "gpus_per_node": gpus_per_job}
    if partition:
        params["slurm_partition"] = partition
    executor.update_parameters(**params)
    suite_path = str(Path(suite_file).resolve())
    submitted = [executor.submit(worker_job, suite_path, overrides, overwrite, claim_timeout, launch)
                 for _ in range(jobs)]
    logger.info(f"launch {launch}: submitted {jobs} {kind} job(s) {', '.join(j.job_id for j in submitted)}; "
                f"logs in {folder}; `reidkd bench --suite {suite_file} --status` shows each run")
    bad = []
    for job in submitted:
        try:
            logger.info(f"[job {job.job_id}] {job.result()}")
        except Exception as e:  # the job's error, told as its last line; its log has the rest
            last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            logger.info(f"[job {job.job_id}] failed: {last} (log: {job.paths.stdout})")
            bad.append(job.job_id)
    if bad:
        raise WorkersFailedError(f"{len(bad)} of {jobs} job(s) failed: {', '.join(bad)}; their logs are in {folder}, "
                                 f"and `reidkd bench --suite {suite_file} --status` shows each run")


def worker_job(suite_file: str, overrides: tuple[str, ...], overwrite: bool, claim_timeout: float,
               launch: str) -> str:
    """What a submitted job runs: the claim loop, named after its job id."""
    import submitit

    setup_logging()  # the job's lines on its stdout, as `reidkd bench` shows them
    worker = f"job{submitit.JobEnvironment().job_id}"
    records = run_suite(load_suite(suite_file), tuple(overrides), overwrite=overwrite, worker=worker,
                        claim_timeout=claim_timeout, launch=launch)
    return f"{worker}: done; {len(records)} run(s) of the suite complete"
