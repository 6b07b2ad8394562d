"""Several `reidkd bench` workers on one suite: atomic claims, stale takeover, failures, status, launchers."""
import csv
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import reidkd_process

from reid_kd.bench.claims import Claims, read_claim, read_failure
from reid_kd.bench.suite import RunsFailedError, run_suite
from reid_kd.bench.suite_file import load_suite
from reid_kd.config import config_hash
from reid_kd.engine.run_folder import CLAIM
from reid_kd.utils.lock import HOST

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def write_suite(path: Path, name: str, out: Path, tiny_overrides, seeds, methods, epochs: int) -> Path:
    overrides = [o for o in tiny_overrides if not o.startswith("experiment.output_dir=")]
    suite = {"name": name, "base": QUICKSTART, "seeds": seeds, "methods": methods,
             "set": [*overrides, f"experiment.output_dir={out}", f"train.epochs={epochs}", "experiment.threads=1"]}
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


BASELINE_KD = [{"name": "baseline", "method": "none"}, {"name": "kd", "method": "kd"}]


def _race(folder, barrier, results, i):
    claims = Claims(f"racer{i}", timeout=60)
    barrier.wait()
    results[i] = claims.claim(folder)
    barrier.wait()  # hold the claim until every racer has tried


@pytest.mark.parametrize("stale", [False, True])
def test_claim_race_has_one_winner(tmp_path, stale):
    """Eight processes claim one run folder at once (free, or held by a dead worker): exactly one wins."""
    if stale:
        (tmp_path / CLAIM).write_text(json.dumps({"worker": "gone", "host": "elsewhere", "pid": 1, "token": "t"}))
        os.utime(tmp_path / CLAIM, (time.time() - 3600,) * 2)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Array("b", [0] * 8)
    procs = [ctx.Process(target=_race, args=(tmp_path, barrier, results, i)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(results) == 1, list(results)
    assert not list(tmp_path.glob(f"{CLAIM}.*")), "a takeover mark was left behind"


def test_stale_claims_are_taken_over_and_fresh_ones_are_not(tmp_path, logged):
    fresh, old, dead = (tmp_path / n for n in ("fresh", "old", "dead"))
    for folder, host, pid in ((fresh, "elsewhere", 1), (old, "elsewhere", 1), (dead, HOST, 2 ** 22 + 7)):
        folder.mkdir()
        (folder / CLAIM).write_text(json.dumps({"worker": "other", "host": host, "pid": pid, "token": "x"}))
    os.utime(old / CLAIM, (time.time() - 120,) * 2)  # older than the timeout below
    claims = Claims("me", timeout=60)
    try:
        assert not claims.claim(fresh)  # live heartbeat on another host
        assert read_claim(fresh)["worker"] == "other"
        assert claims.claim(old)  # no heartbeat for 120 s > 60 s
        assert claims.claim(dead)  # its process on this host has exited: no need to wait for the timeout
        assert read_claim(old)["worker"] == read_claim(dead)["worker"] == "me"
        assert any("stale claim of worker other" in line for line in logged())
        assert not Claims("rival", timeout=60).claim(old)  # now held, with a fresh heartbeat
        claims.release(fresh)  # never removes another worker's claim
        assert read_claim(fresh)["worker"] == "other"
    finally:
        claims.close()
    assert read_claim(old) is None and read_claim(dead) is None


def test_heartbeat_keeps_a_claim_fresh(tmp_path):
    claims = Claims("me", timeout=0.4)  # beats every 0.1 s
    try:
        assert claims.claim(tmp_path)
        os.utime(tmp_path / CLAIM, (time.time() - 100,) * 2)
        time.sleep(0.5)
        assert time.time() - (tmp_path / CLAIM).stat().st_mtime < 0.4
    finally:
        claims.close()


def _check_complete(out: Path, name: str, seeds, entries, epochs: int) -> None:
    """Every run finished once: its metrics of its config, each epoch logged once, nothing half-written."""
    assert not list(out.rglob("*.tmp")), "a temporary file of an atomic write was left behind"
    assert not list(out.rglob(f"{CLAIM}*")), "a claim was left behind"
    for entry in entries:
        for seed in seeds:
            folder = out / name / entry["name"] / f"seed{seed}"
            record = json.loads((folder / "metrics.json").read_text())
            assert record["config_hash"] == config_hash(yaml.safe_load((folder / "config.yaml").read_text()))
            with (folder / "log.csv").open() as f:
                assert [r["epoch"] for r in csv.DictReader(f)] == [str(e) for e in range(1, epochs + 1)]


@pytest.mark.slow
def test_two_processes_share_a_suite_and_train_each_run_once(tmp_path, tiny_overrides, one_thread):
    """Two `reidkd bench` started together on one suite (2 seeds x 2 entries) split it: 20 epochs a run, so that
    both are at work at once."""
    out, epochs, seeds = tmp_path / "runs", 20, [0, 1]
    warm = write_suite(tmp_path / "warm.yaml", "warm", out, tiny_overrides, [0], BASELINE_KD[:1], 1)
    run_suite(load_suite(warm))  # the shared teacher, cached before both start
    pair = write_suite(tmp_path / "pair.yaml", "pair", out, tiny_overrides, seeds, BASELINE_KD, epochs)
    command = [sys.executable, "-m", "reid_kd.cli", "bench", "--suite", str(pair)]
    procs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    _check_complete(out, "pair", seeds, BASELINE_KD, epochs)
    both = "".join(outputs)
    for entry in BASELINE_KD:
        for seed in seeds:
            assert both.count(f"{entry['name']} seed{seed}: training") == 1, both
            assert both.count(f"{entry['name']} seed{seed}: mAP") == 1
    assert all("training 2 run(s) side by side" in o for o in outputs), "each process trains one whole seed"
    assert "teacher: reusing" in both and "teacher: training" not in both


def test_a_failing_run_is_recorded_and_the_others_train(tmp_path, tiny_overrides, monkeypatch, one_thread,
                                                         logged):
    """kd fails: its cohort is retried run by run, baseline completes, kd has failure.json, and --status says so
    beside runs pending, running elsewhere and stale."""
    import reid_kd.bench.suite as engine_run  # the suite binds train_students at import: patch its name

    out = tmp_path / "runs"
    suite_file = write_suite(tmp_path / "s.yaml", "s", out, tiny_overrides, [0, 1, 2], BASELINE_KD, 1)
    suite = load_suite(suite_file)
    real = engine_run.train_students

    def failing(cfgs, *args, **kwargs):
        if any(cfg["distill"]["method"] == "kd" for cfg in cfgs):
            logging.getLogger("reid_kd.engine.run").info("kd epoch 1/1 about to explode")
            raise RuntimeError("loss is NaN")
        return real(cfgs, *args, **kwargs)

    monkeypatch.setattr(engine_run, "train_students", failing)
    busy = {"worker": "w9", "host": "elsewhere", "pid": 4242, "token": "b"}  # another host's worker
    for entry in ("baseline", "kd"):
        for seed in (1, 2):
            (out / "s" / entry / f"seed{seed}").mkdir(parents=True)
            (out / "s" / entry / f"seed{seed}" / CLAIM).write_text(json.dumps(busy))
    with pytest.raises(RunsFailedError, match=r"1 run\(s\) of suite 's' failed: kd/seed0"):
        run_suite(suite, launch="L1")
    text = "\n".join(logged())
    assert "2 runs side by side failed (RuntimeError: loss is NaN); retrying them one at a time" in text
    assert "baseline seed0: mAP" in text and "kd seed0: FAILED: RuntimeError: loss is NaN" in text
    assert "baseline seed1: left to worker w9 (pid 4242 on elsewhere)" in text
    failure = read_failure(out / "s" / "kd" / "seed0")
    assert failure["error"] == "RuntimeError: loss is NaN" and failure["launch"] == "L1"
    assert failure["last_log_line"] == "kd epoch 1/1 about to explode"
    assert read_claim(out / "s" / "kd" / "seed0") is None  # released
    os.utime(out / "s" / "baseline" / "seed1" / CLAIM, (time.time() - 900,) * 2)  # its worker went silent
    (out / "s" / "kd" / "seed1" / CLAIM).unlink()
    result = reidkd_process("bench", "--suite", str(suite_file), "--status")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in result.stdout.splitlines() if line.startswith("| ")}
    mAP = json.loads((out / "s" / "baseline" / "seed0" / "metrics.json").read_text())["mAP"]
    assert rows["baseline/seed0"] == ["done", f"mAP {100 * mAP:.2f}"]
    assert rows["kd/seed0"][0] == "failed"
    assert "RuntimeError: loss is NaN" in rows["kd/seed0"][1] and "about to explode" in rows["kd/seed0"][1]
    assert rows["baseline/seed1"][0] == "stale" and "worker w9, pid 4242 on elsewhere" in rows["baseline/seed1"][1]
    assert rows["kd/seed1"] == ["pending", ""]
    assert rows["baseline/seed2"][0] == "running" and "heartbeat" in rows["baseline/seed2"][1]
    assert "1 done, 2 running, 1 stale, 1 failed, 1 pending" in result.stdout
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_launcher_runs_a_suite_through_submitit_local_executor(tmp_path, tiny_overrides):
    pytest.importorskip("submitit")
    out = tmp_path / "runs"
    suite_file = write_suite(tmp_path / "s.yaml", "s", out, tiny_overrides, [0, 1], BASELINE_KD[:1], 1)
    result = reidkd_process("bench", "--suite", str(suite_file), "--launcher", "local", "--jobs", "2", "--gpus-per-job", "0",
                    "--time", "10")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "submitted 2 local job(s)" in result.stdout and result.stdout.count("] job") == 2
    _check_complete(out, "s", [0, 1], BASELINE_KD[:1], 1)
    logs = "".join(p.read_text() for p in (out / "s" / "jobs").rglob("*_log.out"))
    for seed in (0, 1):
        assert logs.count(f"baseline seed{seed}: training") == 1, logs[-3000:]


@pytest.mark.slow
def test_workers_option_runs_worker_processes_and_prefixes_their_lines(tmp_path, tiny_overrides):
    out = tmp_path / "runs"
    suite_file = write_suite(tmp_path / "s.yaml", "s", out, tiny_overrides, [0, 1], BASELINE_KD[:1], 1)
    result = reidkd_process("bench", "--suite", str(suite_file), "--workers", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _check_complete(out, "s", [0, 1], BASELINE_KD[:1], 1)
    for seed in (0, 1):
        trained = [line for line in result.stdout.splitlines() if f"baseline seed{seed}: training" in line]
        assert len(trained) == 1 and trained[0].startswith(("[w0] ", "[w1] "))
    again = reidkd_process("bench", "--suite", str(suite_file), "--status")
    assert "2 done, 0 running, 0 stale, 0 failed, 0 pending" in again.stdout


def test_launcher_options_and_a_missing_submitit_are_one_line_errors(tmp_path, tiny_overrides, monkeypatch):
    from click.testing import CliRunner

    from reid_kd.bench.launch import submit_jobs
    from reid_kd.cli import main
    from reid_kd.errors import UserError

    suite_file = write_suite(tmp_path / "s.yaml", "s", tmp_path / "runs", tiny_overrides, [0], BASELINE_KD[:1], 1)
    both = CliRunner().invoke(main, ["bench", "--suite", str(suite_file), "--workers", "2", "--launcher", "slurm"])
    assert both.exit_code == 2 and "--workers N" in both.output and "not both" in both.output
    stray = CliRunner().invoke(main, ["bench", "--suite", str(suite_file), "--jobs", "3"])
    assert stray.exit_code == 2 and "go with --launcher" in stray.output
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install -e '\.\[slurm\]'"):
        submit_jobs(str(suite_file), (), 1)
