"""The package's console lines through `logging` (utils/logs.py): streams, ranks, the last line of a block."""
from __future__ import annotations

import logging

from reid_kd.utils.logs import EVERY_RANK, LastLine

logger = logging.getLogger("reid_kd.test")


def test_lines_go_to_the_current_stdout_and_warnings_to_stderr(console, capsys):
    logger.info("a line")
    logger.warning("a warning")
    captured = capsys.readouterr()
    assert captured.out == "a line\n" and captured.err == "a warning\n"


def test_under_torchrun_rank_0_alone_tells_what_every_rank_does(console, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    logger.info("every rank says this")
    logger.info("only this rank generated the data", extra=EVERY_RANK)
    logger.warning("waiting")
    captured = capsys.readouterr()
    assert captured.out == "only this rank generated the data\n" and captured.err == "waiting\n"
    monkeypatch.setenv("RANK", "0")
    logger.info("every rank says this")
    assert capsys.readouterr().out == "every rank says this\n"


def test_last_line_keeps_the_last_line_logged_in_its_block(logged):
    logger.info("before")
    with LastLine() as last:
        logger.info("first")
        logging.getLogger("reid_kd.engine.x").info("last")
    logger.info("after")
    assert last.line == "last" and logged() == ["before", "first", "last", "after"]
    assert not any(isinstance(h, LastLine) for h in logging.getLogger("reid_kd").handlers)
