"""Folder locks and the synthetic data's locks, exercised by real separate processes."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from reid_kd.data import synth
from reid_kd.utils.lock import FolderLockedError, folder_lock

REPO = Path(__file__).resolve().parents[1]
SPEC = synth.SynthSpec(train_ids=4, test_ids=3, cameras=3, images_per_id=4, image_size=32)
OTHER = synth.SynthSpec(train_ids=5, test_ids=3, cameras=3, images_per_id=4, image_size=32)
SPEC_ARGS = "train_ids=4, test_ids=3, cameras=3, images_per_id=4, image_size=32"

HOLD_LOCK = """
import sys
from reid_kd.utils.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("ready", flush=True)
    sys.stdin.read()
"""
TRY_LOCK = """
import sys
from reid_kd.utils.lock import FolderLockedError, folder_lock
try:
    with folder_lock(sys.argv[1]):
        print("free")
except FolderLockedError as e:
    print("locked:", e)
"""


def _spawn(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _ready(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Wait for the child's "ready" line (it then holds its lock)."""
    if not select.select([proc.stdout], [], [], timeout)[0]:
        proc.kill()
        pytest.fail("child did not get ready in time")
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        pytest.fail(f"child failed: {line}{proc.stderr.read()}")


def _end(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out, err


def _run(code: str, *args) -> str:
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_second_process_is_refused_at_once_naming_the_holder(tmp_path):
    holder = _spawn(HOLD_LOCK, tmp_path / "run")
    try:
        _ready(holder)
        start = time.monotonic()
        with pytest.raises(FolderLockedError) as err:
            with folder_lock(tmp_path / "run"):
                pass
        assert time.monotonic() - start < 1.0
        message = str(err.value)
        assert "\n" not in message
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert str(tmp_path / "run") in message and "experiment.name" in message
        assert err.value.holder["pid"] == holder.pid and "-c" in err.value.holder["command"]
        assert _run(TRY_LOCK, tmp_path / "run").startswith(f"locked: {tmp_path / 'run'} is in use: pid {holder.pid}")
    finally:
        _end(holder)  # closes its stdin: it releases and exits
    assert _run(TRY_LOCK, tmp_path / "run").strip() == "free"  # released when the holder ends


def test_lock_of_a_killed_process_is_taken_over_and_reported(tmp_path):
    holder = _spawn(HOLD_LOCK, tmp_path / "run")
    _ready(holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdin.close()
    assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] == holder.pid  # its record is left
    with folder_lock(tmp_path / "run") as lock:
        assert lock.took_over is not None and lock.took_over["pid"] == holder.pid
        assert lock.took_over["host"] == socket.gethostname()
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert (tmp_path / "run" / ".lock").is_file()  # released, not deleted
    with folder_lock(tmp_path / "run") as lock:  # a clean release leaves nothing to take over
        assert lock.took_over is None


def test_nested_acquire_in_one_process_then_another_process_takes_it(tmp_path):
    with folder_lock(tmp_path / "run") as outer:
        with folder_lock(tmp_path / "run" / ".." / "run") as inner:
            assert inner.took_over is None and outer.took_over is None
        assert _run(TRY_LOCK, tmp_path / "run").startswith("locked:")  # the outer `with` still holds it
    assert _run(TRY_LOCK, tmp_path / "run").strip() == "free"


ENSURE_SLOWLY = f"""
import dataclasses, sys, time
from pathlib import Path
from reid_kd.data import synth
from reid_kd.utils.logs import setup_logging

setup_logging()  # the lines the command line would show: stdout, and the wait on stderr

def slow_render(*args):  # slow enough that the two processes overlap
    time.sleep(0.05)
    return synth.render(*args)

kind = dataclasses.replace(synth.VEHICLES, render=slow_render)
print("ready", flush=True)
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
synth.ensure(sys.argv[1], synth.SynthSpec({SPEC_ARGS}), kind=kind)
"""


def test_two_first_runs_generate_the_data_once(tmp_path):
    root, go = tmp_path / "data" / "synth_veri", tmp_path / "go"
    procs = [_spawn(ENSURE_SLOWLY, root, go) for _ in range(2)]
    for p in procs:
        _ready(p)
    go.touch()
    results = [_end(p) for p in procs]
    writers = [i for i, (out, _) in enumerate(results) if "synthetic VeRi written to" in out]
    assert len(writers) == 1, results
    assert "waiting for another process generating" in results[1 - writers[0]][1]
    assert json.loads((root / "synth_spec.json").read_text()) == asdict(SPEC)
    assert len(list((root / "image_train").glob("*.jpg"))) == SPEC.train_ids * SPEC.images_per_id
    assert len(list((root / "image_test").glob("*.jpg"))) == SPEC.test_ids * SPEC.images_per_id
    queries = (root / "name_query.txt").read_text().split()
    assert queries and sorted(queries) == sorted(p.name for p in (root / "image_query").glob("*.jpg"))
    assert sorted(p.name for p in root.parent.iterdir()) == ["synth_veri", "synth_veri.lock"]  # no partials


HOLD_DATA = f"""
import sys
from reid_kd.data import synth
synth.ensure(sys.argv[1], synth.SynthSpec({SPEC_ARGS}))
print("ready", flush=True)
sys.stdin.read()
"""


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.slow
def test_data_read_by_a_running_job_is_not_replaced(tmp_path):
    root = tmp_path / "synth_veri"
    job = _spawn(HOLD_DATA, root)
    try:
        _ready(job)
        before = _snapshot(root)
        with pytest.raises(synth.DataInUseError) as err:
            synth.generate(root, OTHER)
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{root} is in use by a running job")
        assert f"{root}.lock" in message and "--root DIR" in message
        cli = subprocess.run([sys.executable, "-m", "reid_kd.cli", "data", "synth", "--root", str(root),
                              "--set", "data.synth.train_ids=5", "--set", "data.synth.test_ids=3",
                              "--set", "data.synth.cameras=3", "--set", "data.synth.images_per_id=4",
                              "--set", "data.synth.image_size=32"],
                             cwd=REPO, text=True, capture_output=True, timeout=60)
        assert cli.returncode == 2, cli.stderr
        assert "Traceback" not in cli.stderr and cli.stderr.count("\n") == 1
        assert "is in use by a running job" in cli.stderr
        assert _snapshot(root) == before
        assert json.loads((root / "synth_spec.json").read_text()) == asdict(SPEC)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["synth_veri", "synth_veri.lock"]
    finally:
        _end(job)
    synth.generate(root, OTHER)  # the job has ended: nobody reads it any more
    assert json.loads((root / "synth_spec.json").read_text()) == asdict(OTHER)


def test_own_read_lock_allows_regenerating_and_is_kept(tmp_path):
    root = tmp_path / "synth_veri"
    synth.ensure(root, SPEC)
    synth.ensure(root, OTHER)  # this process reads it itself: it may replace it
    assert json.loads((root / "synth_spec.json").read_text()) == asdict(OTHER)
    out = _run(f"""
import sys
from reid_kd.data import synth
try:
    synth.generate(sys.argv[1], synth.SynthSpec({SPEC_ARGS}))
    print("replaced")
except synth.DataInUseError:
    print("refused")
""", root)
    assert out.strip() == "refused"  # this (test) process still holds its shared lock
