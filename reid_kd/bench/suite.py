"""Benchmark suites: one dataset, one teacher, one student backbone, every method, several seeds.

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

A run's config is `load_config(base, suite set + entry set + experiment.name/run_name/seed +
teacher.seed + distill.method)`. `run_suite` trains (or reuses) the teacher once, then the runs of
each seed side by side (one data pass and one teacher forward per batch for all of them; each run's
result is the one it would get alone): a run whose metrics.json holds the config hash of its resolved
config is skipped, any other run trains, resuming from its checkpoint.pt when one of the same config is there.
"""
from __future__ import annotations

import copy
import json
from contextlib import ExitStack
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reid_kd.config import ConfigError, _yaml, config_hash, load_config

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SUITE_KEYS = {"name": str, "base": str, "set": list, "seeds": list, "teacher_seed": int, "report": str,
              "methods": list, "description": str}
REQUIRED = ("name", "base", "seeds", "methods")
ENTRY_KEYS = {"name": str, "method": str, "set": list, "ablation_of": str, "longer_of": str}
RESERVED_NAMES = ("teachers",)  # <output_dir>/teachers/ holds the teacher cache
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


def _check_type(where: str, key: str, value: Any, kind: type) -> None:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}: key '{key}' expects {kind.__name__}, got {type(value).__name__} {value!r}")


def _check_overrides(where: str, key: str, items: list) -> tuple[str, ...]:
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"{where}: key '{key}' expects a list of 'key.path=value' strings, got {item!r}")
    return tuple(items)


def parse_suite(data: Any, source: str = "suite", base_dir: Path | None = None) -> Suite:
    """Validate a suite mapping strictly; errors are one line naming the key."""
    from reid_kd.distill import DISTILLERS

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a suite file must hold a mapping at the top level")
    for key in data:
        if key not in SUITE_KEYS:
            raise ConfigError(f"{source}: unknown suite key '{key}' (known: {', '.join(SUITE_KEYS)})")
    for key in REQUIRED:
        if key not in data:
            raise ConfigError(f"{source}: missing suite key '{key}'")
    for key, value in data.items():
        _check_type(source, key, value, SUITE_KEYS[key])
    name = data["name"]
    if not NAME_RE.match(name) or name in RESERVED_NAMES:
        raise ConfigError(f"{source}: key 'name' must be a folder name (letters, digits, _ . -) other than "
                          f"{', '.join(RESERVED_NAMES)}, got {name!r}")
    seeds = data["seeds"]
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ConfigError(f"{source}: key 'seeds' expects a non-empty list of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: key 'seeds' lists a seed twice: {seeds!r}")
    report = data.get("report", "last")
    if report != "last":
        raise ConfigError(f"{source}: key 'report' must be 'last' (the model after the final epoch), got {report!r}")
    entries = []
    for i, item in enumerate(data["methods"]):
        where = f"{source}: methods[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expects a mapping with 'name' and 'method', got {item!r}")
        for key in item:
            if key not in ENTRY_KEYS:
                raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(ENTRY_KEYS)})")
        for key in ("name", "method"):
            if key not in item:
                raise ConfigError(f"{where}: missing key '{key}'")
        for key, value in item.items():
            _check_type(where, key, value, ENTRY_KEYS[key])
        if not NAME_RE.match(item["name"]):
            raise ConfigError(f"{where}: key 'name' must be a folder name (letters, digits, _ . -), "
                              f"got {item['name']!r}")
        entries.append(Entry(item["name"], item["method"], _check_overrides(where, "set", item.get("set", [])),
                             item.get("ablation_of"), item.get("longer_of")))
    if not entries:
        raise ConfigError(f"{source}: key 'methods' is empty")
    names = [e.name for e in entries]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ConfigError(f"{source}: key 'methods' names {', '.join(doubled)} more than once")
    if [e.method for e in entries if e.longer_of is None].count("none") != 1:
        raise ConfigError(f"{source}: key 'methods' must list the baseline student (method: none) exactly once "
                          "(besides entries marked longer_of)")
    for e in entries:
        for key, other in (("ablation_of", e.ablation_of), ("longer_of", e.longer_of)):
            if other is not None and (other not in names or other == e.name):
                raise ConfigError(f"{source}: methods entry {e.name!r}: key '{key}' names no other entry ({other!r})")
        if e.longer_of is not None and entries[names.index(e.longer_of)].method != e.method:
            raise ConfigError(f"{source}: methods entry {e.name!r}: key 'longer_of' names an entry of another "
                              f"method; give it method {entries[names.index(e.longer_of)].method!r} and more epochs")
    missing = sorted({e.method for e in entries if e.method != "none" and e.method not in DISTILLERS})
    if missing:
        raise ConfigError(f"{source}: methods not registered: {', '.join(missing)} "
                          f"(registered: {', '.join(sorted(DISTILLERS)) or 'none'})")
    base = Path(data["base"])
    if not base.is_absolute() and base_dir is not None:
        base = base_dir / base
    if not base.is_file():
        raise ConfigError(f"{source}: key 'base': config file not found: {base}")
    return Suite(name, base.resolve(), _check_overrides(source, "set", data.get("set", [])), tuple(seeds),
                 data.get("teacher_seed", 0), report, tuple(entries), data.get("description", ""), data["base"])


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"suite file not found: {path}")
    data = _yaml(path.read_text(), str(path))
    return parse_suite(data, str(path), path.parent)


def run_state(cfg: dict) -> str:
    """'done' (metrics.json of this very config), 'resume' (a checkpoint to continue) or 'new'."""
    from reid_kd.engine.preflight import recorded_hash
    from reid_kd.engine.run import run_dir

    out = run_dir(cfg)
    if (out / "metrics.json").is_file() and recorded_hash(out) == config_hash(cfg):
        return "done"
    return "resume" if (out / "checkpoint.pt").is_file() else "new"


def expected_runs(runs: list[tuple[Entry, int, dict]]) -> dict[str, dict]:
    """What each run folder must hold to count: `<entry>/seed<k>` -> method, run name, config hash.

    Recorded beside suite.yaml, so `reidkd leaderboard` accepts only the runs this suite asked for.
    """
    from reid_kd.engine.run import method_name

    return {f"{e.name}/seed{s}": {"method": method_name(cfg), "run_name": e.name, "seed": s,
                                  "config_hash": config_hash(cfg)} for e, s, cfg in runs}


def check_run_folders(runs: list[tuple[Entry, int, dict]], overwrite: bool) -> None:
    """Without `overwrite`, stop before any work when a run folder holds another config's run."""
    from reid_kd.engine.preflight import RunFolderError, recorded_hash
    from reid_kd.engine.run import run_dir

    taken = [run_dir(cfg) for _, _, cfg in runs if recorded_hash(run_dir(cfg)) not in (None, config_hash(cfg))]
    if taken and not overwrite:
        raise RunFolderError(f"{len(taken)} run folder(s) hold runs of another config, e.g. {taken[0]}; pass "
                             "--overwrite to replace them, or change the suite's name to keep both")


def run_suite(suite: Suite, extra: tuple[str, ...] = (), log=print, overwrite: bool = False) -> list[dict]:
    """Train the teacher once and every (entry, seed) run not done yet; returns every run's metrics record."""
    from reid_kd.data.image_dataset import build_loaders, load_dataset
    from reid_kd.engine.io import read_json, write_json, write_text
    from reid_kd.engine.lock import folder_lock
    from reid_kd.engine.preflight import claim_run_folder, preflight
    from reid_kd.engine.run import get_teacher, run_dir, setup_runtime, teacher_key, train_students

    runs = suite.runs(extra)  # every config validated before any work starts
    check_run_folders(runs, overwrite)
    suite_dir = Path(runs[0][2]["experiment"]["output_dir"]) / suite.name
    record = suite.as_dict() | ({"set_on_command_line": list(extra)} if extra else {})
    write_text(yaml.safe_dump(record, sort_keys=False), suite_dir / "suite.yaml")
    write_json(expected_runs(runs), suite_dir / EXPECTED_RUNS)
    datasets: dict[str, Any] = {}

    def loaders_for(cfg: dict, seed: int):
        data_key = config_hash(cfg["data"])
        if data_key not in datasets:
            datasets[data_key] = load_dataset(cfg["data"])
        return build_loaders(cfg["data"], seed, dataset=datasets[data_key])

    for seed, cfg in {entry.name: (seed, cfg) for entry, seed, cfg in runs}.values():
        preflight(cfg, loaders_for(cfg, seed), run_dir(cfg))  # every entry, before any training
    cohorts: dict[tuple, list[tuple[Entry, dict]]] = {}  # runs that can train side by side
    for i, (entry, seed, cfg) in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {entry.name} seed{seed}"
        state = run_state(cfg)
        if state == "done":
            log(f"{tag}: done, skipped ({run_dir(cfg)})")
            continue
        log(f"{tag}: {'resuming from its checkpoint' if state == 'resume' else 'training'}")
        key = (seed, config_hash(cfg["data"]), cfg["teacher"]["checkpoint"] or teacher_key(cfg),
               cfg["experiment"]["device"], cfg["experiment"]["amp"])
        cohorts.setdefault(key, []).append((entry, cfg))
    teachers: dict[str, tuple] = {}
    for (seed, _, t_key, _, _), cohort in cohorts.items():
        cfgs = [copy.deepcopy(cfg) for _, cfg in cohort]
        device = setup_runtime(cfgs[0])
        loaders = loaders_for(cfgs[0], seed)
        if t_key not in teachers:
            log(loaders.dataset.summary())
            teachers[t_key] = get_teacher(cfgs[0], loaders, device, log)
        teacher, teacher_metrics = teachers[t_key]
        with ExitStack() as locks:
            for entry, cfg in cohort:
                locks.enter_context(folder_lock(run_dir(cfg), log))
                if claim_run_folder(run_dir(cfg), config_hash(cfg), overwrite):
                    log(f"{entry.name} seed{seed}: --overwrite: removed the run of another config in {run_dir(cfg)}")
            log(f"seed {seed}: training {len(cohort)} run(s) side by side, one teacher forward per batch: "
                + ", ".join(entry.name for entry, _ in cohort))
            done = train_students(cfgs, loaders, teacher, device, teacher_metrics, log=log)
        for (entry, cfg), record in zip(cohort, done):
            log(f"{entry.name} seed{seed}: mAP {100 * record['mAP']:.2f}, Rank-1 {100 * record['rank1']:.2f} "
                f"({run_dir(cfg)})")
    return [read_json(run_dir(cfg) / "metrics.json") for _, _, cfg in runs]
