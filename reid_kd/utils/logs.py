"""Console output of the package, through Python's `logging`: one logger per module (`reid_kd.<module>`).

Library code logs its lines (`logger.info`) and configures nothing; the command line calls `setup_logging()` once.
To see them from Python: `setup_logging()` (the command line's bare lines) or `logging.basicConfig(level=logging.INFO)`.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import sys

ROOT = "reid_kd"  # the package's logger: every module's logger is a child of it
# `logger.info(..., extra=EVERY_RANK)`: a line of this process's own event (e.g. the data it generated), which
# no other rank tells: shown from any rank under torchrun
EVERY_RANK = {"every_rank": True}


def main_rank() -> bool:
    """Rank 0 of a torchrun launch (RANK is set before the process group starts), or a process alone."""
    return int(os.environ.get("RANK", "0")) == 0


class ConsoleHandler(logging.Handler):
    """The bare message, to the current `sys.stdout` (warnings and errors: `sys.stderr`) at emit time, above
    any tqdm progress bar. Under torchrun, ranks other than 0 show only warnings, errors and lines logged with
    `extra=EVERY_RANK`: one line per event, from rank 0 where every rank has it."""

    def filter(self, record: logging.LogRecord) -> bool:
        shown = record.levelno >= logging.WARNING or main_rank() or getattr(record, "every_rank", False)
        return shown and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm  # not at import: the command line tells a config mistake before heavy imports

            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            tqdm.write(self.format(record), file=stream)
            stream.flush()  # a log file shows the line now, not at exit
        except Exception:
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Show the package's lines on the console at `level`; called again, it only changes the level."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger


QUIET_ERRORS = (errno.EPIPE, errno.ENOSPC)  # its reader is gone (`| head`), its device is full (`> /dev/full`)


class QuietStream:
    """A console stream (stdout, stderr) that goes quiet instead of failing once it cannot be written: its reader
    gone or its device full. A run's results are its files, and its console lines only tell of them, so a lost
    console never fails a run or prints `--- Logging error ---` blocks (a full disk for the files still does).
    Once lost, the stream's file descriptor is pointed at /dev/null, so what it still buffers, flushed at exit,
    fails nothing either."""

    def __init__(self, stream):
        self.stream, self.lost = stream, False

    def write(self, text):
        if not self.lost:
            try:
                return self.stream.write(text)
            except OSError as e:
                self._lose(e)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self.stream.flush()
            except OSError as e:
                self._lose(e)

    def _lose(self, error: OSError) -> None:
        if error.errno not in QUIET_ERRORS:
            raise error
        self.lost = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass  # not a file descriptor (a test's captured stream): nothing is flushed at exit

    def __getattr__(self, name):
        return getattr(self.stream, name)


def quiet_console() -> None:
    """Make `sys.stdout` and `sys.stderr` QuietStreams (the command line does, once per command)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, QuietStream):
            setattr(sys, name, QuietStream(stream))


class LastLine(logging.Handler):
    """`with LastLine() as last:` keeps the last line the package logged meanwhile in `last.line` (lines the
    `reid_kd` logger's level lets through: those shown on the console)."""

    def __init__(self):
        super().__init__()
        self.line = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.line = record.getMessage()

    def __enter__(self) -> LastLine:
        logging.getLogger(ROOT).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger(ROOT).removeHandler(self)
