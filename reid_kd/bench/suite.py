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
Every `run_suite` is a worker: it claims the runs it trains (bench/claims.py), so several of them on one suite
(`reidkd bench --workers N`, Slurm jobs, hosts sharing the runs folder) train each run once.
"""
from __future__ import annotations

import copy
import logging
import os
import re
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reid_kd.bench.claims import (
    CLAIM_TIMEOUT,
    Claims,
    read_claim,
    read_failure,
)
from reid_kd.config import _yaml, config_hash
from reid_kd.data.image_dataset import build_loaders, load_dataset
from reid_kd.distill.catalog import DISTILLERS
from reid_kd.engine.configs import load_config
from reid_kd.engine.paths import (
    experiment_dir,
    method_name,
    run_dir,
    run_folder,
    run_id,
    run_state,
    teacher_dir,
    teacher_key,
)
from reid_kd.engine.preflight import preflight
from reid_kd.engine.run_folder import RunFolderError
from reid_kd.engine.run import train_students
from reid_kd.engine.runtime import setup_runtime
from reid_kd.engine.teacher import get_teacher
from reid_kd.errors import ConfigError, UserError
from reid_kd.utils.io import read_json, write_json, write_text
from reid_kd.utils.lock import HOST, FolderLockedError, describe_holder, folder_lock
from reid_kd.utils.logs import LastLine

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SUITE_KEYS = {"name": str, "base": str, "set": list, "seeds": list, "teacher_seed": int, "report": str,
              "methods": list, "description": str}
REQUIRED = ("name", "base", "seeds", "methods")
ENTRY_KEYS = {"name": str, "method": str, "set": list, "ablation_of": str, "longer_of": str}
FOLDER_KEYS = ("experiment", "experiment.output_dir")  # an entry's `set` may not move its run folder
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
        overrides = _check_overrides(where, "set", item.get("set", []))
        moved = [o for o in overrides if o.split("=", 1)[0].strip() in FOLDER_KEYS]
        if moved:  # its run would land outside the suite, where neither bench nor the leaderboard looks
            raise ConfigError(f"{where}: key 'set' moves its run folder outside the suite ({moved[0]!r}); set "
                              "experiment.output_dir in the suite's own 'set' or with --set, for every entry")
        entries.append(Entry(item["name"], item["method"], overrides,
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


def expected_runs(runs: list[tuple[Entry, int, dict]]) -> dict[str, dict]:
    """What each run folder must hold to count: `<entry>/seed<k>` -> method, run name, config hash.

    Recorded beside suite.yaml, so `reidkd leaderboard` accepts only the runs this suite asked for.
    """
    return {run_id(e.name, s): {"method": method_name(cfg), "run_name": e.name, "seed": s,
                                "config_hash": config_hash(cfg)} for e, s, cfg in runs}


def check_run_folders(runs: list[tuple[Entry, int, dict]], overwrite: bool) -> None:
    """Without `overwrite`, stop before any work when a run folder holds another config's run."""
    taken = [run_dir(cfg) for _, _, cfg in runs if run_state(cfg) == "other"]
    if taken and not overwrite:
        raise RunFolderError(f"{len(taken)} run folder(s) hold runs of another config, e.g. {taken[0]}; pass "
                             "--overwrite to replace them, or change the suite's name to keep both")


def plan_suite(suite: Suite, extra: tuple[str, ...] = (), overwrite: bool = False) -> list[tuple[Entry, int, dict]]:
    """Every run's config, validated, and the suite recorded beside its runs (suite.yaml, expected runs)."""
    runs = suite.runs(extra)  # every config validated before any work starts
    check_run_folders(runs, overwrite)
    suite_dir = experiment_dir(runs[0][2])
    record = suite.as_dict() | ({"set_on_command_line": list(extra)} if extra else {})
    write_text(yaml.safe_dump(record, sort_keys=False), suite_dir / "suite.yaml")
    write_json(expected_runs(runs), suite_dir / EXPECTED_RUNS)
    return runs


class RunsFailedError(UserError):
    """Some runs of a suite failed (each has its failure.json); the others were trained."""


def cohort_key(seed: int, cfg: dict) -> tuple:
    """Runs with the same key can train side by side: one seed, data, teacher, device and precision."""
    return (seed, config_hash(cfg["data"]), cfg["teacher"]["checkpoint"] or teacher_key(cfg),
            cfg["experiment"]["device"], cfg["experiment"]["amp"])


def run_suite(suite: Suite, extra: tuple[str, ...] = (), overwrite: bool = False, worker: str = "",
              claim_timeout: float = CLAIM_TIMEOUT, launch: str = "") -> list[dict]:
    """Train the teacher once and every (entry, seed) run not done yet; returns the metrics of the runs done.

    A worker: it claims the pending runs of one seed (see bench/claims.py), trains them side by side,
    releases them and claims again, so any number of workers on one suite (processes, hosts) train each
    run once. A run another worker holds is left to it. A cohort that fails is retried run by run, so
    one failing run does not fail the others; a failed run is recorded and not retried in this launch,
    and RunsFailedError is raised at the end.
    """
    runs = plan_suite(suite, extra, overwrite)
    loaders_for = _loaders_cache()
    for seed, cfg in {entry.name: (seed, cfg) for entry, seed, cfg in runs}.values():
        preflight(cfg, loaders_for(cfg, seed), run_dir(cfg))  # every entry, before any training
    tags = {(e.name, s): f"[{i}/{len(runs)}] {e.name} seed{s}" for i, (e, s, _) in enumerate(runs, 1)}
    for entry, seed, cfg in runs:
        if run_state(cfg) == "done":
            logger.info(f"{tags[entry.name, seed]}: done, skipped ({run_dir(cfg)})")
    claims = Claims(worker or f"{HOST}:{os.getpid()}", claim_timeout, launch)
    failed: list[str] = []
    alone: set[tuple[str, int]] = set()  # runs of a failed cohort: retried one at a time
    teachers: dict[str, tuple] = {}
    last = LastLine()  # the last line logged while training cohorts, for failure.json
    try:
        while cohort := _claim_cohort(runs, claims, alone, failed, launch):
            for entry, seed, cfg in cohort:
                logger.info(f"{tags[entry.name, seed]}: "
                            f"{'resuming from its checkpoint' if run_state(cfg) == 'resume' else 'training'}")
            try:
                with last:
                    _train_cohort(cohort, loaders_for, teachers, overwrite)
            except Exception as e:
                if not isinstance(e, UserError):  # a bug: its traceback; a user error says all in its line
                    logger.info(traceback.format_exc().rstrip())
                if len(cohort) > 1:
                    logger.info(f"{len(cohort)} runs side by side failed ({type(e).__name__}: {e}); retrying them "
                                "one at a time to find which")
                    alone.update((entry.name, seed) for entry, seed, _ in cohort)
                else:
                    entry, seed, cfg = cohort[0]
                    claims.fail(run_dir(cfg), e, last.line)
                    failed.append(run_id(entry.name, seed))
                    logger.info(f"{tags[entry.name, seed]}: FAILED: {type(e).__name__}: {e}")
            else:
                for _, _, cfg in cohort:
                    run_folder(cfg).failure_file.unlink(missing_ok=True)
            finally:
                for _, _, cfg in cohort:
                    claims.release(run_dir(cfg))
    finally:
        claims.close()
    for entry, seed, cfg in runs:
        holder = read_claim(run_dir(cfg))
        if run_state(cfg) != "done" and holder:
            logger.info(f"{tags[entry.name, seed]}: left to worker {holder.get('worker', '?')} "
                        f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}), which holds it")
    if failed:
        raise RunsFailedError(f"{len(failed)} run(s) of suite {suite.name!r} failed: {', '.join(failed)}; the others "
                              f"were trained; `reidkd bench --suite FILE --status` shows each error, and running "
                              "`reidkd bench` again retries them")
    return [run_folder(cfg).read_metrics() for _, _, cfg in runs if run_state(cfg) == "done"]


def _loaders_cache():
    """loaders_for(cfg, seed): each dataset loaded once per process, loaders built per seed."""
    datasets: dict[str, Any] = {}

    def loaders_for(cfg: dict, seed: int):
        data_key = config_hash(cfg["data"])
        if data_key not in datasets:
            datasets[data_key] = load_dataset(cfg["data"])
        return build_loaders(cfg["data"], seed, dataset=datasets[data_key])

    return loaders_for


def _claim_cohort(runs: list[tuple[Entry, int, dict]], claims: Claims, alone: set, failed: list[str],
                  launch: str) -> list[tuple[Entry, int, dict]]:
    """Claim the pending runs of the first cohort that has any free; [] when no run is left to claim."""
    groups: dict[tuple, list[tuple[Entry, int, dict]]] = {}
    for entry, seed, cfg in runs:
        if run_id(entry.name, seed) in failed or run_state(cfg) == "done":
            continue
        failure = read_failure(run_dir(cfg))
        if launch and failure and failure.get("launch") == launch:  # failed in this launch: not again
            continue
        key = cohort_key(seed, cfg) + (((entry.name, seed),) if (entry.name, seed) in alone else ())
        groups.setdefault(key, []).append((entry, seed, cfg))
    for leftovers in (False, True):  # first whole cohorts; then the runs other workers left of theirs
        for group in groups.values():
            mine = []
            for run in group:
                if claims.claim(run_dir(run[2])):
                    mine.append(run)
                elif not mine and not leftovers:
                    break  # another worker is claiming this cohort: leave it whole to it
            for run in [r for r in mine if run_state(r[2]) == "done"]:  # finished elsewhere since we looked
                claims.release(run_dir(run[2]))
                mine.remove(run)
            if mine:
                return mine
    return []


def _train_cohort(cohort: list[tuple[Entry, int, dict]], loaders_for, teachers: dict, overwrite: bool) -> None:
    """Train claimed runs of one seed side by side behind one teacher forward per batch."""
    seed = cohort[0][1]
    cfgs = [copy.deepcopy(cfg) for _, _, cfg in cohort]
    device = setup_runtime(cfgs[0])
    loaders = loaders_for(cfgs[0], seed)
    t_key = cohort_key(seed, cfgs[0])[2]
    if t_key not in teachers:
        logger.info(loaders.dataset.summary())
        teachers[t_key] = _wait_for_teacher(cfgs[0], loaders, device)
    teacher, teacher_metrics = teachers[t_key]
    with ExitStack() as locks:
        for (entry, _, cfg) in cohort:
            locks.enter_context(folder_lock(run_dir(cfg)))
            if run_folder(cfg).claim(config_hash(cfg), overwrite):
                logger.info(f"{entry.name} seed{seed}: --overwrite: removed the run of another config in "
                            f"{run_dir(cfg)}")
        logger.info(f"seed {seed}: training {len(cohort)} run(s) side by side, one teacher forward per batch: "
                    + ", ".join(entry.name for entry, _, _ in cohort))
        done = train_students(cfgs, loaders, teacher, device, teacher_metrics)
    for (entry, _, cfg), record in zip(cohort, done):
        logger.info(f"{entry.name} seed{seed}: mAP {100 * record['mAP']:.2f}, Rank-1 {100 * record['rank1']:.2f} "
                    f"({run_dir(cfg)})")


def _wait_for_teacher(cfg: dict, loaders, device, poll: float = 2.0) -> tuple:
    """`get_teacher`, waiting while another process trains this teacher (its cache folder is locked)."""
    told = False
    while True:
        try:
            return get_teacher(cfg, loaders, device)
        except FolderLockedError as e:
            if e.folder != teacher_dir(cfg):
                raise
            if not told:
                logger.info(f"teacher: waiting for {describe_holder(e.holder)}, which trains it into {e.folder}")
                told = True
            time.sleep(poll)
