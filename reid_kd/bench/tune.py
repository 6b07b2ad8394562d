"""`reidkd tune`: grids of suite entries' options, scored on validation identities, never on the test split.

A tuning run is itself a suite, derived from the one being tuned: the baseline and one entry per grid
point of every tuned entry, the suite's seeds and schedule (plus any `--set`, e.g. a shorter schedule),
and `data.validation_fraction` so that training loses the held-out identities and evaluation scores them
instead of the test query and gallery. Its teacher is the suite's recipe trained without the held-out
identities (the teacher cache keys on the data config), so no network has seen what is scored. It runs
through `run_suite` (resumable, locked, preflighted like `bench`; every grid point of a seed trains side
by side with the others), and each tuned entry gets its sweep table, with the paired Δ of its grid points
against the baseline: `<out>/<suite>-tune-<entry>.md`.
"""
from __future__ import annotations

import itertools
import logging
import re
from dataclasses import replace
from pathlib import Path

import yaml

from reid_kd.bench import VALIDATION_FRACTION
from reid_kd.bench.leaderboard import build_leaderboard
from reid_kd.bench.suite import run_suite
from reid_kd.bench.suite_file import Entry, Suite, entry_key_fault
from reid_kd.engine.paths import experiment_dir
from reid_kd.errors import ConfigError

logger = logging.getLogger(__name__)

GRID_RE = re.compile(r"^(?:(?P<entry>[A-Za-z0-9][A-Za-z0-9_.-]*):)?(?P<keys>[^=:]+)=(?P<values>.+)$")
Grid = list[tuple[tuple[str, ...], list[tuple[str, ...]]]]  # [(keys moved together, their values per point)]


def _entry_for(suite: Suite, key: str, named: str | None, default: str | None) -> Entry:
    """The entry a grid belongs to: named (`ENTRY:key=...`), else `--entry`, else the one entry whose method
    the key names (`distill.<method>.<option>`)."""
    main = [e for e in suite.entries if e.ablation_of is None and e.longer_of is None]
    if named or default:
        entry = next((e for e in suite.entries if e.name == (named or default)), None)
        if entry is None:
            raise ConfigError(f"suite {suite.name!r} has no entry {named or default!r} "
                              f"(entries: {', '.join(e.name for e in suite.entries)})")
    else:
        parts = key.split(".")
        method = parts[1] if len(parts) > 2 and parts[0] == "distill" else None
        matches = [e for e in main if e.method == method]
        if len(matches) != 1:
            raise ConfigError(f"--grid {key}: name the entry it tunes, as ENTRY:{key}=... or with --entry "
                              f"({len(matches)} main entries of method {method!r})")
        entry = matches[0]
    if entry.method == "none":
        raise ConfigError(f"entry {entry.name!r} is the baseline: it has no options to tune")
    return entry


def parse_grid(suite: Suite, items: tuple[str, ...], default_entry: str | None = None) -> dict[str, Grid]:
    """`[ENTRY:]key=v1,v2,...` (one per --grid) -> {entry: [((key,), [(v1,), (v2,), ...])]}; values stay YAML
    text. `k1,k2=a1:a2,b1:b2` moves options together (e.g. both of RKD's weights, their ratio kept)."""
    grids: dict[str, Grid] = {}
    for item in items:
        match = GRID_RE.match(item.strip())
        keys = tuple(k.strip() for k in match["keys"].split(",")) if match else ()
        values = [tuple(x.strip() for x in v.split(":")) for v in match["values"].split(",") if v.strip()] \
            if match else []
        if not match or not values or not all(keys) or any(len(v) != len(keys) or not all(v) for v in values):
            raise ConfigError(f"--grid {item!r} must look like [ENTRY:]distill.<method>.<option>=v1,v2,... or, "
                              f"for options moved together, KEY1,KEY2=a1:a2,b1:b2,...")
        parsed = [[_value(x) for x in v] for v in values]
        repeated = sorted({":".join(v) for i, v in enumerate(values) if parsed[i] in parsed[:i]})
        if repeated:  # the same point twice would be scored as two seeds of one
            raise ConfigError(f"--grid {item!r} gives {', '.join(repeated)} more than once; list each value once")
        fault = entry_key_fault(list(keys))
        if fault:  # each grid point is an entry of the tuning suite, paired with its baseline
            raise ConfigError(f"--grid {item!r} {fault[0]}; grid options that leave it alone, and set {fault[1]} "
                              "with --set, for every run")
        entry = _entry_for(suite, keys[0], match["entry"], default_entry)
        grids.setdefault(entry.name, []).append((keys, values))
    if not grids:
        raise ConfigError("give at least one --grid distill.<method>.<option>=v1,v2,...")
    return grids


def _value(text: str):
    """A grid value as the config reads it (YAML: 1 and 1.0 are one value), its text where YAML refuses it."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _point_name(entry: str, point: tuple[tuple[str, str], ...]) -> str:
    """A folder name for one grid point, e.g. kd-weight-1.0-temperature-4."""
    parts = [entry] + [f"{key.split('.')[-1]}-{value}" for key, value in point]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))


def tuning_suite(suite: Suite, grids: dict[str, Grid], fraction: float = VALIDATION_FRACTION,
                 seeds: tuple[int, ...] | None = None) -> tuple[Suite, dict[str, list[str]]]:
    """The suite that trains the baseline and every grid point of the tuned entries on validation identities,
    and the entries of each tuned entry's sweep table (the baseline first)."""
    baseline = next(e for e in suite.entries if e.method == "none" and e.longer_of is None)
    entries = [Entry(baseline.name, "none", baseline.set)]
    tables, texts = {}, []
    for name, grid in grids.items():
        entry = next(e for e in suite.entries if e.name == name)
        points = [tuple((k, v) for (keys, _), values in zip(grid, combo) for k, v in zip(keys, values))
                  for combo in itertools.product(*(values for _, values in grid))]
        mine = [Entry(_point_name(name, p), entry.method, (*entry.set, *(f"{k}={v}" for k, v in p))) for p in points]
        entries += mine
        tables[name] = [baseline.name, *(e.name for e in mine)]
        texts.append(f"`{name}`: " + "; ".join(f"`{', '.join(keys)}` in {', '.join(':'.join(v) for v in values)}"
                                               for keys, values in grid))
    description = (f"Options of {' / '.join(texts)}, scored on validation identities: a fraction {fraction} of "
                   f"the training identities held out of training (drawn with `data.validation_seed`), never "
                   f"the test split. Tuning suite derived from `{suite.name}`.")
    suffix = next(iter(grids)) if len(grids) == 1 else "-".join(grids) if len(grids) <= 3 else "all"
    tuning = replace(suite, name=f"{suite.name}-tune-{suffix}", entries=tuple(entries), description=description,
                     set=(*suite.set, f"data.validation_fraction={fraction}"), seeds=seeds or suite.seeds)
    return tuning, tables


def run_tuning(suite: Suite, grid_items: tuple[str, ...], default_entry: str | None = None,
               extra: tuple[str, ...] = (), fraction: float = VALIDATION_FRACTION,
               out_dir: str | Path = "leaderboards", overwrite: bool = False, seeds: tuple[int, ...] | None = None) -> list[Path]:
    """Train the grids (resuming what is done; on `seeds`, default the suite's) and write one sweep table
    per tuned entry."""
    tuning, tables = tuning_suite(suite, parse_grid(suite, grid_items, default_entry), fraction, seeds)
    runs = tuning.runs(extra)
    run_suite(tuning, extra, overwrite=overwrite)
    suite_dir = experiment_dir(runs[0][2])
    written = []
    for name, rows in tables.items():
        md, _, _, rejected = build_leaderboard(suite_dir, Path(out_dir), rows, f"{suite.name}-tune-{name}")
        for item in rejected:
            logger.info(f"rejected {item}")
        written.append(md)
    return written
