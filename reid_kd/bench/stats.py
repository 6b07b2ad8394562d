"""Paired differences over seeds, with a Student-t confidence interval.

For one seed, a method's run and the baseline's share the data order, the augmentation stream and
the student's initial weights, so their difference cancels the seed's luck: the spread of the
per-seed differences, not of each row, says whether a method helps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev

from scipy import stats


@dataclass(frozen=True)
class PairedDelta:
    """Mean of per-seed differences, its confidence interval and the differences' sample sd
    (NaN bounds and sd with fewer than 2 seeds)."""

    mean: float
    low: float
    high: float
    seeds: int
    sd: float = math.nan

    @property
    def excludes_zero(self) -> bool:
        return self.seeds >= 2 and (self.low > 0 or self.high < 0)


def paired_delta(values: dict[int, float], reference: dict[int, float], level: float = 0.95) -> PairedDelta | None:
    """`values[seed] - reference[seed]` over the seeds both have; None if they share no seed."""
    seeds = sorted(set(values) & set(reference))
    if not seeds:
        return None
    diffs = [values[s] - reference[s] for s in seeds]
    centre = mean(diffs)
    if len(diffs) < 2:
        return PairedDelta(centre, math.nan, math.nan, 1)
    sd = stdev(diffs)
    half = half_width(sd, len(diffs), level)
    return PairedDelta(centre, centre - half, centre + half, len(diffs), sd)


def half_width(sd: float, seeds: int, level: float = 0.95) -> float:
    """Half-width of the Student-t interval of a mean of `seeds` paired differences of spread `sd`."""
    return stats.t.ppf((1 + level) / 2, seeds - 1) * sd / math.sqrt(seeds)


def seeds_needed(sd: float, target: float, level: float = 0.95, most: int = 1000) -> int | None:
    """The fewest seeds whose interval half-width, at this paired sd, is at most `target` (None past `most`)."""
    if not math.isfinite(sd):
        return None
    return next((n for n in range(2, most + 1) if half_width(sd, n, level) <= target), None)


def format_delta(delta: PairedDelta | None, scale: float = 100.0) -> str:
    """'+1.23 [+0.40, +2.06] *' in points; '*' marks an interval that excludes 0."""
    if delta is None:
        return "—"
    if delta.seeds < 2:
        return f"{scale * delta.mean:+.2f}"
    text = f"{scale * delta.mean:+.2f} [{scale * delta.low:+.2f}, {scale * delta.high:+.2f}]"
    return text + (" *" if delta.excludes_zero else "")
