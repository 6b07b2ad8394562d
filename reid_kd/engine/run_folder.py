"""One folder a network is trained into: a run, a cached teacher or a pretrained backbone.

Everything about such a folder is here and nowhere else: its file names, the spec it was made under
(`config.yaml`: a run's resolved config, a cache's shaping spec; its hash names what the folder holds),
its state (done / resume / new / another spec's), its lock and claim files, and `finish(record)`, which
writes metrics.json last: its presence marks a finished network. Light on imports (no torch): the
leaderboard and `--status` read run folders without loading the training stack.
"""
from __future__ import annotations

import itertools
import os
import shutil
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import yaml

from reid_kd.config import config_hash, dump_config
from reid_kd.errors import UserError
from reid_kd.utils import ranks
from reid_kd.utils.io import DamagedFileError, read_json, write_json, write_text
from reid_kd.utils.lock import main_lock

SPEC = "config.yaml"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"
CLAIM = ".claim"  # a bench worker's claim (bench/claims.py); not `.*.tmp`: stale-temporary cleanup keeps it
FAILURE = "failure.json"  # the last failed attempt (bench/claims.py), kept until the run completes
INT8 = "int8.json"  # a suite's `deploy.int8`: the student quantized and scored (deploy/quantize.py), beside its metrics
FOLDERS = ("tensorboard", "ranked_lists")


class RunFolderError(UserError):
    """The folder holds another spec's files, cannot be written, or lacks room."""


class RunFolder:
    """`path` holding one network: `weights` names its weights file (student.pt, teacher.pt, backbone.pt).

    A finished run keeps its checkpoint.pt (its distiller's state, e.g. GIRD's memory, stays there to
    inspect); a cache (`keep_checkpoint=False`) drops it once finished: only its weights are reused.
    """

    def __init__(self, path: str | Path, weights: str = "student.pt", keep_checkpoint: bool = True):
        self.path, self.weights_name, self.keep_checkpoint = Path(path), weights, keep_checkpoint

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @property
    def spec_file(self) -> Path:
        return self.path / SPEC

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def weights(self) -> Path:
        return self.path / self.weights_name

    @property
    def int8(self) -> Path:
        return self.path / INT8

    @property
    def claim_file(self) -> Path:
        return self.path / CLAIM

    @property
    def failure_file(self) -> Path:
        return self.path / FAILURE

    def recorded_hash(self) -> str | None:
        """The spec hash of what the folder holds (metrics.json's `config_hash`, else config.yaml's), None if
        empty, "unknown" for files that record none. A damaged record is named with the one fix that works
        (DamagedFileError), never taken for another spec's."""
        if self.metrics.is_file():
            try:
                record = read_json(self.metrics)
            except DamagedFileError as e:
                again = ("is evaluated anew from its checkpoint.pt" if self.checkpoint.is_file() else
                         "is trained anew")
                raise DamagedFileError(self.metrics, f"{e.problem}: it is damaged",
                                       f"delete it and run again: the network {again}") from None
            return (record.get("config_hash") if isinstance(record, dict) else None) or self._spec_hash() or "unknown"
        if self.spec_file.is_file():
            return self._spec_hash()
        return "unknown" if self.checkpoint.is_file() else None

    def _spec_hash(self) -> str | None:
        if not self.spec_file.is_file():
            return None
        try:
            return config_hash(yaml.safe_load(self.spec_file.read_text()))
        except (yaml.YAMLError, UnicodeDecodeError):
            also = f" and {CHECKPOINT} (whose spec it recorded)" if self.checkpoint.is_file() else ""
            raise DamagedFileError(self.spec_file, "is not readable YAML", f"delete it{also} and run again: the "
                                   "network is trained anew") from None

    def damage(self) -> str | None:
        """Why the folder's records cannot say what it holds (a metrics.json or config.yaml that cannot be read,
        or a network with no spec recorded: a missing config.yaml), None when they can or there are none."""
        try:
            held = self.recorded_hash()
        except DamagedFileError as e:
            return f"{e.path.name} {e.problem}"
        return f"its network's spec is not recorded (no {SPEC})" if held == "unknown" else None

    def move_aside(self) -> Path:
        """Move the network's files (records, weights, checkpoint, log) into a new `damaged-<time>/` inside the
        folder, so that it trains anew while the damaged files stay there to look at; returns that folder."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for i in itertools.count():
            aside = self.path / (f"damaged-{stamp}" + (f"-{i}" if i else ""))
            try:
                aside.mkdir()
                break
            except FileExistsError:
                continue
        for name in (METRICS, INT8, self.weights_name, CHECKPOINT, LOG, SPEC, *FOLDERS):
            if (self.path / name).exists():
                os.replace(self.path / name, aside / name)
        return aside

    def state(self, spec_hash: str) -> str:
        """'done' (metrics.json of this very spec), 'resume' (a checkpoint to continue), 'new' (nothing of
        it yet) or 'other' (files of another spec)."""
        held = self.recorded_hash()
        if held not in (None, spec_hash):
            return "other"
        if self.metrics.is_file():
            return "done"
        return "resume" if self.checkpoint.is_file() else "new"

    def read_metrics(self) -> dict:
        return read_json(self.metrics)

    def claim(self, spec_hash: str, overwrite: bool) -> bool:
        """Make the folder this spec's: True if it held another spec's files, which `overwrite` removes.

        Without `overwrite` such a folder stops the run, so a finished result is never replaced silently
        and a folder never mixes one spec's config.yaml with another's metrics.
        """
        try:
            state = self.state(spec_hash)
        except DamagedFileError:  # its records cannot be read: --overwrite replaces it like another spec's
            if not overwrite:
                raise
            state = "other"
        if state != "other":
            return False
        if not overwrite:
            what = "a finished run" if self.metrics.is_file() else "an unfinished run"
            raise RunFolderError(f"{self.path} holds {what} of another config (hash {self.recorded_hash()}, this one "
                                 f"is {spec_hash}); pass --overwrite to replace it, or set experiment.name or "
                                 "experiment.run_name to keep both")
        for name in (METRICS, INT8, self.weights_name, CHECKPOINT, LOG, SPEC):
            (self.path / name).unlink(missing_ok=True)
        for name in FOLDERS:
            shutil.rmtree(self.path / name, ignore_errors=True)
        return True

    def lock(self) -> AbstractContextManager:
        """The folder's lock (rank 0 alone takes it): one process at a time trains into it."""
        return main_lock(self.path)

    def record_spec(self, spec: dict[str, Any]) -> None:
        """Write what the folder's network is made under (rank 0 alone), before it trains."""
        if ranks.is_main():
            write_text(dump_config(spec), self.spec_file)

    def finish(self, record: dict) -> None:
        """Write metrics.json (rank 0 alone), last: its presence marks the network finished."""
        if ranks.is_main():
            write_json(record, self.metrics)
            if not self.keep_checkpoint:
                self.checkpoint.unlink(missing_ok=True)
