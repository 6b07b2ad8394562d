"""A suite file: what it may hold (a schema, validated by `reid_kd.schema` like a config, so every mistake is
one line naming the key), and the `Suite` it reads as. No torch: the leaderboard uses its record names too.

A suite file (see configs/suites/) holds:

    name: synth_cpu                  # runs go to <output_dir>/<name>/<entry>/seed<k>/
    base: ../quickstart.yaml         # the config every run starts from (relative to the suite file)
    set: [train.epochs=10]           # overrides applied to every run
    seeds: [0, 1, 2]                 # one student run per entry and seed
    teacher_seed: 0                  # the one teacher shared by every run (default 0)
    report: last                     # the epoch reported: the last one (no selection on the test set)
    methods:
      - {name: baseline, method: none}
      - {name: gird, method: gird}
      - {name: gird_no_memory, method: gird, set: [distill.gird.use_memory=false], ablation_of: gird}
      - {name: baseline_2x, method: none, set: [train.epochs=20], longer_of: baseline}  # converged yet?
    deploy:                          # optional: what each finished student costs deployed
      int8: true                     # quantize it (ONNX Runtime, static INT8; deploy/quantize.py): INT8 columns
      calibration_images: 256        # its calibration sample of the train split (seeded)

A run's config is `load_config(base, suite set + entry set + experiment.name/run_name/seed +
teacher.seed + distill.method)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reid_kd.config import parse_yaml
from reid_kd.deploy import CALIBRATION_IMAGES
from reid_kd.distill.catalog import DISTILLERS
from reid_kd.engine.configs import load_config
from reid_kd.engine.paths import NOT_SHAPING
from reid_kd.errors import ConfigError
from reid_kd.schema import Choice, Folder, Num, Overrides, Typed, validate

ENTRY_SCHEMA = {"name": Folder(), "method": Typed(str, optional=False, required=True), "set": Overrides(),
                "ablation_of": Typed(str, optional=False), "longer_of": Typed(str, optional=False)}
SUITE_SCHEMA = {"name": Folder(), "base": Typed(str, optional=False, required=True), "set": Overrides(),
                "seeds": Typed(list, optional=False, required=True, item=int, low=0),
                "teacher_seed": Num(0, 0),
                "report": Choice("last", why="the model after the final epoch: no epoch is chosen on the test set"),
                "methods": Typed(list, optional=False, required=True, item=ENTRY_SCHEMA),
                "description": Typed(str, "", optional=False),
                # after training: each student quantized to INT8 and scored (int8.json beside its metrics.json)
                "deploy": {"int8": False, "calibration_images": Num(CALIBRATION_IMAGES, 1)}}
FOLDER_KEYS = ("experiment", "experiment.output_dir")  # an entry's `set` may not move its run folder
RESERVED_NAMES = ("teachers", "summary")  # <output_dir>/teachers/: the teacher cache; summary.md: the matrix's
EXPECTED_RUNS = "expected_runs.json"  # beside suite.yaml: the runs the suite asked for, by config hash


@dataclass(frozen=True)
class Entry:
    name: str
    method: str
    set: tuple[str, ...] = ()
    ablation_of: str | None = None
    longer_of: str | None = None  # the same run trained longer: shows how far the schedule is from converged


@dataclass(frozen=True)
class Suite:
    name: str
    base: Path
    set: tuple[str, ...]
    seeds: tuple[int, ...]
    teacher_seed: int
    report: str
    entries: tuple[Entry, ...]
    description: str = ""
    base_as_written: str = ""  # `base` as the suite file gives it (recorded, so records stay machine-neutral)
    int8: bool = False  # `deploy.int8`: quantize each finished student, score it (the leaderboard's INT8 columns)
    calibration_images: int = CALIBRATION_IMAGES

    def as_dict(self) -> dict[str, Any]:
        """The resolved suite, as recorded in runs/<suite>/suite.yaml."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out |= {"base": self.base_as_written or str(self.base), "set": list(self.set), "seeds": list(self.seeds),
                "teacher_seed": self.teacher_seed, "report": self.report, "methods": []}
        for e in self.entries:
            item: dict[str, Any] = {"name": e.name, "method": e.method}
            if e.set:
                item["set"] = list(e.set)
            if e.ablation_of:
                item["ablation_of"] = e.ablation_of
            if e.longer_of:
                item["longer_of"] = e.longer_of
            out["methods"].append(item)
        if self.int8:  # recorded only when on: the records of suites without it stay as they were
            out["deploy"] = {"int8": True, "calibration_images": self.calibration_images}
        return out

    def run_config(self, entry: Entry, seed: int, extra: tuple[str, ...] = ()) -> dict:
        """The resolved config of one run."""
        overrides = [*self.set, *extra, *entry.set, f"experiment.name={self.name}",
                     f"experiment.run_name={entry.name}", f"experiment.seed={seed}",
                     f"teacher.seed={self.teacher_seed}", f"distill.method={entry.method}"]
        try:
            return load_config(self.base, overrides)
        except ConfigError as e:
            raise ConfigError(f"suite {self.name!r}, method {entry.name!r}: {e}") from None

    def runs(self, extra: tuple[str, ...] = ()) -> list[tuple[Entry, int, dict]]:
        """Every (entry, seed, config), seeds outermost, validated before any work starts."""
        return [(e, s, self.run_config(e, s, extra)) for s in self.seeds for e in self.entries]


def parse_suite(data: Any, source: str = "suite", base_dir: Path | None = None) -> Suite:
    """Validate a suite mapping strictly; errors are one line naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a suite file must hold a mapping at the top level")
    try:
        suite = validate(data, SUITE_SCHEMA, noun="suite")
        _check_values(suite)
        entries = tuple(Entry(e["name"], e["method"], tuple(e["set"]), e["ablation_of"], e["longer_of"])
                        for e in suite["methods"])
        _check_entries(entries)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    base = Path(suite["base"])
    if not base.is_absolute() and base_dir is not None:
        base = base_dir / base
    if not base.is_file():
        raise ConfigError(f"{source}: key 'base': config file not found: {base}")
    return Suite(suite["name"], base.resolve(), tuple(suite["set"]), tuple(suite["seeds"]), suite["teacher_seed"],
                 suite["report"], entries, suite["description"], suite["base"], suite["deploy"]["int8"],
                 suite["deploy"]["calibration_images"])


def _check_values(suite: dict) -> None:
    """What the schema's types do not say: a name that is not the teacher cache's, seeds and methods listed once,
    entries whose overrides keep their run folder inside the suite."""
    if suite["name"] in RESERVED_NAMES:
        raise ConfigError(f"key 'name' must be a folder name other than {', '.join(RESERVED_NAMES)}, "
                          f"got {suite['name']!r}")
    seeds = suite["seeds"]
    if not seeds:
        raise ConfigError("key 'seeds' expects a non-empty list of non-negative integers, got []")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"key 'seeds' lists a seed twice: {seeds!r}")
    for i, entry in enumerate(suite["methods"]):
        fault = entry_key_fault([o.split("=", 1)[0] for o in entry["set"]])
        if fault:
            raise ConfigError(f"methods[{i}]: key 'set' {fault[0]}; set {fault[1]} in the suite's own 'set' or with "
                              "--set, for every entry")


SCORE_NEUTRAL = ("query_chunk", "faiss_gpu")  # eval keys that change how fast runs are scored, not the scores


def entry_key_fault(keys: list[str]) -> tuple[str, str] | None:
    """(what it does, the key to set for every run instead) when an entry or a tune grid point may not set one of
    `keys`, else None. An entry may not move its run folder (it would land outside the suite, where neither bench
    nor the leaderboard looks), nor change the data or the scoring (re-ranking, the metric, the protocols): its
    Δ is paired with the baseline's run of the same seed, which would then be trained or scored otherwise. Keys
    that leave the images and scores alone stay allowed (`NOT_SHAPING`, `SCORE_NEUTRAL`)."""
    for key in (k.strip() for k in keys):
        if key in FOLDER_KEYS:
            return f"moves its run folder outside the suite ({key})", "experiment.output_dir"
        parts = key.split(".")
        if parts[0] == "data" and (len(parts) == 1 or parts[1] not in NOT_SHAPING):
            return (f"changes the data ({key}), so its paired Δ against the baseline would compare two datasets",
                    "data keys")
        if parts[0] == "eval" and (len(parts) == 1 or parts[1] not in SCORE_NEUTRAL):
            return (f"changes how runs are scored ({key}), so its paired Δ against the baseline would compare two "
                    "scorings", "eval keys")
    return None


def _check_entries(entries: tuple[Entry, ...]) -> None:
    """One baseline, distinct names, references to other entries of the same method, registered methods."""
    if not entries:
        raise ConfigError("key 'methods' is empty")
    names = [e.name for e in entries]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ConfigError(f"key 'methods' names {', '.join(doubled)} more than once")
    if [e.method for e in entries if e.longer_of is None].count("none") != 1:
        raise ConfigError("key 'methods' must list the baseline student (method: none) exactly once "
                          "(besides entries marked longer_of)")
    for e in entries:
        for key, other in (("ablation_of", e.ablation_of), ("longer_of", e.longer_of)):
            if other is not None and (other not in names or other == e.name):
                raise ConfigError(f"methods entry {e.name!r}: key '{key}' names no other entry ({other!r})")
        if e.longer_of is not None and entries[names.index(e.longer_of)].method != e.method:
            raise ConfigError(f"methods entry {e.name!r}: key 'longer_of' names an entry of another "
                              f"method; give it method {entries[names.index(e.longer_of)].method!r} and more epochs")
    missing = sorted({e.method for e in entries if e.method != "none" and e.method not in DISTILLERS})
    if missing:
        raise ConfigError(f"methods not registered: {', '.join(missing)} "
                          f"(registered: {', '.join(sorted(DISTILLERS)) or 'none'})")


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"suite file not found: {path}")
    return parse_suite(parse_yaml(path.read_text(), str(path)), str(path), path.parent)
