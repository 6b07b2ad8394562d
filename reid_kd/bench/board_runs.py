"""Which runs a leaderboard counts: the suite as `reidkd bench` recorded it, and each run's metrics.json
accepted only when it is the run the suite asked for (its expected_runs.json); every other file is
rejected by path and why, and a run whose metrics are not finite numbers is counted as failed."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from reid_kd.bench.suite_file import EXPECTED_RUNS
from reid_kd.engine.paths import run_id
from reid_kd.engine.run_folder import INT8, METRICS, RunFolder
from reid_kd.errors import UserError
from reid_kd.utils.io import UnsafeFileError, read_json

SCORES = (("mAP", "mAP"), ("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"), ("mINP", "mINP"))


def suite_record(path: Path, text: str) -> dict:
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


def _mismatch(record: dict, want: dict | None) -> str | None:
    """Why a metrics.json is not the run the suite asked for, or None when it is."""
    if want is None:
        return f"the suite's {EXPECTED_RUNS} does not list it; run `reidkd bench` on the suite to record it"
    for key in ("method", "run_name", "seed", "config_hash"):
        if record.get(key) != want[key]:
            return f"its {key} is {record.get(key)!r}, the suite's run has {want[key]!r}"
    return None


def _failed(record: dict) -> bool:
    """A run whose metrics are not finite numbers failed, whatever its file says."""
    values = [record.get(k) for k, _ in SCORES]
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
            path, shown = RunFolder(suite_dir / key).metrics, f"{suite_dir.name}/{key}/{METRICS}"
            if not path.is_file():
                continue
            try:
                record = read_json(path)
            except UnsafeFileError:
                rejected.append(f"{shown}: not readable JSON, damaged (delete it and run `reidkd bench` again: the "
                                "run is evaluated anew from its checkpoint)")
                continue
            why = _mismatch(record, expected.get(key)) if isinstance(record, dict) else "not a run record (a JSON object)"
            if why:
                rejected.append(f"{shown}: {why}")
                continue
            int8, why = int8_scores(RunFolder(suite_dir / key), record)
            if why:
                rejected.append(f"{suite_dir.name}/{key}/{INT8}: {why}")
            rows.append(record | int8 | {"entry": entry["name"], "seed": seed, "failed": _failed(record)})
    return pd.DataFrame(rows), rejected


def int8_scores(folder: RunFolder, record: dict) -> tuple[dict, str | None]:
    """The run's INT8 mAP and images/s from its int8.json (a suite's `deploy.int8`), counted only when that file
    is the record of this run's config; ({}, why) when it is not, ({}, None) when there is none."""
    if not folder.int8.is_file():
        return {}, None
    try:
        int8 = read_json(folder.int8)
    except UnsafeFileError:
        return {}, "not readable JSON, damaged (delete it and run `reidkd bench` again: the student is quantized anew)"
    scores = int8.get("models", {}).get("int8") if isinstance(int8, dict) else None
    if not isinstance(scores, dict) or not {"mAP", "inference_images_per_sec"} <= scores.keys():
        return {}, "no INT8 mAP and images/s (delete it and run `reidkd bench` again: the student is quantized anew)"
    if int8.get("config_hash") != record.get("config_hash"):
        return {}, f"its config_hash is {int8.get('config_hash')!r}, the run's is {record.get('config_hash')!r}"
    return {"int8_mAP": scores["mAP"], "int8_images_per_sec": scores["inference_images_per_sec"]}, None


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that finished with finite metrics."""
    return runs[~runs["failed"]] if not runs.empty else runs


def of_entry(runs: pd.DataFrame, entry: str) -> pd.DataFrame:
    return runs[runs["entry"] == entry] if not runs.empty else runs


def teachers(runs: pd.DataFrame) -> pd.DataFrame:
    """The distinct teachers the runs distilled from (normally one), from the records they carry."""
    if runs.empty or "teacher" not in runs:
        return pd.DataFrame()
    rows = [t for t in runs["teacher"] if isinstance(t, dict)]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return frame.drop_duplicates("source").sort_values("source", kind="stable").reset_index(drop=True)
