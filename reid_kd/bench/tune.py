"""`reidkd tune`: grids of suite entries' options, scored on validation identities, never on the test split.

A tuning run is itself a suite, derived from the one being tuned: the baseline and one entry per grid
point of every tuned entry, the suite's seeds and schedule (plus any `--set`, e.g. a shorter schedule),
and `data.validation_fraction` so that training loses the held-out identities and evaluation scores them
instead of the test query and gallery. Its teacher is the suite's recipe trained without the held-out
identities (the teacher cache keys on the data config), so no network has seen what is scored. It runs
through `run_suite` (resumable, locked, preflighted like `bench`; every grid point of a seed trains side
by side with the others), and each tuned entry gets its sweep table, with the paired Δ of its grid points
against the baseline: `<out>/<suite>-tune-<entry>.md`. Where a grid's best point sits at an edge, the grid is
extended past it (bench/grid_edges.py says how) and trained again, at most `extend` times: a chosen value at an
edge may be short of the optimum. The table says where the chosen value sits.
"""
from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean

from reid_kd.bench import EXTEND, VALIDATION_FRACTION
from reid_kd.bench.grid_edges import INSIDE, LISTED, ONLY, Edge, edge_of, value
from reid_kd.bench.leaderboard import build_leaderboard
from reid_kd.bench.suite import run_suite
from reid_kd.bench.suite_file import Entry, Suite, entry_key_fault
from reid_kd.engine.configs import option_bounds
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
        parsed = [[value(x) for x in v] for v in values]
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


def _point_name(entry: str, point: tuple[tuple[str, str], ...]) -> str:
    """A folder name for one grid point, e.g. kd-weight-1.0-temperature-4."""
    parts = [entry] + [f"{key.split('.')[-1]}-{value}" for key, value in point]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))


def _combos(grid: Grid) -> list[tuple[tuple[str, ...], ...]]:
    """The grid's points, one value (a tuple over its keys) per axis: the product of its axes."""
    return list(itertools.product(*(values for _, values in grid)))


def _point(grid: Grid, combo: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, str], ...]:
    """((key, value), ...) of one grid point."""
    return tuple((k, v) for (keys, _), values in zip(grid, combo) for k, v in zip(keys, values))


def tuning_suite(suite: Suite, grids: dict[str, Grid], fraction: float = VALIDATION_FRACTION,
                 seeds: tuple[int, ...] | None = None) -> tuple[Suite, dict[str, list[str]]]:
    """The suite that trains the baseline and every grid point of the tuned entries on validation identities,
    and the entries of each tuned entry's sweep table (the baseline first)."""
    baseline = next(e for e in suite.entries if e.method == "none" and e.longer_of is None)
    entries = [Entry(baseline.name, "none", baseline.set)]
    tables, texts = {}, []
    for name, grid in grids.items():
        entry = next(e for e in suite.entries if e.name == name)
        points = [_point(grid, combo) for combo in _combos(grid)]
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
               out_dir: str | Path = "leaderboards", overwrite: bool = False, seeds: tuple[int, ...] | None = None,
               extend: int = EXTEND) -> list[Path]:
    """Train the grids (resuming what is done; on `seeds`, default the suite's), extend each past an edge its
    best point sits on (at most `extend` rounds, one point per axis each), and write one sweep table per entry."""
    given = grids = parse_grid(suite, grid_items, default_entry)
    for done in range(extend + 1):
        tuning, tables = tuning_suite(suite, grids, fraction, seeds)
        records = run_suite(tuning, extra, overwrite=overwrite)
        chosen = {name: _chosen(suite, tuning, name, grid, records, extra) for name, grid in grids.items()}
        grown = {name: _grown(name, grid, chosen[name]) for name, grid in grids.items()} if done < extend else grids
        if grown == grids:
            break
        grids = grown
    suite_dir = experiment_dir(tuning.run_config(tuning.entries[0], tuning.seeds[0], extra))
    written = []
    for name, rows in tables.items():
        where = _where(name, given[name], grids[name], chosen[name], extend)
        md, _, _, rejected = build_leaderboard(suite_dir, Path(out_dir), rows, f"{suite.name}-tune-{name}",
                                               "\n".join(where))
        for item in rejected:
            logger.info(f"rejected {item}")
        written.append(md)
    return written


@dataclass(frozen=True)
class Chosen:
    """A grid's best point (by mean validation mAP over the seeds), that mean, and where it sits on each axis."""

    point: str
    score: float
    edges: list[Edge]


def _chosen(suite: Suite, tuning: Suite, name: str, grid: Grid, records: list[dict],
            extra: tuple[str, ...]) -> Chosen | None:
    """Entry `name`'s chosen grid point; None until every point has a run of every seed (another worker may
    hold some)."""
    scores: dict[str, list[float]] = {}
    for record in records:
        scores.setdefault(record["run_name"], []).append(record["mAP"])
    combos = {_point_name(name, _point(grid, combo)): combo for combo in _combos(grid)}
    if any(len(scores.get(point, [])) != len(tuning.seeds) for point in combos):
        return None
    best = max(combos, key=lambda point: mean(scores[point]))  # the first of equals, in grid order
    cfg = suite.run_config(next(e for e in suite.entries if e.name == name), suite.seeds[0], extra)
    edges = [edge_of(keys, values, at, [option_bounds(cfg, k) for k in keys])
             for (keys, values), at in zip(grid, combos[best])]
    return Chosen(best, mean(scores[best]), edges)


def _grown(name: str, grid: Grid, chosen: Chosen | None) -> Grid:
    """The grid with the next point past each edge its best point sits on (each one logged)."""
    if chosen is None:
        return grid
    out = []
    for (keys, values), e in zip(grid, chosen.edges):
        if e.next:
            logger.info(f"{name}: its best point sits at the {e.at} {', '.join(keys)} tried ({':'.join(e.edge)}): "
                        f"adding {':'.join(e.next)}")
        out.append((keys, values + [e.next] if e.next else values))
    return out


def _where(name: str, given: Grid, grid: Grid, chosen: Chosen | None, extend: int) -> list[str]:
    """The sweep table's section on where the chosen value sits along each axis (and a line logged where a bound
    stopped an extension)."""
    lines = ["## Where the chosen value sits", ""]
    if chosen is None:
        return lines + ["Not every grid point has a run of every seed yet (another worker holds some): run "
                        "`reidkd tune` again once they are done to extend the grid and say where the best point sits.",
                        ""]
    lines += [f"`{chosen.point}` has the best mean validation mAP ({100 * chosen.score:.2f}). A grid is extended "
              f"past an edge its best point sits on, one point a round, at most {extend} round(s) (`--extend`).", ""]
    for (keys, values), (_, first), e in zip(grid, given, chosen.edges):
        added = [v for v in values if v not in first]
        said = f"`{', '.join(keys)}`: given {', '.join(':'.join(v) for v in first)}" + (
            f", added {', '.join(':'.join(v) for v in added)}" if added else "")
        if e.stop:
            logger.info(f"{name}: {', '.join(keys)} not extended past {':'.join(e.edge)}: {e.stop}")
        lines.append(f"- {said}. The chosen value " + ({
            INSIDE: "sits inside the grid.",
            ONLY: "is the only one tried.",
            LISTED: "is one of those listed (not all numbers: such a grid is not extended).",
        }.get(e.at) or f"sits at the {e.at} tried, " + (
            f"not extended past it: {e.stop}." if e.stop else
            f"where {extend} round(s) of extension left it: the optimum may lie beyond (a larger `--extend` adds "
            "more points, reusing the runs done).")))
    return lines + [""]
