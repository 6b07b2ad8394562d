"""A leaderboard's prose around its tables: the header, the summary (seeds, commit, how the runs began and
were scored, the main table and how to read it), the ablation, convergence and "seeds needed" sections,
the runs not counted, and the suite as run. Every word comes from the records, nothing is dated."""
from __future__ import annotations

import pandas as pd

from reid_kd.bench.board_plot import plot_name
from reid_kd.bench.board_runs import finished
from reid_kd.bench.board_table import (
    DASH,
    POWER_TARGET,
    PROTOCOL_COLUMNS,
    baseline_of,
    main_rows,
    power_rows,
    protocols_of,
    sorted_rows,
    student_rows,
    table,
)
from reid_kd.engine.paths import run_id
from reid_kd.engine.run_folder import METRICS
from reid_kd.models.catalog import describe_start

READING = (
    "Δ mAP, Δ Rank-1: the mean over seeds of each seed's difference from the baseline student's run of the "
    "same seed (same data order, augmentation and initial weights), in points, with its 95% confidence "
    "interval (Student t over the seeds); * marks an interval that excludes 0, the only differences this "
    "table claims. The teacher's Δ is its difference from the baseline's mean. Params: inference parameters (classifier "
    "excluded). Images/s: retrieval forward pass over the gallery, measured when the run was evaluated. "
    "Train time: mean per run, counting the data pass and teacher forward it shared with the runs trained "
    "beside it (what it would take alone).")

INT8_READING = (
    " INT8 mAP, INT8 images/s: the student quantized to INT8 after training (the suite's `deploy.int8`: ONNX "
    "Runtime, static, calibrated on a seeded sample of training images) and scored by the same evaluation; its "
    "images/s timed over the gallery on the CPU in the run's threads, beside its float models (each run's int8.json).")


def rerank_said(rerank) -> str | None:
    """How a result's `rerank` record reads in a note (None when re-ranking was off)."""
    if not isinstance(rerank, dict):
        return None
    return f"k-reciprocal (k1 {rerank['k1']}, k2 {rerank['k2']}, λ {rerank['lam']})"


def _initialisation(runs: pd.DataFrame) -> str:
    """How the runs' networks began: ImageNet weights, synthetic pretraining, a file, or random weights."""
    def say(role: str) -> str:
        said = {describe_start(r.get(role)) for r in runs.get("pretrained", pd.Series(dtype=object))
                if isinstance(r, dict) and r.get(role) is not None}
        return f"{role} " + (" and ".join(sorted(said)) if said else DASH)
    return f"Initialisation: {say('teacher')}, {say('student')}."


def _computation(runs: pd.DataFrame) -> str:
    """The precision and memory format the runs computed in (both move the numbers a little); runs recorded
    before these were recorded say nothing."""
    def said(key: str, part: str) -> str:
        values = {r.get(part) for r in runs.get(key, pd.Series(dtype=object)) if isinstance(r, dict)}
        return "/".join(sorted(v for v in values if v)) or DASH

    if runs.empty or "precision" not in runs:
        return ""
    return (f"Computation: training {said('precision', 'train')}, teacher forward {said('precision', 'teacher_forward')}; "
            f"memory format teacher {said('memory_format', 'teacher')}, student {said('memory_format', 'student')}.")


def _software(runs: pd.DataFrame) -> str:
    """The software versions the runs recorded (numbers can differ across versions with the same seed)."""
    names = (("python", "Python"), ("torch", "PyTorch"), ("torchvision", "torchvision"), ("faiss", "FAISS"))
    seen = sorted({", ".join(f"{label} {env[key]}" for key, label in names if env.get(key))
                   for env in runs.get("environment", pd.Series(dtype=object)) if isinstance(env, dict)})
    return f"Software: {'; '.join(seen)}." if seen else ""


def machine_said(runs: pd.DataFrame) -> str:
    """The processors and thread counts the runs computed with: either rounds otherwise, so a table whose runs
    come from machines of two kinds (or from `--workers` and a single process) shows both."""
    envs = [env for env in runs.get("environment", pd.Series(dtype=object)) if isinstance(env, dict)]
    cpus = sorted({env["cpu"] for env in envs if env.get("cpu")})
    threads = sorted({int(env["threads"]) for env in envs if env.get("threads")})
    parts = ([f"Processor: {' / '.join(cpus)}."] if cpus else []) + \
        ([f"Threads per run: {' / '.join(map(str, threads))}."] if threads else [])
    return " ".join(parts)


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


def protocol_said(protocols: list[str]) -> str:
    """Which protocol the table ranks by and what its other mAP column is."""
    said = {"symmetric": "Protocol: **symmetric** (each student embeds the queries and the gallery).",
            "asymmetric": "Protocol: **asymmetric** (each student's queries searched in the gallery the teacher "
                          "embedded; the teacher's row, its own queries in its own gallery, is the ceiling)."}
    other = {"symmetric": f"{PROTOCOL_COLUMNS['symmetric']}: the same students embedding both sides.",
             "asymmetric": f"{PROTOCOL_COLUMNS['asymmetric']}: the same students' queries searched in the teacher's "
                           f"gallery ({DASH} where a student's retrieval width is not the teacher's: it has no "
                           "shared head)."}
    return " ".join([said[protocols[0]], *(other[p] for p in protocols[1:])])


def scoring(runs: pd.DataFrame) -> str:
    """Whether the runs were scored after k-reciprocal re-ranking (said only when some were)."""
    if "rerank" not in runs:
        return ""
    said = {rerank_said(r) for r in runs["rerank"]}
    if said == {None}:
        return ""
    return "Re-ranking: " + "; ".join(sorted(s or "off in some runs" for s in said)) + "."


def _header(name: str, suite: dict, runs: pd.DataFrame) -> list[str]:
    lines = [f"# Leaderboard: {name}", ""]
    if suite.get("description"):
        lines += [suite["description"].strip(), ""]
    if not runs.empty:
        first = runs.iloc[0]
        lines += [f"Dataset `{first['dataset']}`; teacher `{first['teacher_backbone']}`, student "
                  f"`{first['student_backbone']}`, {int(first['epochs'])} epochs.", ""]
    return lines


def summary(suite: dict, every: pd.DataFrame, entries: list[dict]) -> str:
    """The seeds, commits, devices, how the runs began and were scored, the main table and how to read it."""
    runs = finished(every)
    commits = sorted(set(runs["git_commit"])) if not runs.empty else []
    devices = sorted(set(runs["device"])) if not runs.empty and "device" in runs else []
    return "\n".join([
        f"Seeds: {', '.join(map(str, suite['seeds']))}; metrics in % as mean ± sample std over the seeds run. "
        f"Reported epoch: **{suite.get('report', 'last')}** (the model after the final epoch; no epoch is "
        f"chosen on the test set).",
        " ".join(part for part in (
            f"Commit: {', '.join(f'`{c}`' for c in commits) or DASH}. Device: {', '.join(devices) or DASH}. "
            f"{_initialisation(runs)} {_queries(runs)} {scoring(runs)}".rstrip(), _computation(runs)) if part),
        " ".join(part for part in (_software(runs), machine_said(runs)) if part),
        "",
        protocol_said(protocols_of(runs)),
        "",
        table(main_rows(every, entries, len(suite["seeds"]))),
        "",
        READING + (INT8_READING if "int8_mAP" in runs else "")])


def _ablations(every: pd.DataFrame, entries: list[dict], n_seeds: int) -> list[str]:
    """One section per entry with ablations: what each ablation sets, and its Δ against the full method."""
    lines = []
    for parent in [e for e in entries if any(a.get("ablation_of") == e["name"] for a in entries)]:
        family = [dict(parent, label=f"{parent['name']} (full)")]
        family += [e for e in entries if e.get("ablation_of") == parent["name"]]
        rows = sorted_rows(student_rows(every, family, n_seeds, parent["name"], parent["name"]))
        lines += [f"## Ablations of {parent['name']}", ""]
        lines += [f"- `{e['name']}`: {', '.join(f'`{s}`' for s in e.get('set', [])) or 'all components on'}"
                  for e in family]
        lines += ["", table(rows), ""]
    return lines


def _convergence(every: pd.DataFrame, entries: list[dict], n_seeds: int) -> list[str]:
    """One section per entry trained longer: its Δ is what the table's schedule leaves on the table."""
    lines = []
    for longer in (e for e in entries if e.get("longer_of")):
        parent = next(dict(e, label=f"{e['name']} (as in the table)") for e in entries if e["name"] == longer["longer_of"])
        rows = student_rows(every, [parent, longer], n_seeds, parent["name"], parent["name"])
        lines += [f"## Convergence of {parent['name']}", "",
                  f"`{longer['name']}` is `{parent['name']}` trained longer "
                  f"({', '.join(f'`{s}`' for s in longer.get('set', []))}): its Δ is what the table's schedule "
                  f"leaves on the table.", "", table(rows), ""]
    return lines


def _seeds_needed(runs: pd.DataFrame, entries: list[dict]) -> list[str]:
    baseline = baseline_of(entries)["name"]
    power = power_rows(runs, entries, baseline)
    if not power:
        return []
    return ["## Seeds needed", "",
            f"Paired sd: the sample sd over seeds of each seed's Δ mAP against `{baseline}`, in points. "
            f"Seeds for ±{100 * POWER_TARGET:g}: the fewest seeds whose 95% interval would be at most "
            f"{100 * POWER_TARGET:g} points wide on each side at that sd.", "", table(power), ""]


def _not_counted(folder: str, every: pd.DataFrame, rejected: list[str]) -> list[str]:
    """The failed runs and the rejected files ("path: why"), by path."""
    failed = every[every["failed"]] if not every.empty else every
    if not len(failed) and not rejected:
        return []
    lines = ["## Runs not counted", ""]
    lines += [f"- `{folder}/{run_id(r['entry'], r['seed'])}/{METRICS}`: failed (its metrics are not "
              "finite numbers)" for _, r in failed.iterrows()]
    lines += [f"- `{item.split(': ', 1)[0]}`: rejected, {item.split(': ', 1)[1]}" for item in rejected]
    return lines + [""]


def markdown(name: str, folder: str, suite: dict, suite_text: str, every: pd.DataFrame,
             rejected: list[str], section: str = "") -> tuple[str, str]:
    """The leaderboard <name>.md of suite folder `folder` (with the caller's `section` below the main table) and
    its summary (for a README block)."""
    entries = [dict(e, label=e["name"]) for e in suite["methods"]]
    n_seeds = len(suite["seeds"])
    said = summary(suite, every, entries)
    lines = _header(name, suite, finished(every))
    lines += [said, ""] + ([section.rstrip(), ""] if section else [])
    lines += [f"![CMC curves of {name}]({plot_name(name)})", ""]
    lines += _ablations(every, entries, n_seeds) + _convergence(every, entries, n_seeds)
    lines += _seeds_needed(finished(every), entries) + _not_counted(folder, every, rejected)
    lines += ["## Suite", "", f"As run (`{folder}/suite.yaml`):", "", "```yaml", suite_text.rstrip(), "```", ""]
    return "\n".join(lines), said
