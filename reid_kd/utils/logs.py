"""Console output of the package, through Python's `logging`: one logger per module (`reid_kd.<module>`).

Library code logs its lines (`logger.info`) and configures nothing; the command line calls `setup_logging()` once.
To see them from Python: `setup_logging()` (the command line's bare lines) or `logging.basicConfig(level=logging.INFO)`.
"""
from __future__ import annotations

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
