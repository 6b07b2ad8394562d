"""`reidkd tune`: a grid of a suite entry's options, scored on validation identities, never on the test split.

A tuning run is itself a suite, derived from the one being tuned: the baseline and one entry per grid
point, the suite's seeds and schedule (plus any `--set`, e.g. a shorter schedule), and
`data.validation_fraction` so that training loses the held-out identities and evaluation scores them
instead of the test query and gallery. Its teacher is the suite's recipe trained without the held-out
identities (the teacher cache keys on the data config), so no network has seen what is scored. It runs
through `run_suite` (resumable, locked, preflighted like `bench`), and its leaderboard, with the paired
Δ of every grid point against the baseline, is the sweep table: `<out>/<suite>-tune-<entry>.md`.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path

from reid_kd.bench.suite import Entry, Suite
from reid_kd.config import ConfigError

VALIDATION_FRACTION = 0.2


def parse_grid(items: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """`key=v1,v2,...` (one per --grid) -> [(key, [v1, v2, ...])]; values stay YAML text for `--set`."""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid {item!r} must look like distill.<method>.<option>=v1,v2,...")
        grid.append((key.strip(), [v.strip() for v in values.split(",") if v.strip()]))
    return grid


def _point_name(entry: str, point: tuple[tuple[str, str], ...]) -> str:
    """A folder name for one grid point, e.g. kd-weight-1.0-temperature-4."""
    parts = [entry] + [f"{key.split('.')[-1]}-{value}" for key, value in point]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))


def tuning_suite(suite: Suite, entry_name: str, grid: list[tuple[str, list[str]]],
                 fraction: float = VALIDATION_FRACTION) -> Suite:
    """The suite that trains the baseline and every grid point of `entry_name` on validation identities."""
    entry = next((e for e in suite.entries if e.name == entry_name), None)
    if entry is None:
        raise ConfigError(f"suite {suite.name!r} has no entry {entry_name!r} "
                          f"(entries: {', '.join(e.name for e in suite.entries)})")
    if entry.method == "none":
        raise ConfigError(f"entry {entry_name!r} is the baseline: it has no options to tune")
    if not grid:
        raise ConfigError("give at least one --grid distill.<method>.<option>=v1,v2,...")
    baseline = next(e for e in suite.entries if e.method == "none" and e.longer_of is None)
    points = [tuple(zip([k for k, _ in grid], values)) for values in itertools.product(*(v for _, v in grid))]
    entries = [Entry(baseline.name, "none", baseline.set)]
    entries += [Entry(_point_name(entry.name, p), entry.method, (*entry.set, *(f"{k}={v}" for k, v in p)))
                for p in points]
    grid_text = "; ".join(f"`{k}` in {', '.join(v)}" for k, v in grid)
    description = (f"Options of `{entry.name}` ({grid_text}) scored on validation identities: a fraction "
                   f"{fraction} of the training identities held out of training (drawn with "
                   f"`data.validation_seed`), never the test split. Tuning suite derived from `{suite.name}`.")
    return replace(suite, name=f"{suite.name}-tune-{entry.name}", entries=tuple(entries), description=description,
                   set=(*suite.set, f"data.validation_fraction={fraction}"))


def run_tuning(suite: Suite, entry_name: str, grid_items: tuple[str, ...], extra: tuple[str, ...] = (),
               fraction: float = VALIDATION_FRACTION, out_dir: str | Path = "leaderboards",
               overwrite: bool = False, log=print) -> Path:
    """Train the grid (resuming what is done) and write its table; returns the markdown file."""
    from reid_kd.bench.leaderboard import build_leaderboard
    from reid_kd.bench.suite import run_suite

    tuning = tuning_suite(suite, entry_name, parse_grid(grid_items), fraction)
    runs = tuning.runs(extra)
    run_suite(tuning, extra, log=log, overwrite=overwrite)
    suite_dir = Path(runs[0][2]["experiment"]["output_dir"]) / tuning.name
    md, _, _, rejected = build_leaderboard(suite_dir, Path(out_dir))
    for item in rejected:
        log(f"rejected {item}")
    return md
