"""Folder locks: one process at a time trains into a folder.

Why: two runs writing the same folder overwrite each other's checkpoints and metrics. A process
holds an flock(2) on `folder/.lock` for as long as it writes there; the kernel drops it when the
process dies, however it dies, so a killed run never blocks the next one. The file records the
holder (host, pid, since, command) so a refusal can say who holds it, and is emptied on a clean
release, so a record found on acquiring means the holder died holding it (`took_over`).
The file is never deleted: unlinking a file others may be about to flock lets two processes lock
two different files. Needs fcntl (Linux, macOS); where it is missing the lock is a no-op.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from reid_kd.errors import UserError
from reid_kd.utils import ranks
from reid_kd.utils.io import file_in_the_way, remove_stale_temporaries

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking
    fcntl = None
CAN_LOCK = fcntl is not None

LOCK_NAME = ".lock"  # dot-prefixed, and not `.*.tmp`: stale-temporary cleanup must never delete it
HOST = socket.gethostname()
logger = logging.getLogger(__name__)

_held: dict[Path, list[int]] = {}  # resolved lock file -> [pid, fd, depth]: reentrancy within a process
_mutex = threading.Lock()


class FolderLockedError(UserError, RuntimeError):
    """Another live process holds the folder's lock; the message says who and what to do, in one line."""

    def __init__(self, folder: Path, lock_file: Path, holder: dict):
        self.folder, self.lock_file, self.holder = folder, lock_file, holder
        super().__init__(_locked_message(folder, lock_file, holder))


class FolderBlockedError(UserError, NotADirectoryError):
    """A file stands where the folder to lock (a run's, a cache's) or a folder above it must be."""


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (one we may not signal runs too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(holder: dict) -> str:
    """'pid N on host H since T (command: C)' from a lock record."""
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"
    return text + (f" (command: {holder['command']})" if holder.get("command") else "")


def _locked_message(folder: Path, lock_file: Path, holder: dict) -> str:
    who = describe_holder(holder) if holder else "another process (it has not recorded itself yet)"
    message = (f"{folder} is in use: {who} holds {lock_file}; wait for it to finish, "
               "or use another experiment.name or experiment.output_dir")
    pid = holder.get("pid")
    if holder.get("host") not in (None, HOST):
        message += f"; if that process on {holder['host']} is gone, delete {lock_file}"
    elif isinstance(pid, int) and not pid_alive(pid):  # a child it started (e.g. a data worker) kept the lock
        message += f"; pid {pid} has exited but a process it started still holds the lock: end that process"
    return message


def _read(fd: int) -> dict:
    try:
        record = json.loads(os.pread(fd, 65536, 0) or b"{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


class FolderLock:
    """`with FolderLock(folder):` holds `folder/.lock` or raises FolderLockedError at once.

    Reentrant within a process (nested `with` on the same folder); `took_over` is the record of a
    holder that died holding the lock (killed, host crash), else None.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.took_over: dict | None = None
        self._key: Path | None = None

    def acquire(self) -> FolderLock:
        if fcntl is None or self._key is not None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except (NotADirectoryError, FileExistsError):
            blocker = file_in_the_way(self.folder)
            if blocker is None:
                raise
            raise FolderBlockedError(f"cannot make the folder {self.folder}: {blocker} is a file, not a folder; move "
                                     "that file away or set experiment.output_dir elsewhere") from None
        key = self.path.resolve()
        with _mutex:
            entry = _held.get(key)
            if entry and entry[0] == os.getpid():
                entry[2] += 1
                self._key = key
                return self
            fd = os.open(key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                self.took_over = self._lock(fd, key)
                if self.took_over:
                    logger.info(f"took over the stale lock of {describe_holder(self.took_over)} on {self.folder}")
                record = {"host": HOST, "pid": os.getpid(),
                          "since": datetime.now().astimezone().isoformat(timespec="seconds"),
                          "command": " ".join(sys.argv).replace("\n", " ")[:200]}
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            except BaseException:
                os.close(fd)  # closing drops the flock if we had it
                raise
            _held[key] = [os.getpid(), fd, 1]
            self._key = key
        return self

    def _lock(self, fd: int, key: Path) -> dict | None:
        for attempt in range(3):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read(fd)
                if holder or attempt == 2:
                    raise FolderLockedError(self.folder, key, holder) from None
                time.sleep(0.05)  # an empty record: the holder is between flock and writing it, or releasing
        previous = _read(fd)  # not emptied: its holder died holding the lock
        return previous if previous and (previous.get("host"), previous.get("pid")) != (HOST, os.getpid()) else None

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        with _mutex:
            entry = _held.get(key)
            if not entry or entry[0] != os.getpid():
                return
            entry[2] -= 1
            if entry[2] == 0:
                del _held[key]
                fd = entry[1]
                try:
                    os.ftruncate(fd, 0)  # a clean release: the next holder takes over nothing
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def folder_lock(folder: str | Path) -> FolderLock:
    """The lock of `folder` (use as `with folder_lock(out) as lock:`); a dead holder taken over is logged."""
    return FolderLock(folder)


@contextmanager
def main_lock(folder: str | Path) -> Iterator[None]:
    """The folder's lock, taken by rank 0 alone under data-parallel training (it alone writes there);
    once held, the temporary files a killed writer left in the folder are removed."""
    if not ranks.is_main():
        yield
        return
    with folder_lock(folder):
        for p in remove_stale_temporaries(folder):
            logger.info(f"removed the stale temporary file {p}")
        yield


# Data locks: a dataset folder generated on first use is read by every job that ensured it, for that
# job's whole life (a shared flock), and replaced only while no other process reads it (exclusive,
# taken without waiting). The lock file sits beside the folder, so it outlives the folder's replacement.
DATA_MUTEX = threading.RLock()  # flock does not exclude the threads of one process
_readers: dict[Path, tuple[int, int]] = {}  # resolved lock file -> (pid, fd) of this process's shared lock


def data_lock_file(root: Path) -> Path:
    """`<root>.lock` beside the folder."""
    return root.with_name(root.name + ".lock")


class DataLock:
    """The data lock of `root`, through this process's open file if it already reads the folder
    (`reading`); call under DATA_MUTEX."""

    def __init__(self, root: Path):
        root.parent.mkdir(parents=True, exist_ok=True)
        self.key = data_lock_file(root).resolve()
        entry = _readers.get(self.key)
        self.reading = bool(entry) and entry[0] == os.getpid()
        self.fd = entry[1] if self.reading else os.open(self.key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def keep(self) -> None:
        """Hold this file for the rest of the process: it reads the folder."""
        _readers[self.key] = (os.getpid(), self.fd)

    def share(self, waiting: str | None = None) -> None:
        """Shared lock; while another process writes, log `waiting` as a warning (stderr) and wait."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                logger.warning(waiting)
            fcntl.flock(self.fd, fcntl.LOCK_SH)

    def try_exclusive(self) -> bool:
        """Exclusive lock, non-blocking. Converting drops this process's own shared lock first, so only
        other processes' locks refuse it (and after a refusal this process holds nothing)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        """Drop the lock and the file (and this process's claim to read the folder)."""
        if _readers.get(self.key) == (os.getpid(), self.fd):
            del _readers[self.key]
        os.close(self.fd)
