"""A leaderboard's tables, computed with pandas from the accepted runs: the teachers' and students' rows
(mean ± sample std over seeds, failed runs counted and not averaged), the paired Δ of each entry against a
reference entry with its 95% interval, and the "seeds needed" rows."""
from __future__ import annotations

import pandas as pd

from reid_kd.bench.board_runs import SCORES, finished, of_entry, teachers
from reid_kd.bench.stats import format_delta, paired_delta, seeds_needed

DASH = "—"
DELTAS = (("mAP", "mAP"), ("rank1", "Rank-1"))  # paired against the baseline student, with a 95% CI
POWER_TARGET = 0.015  # the interval half-width (a fraction: 1.5 mAP points) the "Seeds needed" section sizes for
PROTOCOL_COLUMNS = {"symmetric": "Sym. mAP", "asymmetric": "Asym. mAP"}  # a protocol's mAP beside the headline's


def protocols_of(runs: pd.DataFrame) -> list[str]:
    """The protocols the runs were scored in (`eval.protocols`, one for the whole suite), the headline first;
    records from before protocols were recorded: symmetric alone."""
    if runs.empty or "protocols" not in runs:
        return ["symmetric"]
    return next((list(p) for p in runs["protocols"] if isinstance(p, dict)), ["symmetric"])


def _protocol_map(runs: pd.DataFrame, protocol: str) -> pd.Series:
    """Each run's mAP in `protocol` (NaN where it was skipped or not scored)."""
    return pd.to_numeric(runs["protocols"].map(
        lambda p: p.get(protocol, {}).get("mAP") if isinstance(p, dict) else None), errors="coerce")


def _pct(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return DASH
    if len(values) == 1:
        return f"{100 * values.iloc[0]:.2f}"
    return f"{100 * values.mean():.2f} ± {100 * values.std(ddof=1):.2f}"


def _params(n) -> str:
    return DASH if n is None or pd.isna(n) else f"{n / 1e6:.2f}M"


def _speed(values: pd.Series) -> str:
    values = values.dropna()
    return DASH if values.empty else f"{values.mean():.0f}"


def _duration(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return DASH
    s = values.mean()
    if s < 10:
        return f"{s:.1f} s"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _delta_names(against: str = "") -> list[str]:
    return [f"Δ {label}{' vs ' + against if against else ''} (95% CI)" for _, label in DELTAS]


def _delta(mean: float | None, reference: float | None) -> str:
    if mean is None or reference is None or pd.isna(mean) or pd.isna(reference):
        return DASH
    return f"{100 * (mean - reference):+.2f}"


def by_seed(runs: pd.DataFrame, entry: str, key: str) -> dict[int, float]:
    """An entry's `key` by seed: what `paired_delta` pairs."""
    mine = of_entry(runs, entry)
    return {int(seed): float(v) for seed, v in zip(mine["seed"], mine[key])} if len(mine) else {}


def processes(runs: pd.DataFrame) -> str:
    """' (2 processes, synced BN)' for runs trained data-parallel (they differ from one process's numbers);
    '' for one process (records from before world size was recorded count as one)."""
    if runs.empty:
        return ""
    sizes = sorted({1 if pd.isna(n) else int(n) for n in runs.get("world_size", pd.Series(1, index=runs.index))})
    if sizes == [1]:
        return ""
    synced = {bool(b) for b in runs.get("sync_bn", pd.Series(False, index=runs.index)).fillna(False)}
    bn = "synced BN" if synced == {True} else "per-process BN" if synced == {False} else "synced BN in some"
    return f" ({'/'.join(map(str, sizes))} processes, {bn})"


def student_rows(runs: pd.DataFrame, entries: list[dict], n_seeds: int, reference: str,
                 against: str = "") -> list[dict]:
    """One row per entry over its finished runs (failed runs, with non-finite metrics, are counted, not
    averaged); Δ columns are paired by seed against entry `reference` (named `against`)."""
    rows, others = [], protocols_of(finished(runs))[1:]
    for entry in entries:
        every = of_entry(runs, entry["name"])
        mine = finished(every)
        n, failed = len(mine), len(every) - len(mine)
        row = {"Method": entry["label"] + processes(mine),
               "Seeds": f"{n}/{n_seeds}" + (f", {failed} failed" if failed else "")}
        if n == 0:
            row |= {label: DASH for _, label in SCORES}
            row |= {PROTOCOL_COLUMNS[p]: DASH for p in others}
            row |= {name: DASH for name in _delta_names(against)}
            row |= {"Params": DASH, "Images/s": DASH, "Train time": DASH, "_sort": float("-inf")}
            row["Seeds"] = f"failed ({failed}/{n_seeds})" if failed else f"missing (0/{n_seeds})"
            rows.append(row)
            continue
        row |= {label: _pct(mine[key]) for key, label in SCORES}
        row |= {PROTOCOL_COLUMNS[p]: _pct(_protocol_map(mine, p)) for p in others}
        ok = finished(runs)
        for (key, _), name in zip(DELTAS, _delta_names(against)):
            row[name] = "reference" if entry["name"] == reference else format_delta(
                paired_delta(by_seed(ok, entry["name"], key), by_seed(ok, reference, key)))
        row |= {"Params": _params(mine["params"].iloc[0]),
                "Images/s": _speed(mine.get("inference_images_per_sec", pd.Series(dtype=float))),
                "Train time": _duration(mine["train_seconds"]), "_sort": mine["mAP"].mean()}
        if "int8_mAP" in runs:  # a suite with `deploy.int8`: each student quantized and scored (int8.json)
            row |= {"INT8 mAP": _pct(mine["int8_mAP"]), "INT8 images/s": _speed(mine["int8_images_per_sec"])}
        rows.append(row)
    return rows


def teacher_rows(found: pd.DataFrame, base_runs: pd.DataFrame, protocols: list[str] = ("symmetric",)) -> list[dict]:
    """One row per teacher `found` (one seed: its own record); its Δ is its difference from the baseline's mean.
    Its queries in its own gallery score it under every protocol: in an asymmetric table, the ceiling."""
    rows = []
    for _, t in found.iterrows():
        ceiling = ", the ceiling" if protocols[0] == "asymmetric" else ""
        row = {"Method": f"teacher ({t['backbone']}){ceiling}", "Seeds": "1"}
        row |= {label: f"{100 * t[key]:.2f}" for key, label in SCORES}
        row |= {PROTOCOL_COLUMNS[p]: f"{100 * t['mAP']:.2f}" for p in protocols[1:]}
        row |= {name: _delta(t[key], base_runs[key].mean() if len(base_runs) else None)
                for (key, _), name in zip(DELTAS, _delta_names())}
        row |= {"Params": _params(t.get("params")),
                "Images/s": DASH if pd.isna(t.get("inference_images_per_sec")) else
                f"{t['inference_images_per_sec']:.0f}",
                "Train time": _duration(pd.Series([t.get("train_seconds")], dtype=float)), "_sort": float("inf")}
        rows.append(row)
    return rows


def main_entries(entries: list[dict]) -> list[dict]:
    """The entries of the main table: neither ablations nor longer schedules."""
    return [e for e in entries if not e.get("ablation_of") and not e.get("longer_of")]


def baseline_of(entries: list[dict]) -> dict:
    return next(e for e in entries if e["method"] == "none" and not e.get("longer_of"))


def main_rows(every: pd.DataFrame, entries: list[dict], n_seeds: int) -> list[dict]:
    """The main table: the teachers, then the main entries best first, Δ against the baseline student."""
    runs, baseline = finished(every), baseline_of(entries)
    students = [dict(e, label=f"{e['name']} (student)") if e is baseline else e for e in main_entries(entries)]
    return (teacher_rows(teachers(runs), of_entry(runs, baseline["name"]), protocols_of(runs))
            + sorted_rows(student_rows(every, students, n_seeds, baseline["name"])))


def power_rows(runs: pd.DataFrame, entries: list[dict], reference: str) -> list[dict]:
    """Per entry: the paired sd of its Δ mAP against `reference`, the interval it gives, and the seeds an
    interval of ±POWER_TARGET would need at that sd (what a suite must run for the table to decide)."""
    rows = []
    for entry in entries:
        delta = paired_delta(by_seed(runs, entry["name"], "mAP"), by_seed(runs, reference, "mAP"))
        if entry["name"] == reference or delta is None or delta.seeds < 2:
            continue
        needed = seeds_needed(delta.sd, POWER_TARGET)
        rows.append({"Method": entry["name"], "Paired seeds": str(delta.seeds), "Δ mAP": f"{100 * delta.mean:+.2f}",
                     "Paired sd": f"{100 * delta.sd:.2f}", "95% half-width": f"{100 * (delta.high - delta.mean):.2f}",
                     f"Seeds for ±{100 * POWER_TARGET:g}": str(needed) if needed else "over 1000"})
    return rows


def table(rows: list[dict]) -> str:
    """Rows as a GitHub markdown table, every cell as written (no number parsing); a column some rows lack (the
    INT8 ones, which teachers and entries without runs have not) shows a dash there."""
    frame = pd.DataFrame(rows).drop(columns="_sort", errors="ignore").fillna(DASH)
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def sorted_rows(rows: list[dict]) -> list[dict]:
    """Best mean mAP first (teachers above every student, missing entries last), ties by name."""
    return sorted(rows, key=lambda r: (-r["_sort"], r["Method"]))
