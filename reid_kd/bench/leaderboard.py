"""Leaderboards rebuilt from `runs/`: one markdown file and one CMC plot per benchmark suite.

Everything shown comes from files the runs wrote (runs/<suite>/suite.yaml and each run's
metrics.json, which also carries its teacher's metrics), nothing is measured or dated here, so
rebuilding from the same runs gives the same bytes. A README may carry a suite's table between the
markers `<!-- leaderboard:<suite> -->` and `<!-- /leaderboard:<suite> -->`; the rebuild rewrites that
block too, so no leaderboard number in the README is typed by hand.
"""
from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path

import pandas as pd
import yaml

from reid_kd.bench.stats import format_delta, paired_delta, seeds_needed
from reid_kd.bench.suite import EXPECTED_RUNS
from reid_kd.engine.paths import run_id
from reid_kd.errors import UserError
from reid_kd.evaluation.extract import rerank_said
from reid_kd.models.weights import describe
from reid_kd.utils.io import UnsafeFileError, read_json, write_bytes, write_text

logger = logging.getLogger(__name__)

METRICS = (("mAP", "mAP"), ("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"), ("mINP", "mINP"))
CMC_RANKS = 20  # ranks drawn in the CMC plot
DASH = "—"
POWER_TARGET = 0.015  # the interval half-width (a fraction: 1.5 mAP points) the "Seeds needed" section sizes for
DELTAS = (("mAP", "mAP"), ("rank1", "Rank-1"))  # paired against the baseline student, with a 95% CI


def _mismatch(record: dict, want: dict | None) -> str | None:
    """Why a metrics.json is not the run the suite asked for, or None when it is."""
    if want is None:
        return f"the suite's {EXPECTED_RUNS} does not list it; run `reidkd bench` on the suite to record it"
    for key in ("method", "run_name", "seed", "config_hash"):
        if record.get(key) != want[key]:
            return f"its {key} is {record.get(key)!r}, the suite's run has {want[key]!r}"
    return None


def _suite_record(path: Path, text: str) -> dict:
    """A suite as `reidkd bench` recorded it (name, seeds, methods with one baseline), or one line naming the file."""
    try:
        suite = yaml.safe_load(text)
    except yaml.YAMLError as e:
        suite, detail = None, f"not valid YAML, {' '.join(str(e).split())[:100]}"
    else:
        detail = "no name, seeds, or methods with one baseline (method: none)"
    methods = suite.get("methods") if isinstance(suite, dict) else None
    if not (isinstance(suite, dict) and isinstance(suite.get("name"), str) and isinstance(suite.get("seeds"), list)
            and all(isinstance(k, int) for k in suite["seeds"]) and isinstance(methods, list)
            and all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in methods)
            and any(e.get("method") == "none" and not e.get("longer_of") for e in methods)):
        raise UserError(f"{path} is not a suite record reidkd bench wrote ({detail}); run `reidkd bench --suite "
                        "FILE` on the suite again to rewrite it, or remove its folder")
    return suite


def _failed(record: dict) -> bool:
    """A run whose metrics are not finite numbers failed, whatever its file says."""
    values = [record.get(k) for k, _ in METRICS]
    return not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def load_runs(suite_dir: Path, suite: dict) -> tuple[pd.DataFrame, list[str]]:
    """The suite's accepted runs (one row per entry and seed, `failed` marked) and the rejected files.

    A metrics.json counts only when its method, run name, seed and config hash are those the suite
    recorded for that folder when `reidkd bench` ran; any other file is listed, by path and why.
    """
    expected_file = suite_dir / EXPECTED_RUNS
    expected = read_json(expected_file) if expected_file.is_file() else {}
    if not isinstance(expected, dict):
        raise UserError(f"{expected_file} is not a record of the suite's runs (a JSON object); run `reidkd bench` "
                        "on the suite again to rewrite it")
    rows, rejected = [], []
    for entry in suite["methods"]:
        for seed in suite["seeds"]:
            key = run_id(entry["name"], seed)
            path, shown = suite_dir / key / "metrics.json", f"{suite_dir.name}/{key}/metrics.json"
            if not path.is_file():
                continue
            try:
                record = read_json(path)
            except UnsafeFileError:
                rejected.append(f"{shown}: not readable JSON")
                continue
            why = _mismatch(record, expected.get(key)) if isinstance(record, dict) else "not a run record (a JSON object)"
            if why:
                rejected.append(f"{shown}: {why}")
                continue
            rows.append(record | {"entry": entry["name"], "seed": seed, "failed": _failed(record)})
    return pd.DataFrame(rows), rejected


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


def _initialisation(runs: pd.DataFrame) -> str:
    """How the runs' networks began: ImageNet weights, synthetic pretraining, a file, or random weights."""
    def say(role: str) -> str:
        said = {describe(r.get(role)) for r in runs.get("pretrained", pd.Series(dtype=object))
                if isinstance(r, dict) and r.get(role) is not None}
        return f"{role} " + (" and ".join(sorted(said)) if said else DASH)
    return f"Initialisation: {say('teacher')}, {say('student')}."


def _processes(runs: pd.DataFrame) -> str:
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


def _software(runs: pd.DataFrame) -> str:
    """The software versions the runs recorded (numbers can differ across versions with the same seed)."""
    names = (("python", "Python"), ("torch", "PyTorch"), ("torchvision", "torchvision"), ("faiss", "FAISS"))
    seen = sorted({", ".join(f"{label} {env[key]}" for key, label in names if env.get(key))
                   for env in runs.get("environment", pd.Series(dtype=object)) if isinstance(env, dict)})
    return f"Software: {'; '.join(seen)}." if seen else ""


def _queries(runs: pd.DataFrame) -> str:
    """How many queries each run scored, and how many it skipped for lack of a positive."""
    if runs.empty or "num_queries" not in runs:
        return ""
    pairs = sorted({(int(t), int(v)) for t, v in zip(runs["num_queries"], runs["num_valid_queries"])
                    if not pd.isna(t)})
    if not pairs:
        return ""
    said = "; ".join(f"{v} of {t} ({t - v} skipped: no positive in the gallery)" for t, v in pairs)
    return f"Queries scored per run: {said}."


def _scoring(runs: pd.DataFrame) -> str:
    """Whether the runs were scored after k-reciprocal re-ranking (said only when some were)."""
    if "rerank" not in runs:
        return ""
    said = {rerank_said(r) for r in runs["rerank"]}
    if said == {None}:
        return ""
    return "Re-ranking: " + "; ".join(sorted(s or "off in some runs" for s in said)) + "."


def _teachers(runs: pd.DataFrame) -> pd.DataFrame:
    """The distinct teachers the runs distilled from (normally one), from the records they carry."""
    if runs.empty or "teacher" not in runs:
        return pd.DataFrame()
    rows = [t for t in runs["teacher"] if isinstance(t, dict)]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return frame.drop_duplicates("source").sort_values("source", kind="stable").reset_index(drop=True)


def _by_seed(runs: pd.DataFrame, entry: str, key: str) -> dict[int, float]:
    mine = runs[runs["entry"] == entry] if not runs.empty else runs
    return {int(seed): float(v) for seed, v in zip(mine["seed"], mine[key])} if len(mine) else {}


def _student_rows(runs: pd.DataFrame, entries: list[dict], n_seeds: int, reference: str,
                  against: str = "") -> list[dict]:
    """Rows of `entries`; Δ columns are paired by seed against entry `reference` (named `against`)."""
    """One row per entry over its finished runs; failed runs (non-finite metrics) are counted, not averaged."""
    rows = []
    for entry in entries:
        every = runs[runs["entry"] == entry["name"]] if not runs.empty else runs
        mine = every[~every["failed"]] if len(every) else every
        n, failed = len(mine), len(every) - len(mine)
        row = {"Method": entry["label"] + _processes(mine),
               "Seeds": f"{n}/{n_seeds}" + (f", {failed} failed" if failed else "")}
        if n == 0:
            row |= {label: DASH for _, label in METRICS}
            row |= {name: DASH for name in _delta_names(against)}
            row |= {"Params": DASH, "Images/s": DASH, "Train time": DASH, "_sort": float("-inf")}
            row["Seeds"] = f"failed ({failed}/{n_seeds})" if failed else f"missing (0/{n_seeds})"
            rows.append(row)
            continue
        row |= {label: _pct(mine[key]) for key, label in METRICS}
        ok = runs[~runs["failed"]]
        for (key, _), name in zip(DELTAS, _delta_names(against)):
            row[name] = "reference" if entry["name"] == reference else format_delta(
                paired_delta(_by_seed(ok, entry["name"], key), _by_seed(ok, reference, key)))
        row |= {"Params": _params(mine["params"].iloc[0]),
                "Images/s": _speed(mine.get("inference_images_per_sec", pd.Series(dtype=float))),
                "Train time": _duration(mine["train_seconds"]), "_sort": mine["mAP"].mean()}
        rows.append(row)
    return rows


def _power_rows(runs: pd.DataFrame, entries: list[dict], reference: str) -> list[dict]:
    """Per entry: the paired sd of its Δ mAP against `reference`, the interval it gives, and the seeds an
    interval of ±POWER_TARGET would need at that sd (what a suite must run for the table to decide)."""
    rows = []
    for entry in entries:
        delta = paired_delta(_by_seed(runs, entry["name"], "mAP"), _by_seed(runs, reference, "mAP"))
        if entry["name"] == reference or delta is None or delta.seeds < 2:
            continue
        needed = seeds_needed(delta.sd, POWER_TARGET)
        rows.append({"Method": entry["name"], "Paired seeds": str(delta.seeds), "Δ mAP": f"{100 * delta.mean:+.2f}",
                     "Paired sd": f"{100 * delta.sd:.2f}", "95% half-width": f"{100 * (delta.high - delta.mean):.2f}",
                     f"Seeds for ±{100 * POWER_TARGET:g}": str(needed) if needed else "over 1000"})
    return rows


def _table(rows: list[dict]) -> str:
    frame = pd.DataFrame(rows).drop(columns="_sort", errors="ignore")
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def _sorted(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (-r["_sort"], r["Method"]))


def cmc_plot(runs: pd.DataFrame, teachers: pd.DataFrame, entries: list[dict], title: str) -> bytes:
    """CMC curves (mean over seeds) of the teacher and every student entry with runs, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    curves = [(f"teacher ({t['backbone']})", np.asarray(t["cmc"], dtype=float), {"color": "black", "linestyle": "--"})
              for _, t in teachers.iterrows() if isinstance(t.get("cmc"), list)]
    students = []
    for entry in entries:
        mine = runs[runs["entry"] == entry["name"]] if not runs.empty else runs
        if len(mine):
            cmc = np.mean([np.asarray(c, dtype=float) for c in mine["cmc"]], axis=0)
            baseline = entry["method"] == "none"
            students.append((entry["name"], cmc, {"color": "dimgray", "linewidth": 2.5} if baseline else {}))
    # best first, so the legend reads in the order of the curves; tab20 and markers keep 13+ lines apart
    students.sort(key=lambda c: -c[1][:CMC_RANKS].mean())
    markers = "osD^vP*X<>"
    for i, (label, cmc, style) in enumerate(curves + students):
        ranks = np.arange(1, min(CMC_RANKS, len(cmc)) + 1)
        style = {"color": plt.get_cmap("tab20")(i % 20), "marker": markers[i % len(markers)], "linewidth": 1.5,
                 "linestyle": "-"} | style
        ax.plot(ranks, 100 * cmc[:len(ranks)], markersize=3.5, label=label, **style)
    ax.set_xticks([1, *range(5, CMC_RANKS + 1, 5)])
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves or students:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def build_leaderboard(suite_dir: Path, out_dir: Path, only: list[str] | None = None,
                      name: str | None = None) -> tuple[Path, Path, str, list[str]]:
    """Write <out_dir>/<name>.md and <out_dir>/<name>_cmc.png from the runs under `suite_dir`.

    `name` defaults to the suite's; `only` keeps those entries (a view of the suite, e.g. one sweep of a
    tuning suite). Returns both paths, the summary (seeds, commit, main table) for the README block and
    the rejected run files ("path: why").
    """
    suite_text = (suite_dir / "suite.yaml").read_text()
    suite = _suite_record(suite_dir / "suite.yaml", suite_text)
    if only is not None:
        suite["methods"] = [e for e in suite["methods"] if e["name"] in only]
    name, seeds = name or suite["name"], suite["seeds"]
    every, rejected = load_runs(suite_dir, suite)
    runs = every[~every["failed"]] if not every.empty else every  # finished runs with finite metrics
    teachers = _teachers(runs)
    entries = [dict(e, label=e["name"]) for e in suite["methods"]]
    baseline = next(e for e in entries if e["method"] == "none" and not e.get("longer_of"))
    base_runs = runs[runs["entry"] == baseline["name"]] if not runs.empty else runs

    main_entries = [e for e in entries if not e.get("ablation_of") and not e.get("longer_of")]
    teacher_rows = []
    for _, t in teachers.iterrows():
        row = {"Method": f"teacher ({t['backbone']})", "Seeds": "1"}
        row |= {label: f"{100 * t[key]:.2f}" for key, label in METRICS}
        row |= {name: _delta(t[key], base_runs[key].mean() if len(base_runs) else None)
                for (key, _), name in zip(DELTAS, _delta_names())}
        row |= {"Params": _params(t.get("params")),
                "Images/s": DASH if pd.isna(t.get("inference_images_per_sec")) else
                f"{t['inference_images_per_sec']:.0f}",
                "Train time": _duration(pd.Series([t.get("train_seconds")], dtype=float)), "_sort": float("inf")}
        teacher_rows.append(row)
    for e in main_entries:
        if e is baseline:
            e["label"] = f"{e['name']} (student)"
    students = _sorted(_student_rows(every, main_entries, len(seeds), baseline["name"]))

    first = runs.iloc[0] if not runs.empty else None
    commits = sorted(set(runs["git_commit"])) if not runs.empty else []
    devices = sorted(set(runs["device"])) if not runs.empty and "device" in runs else []
    plot_name = f"{name}_cmc.png"
    lines = [f"# Leaderboard: {name}", ""]
    if suite.get("description"):
        lines += [suite["description"].strip(), ""]
    if first is not None:
        lines += [f"Dataset `{first['dataset']}`; teacher `{first['teacher_backbone']}`, student "
                  f"`{first['student_backbone']}`, {int(first['epochs'])} epochs.", ""]
    summary = "\n".join([
        f"Seeds: {', '.join(map(str, seeds))}; metrics in % as mean ± sample std over the seeds run. "
        f"Reported epoch: **{suite.get('report', 'last')}** (the model after the final epoch; no epoch is "
        f"chosen on the test set).",
        f"Commit: {', '.join(f'`{c}`' for c in commits) or DASH}. Device: {', '.join(devices) or DASH}. "
        f"{_initialisation(runs)} {_queries(runs)} {_scoring(runs)}".rstrip(),
        _software(runs),
        "",
        _table(teacher_rows + students),
        "",
        "Δ mAP, Δ Rank-1: the mean over seeds of each seed's difference from the baseline student's run of the "
        "same seed (same data order, augmentation and initial weights), in points, with its 95% confidence "
        "interval (Student t over the seeds); * marks an interval that excludes 0, the only differences this "
        "table claims. The teacher's Δ is its difference from the baseline's mean. Params: inference parameters (classifier "
        "excluded). Images/s: retrieval forward pass over the gallery, measured when the run was evaluated. "
        "Train time: mean per run, counting the data pass and teacher forward it shared with the runs trained "
        "beside it (what it would take alone)."])
    lines += [summary,
              "",
              f"![CMC curves of {name}]({plot_name})",
              ""]
    parents = [e for e in entries if any(a.get("ablation_of") == e["name"] for a in entries)]
    for parent in parents:
        family = [dict(parent, label=f"{parent['name']} (full)")]
        family += [e for e in entries if e.get("ablation_of") == parent["name"]]
        rows = _sorted(_student_rows(every, family, len(seeds), parent["name"], parent["name"]))
        lines += [f"## Ablations of {parent['name']}", ""]
        lines += [f"- `{e['name']}`: {', '.join(f'`{s}`' for s in e.get('set', [])) or 'all components on'}"
                  for e in family]
        lines += ["", _table(rows), ""]
    for longer in (e for e in entries if e.get("longer_of")):
        parent = next(dict(e, label=f"{e['name']} (as in the table)") for e in entries if e["name"] == longer["longer_of"])
        rows = _student_rows(every, [parent, longer], len(seeds), parent["name"], parent["name"])
        lines += [f"## Convergence of {parent['name']}", "",
                  f"`{longer['name']}` is `{parent['name']}` trained longer "
                  f"({', '.join(f'`{s}`' for s in longer.get('set', []))}): its Δ is what the table's schedule "
                  f"leaves on the table.", "", _table(rows), ""]
    power = _power_rows(runs, entries, baseline["name"])
    if power:
        lines += ["## Seeds needed", "",
                  f"Paired sd: the sample sd over seeds of each seed's Δ mAP against `{baseline['name']}`, in points. "
                  f"Seeds for ±{100 * POWER_TARGET:g}: the fewest seeds whose 95% interval would be at most "
                  f"{100 * POWER_TARGET:g} points wide on each side at that sd.", "", _table(power), ""]
    failed = every[every["failed"]] if not every.empty else every
    if len(failed) or rejected:
        lines += ["## Runs not counted", ""]
        lines += [f"- `{suite_dir.name}/{run_id(r['entry'], r['seed'])}/metrics.json`: failed (its metrics are not "
                  "finite numbers)" for _, r in failed.iterrows()]
        lines += [f"- `{item.split(': ', 1)[0]}`: rejected, {item.split(': ', 1)[1]}" for item in rejected]
        lines += [""]
    lines += ["## Suite", "", f"As run (`{suite_dir.name}/suite.yaml`):", "", "```yaml", suite_text.rstrip(), "```",
              ""]
    md = write_text("\n".join(lines), out_dir / f"{name}.md")
    png = write_bytes(cmc_plot(runs, teachers, main_entries, f"CMC: {name}"), out_dir / plot_name)
    return md, png, summary, rejected


def embed_in_readme(readme: Path, name: str, summary: str, md: Path, png: Path) -> bool:
    """Rewrite the suite's marked block in `readme` with its table and CMC plot; False if it has no block."""
    start, end = f"<!-- leaderboard:{name} -->", f"<!-- /leaderboard:{name} -->"
    text = readme.read_text()
    if start not in text or end not in text.split(start, 1)[1]:
        return False
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    md_rel, png_rel = (Path(os.path.relpath(p, readme.parent)).as_posix() for p in (md, png))
    block = (f"{start}\n{summary}\n\nThe full leaderboard, with its ablation tables and the suite as run: "
             f"[{md_rel}]({md_rel}).\n\n![CMC curves of {name}]({png_rel})\n{end}")
    write_text(head + block + tail, readme)
    return True


def rebuild_all(runs_dir: str | Path = "runs", out_dir: str | Path = "leaderboards",
                readme: str | Path | None = None) -> list[Path]:
    """Rebuild the leaderboard of every suite found under `runs_dir` (and its README block, if any).

    Returns the files written; logs every rejected run file, by path and why.
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    written = []
    for suite_yaml in sorted(runs_dir.glob("*/suite.yaml")):
        md, png, summary, rejected = build_leaderboard(suite_yaml.parent, out_dir)
        for item in rejected:
            logger.info(f"rejected {runs_dir / item}")
        written.append(md)
        if readme is not None and Path(readme).is_file() and embed_in_readme(Path(readme), suite_yaml.parent.name,
                                                                             summary, md, png):
            written.append(Path(readme))
    return written
