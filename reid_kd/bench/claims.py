"""Claim files: several `reidkd bench` workers (one host or many sharing the runs folder) split a suite's
runs so that none trains twice.

Why files and not locks: flock does not reliably span hosts, but O_CREAT|O_EXCL creation is atomic on
local disks and NFS v3+, so exactly one worker creates `<run folder>/.claim`. The claim holds JSON
(worker, host, pid, since, token, launch) and its mtime is a heartbeat, refreshed by a daemon thread
while the worker holds it. A claim is stale when its heartbeat is older than the timeout, or when its
holder is a process of this host that has exited. A stale claim is taken over race-free: the one worker
that creates its takeover mark (`.claim.<token>.takeover`, O_EXCL) removes it if it is still that stale
claim, and then claims like anyone else.
A run that fails leaves `<run folder>/failure.json` (error, last log line, who, when) for `--status`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

from reid_kd.engine.run_folder import CLAIM, FAILURE
from reid_kd.utils.io import write_json
from reid_kd.utils.lock import HOST, pid_alive

logger = logging.getLogger(__name__)

CLAIM_TIMEOUT = 600.0  # seconds without a heartbeat after which a claim is stale
UNREADABLE = "unreadable"  # the record of a claim file that holds no JSON object (garbage, a crashed writer)
UNREADABLE_GRACE = 5.0  # seconds an unreadable claim may be one still being written before it counts as stale


def _read(path: Path) -> dict | None:
    """A JSON record; {} while its creator is still writing it (empty), None when there is no file, and
    {UNREADABLE: True} when it holds something else than a JSON object."""
    try:
        text = Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not text:
        return {}
    try:
        record = json.loads(text)
    except ValueError:
        return {UNREADABLE: True}
    return record if isinstance(record, dict) else {UNREADABLE: True}


def read_claim(folder: Path) -> dict | None:
    """The claim record of a run folder ({} while being written), None when unclaimed."""
    return _read(Path(folder) / CLAIM)


def heartbeat_age(folder: Path) -> float | None:
    """Seconds since the claim's last heartbeat (its mtime), None when unclaimed."""
    try:
        return max(0.0, time.time() - (Path(folder) / CLAIM).stat().st_mtime)
    except FileNotFoundError:
        return None


def is_stale(record: dict, age: float, timeout: float) -> bool:
    """No heartbeat for `timeout` seconds, or its holder was a process of this host that has exited."""
    if age > timeout or (record.get(UNREADABLE) and age > UNREADABLE_GRACE):
        return True
    pid = record.get("pid")
    return record.get("host") == HOST and isinstance(pid, int) and not pid_alive(pid)


def read_failure(folder: Path) -> dict | None:
    """The failure record of a run folder, None when its last attempt did not fail."""
    return _read(Path(folder) / FAILURE) or None


class Claims:
    """The claims one worker holds, their heartbeats kept fresh by a daemon thread while it trains."""

    def __init__(self, worker: str, timeout: float = CLAIM_TIMEOUT, launch: str = ""):
        self.worker, self.timeout, self.launch = worker, float(timeout), launch
        self.held: dict[Path, str] = {}  # claim file -> token
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)
        self._thread.start()

    def claim(self, folder: Path) -> bool:
        """Claim a run folder: True if this worker now holds it (a stale claim is taken over)."""
        path = Path(folder) / CLAIM
        path.parent.mkdir(parents=True, exist_ok=True)
        if self._create(path):
            return True
        record = self._stale(folder)
        if record is None:
            return self._create(path) if read_claim(folder) is None else False  # released since, or held
        # One taker per stale claim: the one that creates its takeover mark. It removes the claim only if
        # it is still that stale claim, then creates its own like any claimer (O_EXCL settles the rest).
        mark = path.with_name(f"{CLAIM}.{record.get('token', '')}.takeover")
        try:
            os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - mark.stat().st_mtime > self.timeout:  # a taker died mid-takeover
                    mark.unlink(missing_ok=True)
            return False
        try:
            now = self._stale(folder)
            if now is None or now.get("token") != record.get("token"):
                return False  # taken over by another worker since we looked
            path.unlink(missing_ok=True)
        finally:
            mark.unlink(missing_ok=True)
        who = f"worker {record.get('worker', '?')} (pid {record.get('pid', '?')} on {record.get('host', '?')})"
        if record.get(UNREADABLE):
            logger.warning(f"took over the unreadable claim {path} (not a claim reid-kd wrote)")
        else:
            logger.info(f"took over the stale claim of {who} on {folder}")
        return self._create(path)

    def _stale(self, folder: Path) -> dict | None:
        """The claim record of `folder` if it is stale, else None."""
        record, age = read_claim(folder), heartbeat_age(folder)
        return record if record is not None and age is not None and is_stale(record, age, self.timeout) else None

    def _create(self, path: Path) -> bool:
        token = uuid.uuid4().hex
        record = {"worker": self.worker, "host": HOST, "pid": os.getpid(), "launch": self.launch, "token": token,
                  "since": datetime.now().astimezone().isoformat(timespec="seconds")}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with self._mutex:
            self.held[path] = token
        return True

    def release(self, folder: Path) -> None:
        """Remove this worker's claim on a run folder (never another worker's)."""
        path = Path(folder) / CLAIM
        with self._mutex:
            token = self.held.pop(path, None)
        if token is not None and (_read(path) or {}).get("token") == token:
            path.unlink(missing_ok=True)

    def fail(self, folder: Path, error: BaseException, last_line: str) -> None:
        """Record a run's failure for `--status` (kept until the run completes)."""
        write_json({"error": " ".join(f"{type(error).__name__}: {error}".split())[:500], "last_log_line": last_line[:500],
                    "worker": self.worker, "host": HOST, "pid": os.getpid(), "launch": self.launch,
                    "time": datetime.now().astimezone().isoformat(timespec="seconds")}, Path(folder) / FAILURE)

    def _beat(self) -> None:
        interval = min(30.0, self.timeout / 4)
        while not self._stop.wait(interval):
            with self._mutex:
                paths = list(self.held)
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)

    def close(self) -> None:
        """Release every claim still held and stop the heartbeat."""
        for path in list(self.held):
            self.release(path.parent)
        self._stop.set()
