"""The models a comparison holds (`reidkd ranklists`): `[NAME=]PATH` arguments resolved to model files and
names, the config a run recorded, the teacher it distilled from, and the query selections offered. Light (no
torch): the command reads its config before the heavy imports."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reid_kd.engine.run_folder import SPEC, RunFolder
from reid_kd.errors import UserError

WEIGHTS = ("student.pt", "teacher.pt")  # what a run folder or a teacher cache holds
# what each selection shows, said on the page ({last}: the last model, {reference}: the one it is compared with)
SELECTIONS = {
    "fixed": "the queries where {last}'s AP most exceeds {reference}'s",
    "broken": "the queries where {last}'s AP falls furthest below {reference}'s",
    "worst": "{last}'s lowest APs",
    "best": "{last}'s highest APs",
    "random": "queries drawn at random (seed {seed})",
}
PAIRED = ("fixed", "broken")  # the selections that compare two models


@dataclass(frozen=True)
class Compared:
    name: str
    checkpoint: Path

    @property
    def run(self) -> Path | None:
        """The run folder the student came from (its config.yaml and metrics.json), None for another file."""
        folder = self.checkpoint.parent
        return folder if self.checkpoint.name == "student.pt" and (folder / SPEC).is_file() else None


def default_name(checkpoint: Path) -> str:
    """`teacher` for a teacher.pt; the run's name for `<experiment>/<run>/seed<k>/student.pt`; else the file's."""
    if checkpoint.name == "teacher.pt":
        return "teacher"
    if checkpoint.name == "student.pt" and re.fullmatch(r"seed\d+", checkpoint.parent.name):
        return checkpoint.parent.parent.name
    return checkpoint.parent.name if checkpoint.name == "student.pt" else checkpoint.stem


def compared(argument: str) -> Compared:
    """`[NAME=]PATH`: a run folder (its student.pt), a teacher's cache folder (its teacher.pt) or a model file."""
    name, given, path = argument.partition("=")
    if not given or "/" in name:  # no name, or a path holding '='
        name, path = "", argument
    path = Path(path)
    if path.is_dir():
        checkpoint = next((path / w for w in WEIGHTS if (path / w).is_file()), None)
        if checkpoint is None:
            raise UserError(f"{path} holds no {' or '.join(WEIGHTS)}; give a finished run's folder "
                            "(runs/<experiment>/<run>/seed<k>) or a model file")
    elif path.is_file():
        checkpoint = path
    else:
        raise UserError(f"model not found: {path}; give a run folder (runs/<experiment>/<run>/seed<k>), a teacher's "
                        "folder (runs/teachers/<key>) or a student.pt / teacher.pt")
    return Compared(name or default_name(checkpoint), checkpoint)


def teacher_of(run: Path) -> Compared:
    """The teacher a finished run distilled from, as its metrics.json records it (`teacher.source`: a cache
    folder under the run's output folder, or the `teacher.checkpoint` it was given)."""
    folder = RunFolder(run)
    record = folder.read_metrics() if folder.metrics.is_file() else {}
    source = (record.get("teacher") or {}).get("source") if isinstance(record, dict) else None
    if not source:
        raise UserError(f"{run} records no teacher (an unfinished run, or one trained before teachers were "
                        "recorded); give the teacher's folder (runs/teachers/<key>) instead of --teacher")
    cached = run.parents[2] / source  # <output_dir>/<experiment>/<run>/seed<k> -> <output_dir>/teachers/<key>
    return compared(f"teacher={cached if cached.exists() else source}")


def resolve(arguments: list[str], with_teacher: bool = False) -> list[Compared]:
    """The models in order (the run's teacher first `with_teacher`), each under a name of its own."""
    models = [compared(a) for a in arguments]
    if with_teacher:
        run = next((m.run for m in models if m.run is not None), None)
        if run is None:
            raise UserError("--teacher reads the teacher of a run, but no model given is a run folder's student.pt; "
                            "give the teacher's folder (runs/teachers/<key>) instead")
        models.insert(0, teacher_of(run))
    names = [m.name for m in models]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise UserError(f"two models are named {twice!r}; name them apart as NAME=PATH")
    return models


def recorded_config(models: list[Compared]) -> Path | None:
    """The config.yaml of the first run among the models: the resolved config its student was scored under."""
    return next((m.run / SPEC for m in models if m.run is not None), None)
