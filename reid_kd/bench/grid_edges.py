"""Where the best point of a tuning grid sits along each of its axes, and the next point past the edge it sits on.

Why: a chosen value at the edge of its grid says only that the optimum may lie beyond it. `reidkd tune` then
adds one point past that edge, spaced as the grid is, and trains it like the others. An axis is one `--grid`:
one key, or keys moved together (a line through their points, each key stepping on its own spacing). Along an
axis the points are ordered by their values; past an edge each key moves by the step between the edge and its
neighbour: a constant factor (edge / neighbour) where the key's values are all of one sign and not evenly
spaced (a geometric grid, or any grid of two positive values), else a constant difference (an evenly spaced
grid of three or more, or one that holds 0). Repeated, the factor or difference stays the same. The next point
never passes a bound the option's schema declares, nor 0 where the grid's values lie on one side of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from reid_kd.config import parse_yaml
from reid_kd.errors import ConfigError

Bounds = tuple[float | None, float | None]  # inclusive (low, high) of one key, None where unbounded

LOWEST, HIGHEST, INSIDE, ONLY, LISTED = "lowest", "highest", "inside", "only", "listed"


@dataclass(frozen=True)
class Edge:
    """Where the best point sits along one axis: `at` one of LOWEST, HIGHEST (an edge), INSIDE, ONLY (a single
    value) or LISTED (not all numbers: no order to extend); past an edge, the next point as YAML text, or None
    and why not (`stop`, e.g. a bound)."""

    at: str
    edge: tuple[str, ...] | None = None
    next: tuple[str, ...] | None = None
    stop: str = ""


def value(text: str):
    """A grid value as a config reads it (so 1 and 1.0 are one value, and 1e-3 a number), its text where YAML
    refuses it."""
    try:
        return parse_yaml(text)
    except ConfigError:
        return text


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _geometric(column: list[float]) -> bool:
    """Step by a factor: every value of one sign, and not three or more evenly spaced values."""
    if not (all(v > 0 for v in column) or all(v < 0 for v in column)):
        return False
    distinct = sorted(set(column))
    gaps = [b - a for a, b in zip(distinct, distinct[1:])]
    return len(distinct) < 3 or not all(math.isclose(g, gaps[0], rel_tol=1e-6) for g in gaps)


def _text(x: float, whole: bool) -> str:
    """A new grid value as YAML text: an integer where the key's values are, else a float to 6 significant
    digits (so 0.3 * 3 reads 0.9, not 0.8999999999999999)."""
    return str(round(x)) if whole else repr(float(f"{x:.6g}"))


def _bound(key: str, x: float, column: list[float], bounds: Bounds) -> str:
    """Why `x` is out of the key's range ('' when it is in): a declared bound, or 0 for a one-sided grid."""
    low, high = bounds
    if x < 0 <= min(column) and (low is None or low < 0):
        return f"the next value of {key}, {x:g}, would cross 0 (the grid's values are all at least 0)"
    if x > 0 >= max(column) and (high is None or high > 0):
        return f"the next value of {key}, {x:g}, would cross 0 (the grid's values are all at most 0)"
    if low is not None and x < low:
        return f"the next value of {key}, {x:g}, is below its bound (at least {low:g})"
    if high is not None and x > high:
        return f"the next value of {key}, {x:g}, is above its bound (at most {high:g})"
    return ""


def edge_of(keys: tuple[str, ...], points: list[tuple[str, ...]], best: tuple[str, ...],
            bounds: list[Bounds]) -> Edge:
    """Where `best` (one of `points`, YAML text per key) sits along the axis, and past an edge the next point."""
    if len(points) == 1:
        return Edge(ONLY)
    parsed = [tuple(value(x) for x in p) for p in points]
    if not all(_number(x) for p in parsed for x in p):
        return Edge(LISTED)
    order = sorted(range(len(points)), key=lambda i: parsed[i])
    place = order.index(points.index(best))
    if 0 < place < len(order) - 1:
        return Edge(INSIDE)
    at, neighbour = (LOWEST, order[1]) if place == 0 else (HIGHEST, order[-2])
    edge = parsed[order[place]]
    nxt = []
    for k, key in enumerate(keys):
        column = [p[k] for p in parsed]
        e, n = edge[k], parsed[neighbour][k]
        x = e * (e / n) if _geometric(column) else e + (e - n)
        whole = all(isinstance(v, int) for v in column)
        x = round(x) if whole else x
        stop = _bound(key, x, column, bounds[k])
        if stop:
            return Edge(at, best, None, stop)
        nxt.append(_text(x, whole))
    if tuple(value(x) for x in nxt) == edge:
        return Edge(at, best, None, f"the grid's spacing moves no value of {', '.join(keys)} past {':'.join(best)}")
    return Edge(at, best, tuple(nxt))
