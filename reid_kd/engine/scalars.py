"""Optional TensorBoard scalars of a run, beside its `log.csv`.

`log.csv` is the record a run is judged by; TensorBoard is only for watching curves while runs train
(`tensorboard --logdir runs/`). It is an optional extra (`pip install reid-kd[tensorboard]`): without
the `tensorboard` package every call here does nothing, and nothing imports it until a value is written.
"""
from __future__ import annotations

import math
import time
from pathlib import Path


def _summary_writer_class():
    """`torch.utils.tensorboard.SummaryWriter`, or None when the `tensorboard` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when `tensorboard` is missing (or too old)
        return None
    return SummaryWriter


def tensorboard_available() -> bool:
    return _summary_writer_class() is not None


class ScalarLog:
    """Scalars of one run written as TensorBoard events into `folder`, or nothing without `tensorboard`.

    The writer (a file and a background thread) starts with the first value, so a log that gets no
    value leaves no file behind. `purge_step`: a run resumed after its last checkpointed epoch N passes
    N + 1, and TensorBoard then drops the events of steps >= N + 1 that the killed run had written
    after that checkpoint, so no step is shown twice. Close it (or use it as a context manager): that
    flushes the events and ends the writer thread.
    """

    def __init__(self, folder: str | Path, purge_step: int | None = None):
        self.folder, self.purge_step = Path(folder), purge_step
        self._writer = None
        self._closed = False

    @property
    def enabled(self) -> bool:
        return tensorboard_available()

    def _open(self):
        if self._writer is None and not self._closed:
            writer_class = _summary_writer_class()
            if writer_class is None:
                self._closed = True  # nothing to write to: every later call is a no-op
                return None
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.purge_step is not None:
                self._after_previous_files()
            self._writer = writer_class(str(self.folder), purge_step=self.purge_step)
        return self._writer

    def _after_previous_files(self) -> None:
        """Wait (under a second) until the clock is past the second of the folder's newest event file.

        TensorBoard reads a folder's event files in name order, whose leading key is the second a file
        was created; a resumed log's purge must come after the events it purges, also when it starts
        within the same second (as in tests), where the names' process ids would order them.
        """
        seconds = []
        for path in self.folder.glob("events.out.tfevents.*"):
            parts = path.name.split(".")
            if len(parts) > 3 and parts[3].isdigit():
                seconds.append(int(parts[3]))
        deadline = time.monotonic() + 1.1  # bounded: a file dated in the future (clock skew) is not waited for
        while seconds and int(time.time()) <= max(seconds) and time.monotonic() < deadline:
            time.sleep(0.05)

    def add(self, tag: str, value: float, step: int) -> None:
        writer = self._open()
        if writer is not None and value is not None:
            value = float(value)
            if not math.isnan(value):  # e.g. the accuracy of a model without a classifier
                writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._closed = True

    def __enter__(self) -> "ScalarLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
