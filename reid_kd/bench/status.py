"""`reidkd bench --suite F --status`: where each run of a suite stands, from the files alone (trains nothing).

done (its metrics.json holds its config hash), running (a live claim: who, where, heartbeat age), stale
(a claim whose holder stopped beating; the next worker takes it over), failed (failure.json: the error
and the last log line), pending (nothing yet, or a checkpoint to resume).
"""
from __future__ import annotations

from reid_kd.bench.claims import (
    CLAIM_TIMEOUT,
    UNREADABLE,
    heartbeat_age,
    is_stale,
    read_claim,
    read_failure,
)
from reid_kd.bench.suite_file import Suite
from reid_kd.engine.paths import run_folder, run_id, run_state
from reid_kd.errors import UserError


def suite_status(suite: Suite, extra: tuple[str, ...] = (), timeout: float = CLAIM_TIMEOUT) -> list[dict]:
    """One row per (entry, seed): run, state, detail."""
    rows = []
    for entry, seed, cfg in suite.runs(extra):
        folder = run_folder(cfg)
        try:
            state = run_state(cfg)
        except UserError as e:  # a damaged record: shown with its fix, the other runs still listed
            rows.append({"run": run_id(entry.name, seed), "state": "failed", "detail": str(e)})
            continue
        claim, age = read_claim(folder.path), heartbeat_age(folder.path)
        failure = read_failure(folder.path)
        if state == "done":
            mAP = folder.read_metrics().get("mAP")
            row = ("done", f"mAP {100 * mAP:.2f}" if isinstance(mAP, (int, float)) else "mAP missing")
        elif claim is not None and age is not None:
            who = f"worker {claim.get('worker', '?')}, pid {claim.get('pid', '?')} on {claim.get('host', '?')}"
            if claim.get(UNREADABLE):
                who = f"unreadable claim {folder.claim_file} (taken over by the next worker)"
            row = ("stale" if is_stale(claim, age, timeout) else "running",
                   f"{who}, heartbeat {age:.0f} s ago" + (", resuming" if state == "resume" else ""))
        elif failure is not None:
            row = ("failed", f"{failure.get('error', '?')}; last log line: {failure.get('last_log_line', '')}")
        else:
            row = ("pending", {"resume": "checkpoint to resume", "other": "holds another config's run "
                               "(`reidkd bench --overwrite` replaces it)"}.get(state, ""))
        rows.append({"run": run_id(entry.name, seed), "state": row[0], "detail": row[1]})
    return rows


def status_table(rows: list[dict]) -> str:
    from tabulate import tabulate

    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "running", "stale", "failed", "pending")}
    table = tabulate([[r["run"], r["state"], r["detail"]] for r in rows], headers=["Run", "State", "Detail"],
                     tablefmt="github")
    return table + "\n" + ", ".join(f"{n} {s}" for s, n in counts.items())
