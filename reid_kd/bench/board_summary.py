"""The cross-setting summary: the suites of a matrix (settings: another teacher, another domain, ...) read
together, for `leaderboards/summary.md` and the README block `<!-- leaderboard:summary -->`.

Why: a ranking from one teacher-student pair in one domain may not hold in another. Per method and setting it
gives the Δ mAP its setting's leaderboard gives (the same runs, paired against the same baseline), its mean
rank over the settings, the claims that hold in every setting, and how alike any two settings order the
methods (Kendall's τ, with an interval from resampling each setting's seeds). Which suites form the matrix is
declared in a small YAML file, `matrix: [suite, ...]` (configs/suites/matrix.yaml).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from reid_kd.bench.board_runs import finished, load_runs, suite_record
from reid_kd.bench.board_table import DASH, baseline_of, by_seed, main_entries, table
from reid_kd.bench.stats import BOOTSTRAP_DRAWS, PairedDelta, agreement, format_delta, paired_delta
from reid_kd.config import parse_yaml
from reid_kd.errors import ConfigError
from reid_kd.schema import Typed, validate

SUMMARY = "summary"  # leaderboards/summary.md, and the README block's name
MATRIX_SCHEMA = {"matrix": Typed(list, optional=False, required=True, item=str)}


def read_matrix(path: Path) -> list[str]:
    """The suite names a matrix file declares; a file that is not one is one line naming it and the fix."""
    data = parse_yaml(path.read_text(), str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a matrix file holds `matrix: [suite, ...]`, the names of the suites it reads "
                          "together")
    try:
        names = validate(data, MATRIX_SCHEMA, noun="matrix")["matrix"]
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}; it holds `matrix: [suite, ...]`") from None
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ConfigError(f"{path}: key 'matrix' names {', '.join(doubled)} more than once; list each suite once")
    return names


@dataclass(frozen=True)
class Setting:
    """One suite's finished runs, its main entries (the baseline among them) and its baseline."""

    name: str
    runs: pd.DataFrame
    entries: list[str]
    baseline: str

    def delta(self, entry: str) -> PairedDelta | None:
        """Δ mAP against the baseline, paired by seed: the leaderboard's."""
        return paired_delta(by_seed(self.runs, entry, "mAP"), by_seed(self.runs, self.baseline, "mAP"))

    def per_seed(self, entries: list[str]) -> np.ndarray:
        """Each seed's Δ mAP (seeds × entries), over the seeds every one of `entries` and the baseline ran."""
        maps = [by_seed(self.runs, e, "mAP") for e in [self.baseline, *entries]]
        seeds = sorted(set.intersection(*(set(m) for m in maps)))
        return np.array([[m[s] - maps[0][s] for m in maps[1:]] for s in seeds]).reshape(len(seeds), len(entries))


def load_setting(suite_dir: Path) -> Setting:
    """A suite's setting from its stored runs, counted as its leaderboard counts them."""
    suite = suite_record(suite_dir / "suite.yaml", (suite_dir / "suite.yaml").read_text())
    every, _ = load_runs(suite_dir, suite)
    return Setting(suite_dir.name, finished(every), [e["name"] for e in main_entries(suite["methods"])],
                   baseline_of(suite["methods"])["name"])


def _ranked(settings: list[Setting]) -> tuple[list[str], dict[str, float]]:
    """The entries with a Δ in every setting, and each one's mean over settings of its rank by Δ mAP (1 best,
    ties sharing their mean rank)."""
    common = [e for e in settings[0].entries if all(e in s.entries and s.delta(e) for s in settings)]
    ranks = [pd.Series({e: s.delta(e).mean for e in common}).rank(ascending=False, method="average")
             for s in settings]
    return common, {e: float(np.mean([r[e] for r in ranks])) for e in common}


def _deltas(settings: list[Setting]) -> tuple[list[dict], list[str]]:
    """The Δ table's rows, best mean rank first (entries not in every setting last), and the ranked entries."""
    common, mean_rank = _ranked(settings)
    names = list(dict.fromkeys(e for s in settings for e in s.entries))
    rows = []
    for entry in sorted(names, key=lambda e: (mean_rank.get(e, np.inf), e)):
        row = {"Method": entry}
        for s in settings:
            row[s.name] = DASH if entry not in s.entries else "reference" if entry == s.baseline else \
                format_delta(s.delta(entry))
        row["Mean rank"] = f"{mean_rank[entry]:.2f}" if entry in mean_rank else DASH
        rows.append(row)
    return rows, common


def _claims(settings: list[Setting]) -> list[str]:
    """What holds in every setting (an interval excluding 0 on the same side in all), and where each other
    method's claim holds and where it does not."""
    every, some = {"above": [], "below": []}, []
    for entry in dict.fromkeys(e for s in settings for e in s.entries if e != s.baseline):
        said = {}
        for s in settings:
            d = s.delta(entry) if entry in s.entries else None
            said[s.name] = ("not run" if d is None else "above" if d.excludes_zero and d.low > 0 else
                            "below" if d.excludes_zero else "no claim")
        sides = set(said.values())
        if sides in ({"above"}, {"below"}):
            every[sides.pop()].append(f"`{entry}`")
        elif sides & {"above", "below"}:
            some.append(f"- `{entry}`: " + "; ".join(
                f"{side} in {', '.join(n for n, v in said.items() if v == side)}"
                for side in ("above", "below", "no claim", "not run") if side in sides) + ".")
    lines = [f"- Above the baseline in every setting: {', '.join(every['above']) or 'none'}.",
             f"- Below the baseline in every setting: {', '.join(every['below']) or 'none'}."]
    if some:
        lines += ["", "Claims that hold in some settings only (no claim: the interval holds 0):", "", *some]
    return lines


def _agreement_rows(settings: list[Setting]) -> list[dict]:
    """Kendall's τ of every two settings' orders of the entries both ran, with its bootstrap interval."""
    rows = []
    for a, b in combinations(settings, 2):
        both = [e for e in a.entries if e in b.entries and a.delta(e) and b.delta(e)]
        seeds_a, seeds_b = a.per_seed(both), b.per_seed(both)
        found = agreement(seeds_a, seeds_b, zlib.crc32(a.name.encode()), zlib.crc32(b.name.encode())) \
            if len(both) >= 2 and len(seeds_a) and len(seeds_b) else None
        rows.append({"Settings": f"{a.name} vs {b.name}", "Entries": str(len(both)),
                     "Kendall's τ (95% CI)": DASH if found is None else
                     f"{found.tau:+.2f} [{found.low:+.2f}, {found.high:+.2f}]"})
    return rows


def _setting_rows(settings: list[Setting]) -> list[dict]:
    """What each setting is, from its runs' records (the headline protocol: the first each run scored)."""
    rows = []
    for s in settings:
        row = {"Setting": f"[{s.name}]({s.name}.md)", "Dataset": DASH, "Teacher → student": DASH, "Scored": DASH,
               "Seeds": DASH}
        if len(s.runs):
            first = s.runs.iloc[0]
            scored = first.get("protocols")
            row |= {"Dataset": first["dataset"],
                    "Teacher → student": f"{first['teacher_backbone']} → {first['student_backbone']}",
                    "Scored": next(iter(scored)) if isinstance(scored, dict) and scored else "symmetric",
                    "Seeds": ", ".join(map(str, sorted({int(k) for k in s.runs["seed"]})))}
        rows.append(row)
    return rows


def summary_page(settings: list[Setting], matrix: str, not_run: list[str]) -> tuple[str, str]:
    """The page `summary.md` and the README block's body (its tables and claims)."""
    rows, common = _deltas(settings)
    block = [
        "Δ mAP against each setting's baseline student (the setting's leaderboard's: the mean over seeds of each "
        "seed's paired difference, in points, with its 95% Student-t interval; * where it excludes 0). Mean rank: "
        f"the mean over the settings of each entry's rank by Δ mAP among the {len(common)} run in every setting "
        "(1 best; ties share their mean rank).", "", table(rows), "", "What holds in every setting (every interval "
        "excludes 0, on the same side):", "", *_claims(settings), "",
        "How alike two settings order the entries both ran (baseline included), by Δ mAP: Kendall's τ-b (1 the "
        "same order, 0 unrelated, -1 reversed), with a 95% interval: the 2.5th and 97.5th percentiles of τ over "
        f"{BOOTSTRAP_DRAWS} bootstrap draws, each resampling every setting's seeds with replacement, independently "
        "per setting (numpy, seeded by the CRC-32 of the setting's name: a rebuild gives the same page), and "
        "ordering the entries by their mean Δ over the seeds drawn.", "", table(_agreement_rows(settings))]
    head = ["# Across settings", "",
            f"The suites that `{matrix}` names, each a setting with its own teacher, student, data or protocol, read "
            "from their stored runs by `reidkd leaderboard`."
            + (f" Not run yet: {', '.join(f'`{n}`' for n in not_run)}." if not_run else ""), "",
            table(_setting_rows(settings)), ""]
    return "\n".join(head + block) + "\n", "\n".join(block)
