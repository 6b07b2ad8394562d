"""Paired differences over seeds, with a Student-t confidence interval; how far two settings order methods alike.

For one seed, a method's run and the baseline's share the data order, the augmentation stream and
the student's initial weights, so their difference cancels the seed's luck: the spread of the
per-seed differences, not of each row, says whether a method helps. Two settings' orders of methods are
compared by Kendall's τ, its interval from resampling each setting's seeds (the one source of chance in it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev

import numpy as np
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


BOOTSTRAP_DRAWS = 2000  # resamples of the seeds behind a Kendall's τ interval


def kendall_tau(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's τ-b (ties counted as scipy.stats.kendalltau counts them) of each row of `a` against the same row
    of `b` (... × n), all rows at once: a bootstrap needs thousands. NaN where either row is constant."""
    i, j = np.triu_indices(a.shape[-1], 1)
    sa, sb = np.sign(a[..., i] - a[..., j]), np.sign(b[..., i] - b[..., j])
    untied = np.sqrt((sa != 0).sum(-1) * (sb != 0).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(untied > 0, (sa * sb).sum(-1) / untied, np.nan)


@dataclass(frozen=True)
class Agreement:
    """Kendall's τ of two settings' orders of the same methods, and its bootstrap interval."""

    tau: float
    low: float
    high: float


def agreement(a: np.ndarray, b: np.ndarray, seed_a: int, seed_b: int, level: float = 0.95,
              draws: int = BOOTSTRAP_DRAWS) -> Agreement:
    """τ between the orders of the column means of `a` and `b` (seeds × methods, one setting's per-seed Δ each,
    the same methods in the same columns), with a percentile bootstrap interval: each draw resamples the rows
    (seeds) of each setting with replacement, independently, from a generator seeded with `seed_a` / `seed_b`
    (so a setting draws the same seeds whichever setting it is compared with)."""
    def means(x: np.ndarray, seed: int) -> np.ndarray:
        rows = np.random.default_rng(seed).integers(0, len(x), (draws, len(x)))
        return x[rows].mean(axis=1)

    taus = kendall_tau(means(a, seed_a), means(b, seed_b))
    low, high = np.nanquantile(taus, [(1 - level) / 2, (1 + level) / 2]) if np.isfinite(taus).any() else (math.nan,) * 2
    return Agreement(float(kendall_tau(a.mean(0), b.mean(0))), float(low), float(high))
